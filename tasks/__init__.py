"""Prefect tasks: thin wrappers that call poolcast, log, and emit artifacts or MLflow records.

Importing the package first applies poolcast's embedded Prefect defaults (see
``tasks._prefect_env``), so Prefect's local server lives under the work dir.
"""

from tasks._prefect_env import use_work_dir

use_work_dir()

__all__ = ["use_work_dir"]
