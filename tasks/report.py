"""Prefect artifacts for the ops dashboards: data-quality and leaderboard tables, a markdown
summary, and a link to the MLflow run."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from poolcast.ops import dashboard_url, ops_section
from poolcast.publish import PublishResult
from poolcast.reporting import (
    RetrainSummary,
    data_quality_rows,
    leaderboard_rows,
    make_summary,
    quality_counts,
    summary_markdown,
    summary_text,
)
from poolcast.tracking import Registration, RetrainRun
from poolcast.validation import ValidationResult

__all__ = ["data_quality_artifact", "leaderboard_artifact", "summarize", "summary_artifacts"]

LEADERBOARD_COLUMNS = (
    "candidate",
    "status",
    "scaled_pinball",
    "mase",
    "crps",
    "coverage_80",
    "coverage_95",
    "wape",
    "bias",
    "fit_seconds",
    "error",
)


@task(cache_policy=NO_CACHE)
def data_quality_artifact(validated: ValidationResult) -> None:
    """Table artifact ``data-quality``: the counts, then quarantined lines per rule."""
    counts = quality_counts(validated.counts, by_rule=False)
    create_table_artifact(
        table=data_quality_rows(counts, validated.quarantine),
        key="data-quality",
        description=f"Input rows accepted and quarantined (gap policy {validated.counts.gap_policy})",
    )


@task(cache_policy=NO_CACHE)
def leaderboard_artifact(board: pl.DataFrame, metric: str) -> None:
    """Table artifact ``leaderboard``: one row per candidate, failed ones with their error."""
    create_table_artifact(
        table=leaderboard_rows(board, columns=LEADERBOARD_COLUMNS),
        key="leaderboard",
        description=f"Backtest leaderboard, best {metric} first",
    )


@task(cache_policy=NO_CACHE)
def summary_artifacts(summary: RetrainSummary) -> str:
    """Markdown ``retrain-summary`` (with the ops section: dashboard and MLflow links, inventory
    totals, largest changes against last month) and link ``mlflow-run`` / ``ops-dashboard``
    artifacts; returns (and prints) the text summary."""
    try:
        ops = ops_section(summary.outputs_db, summary.mlflow_run_id, summary.mlflow_run_url)
    except Exception as exc:  # the month is published: a report problem must not fail it
        get_run_logger().warning("ops section of the summary failed: %s", exc)
        ops = f"## Ops\n\n- dashboard: {dashboard_url()}\n- ops section unavailable: {exc}\n"
    create_markdown_artifact(
        markdown=summary_markdown(summary) + "\n" + ops,
        key="retrain-summary",
        description="Monthly retrain summary",
    )
    create_link_artifact(
        link=summary.mlflow_run_url,
        link_text=f"MLflow run {summary.mlflow_run_id}",
        key="mlflow-run",
        description="The retrain's MLflow parent run",
    )
    create_link_artifact(
        link=dashboard_url(),
        link_text="poolcast ops dashboard",
        key="ops-dashboard",
        description="Read-only dashboard over the published outputs (poolcast dashboard)",
    )
    text = summary_text(summary)
    print(text)
    return text


@task(cache_policy=NO_CACHE)
def summarize(
    validated: ValidationResult,
    board: pl.DataFrame,
    champion: str,
    registration: Registration,
    run: RetrainRun,
    published: PublishResult,
    quarantine_path: Path,
    backtest_coverage: pl.DataFrame | None = None,
) -> RetrainSummary:
    """Collect the run's outcome into the RetrainSummary the flow returns."""
    return make_summary(
        validated.counts,
        board,
        champion=champion,
        registration=registration,
        run=run,
        published=published,
        quarantine_path=quarantine_path,
        backtest_coverage=backtest_coverage,
    )
