"""The inventory plan, then the run's publication (one transaction; retried only on transient errors)."""

from __future__ import annotations

from typing import Any

import polars as pl
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from poolcast.backtest import OriginForecast
from poolcast.champion import ChampionForecaster
from poolcast.config import PipelineConfig
from poolcast.errors import PoolcastError
from poolcast.inventory import InventoryPolicy, inventory_plan, read_lead_times, sku_attributes
from poolcast.publish import PublishResult, publish_run
from poolcast.reporting import quality_table
from poolcast.validation import ValidationResult
from tasks._retry import retry_if_transient

__all__ = ["inventory", "publication_tables", "publish"]


@task(cache_policy=NO_CACHE)
def inventory(
    forecaster: ChampionForecaster,
    distribution: OriginForecast,
    validated: ValidationResult,
    config: PipelineConfig,
) -> pl.DataFrame:
    """The inventory plan per SKU from the predictive samples of the published forecast
    (``distribution``, from :func:`tasks.forecast.forecast`; ``[inventory]``)."""
    inv = config.inventory
    policy = InventoryPolicy(
        lead_time_months=inv.lead_time_months,
        review_period_months=inv.review_period_months,
        service_level=inv.service_level,
        service_level_by_category=dict(inv.service_level_by_category),
    )
    if distribution.samples is None:
        raise PoolcastError(
            f"champion {forecaster.name} gives no predictive samples; the inventory plan needs them"
        )
    lead_times = read_lead_times(inv.lead_times_path) if inv.lead_times_path else None
    plan = inventory_plan(
        distribution.frame.select("sku", "origin", "horizon", "month"),
        distribution.samples,
        policy=policy,
        skus=sku_attributes(validated.panel, lead_times),
    )
    get_run_logger().info(
        "inventory plan: %d SKUs, order-up-to total %.0f, orders %s",
        plan.height,
        plan.get_column("order_up_to").sum(),
        f"{plan.get_column('order_quantity').sum():.0f}"
        if plan.get_column("order_quantity").null_count() < plan.height
        else "n/a (no on_hand)",
    )
    return plan


def publication_tables(
    validated: ValidationResult,
    forecast: pl.DataFrame,
    leaderboard: pl.DataFrame,
    plan: pl.DataFrame,
) -> dict[str, pl.DataFrame]:
    """The month's tables: forecasts, inventory plan, leaderboard, data quality, quarantine
    (the rows with their rules) and the quarantine summary (rows per rule)."""
    quarantine = validated.quarantine.rename(
        {
            c: n
            for c, n in (("row", "source_row"), ("column", "column_name"))
            if c in validated.quarantine.columns
        }
    )
    quarantine = quarantine.with_columns(
        [pl.col(c).cast(pl.String) for c in ("month", "value") if c in quarantine.columns]
    )
    summary = (
        quarantine.group_by("rule").agg(pl.len().cast(pl.Int64).alias("n_rows")).sort("rule")
        if "rule" in quarantine.columns
        else pl.DataFrame(schema={"rule": pl.String, "n_rows": pl.Int64})
    )
    return {
        "forecasts": forecast,
        "inventory_plan": plan,
        "leaderboard": leaderboard,
        "data_quality": quality_table(validated.counts),
        "quarantine": quarantine,
        "quarantine_summary": summary,
        # compact sales history for the dashboard's fan charts (poolcast/dashboard/data.py)
        "history": validated.panel.select("sku", "month", "sales"),
    }


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
    plan: pl.DataFrame,
    registration: Any,
) -> PublishResult:
    """The month's tables, keyed by (run_id, as_of, champion, registry_version), in one
    transaction that replaces this as-of's earlier publication."""
    result = publish_run(
        config.outputs_db,
        run_id=run_id,
        as_of=validated.counts.last_month,
        champion=champion,
        registry_version=str(registration.version),
        tables=publication_tables(validated, forecast, leaderboard, plan),
    )
    get_run_logger().info("published %s to %s", result.rows, result.path)
    return result
