"""Publish the run's outputs to the embedded DuckDB database (retried only on transient errors)."""

from __future__ import annotations

import polars as pl
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from poolcast.config import PipelineConfig
from poolcast.publish import PublishResult, publish_run
from poolcast.reporting import quality_table
from poolcast.validation import ValidationResult
from tasks._retry import retry_if_transient

__all__ = ["publish"]


@task(
    cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5, retry_condition_fn=retry_if_transient
)
def publish(
    config: PipelineConfig,
    run_id: str,
    validated: ValidationResult,
    forecast: pl.DataFrame,
    leaderboard: pl.DataFrame,
    champion: str,
) -> PublishResult:
    """Forecasts, leaderboard and data-quality counts, keyed by (run_id, as_of), in one transaction."""
    result = publish_run(
        config.outputs_db,
        run_id=run_id,
        as_of=validated.counts.last_month,
        champion=champion,
        tables={
            "forecasts": forecast,
            "leaderboard": leaderboard,
            "data_quality": quality_table(validated.counts),
            # compact sales history for the dashboard's fan charts (poolcast/dashboard/data.py)
            "history": validated.panel.select("sku", "month", "sales"),
        },
    )
    get_run_logger().info("published %s to %s", result.rows, result.path)
    return result
