"""Pre-flight task: every resource the run writes to is checked before anything is fitted."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from poolcast.config import PipelineConfig
from poolcast.preflight import preflight as run_preflight

__all__ = ["preflight"]


@task(cache_policy=NO_CACHE)
def preflight(config: PipelineConfig) -> list[str]:
    """Check the work dir, quarantine file, MLflow store/server and outputs database (no retry:
    an unwritable path or a dead server is reported at once, in one line)."""
    checked = run_preflight(config)
    get_run_logger().info("pre-flight ok: %s", "; ".join(checked))
    return checked
