"""Pre-flight names the unusable resource and its cause, in one line, in seconds."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from poolcast.config import PipelineConfig, TrackingConfig
from poolcast.errors import PreflightError
from poolcast.preflight import check_tracking_server, preflight


@pytest.fixture(autouse=True)
def _no_tracking_uri_from_the_environment(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _readonly_dir(tmp_path: Path) -> Path:
    """An existing directory this process cannot create files in.

    As root, permission bits do not stop writes, so a sysfs directory (read-only to everyone)
    stands in; otherwise a tmp dir with mode 0o555.
    """
    if os.geteuid() == 0:
        path = Path("/sys/kernel")
        try:
            (path / ".probe").write_bytes(b"")
        except OSError:
            return path
        pytest.skip("no read-only directory available to root here")
    path = tmp_path / "ro"
    path.mkdir()
    path.chmod(0o555)
    return path


def test_a_writable_setup_passes_and_says_what_it_checked(tmp_path):
    checked = preflight(PipelineConfig(work_dir=tmp_path / "work"))
    assert [c.split(" ")[0] for c in checked] == ["work", "quarantine", "MLflow", "outputs"]
    assert not list((tmp_path / "work").glob(".poolcast-preflight-*"))  # probes cleaned up


def test_a_read_only_work_dir_is_named(tmp_path):
    work = _readonly_dir(tmp_path) / "poolcast-work"
    with pytest.raises(
        PreflightError, match=r"^pre-flight: work dir .*poolcast-work: not writable"
    ):
        preflight(PipelineConfig(work_dir=work))


def test_a_work_dir_that_is_a_file_is_named(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(PreflightError, match=r"work dir .*file: exists and is not a directory"):
        preflight(PipelineConfig(work_dir=tmp_path / "file"))


def test_a_read_only_outputs_database_is_named(tmp_path):
    outputs = _readonly_dir(tmp_path) / "outputs.duckdb"
    config = PipelineConfig(
        work_dir=tmp_path / "work", tracking=TrackingConfig(outputs_db=str(outputs))
    )
    with pytest.raises(PreflightError, match=r"folder of the outputs database .*not writable"):
        preflight(config)


def test_an_unreachable_outputs_url_is_named_without_its_password(tmp_path):
    config = PipelineConfig(
        work_dir=tmp_path / "work",
        tracking=TrackingConfig(outputs_db="postgresql+psycopg://u:hunter2@127.0.0.1:9/db"),
    )
    with pytest.raises(PreflightError) as caught:
        preflight(config, timeout=10)
    message = str(caught.value)
    assert message.startswith(
        "pre-flight: outputs database postgresql+psycopg://u:***@127.0.0.1:9/db"
    )
    assert "hunter2" not in message and "\n" not in message


def test_a_dead_tracking_server_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    with pytest.raises(
        PreflightError, match=r"MLflow tracking server http://127.0.0.1:9: URLError: .*refused"
    ):
        preflight(PipelineConfig(work_dir=tmp_path / "work"))


def test_a_server_that_never_answers_fails_after_the_timeout():
    with socket.socket() as sock:  # listens, never accepts: the request hangs
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        with pytest.raises(PreflightError, match=r"(no answer within|timed out)"):
            check_tracking_server(f"http://127.0.0.1:{port}", timeout=1.0)


def test_a_read_only_mlflow_store_is_named(tmp_path):
    store = _readonly_dir(tmp_path) / "mlflow.db"
    config = PipelineConfig(
        work_dir=tmp_path / "work",
        tracking=TrackingConfig(mlflow_tracking_uri=f"sqlite:///{store}"),
    )
    with pytest.raises(PreflightError, match=r"folder of the MLflow store .*not writable"):
        preflight(config)
