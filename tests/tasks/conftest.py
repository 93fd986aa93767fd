"""Task tests call ``task.fn()``: no Prefect server, run loggers disabled."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="poolcast-prefect-home-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import pytest
from prefect.logging import disable_run_logger


@pytest.fixture(autouse=True)
def _no_run_logger():
    """``get_run_logger()`` outside a run raises; tests of ``.fn()`` run with it disabled."""
    with disable_run_logger():
        yield


@pytest.fixture
def make_config(tmp_path):
    """``make_config(source, toml)``: the run's config as ``poolcast run --source source
    --config <toml> --mapping contract --work-dir <tmp>/w`` resolves it."""
    from tasks import data

    def make(source, toml: str):
        (tmp_path / "c.toml").write_text(toml)
        return data.resolve_config.fn(
            str(tmp_path / "c.toml"),
            source=str(source),
            mapping="contract",
            as_of=None,
            work_dir=str(tmp_path / "w"),
        )

    return make
