"""The registered champion loads anywhere its own requirements install, and says where it came from.

The slow test builds a fresh virtual environment from nothing but the model's
``requirements.txt`` (offline, from uv's local cache), outside this repository and without
``PYTHONPATH``, and loads and runs the registered model there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from poolcast import tracking
from poolcast.champion import fit_champion
from poolcast.config import FeatureConfig, PipelineConfig, TrackingConfig
from poolcast.features import build_forecast_frame
from poolcast.models.baselines import SeasonalNaive
from poolcast.simulate import simulate_panel

REPO = Path(__file__).resolve().parents[2]
MODEL = "poolcast-anywhere"
BACKTEST = {"scaled_pinball": 0.61, "mase": 1.25, "coverage_80": 0.8, "crps": 3.5}


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """A retrain parent run (with data-quality metrics) whose champion is registered."""
    root = tmp_path_factory.mktemp("anywhere")
    config = PipelineConfig(
        work_dir=root / "work", tracking=TrackingConfig(registered_model_name=MODEL)
    )
    (root / "work").mkdir()
    uri = f"sqlite:///{root / 'work' / 'mlflow.db'}"
    config = config.with_overrides(
        tracking=TrackingConfig(registered_model_name=MODEL, mlflow_tracking_uri=uri)
    )
    run = tracking.start_retrain(config, run_name="anywhere")
    tracking.log_data_quality(uri, run.run_id, {"rows_in": 10, "rows_quarantined": 1})
    panel = simulate_panel(6, 30, seed=5).frame
    forecaster = fit_champion(
        "seasonal_naive",
        SeasonalNaive,
        panel,
        FeatureConfig(horizons=2),
        quantiles=(0.5, 0.9),
        n_samples=40,
        seed=2,
    )
    rows = build_forecast_frame(panel, forecaster.spec)
    reg = tracking.register_champion(
        run,
        forecaster,
        registered_model_name=MODEL,
        example=rows.head(3),
        score=0.61,
        fingerprint="fp",
        metric="scaled_pinball",
        rescore=lambda name: None,
        metrics=BACKTEST,
    )
    # the alias moves only after the publication (a first champion: no earlier as-of)
    reg = tracking.promote_champion(run, reg, as_of=date(2024, 6, 1), latest_published_as_of=None)
    return uri, run, reg, forecaster, rows, root


def _client(uri):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_the_logged_model_carries_the_backtest_metrics_only(registered):
    uri, run, _reg, *_ = registered
    client = _client(uri)
    (model,) = client.search_logged_models(
        [run.experiment_id], filter_string=f"source_run_id = '{run.run_id}'"
    )
    logged = {m.key: m.value for m in model.metrics}
    assert logged == BACKTEST
    assert not any(k.startswith("dq_") for k in logged)


def test_runs_carry_the_git_commit_and_source(registered):
    uri, run, *_ = registered
    tags = _client(uri).get_run(run.run_id).data.tags
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert tags["mlflow.source.git.commit"] == head
    assert tags["mlflow.source.name"] == "flows/monthly_retrain.py"
    assert tags["poolcast.pid"] == str(os.getpid())


def test_the_model_is_logged_with_poolcast_as_code_and_its_imports_as_requirements(registered):
    import mlflow.artifacts

    uri, *_, root = registered
    path = Path(
        mlflow.artifacts.download_artifacts(
            f"models:/{MODEL}@champion", dst_path=str(root / "dl1"), tracking_uri=uri
        )
    )
    assert (path / "code" / "poolcast" / "models" / "baselines.py").is_file()
    names = {line.split("==")[0] for line in (path / "requirements.txt").read_text().split()}
    assert {"mlflow", "polars", "pandas", "statsmodels", "formulaic", "scipy"} <= names


def test_predict_accepts_polars_and_pandas(registered, monkeypatch):
    import mlflow.pyfunc

    uri, _, _, forecaster, rows, _ = registered
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    from_polars = pl.from_pandas(model.predict(rows))
    from_pandas = pl.from_pandas(model.predict(rows.to_pandas()))
    expected = forecaster.predict_frame(rows)
    for served in (from_polars, from_pandas):
        np.testing.assert_allclose(served["mean"].to_numpy(), expected["mean"].to_numpy())
        np.testing.assert_allclose(served["q_0.9"].to_numpy(), expected["q_0.9"].to_numpy())


def _lock_closure(requirements: Path) -> list[str]:
    """``name==version`` for the model's requirements and everything they depend on, as
    resolved in this repository's ``uv.lock`` (markers evaluated for this interpreter).

    uv's cache holds the wheels the lock installed but not the registry metadata of every
    wheel, so ``uv pip install --offline`` cannot re-resolve; with the closure pinned it
    installs ``--no-deps`` straight from the cache. Each pin must equal the model's own.
    """
    import tomllib

    from packaging.markers import Marker
    from packaging.utils import canonicalize_name

    packages = {
        canonicalize_name(p["name"]): p
        for p in tomllib.loads((REPO / "uv.lock").read_text())["package"]
    }
    wanted = {}
    for line in requirements.read_text().split():
        name, _, version = line.partition("==")
        wanted[canonicalize_name(name)] = version
    todo = [(name, ()) for name in wanted]
    seen: set[tuple[str, tuple[str, ...]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        package = packages[name]
        if name in wanted:
            assert package["version"] == wanted[name], (name, wanted[name], package["version"])
        deps = list(package.get("dependencies", []))
        for extra in extras:
            deps += package.get("optional-dependencies", {}).get(extra, [])
        for dep in deps:
            if "marker" in dep and not Marker(dep["marker"]).evaluate({"extra": ""}):
                continue
            todo.append((canonicalize_name(dep["name"]), tuple(dep.get("extra", ()))))
    return sorted({f"{packages[n]['name']}=={packages[n]['version']}" for n, _ in seen})


def _uv() -> str | None:
    local = REPO / ".tools" / "bin" / "uv"
    return str(local) if local.exists() else shutil.which("uv")


@pytest.mark.slow
def test_the_registered_model_loads_in_a_fresh_environment_from_its_requirements(registered):
    import mlflow.artifacts

    uri, _, _, forecaster, rows, root = registered
    uv = _uv()
    if uv is None:
        pytest.fail("uv is not installed (.tools/bin/uv): run make setup")
    model_dir = Path(
        mlflow.artifacts.download_artifacts(
            f"models:/{MODEL}@champion", dst_path=str(root / "dl2"), tracking_uri=uri
        )
    )
    venv = root / "fresh-venv"
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    subprocess.run(
        [uv, "venv", "--python", sys.executable, str(venv)],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    python = venv / "bin" / "python"
    pinned = root / "closure.txt"
    pinned.write_text("\n".join(_lock_closure(model_dir / "requirements.txt")) + "\n")
    install = subprocess.run(
        [
            uv,
            "pip",
            "install",
            "--offline",
            "--no-deps",
            "--python",
            str(python),
            "-r",
            str(pinned),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if install.returncode != 0:
        pytest.skip(
            f"the model's requirements do not resolve offline from uv's cache: "
            f"{install.stderr.strip().splitlines()[-1:]}"
        )
    rows.write_parquet(root / "rows.parquet")
    script = (
        "import json, sys, mlflow.pyfunc, pandas as pd\n"
        "try:\n    import poolcast\n    print('poolcast importable before load', file=sys.stderr)\n"
        "    sys.exit(3)\nexcept ImportError:\n    pass\n"
        f"m = mlflow.pyfunc.load_model({str(model_dir)!r})\n"
        f"out = m.predict(pd.read_parquet({str(root / 'rows.parquet')!r}))\n"
        "print(json.dumps(out['mean'].tolist()))\n"
    )
    done = subprocess.run(
        [str(python), "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    served = json.loads(done.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(served, forecaster.predict_frame(rows)["mean"].to_numpy())
