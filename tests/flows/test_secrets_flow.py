"""A database password in the source URL never reaches MLflow, Prefect, the logs or the outputs."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest

from poolcast.secrets import SOURCE_URL_ENV
from poolcast.simulate import simulate_panel

pytestmark = [pytest.mark.flow, pytest.mark.slow]

SECRET = "fake-Secret-7f3a9"
CONFIG = """
[features]
horizons = 2
[backtest]
n_origins = 2
n_samples = 40
quantiles = [0.5, 0.9]
candidates = ["seasonal_naive", "moving_average"]
[tracking]
registered_model_name = "poolcast-secrets-test"
"""


def _database(root: Path) -> Path:
    db = root / "sales.db"
    frame = simulate_panel(6, 30, seed=4).frame.select("sku", "month", "sales")
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE sales (sku TEXT, month TEXT, sales INTEGER)")
        conn.executemany(
            "INSERT INTO sales VALUES (?, ?, ?)",
            [(s, str(m), int(v)) for s, m, v in frame.iter_rows()],
        )
    return db


def _files_containing(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


async def _prefect_records(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )

    async with get_client() as client:
        run = await client.read_flow_run(flow_run_id)
        logs = await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return run.parameters, [log.message for log in logs], [str(a.data) for a in artifacts]


@pytest.mark.parametrize("how", ["clear_url", "masked_url_and_env"])
def test_the_password_is_stored_nowhere(prefect_harness, tmp_path, monkeypatch, how):
    from mlflow import MlflowClient

    from flows.monthly_retrain import monthly_retrain

    db = _database(tmp_path)
    full = f"sqlite:///{db}?password={SECRET}#sales"
    masked = f"sqlite:///{db}?password=***#sales"
    config = tmp_path / "run.toml"
    config.write_text(CONFIG)
    monkeypatch.delenv(SOURCE_URL_ENV, raising=False)
    if how == "masked_url_and_env":  # what `poolcast run` and a deployment do
        monkeypatch.setenv(SOURCE_URL_ENV, full)
    work = tmp_path / "work"
    state = monthly_retrain(
        full if how == "clear_url" else masked,
        "contract",
        config_path=str(config),
        work_dir=str(work),
        return_state=True,
    )
    assert state.is_completed(), state
    summary = state.result()
    assert summary.rows_accepted == 6 * 30

    uri = f"sqlite:///{(work / 'mlflow.db').resolve()}"
    run = MlflowClient(uri).get_run(summary.mlflow_run_id)
    assert run.data.params["source"] == masked
    assert not [k for k, v in {**run.data.params, **run.data.tags}.items() if SECRET in v]
    assert all(SECRET not in d.dataset.source for d in run.inputs.dataset_inputs)

    parameters, logs, artifacts = asyncio.run(_prefect_records(state.state_details.flow_run_id))
    assert parameters["source"] == masked
    assert logs and not [m for m in logs if SECRET in m]
    assert artifacts and not [a for a in artifacts if SECRET in a]

    # MLflow's store and artifacts, the outputs database, the quarantine file: not a byte of it
    assert _files_containing(work, SECRET.encode()) == []
    os.environ.pop(SOURCE_URL_ENV, None)
