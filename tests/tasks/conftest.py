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
