"""Embedded defaults for Prefect's local server, applied before Prefect is imported.

A fresh clone runs with nothing set up: unless the environment says otherwise, Prefect's
home (and with it ``prefect.db``, the SQLite database of its ephemeral server) is ``<work_dir>/prefect``
instead of ``~/.prefect``, the ephemeral server gets 120 s to start (the 20 s default is too
short on small machines) and analytics are off. Variables the user set win, so a real server
(``PREFECT_API_URL``) or another database URL replaces the embedded one.

Two callers, in this order:

- importing ``tasks`` or ``flows`` applies the *implicit* default (``$POOLCAST_WORK_DIR`` or
  ``.poolcast``), so ``python -m flows.monthly_retrain`` and the deployments work alone;
  it creates nothing on disk;
- ``poolcast run --work-dir DIR`` then calls ``use_work_dir(DIR)`` (still before Prefect is
  imported), which **replaces** what the implicit default set (never what the user set) and
  creates ``DIR/prefect``. Runs in different work dirs therefore never share one Prefect
  database, and the current directory is never written to.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DEFAULT_WORK_DIR", "prefect_env_defaults", "use_work_dir"]

DEFAULT_WORK_DIR = ".poolcast"

#: Values this module set from the implicit default; an explicit work dir may replace them.
_implicit: dict[str, str] = {}


def prefect_env_defaults(work_dir: str | Path) -> dict[str, str]:
    """The Prefect settings poolcast defaults to, for a given work dir."""
    home = (Path(work_dir) / "prefect").resolve()
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def use_work_dir(work_dir: str | Path | None = None) -> None:
    """Apply the defaults to ``os.environ``; call before ``import prefect``.

    Without `work_dir` (the implicit default: ``$POOLCAST_WORK_DIR`` or ``.poolcast``) only
    unset variables are filled in and nothing is created. With `work_dir` the variables the
    implicit default filled in are replaced too, and ``<work_dir>/prefect`` is created.
    Variables the user set are never touched.
    """
    explicit = work_dir is not None
    work_dir = work_dir or os.environ.get("POOLCAST_WORK_DIR") or DEFAULT_WORK_DIR
    for key, value in prefect_env_defaults(work_dir).items():
        current = os.environ.get(key)
        if current is None or (explicit and _implicit.get(key) == current):
            os.environ[key] = value
            if explicit:
                _implicit.pop(key, None)
            else:
                _implicit[key] = value
    if explicit:
        Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
