"""``poolcast run`` as an operator sees it: a real subprocess, its signals, its state on disk.

Each test starts the command line in a child process (own Prefect home under its work dir,
so its own temporary Prefect server), and reads what it left behind straight from the
SQLite files: MLflow's ``runs`` table and Prefect's ``flow_run`` table.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from poolcast.simulate import simulate_panel

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
POOLCAST = [sys.executable, "-m", "poolcast.cli"]

SLOW_CONFIG = """
[backtest]
n_origins = 6
n_samples = 200
candidates = ["glmm_nb2_ri", "glmm_nb2_ri_dynamic", "glm_nb2_sku_fixed", "gee_poisson_ar1",
              "glmm_poisson_ri", "glm_nb2_pooled"]
[tracking]
registered_model_name = "poolcast-ops-test"
"""
FAST_CONFIG = """
[features]
horizons = 2
[backtest]
n_origins = 2
n_samples = 40
quantiles = [0.5, 0.9]
candidates = ["seasonal_naive", "moving_average"]
[tracking]
registered_model_name = "poolcast-ops-test"
"""


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "MLFLOW_", "POOLCAST_"))
    }
    env.update(
        PYTHONPATH=str(REPO),
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        MPLBACKEND="Agg",
        **extra,
    )
    return env


def _panel(root: Path, n_skus: int, *, promo: bool = True) -> Path:
    """A simulated panel; without `promo` no candidate needs a plan, so the run is long."""
    path = root / "panel.parquet"
    frame = simulate_panel(n_skus, 36, family="negbin", seed=3).frame
    (frame if promo else frame.drop("promo")).write_parquet(path)
    return path


def _start(root: Path, source: Path, config: str, *, cwd: Path | None = None) -> subprocess.Popen:
    config_path = root / f"run-{abs(hash(config))}.toml"
    config_path.write_text(config)
    return subprocess.Popen(
        [
            *POOLCAST,
            "run",
            "--source",
            str(source),
            "--config",
            str(config_path),
            "--work-dir",
            str(root / "work"),
        ],
        cwd=cwd or root,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _parent_runs(work: Path) -> dict[str, str]:
    """run id -> status of the retrain parent runs in the work dir's MLflow store."""
    db = work / "mlflow.db"
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            rows = conn.execute(
                "SELECT r.run_uuid, r.status FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                "WHERE t.key = 'poolcast.kind' AND t.value = 'retrain'"
            ).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return {}
    return dict(rows)


def _wait_for_running_parent(proc: subprocess.Popen, work: Path, bound: float = 420) -> str:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        running = [r for r, s in _parent_runs(work).items() if s == "RUNNING"]
        if running:
            return running[0]
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"poolcast run ended before its parent run started:\n{out}\n{err}")
        time.sleep(0.5)
    proc.kill()
    pytest.fail("the parent run did not start")


def _processes_using(marker: str) -> list[int]:
    """Live (non-zombie) processes whose environment or command line mentions `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            status = (entry / "status").read_text()
            blob = (entry / "environ").read_bytes() + (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if "\nState:\tZ" in status:
            continue
        if marker.encode() in blob:
            found.append(int(entry.name))
    return found


def _flow_run_states(work: Path) -> list[str]:
    with sqlite3.connect(work / "prefect" / "prefect.db") as conn:
        return [row[0] for row in conn.execute("SELECT state_type FROM flow_run")]


def test_sigterm_fails_the_runs_and_leaves_no_prefect_server(tmp_path):
    source = _panel(tmp_path, 400, promo=False)
    proc = _start(tmp_path, source, SLOW_CONFIG)
    work = tmp_path / "work"
    try:
        parent = _wait_for_running_parent(proc, work)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=90)  # a bound against hanging, not a timing
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err[-2000:]
    assert any(
        line.startswith("poolcast run: error: terminated by SIGTERM") for line in err.splitlines()
    )
    assert _parent_runs(work)[parent] == "FAILED"
    assert _flow_run_states(work) in (["CRASHED"], ["FAILED"])
    leftovers = _processes_using(str(work / "prefect"))
    for pid in leftovers:  # clean up before failing
        os.kill(pid, signal.SIGKILL)
    assert leftovers == [], "Prefect server processes survived poolcast run"


def test_a_run_killed_with_sigkill_is_marked_failed_by_the_next_run(tmp_path):
    source = _panel(tmp_path, 400, promo=False)
    proc = _start(tmp_path, source, SLOW_CONFIG)
    work = tmp_path / "work"
    try:
        killed = _wait_for_running_parent(proc, work)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    for pid in _processes_using(str(work / "prefect")):  # SIGKILL orphans Prefect's server
        os.kill(pid, signal.SIGKILL)
    assert _parent_runs(work)[killed] == "RUNNING"

    again = _start(tmp_path, source, FAST_CONFIG)
    _out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    runs = _parent_runs(work)
    assert runs[killed] == "FAILED"
    assert sorted(runs.values()) == ["FAILED", "FINISHED"]
    from mlflow import MlflowClient

    uri = f"sqlite:///{work / 'mlflow.db'}"
    reason = MlflowClient(uri).get_run(killed).data.tags["poolcast.failed_reason"]
    assert "killed" in reason


def _readonly_dir(tmp_path: Path) -> Path:
    """An existing directory this process cannot write (sysfs for root, mode 0o555 otherwise)."""
    if os.geteuid() == 0:
        return Path("/sys/kernel")
    path = tmp_path / "ro"
    path.mkdir()
    path.chmod(0o555)
    return path


def _run_cli(args: list[str], *, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*POOLCAST, "run", *args],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_dead_tracking_server_ends_the_run_in_one_line_before_any_fit(tmp_path):
    source = _panel(tmp_path, 20)
    done = _run_cli(
        ["--source", str(source), "--work-dir", str(tmp_path / "work")],
        cwd=tmp_path,
        MLFLOW_TRACKING_URI="http://127.0.0.1:9",
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "poolcast run: error: pre-flight: MLflow tracking server http://127.0.0.1:9: "
        "URLError: [Errno 111] Connection refused"
    ]
    assert not (tmp_path / "work" / "prefect").exists()  # Prefect never started, nothing fitted
    assert not (tmp_path / "work" / "outputs.duckdb").exists()


def test_a_read_only_work_dir_ends_the_run_in_one_line(tmp_path):
    source = _panel(tmp_path, 20)
    work = _readonly_dir(tmp_path) / "poolcast-work"
    done = _run_cli(["--source", str(source), "--work-dir", str(work)], cwd=tmp_path)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"poolcast run: error: pre-flight: work dir {work}: not writable")


def test_a_read_only_current_directory_is_fine_with_a_writable_work_dir(tmp_path):
    source = _panel(tmp_path, 6)
    config = tmp_path / "fast.toml"
    config.write_text(FAST_CONFIG)
    work = tmp_path / "work"
    done = _run_cli(
        ["--source", str(source), "--config", str(config), "--work-dir", str(work)],
        cwd=_readonly_dir(tmp_path),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (work / "prefect" / "prefect.db").is_file()  # Prefect's home followed --work-dir
    assert list(_parent_runs(work).values()) == ["FINISHED"]
