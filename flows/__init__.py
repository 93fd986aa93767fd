"""Prefect flows; ``flows.monthly_retrain`` is the main job.

Importing the package applies poolcast's embedded Prefect defaults (Prefect home under the
work dir, a 120 s ephemeral-server start-up timeout) before any flow module imports Prefect.
"""

from tasks._prefect_env import use_work_dir

use_work_dir()

__all__ = ["use_work_dir"]
