"""The flow's failure/crash hook marks the parent run FAILED and never hangs or raises."""

from __future__ import annotations

import logging
import socket
import threading
import uuid
from types import SimpleNamespace

from poolcast import tracking
from tasks.tracking import FLOW_RUN_TAG, fail_parent_run


def _flow_run(work_dir, run_id=None):
    return SimpleNamespace(
        id=run_id or uuid.uuid4(),
        parameters={
            "source": "x.csv",
            "mapping": "contract",
            "as_of": None,
            "config_path": None,
            "work_dir": str(work_dir),
        },
    )


def _call_bounded(flow_run, bound=90.0) -> bool:
    """Call the hook in a thread; True when it returned within `bound` (a hang guard)."""
    thread = threading.Thread(target=fail_parent_run, args=(None, flow_run, None), daemon=True)
    thread.start()
    thread.join(bound)
    return not thread.is_alive()


def test_the_hook_marks_the_parent_run_failed(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    flow_run = _flow_run(tmp_path / "work")
    uri = f"sqlite:///{(tmp_path / 'work' / 'mlflow.db').resolve()}"
    (tmp_path / "work").mkdir()
    experiment = tracking.ensure_experiment(uri, "poolcast-monthly-retrain")
    run_id = tracking.start_parent_run(
        uri, experiment, run_name="r", tags={FLOW_RUN_TAG: str(flow_run.id)}
    )
    assert _call_bounded(flow_run)
    from mlflow import MlflowClient

    assert MlflowClient(uri).get_run(run_id).info.status == "FAILED"


def test_the_hook_returns_when_the_tracking_server_never_answers(tmp_path, monkeypatch, caplog):
    with socket.socket() as sock:  # accepts connections into its backlog, never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{sock.getsockname()[1]}")
        monkeypatch.setattr("tasks.tracking.HOOK_TIMEOUT", 5.0)
        with caplog.at_level(logging.WARNING, logger="poolcast.hooks"):
            assert _call_bounded(_flow_run(tmp_path / "work"))
    assert "could not mark the MLflow parent run FAILED" in caplog.text


def test_the_hook_swallows_a_broken_configuration(tmp_path, caplog):
    flow_run = _flow_run(tmp_path / "work")
    flow_run.parameters["config_path"] = str(tmp_path / "missing.toml")
    with caplog.at_level(logging.WARNING, logger="poolcast.hooks"):
        assert _call_bounded(flow_run)
    assert "missing.toml" in caplog.text
