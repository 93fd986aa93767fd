"""One Prefect test harness for the whole test session (its server costs 15-60 s to start)."""

from __future__ import annotations

import os
import tempfile

# Before Prefect is imported: a private Prefect home, a generous start-up timeout, no analytics.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="poolcast-prefect-home-"))
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import pytest
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(scope="session")
def prefect_harness():
    """Run flows against a temporary SQLite-backed Prefect server, shared by every flow test."""
    with prefect_test_harness(server_startup_timeout=None):
        yield
