"""``poolcast serve`` against a real Prefect server on loopback: deploy, trigger, complete.

Starts ``prefect server start`` (its own PREFECT_HOME, a free port), waits for
``/api/health``, runs ``poolcast serve`` on a tiny simulated panel, triggers a run of the
served deployment through the REST API and waits for it to complete; then stops both.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from poolcast.simulate import simulate_panel

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CONFIG = """
[features]
horizons = 2
[backtest]
n_origins = 2
n_samples = 40
quantiles = [0.5, 0.9]
candidates = ["seasonal_naive", "moving_average"]
[tracking]
registered_model_name = "poolcast-serve-test"
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(home: Path, api: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    return env | {
        "PYTHONPATH": str(REPO),
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "MPLBACKEND": "Agg",
    }


def _request(url: str, payload: dict | None = None):
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(
        url,
        data=data,
        headers={"Content-Type": "application/json"},
        method="POST" if data is not None else "GET",
    )
    for attempt in range(20):  # bounded: Prefect answers 503 while its SQLite is busy
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or attempt == 19:
                raise
            time.sleep(1.0)
    return None  # pragma: no cover - the loop returns or raises


def _wait(what: str, check, bound: float, procs=()):
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                pytest.fail(f"{what}: a process ended early:\n{proc.stdout.read()[-3000:]}")
        try:
            value = check()
        except (urllib.error.URLError, OSError):
            value = None
        if value:
            return value
        time.sleep(1.0)
    pytest.fail(f"{what}: not within {bound:g} s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_poolcast_serve_runs_the_deployment_on_a_real_server(tmp_path):
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = _env(tmp_path / "prefect-home", api)
    panel = tmp_path / "panel.csv"
    simulate_panel(6, 30, seed=8).frame.write_csv(panel)
    (tmp_path / "run.toml").write_text(CONFIG)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    served = None
    try:
        _wait("Prefect server health", lambda: _request(f"{api}/health"), 240, [server])
        served = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "poolcast.cli",
                "serve",
                "--source",
                str(panel),
                "--config",
                str(tmp_path / "run.toml"),
                "--work-dir",
                str(tmp_path / "work"),
            ],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        deployment = _wait(
            "served deployment",
            lambda: _request(f"{api}/deployments/name/monthly-retrain/monthly-retrain-serve"),
            240,
            [served],
        )
        spec = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
        (planned,) = spec["deployments"]
        assert deployment["name"] != planned["name"]  # never overwrites `prefect deploy`'s
        assert planned["concurrency_limit"] == 1
        limit = deployment.get("global_concurrency_limit") or {}
        assert deployment.get("concurrency_limit") == 1 or limit.get("limit") == 1
        assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["0 6 2 * *"]

        run = _request(f"{api}/deployments/{deployment['id']}/create_flow_run", {})
        final = _wait(
            "flow run to finish",
            lambda: (lambda s: s if s in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"} else None)(
                _request(f"{api}/flow_runs/{run['id']}")["state"]["type"]
            ),
            600,
            [served],
        )
        assert final == "COMPLETED"
        assert (tmp_path / "work" / "outputs.duckdb").is_file()
    finally:
        if served is not None:
            _stop(served)
        _stop(server)
