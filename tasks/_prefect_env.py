"""Embedded defaults for Prefect's local server, applied before Prefect is imported.

A fresh clone runs with nothing set up: unless the environment says otherwise, Prefect's
home (and with it ``prefect.db``, the SQLite database of its ephemeral server) is ``<work_dir>/prefect``
instead of ``~/.prefect``, the ephemeral server gets 120 s to start (the 20 s default is too
short on small machines) and analytics are off. Variables already set win, so a real server
(``PREFECT_API_URL``) or another database URL replaces the embedded one.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DEFAULT_WORK_DIR", "prefect_env_defaults", "use_work_dir"]

DEFAULT_WORK_DIR = ".poolcast"


def prefect_env_defaults(work_dir: str | Path) -> dict[str, str]:
    """The Prefect settings poolcast defaults to, for a given work dir."""
    home = (Path(work_dir) / "prefect").resolve()
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def use_work_dir(work_dir: str | Path | None = None) -> None:
    """Set the defaults in ``os.environ`` where unset; call before ``import prefect``.

    `work_dir` defaults to ``$POOLCAST_WORK_DIR`` or ``.poolcast``. The home folder is created.
    """
    work_dir = work_dir or os.environ.get("POOLCAST_WORK_DIR") or DEFAULT_WORK_DIR
    for key, value in prefect_env_defaults(work_dir).items():
        os.environ.setdefault(key, value)
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
