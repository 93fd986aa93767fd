"""MLflow tracking against a temporary SQLite store: batched values, child runs, the champion."""

from __future__ import annotations

import math
import multiprocessing
import os
import subprocess
from datetime import date

import numpy as np
import polars as pl
import pytest
from matplotlib.figure import Figure

from poolcast import tracking
from poolcast.champion import TAG_CANDIDATE, TAG_FINGERPRINT, TAG_SCORE, AliasDecision, fit_champion
from poolcast.config import FeatureConfig
from poolcast.features import build_forecast_frame
from poolcast.models.baselines import SeasonalNaive
from poolcast.simulate import simulate_panel

FEATURES = FeatureConfig(horizons=2)
MODEL = "poolcast-test-model"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module (creating its tables costs seconds)."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    experiment_id = tracking.ensure_experiment(uri, "tests", artifact_dir=root / "artifacts")
    return uri, experiment_id, root


@pytest.fixture(scope="module")
def panel() -> pl.DataFrame:
    frame = simulate_panel(4, 28, seed=4).frame
    return frame.with_columns(
        pl.lit(False).alias("is_gap"), pl.lit(None, pl.Int64).alias("on_hand")
    )


def _client(uri):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_ensure_experiment_is_idempotent(store):
    uri, experiment_id, root = store
    assert tracking.ensure_experiment(uri, "tests", artifact_dir=root / "other") == experiment_id


def test_values_are_logged_in_batches_beyond_the_per_call_limit(store):
    uri, experiment_id, _ = store
    run_id = tracking.start_parent_run(
        uri, experiment_id, run_name="batch", params={"a": 1}, tags={"t": "x"}
    )
    metrics = {f"m{i}": float(i) for i in range(1500)} | {"not_finite": math.nan, "bad key!": 2.0}
    params = {f"p{i}": i for i in range(150)}
    tracking.log_values(uri, run_id, metrics=metrics, params=params)
    data = _client(uri).get_run(run_id).data
    assert len([k for k in data.metrics if k.startswith("m")]) == 1500
    assert data.metrics["m1499"] == 1499.0
    assert "not_finite" not in data.metrics and data.metrics["bad key_"] == 2.0
    assert len(data.params) == 151 and data.params["a"] == "1" and data.tags["t"] == "x"


def test_data_quality_metrics_and_quarantine_artifact(store, tmp_path):
    uri, experiment_id, _ = store
    run_id = tracking.start_parent_run(uri, experiment_id, run_name="dq")
    quarantine = tmp_path / "quarantine.csv"
    quarantine.write_text("row,rule\n3,sales_negative\n")
    tracking.log_data_quality(
        uri,
        run_id,
        {"rows_in": 5, "rows_accepted": 4, "rows_quarantined": 1},
        quarantine_path=quarantine,
    )
    client = _client(uri)
    metrics = client.get_run(run_id).data.metrics
    assert (
        metrics["dq_rows_in"] == metrics["dq_rows_accepted"] + metrics["dq_rows_quarantined"] == 5
    )
    assert [f.path for f in client.list_artifacts(run_id, "data_quality")] == [
        "data_quality/quarantine.csv"
    ]


def test_input_dataset_is_logged_with_training_context(store, panel):
    uri, experiment_id, _ = store
    run_id = tracking.start_parent_run(uri, experiment_id, run_name="dataset")
    digest = tracking.log_input_dataset(
        uri, run_id, panel, source="/data/panel.csv", name="validated_panel"
    )
    inputs = _client(uri).get_run(run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    assert inputs[0].dataset.name == "validated_panel" and inputs[0].dataset.digest == digest
    assert {(t.key, t.value) for t in inputs[0].tags} == {("mlflow.data.context", "training")}


def test_child_runs_keep_their_parent_and_failures_are_failed(store):
    uri, experiment_id, _ = store
    parent = tracking.start_parent_run(uri, experiment_id, run_name="parent")
    fig = Figure()
    fig.add_subplot().plot([1, 2], [3, 4])
    ok = tracking.log_candidate_run(
        uri,
        experiment_id,
        parent,
        name="glm",
        params={"family": "poisson"},
        metrics={"mase": 0.8},
        tables={
            "coefficients": pl.DataFrame({"term": ["x"], "estimate": [1.0]}),
            "random_effects": None,
        },
        figures={"fan_chart": fig},
    )
    failed = tracking.log_candidate_run(
        uri, experiment_id, parent, name="boom", error="RuntimeError: no"
    )
    client = _client(uri)
    ok_run, failed_run = client.get_run(ok), client.get_run(failed)
    for run in (ok_run, failed_run):
        assert run.data.tags["mlflow.parentRunId"] == parent
    assert ok_run.info.status == "FINISHED" and ok_run.data.metrics == {"mase": 0.8}
    assert {f.path for f in client.list_artifacts(ok, "plots")} == {"plots/fan_chart.png"}
    assert {f.path for f in client.list_artifacts(ok, "tables")} == {"tables/coefficients.json"}
    assert (
        failed_run.info.status == "FAILED"
        and failed_run.data.tags["poolcast.error"] == "RuntimeError: no"
    )


@pytest.mark.slow
def test_register_champion_follows_the_alias_rule_and_serves_a_pyfunc(store, panel):
    import mlflow.pyfunc

    uri, experiment_id, _ = store
    forecaster = fit_champion(
        "seasonal_naive", SeasonalNaive, panel, FEATURES, quantiles=(0.5, 0.9), n_samples=40, seed=2
    )
    rows = build_forecast_frame(panel, forecaster.spec)

    def register(score: float, fingerprint: str, rescored: float | None = None):
        run = tracking.RetrainRun(
            uri, experiment_id, tracking.start_parent_run(uri, experiment_id, run_name="r")
        )
        before = tracking.current_champion(uri, MODEL)
        reg = tracking.register_champion(
            run,
            forecaster,
            registered_model_name=MODEL,
            example=rows.head(3),
            score=score,
            fingerprint=fingerprint,
            metric="scaled_pinball",
            rescore=lambda name: rescored,
        )
        # registering never moves the alias: that waits for the publish
        assert tracking.current_champion(uri, MODEL) == before
        assert _client(uri).get_run(run.run_id).data.tags["poolcast.alias_moved"] == "False"
        # the parent run stays RUNNING until the flow finishes it (or its failure hook fails it)
        assert _client(uri).get_run(run.run_id).info.status == "RUNNING"
        final = tracking.promote_champion(
            run, reg, as_of=date(2024, 6, 1), latest_published_as_of=date(2024, 5, 1)
        )
        assert final.decision == reg.decision
        tags = _client(uri).get_run(run.run_id).data.tags
        assert tags["poolcast.alias_moved"] == str(reg.decision.move)
        return final

    assert tracking.current_champion(uri, MODEL) is None
    first = register(0.5, "fp1")
    assert first.decision.move
    current = tracking.current_champion(uri, MODEL)
    assert (
        current.version == first.version and current.score == 0.5 and current.fingerprint == "fp1"
    )

    worse = register(0.6, "fp1")  # same backtest, worse: stays
    assert not worse.decision.move
    assert tracking.current_champion(uri, MODEL).version == first.version

    better = register(0.4, "fp1")  # same backtest, better: moves
    assert better.decision.move
    assert tracking.current_champion(uri, MODEL).version == better.version

    rescored = register(0.45, "fp2", rescored=0.3)  # new month: current re-scored at 0.3 beats 0.45
    assert not rescored.decision.move and rescored.decision.current_score == 0.3

    version = _client(uri).get_model_version(MODEL, better.version)
    assert version.tags[TAG_CANDIDATE] == "seasonal_naive" and float(version.tags[TAG_SCORE]) == 0.4
    assert version.tags[TAG_FINGERPRINT] == "fp1"

    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    served = pl.from_pandas(model.predict(rows.to_pandas()))
    expected = forecaster.predict_frame(rows)
    np.testing.assert_allclose(
        served.get_column("mean").to_numpy(), expected.get_column("mean").to_numpy()
    )
    np.testing.assert_allclose(
        served.get_column("q_0.9").to_numpy(), expected.get_column("q_0.9").to_numpy()
    )


def test_running_runs_of_a_failed_flow_are_marked_failed(store):
    uri, experiment_id, _ = store
    mine = tracking.start_parent_run(
        uri, experiment_id, run_name="a", tags={"prefect.flow_run_id": "f1"}
    )
    other = tracking.start_parent_run(
        uri, experiment_id, run_name="b", tags={"prefect.flow_run_id": "f2"}
    )
    assert tracking.fail_running_runs(uri, "tests", tag="prefect.flow_run_id", value="f1") == [mine]
    client = _client(uri)
    assert client.get_run(mine).info.status == "FAILED"
    assert client.get_run(other).info.status == "RUNNING"
    assert tracking.fail_running_runs(uri, "no-such-experiment", tag="t", value="v") == []


def test_run_url_points_at_the_server_or_a_local_ui():
    assert (
        tracking.run_url("https://mlflow.example.com/", "1", "abc")
        == "https://mlflow.example.com/#/experiments/1/runs/abc"
    )
    assert tracking.run_url("sqlite:///x.db", "1", "abc").startswith(
        "http://127.0.0.1:5000/#/experiments/1/runs/abc"
    )


def test_a_backfill_keeps_the_alias_unless_asked():
    move = AliasDecision(True, "new 0.4 vs current v1 0.5", "1", 0.5)
    june, july = date(2024, 6, 1), date(2024, 7, 1)
    kept = tracking.backfill_guard(move, as_of=june, latest_published_as_of=july, backfill=False)
    assert not kept.move and "older than the latest published 2024-07-01" in kept.reason
    assert "--backfill" in kept.reason and kept.current_version == "1"
    asked = tracking.backfill_guard(move, as_of=june, latest_published_as_of=july, backfill=True)
    assert asked.move and "--backfill" in asked.reason
    # a new month, the same month again, or a first publication: the rule alone decides
    for latest in (june, date(2024, 5, 1), None):
        assert (
            tracking.backfill_guard(move, as_of=june, latest_published_as_of=latest, backfill=False)
            == move
        )
    stay = AliasDecision(False, "worse", "1", 0.3)
    assert (
        tracking.backfill_guard(stay, as_of=june, latest_published_as_of=july, backfill=True)
        == stay
    )


def test_runs_whose_process_died_are_marked_failed_by_the_next_run(store):
    import socket

    uri, experiment_id, _ = store
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    common = {"poolcast.kind": "retrain", tracking.TAG_HOST: host}
    killed = tracking.start_parent_run(
        uri, experiment_id, run_name="killed", tags=common | {tracking.TAG_PID: dead.pid}
    )
    child = tracking.start_parent_run(
        uri, experiment_id, run_name="child", tags={"mlflow.parentRunId": killed}
    )
    alive = tracking.start_parent_run(
        uri, experiment_id, run_name="alive", tags=common | {tracking.TAG_PID: os.getpid()}
    )
    assert tracking.fail_stale_runs(uri, "tests") == [killed]
    client = _client(uri)
    assert client.get_run(killed).info.status == "FAILED"
    assert client.get_run(child).info.status == "FAILED"
    assert client.get_run(alive).info.status == "RUNNING"


def _first_use(uri: str, root: str) -> None:
    tracking.ensure_experiment(uri, "race", artifact_dir=root)


def test_two_first_runs_at_once_on_a_fresh_sqlite_store_both_succeed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    (tmp_path / "fresh").mkdir()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_first_use, args=(uri, str(tmp_path / "a"))) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0, 0]
    assert _client(uri).get_experiment_by_name("race") is not None
