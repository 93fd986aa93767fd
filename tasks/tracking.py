"""MLflow tasks: the parent run, its data-quality record, child runs, the champion, the forecast.

These touch the outside (the tracking server), so they retry, but only on transient errors.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
from prefect import get_run_logger, runtime, task
from prefect.cache_policies import NO_CACHE

from poolcast import tracking
from poolcast.champion import ChampionForecaster
from poolcast.config import PipelineConfig, load_config
from poolcast.reporting import quality_counts
from poolcast.tracking import Registration, RetrainRun
from poolcast.validation import ValidationResult
from tasks._retry import retry_if_transient

__all__ = [
    "fail_parent_run",
    "finish",
    "log_candidate",
    "log_data_quality",
    "log_outputs",
    "promote",
    "register",
    "start_run",
]

FLOW_RUN_TAG = "prefect.flow_run_id"
_RETRY = {"retries": 2, "retry_delay_seconds": 5, "retry_condition_fn": retry_if_transient}


@task(cache_policy=NO_CACHE, **_RETRY)
def start_run(config: PipelineConfig, run_name: str) -> RetrainRun:
    """Start the retrain's MLflow parent run."""
    run = tracking.start_retrain(
        config, run_name=run_name, tags={FLOW_RUN_TAG: runtime.flow_run.get_id()}
    )
    get_run_logger().info("MLflow parent run %s: %s", run.run_id, run.url)
    return run


@task(cache_policy=NO_CACHE, **_RETRY)
def log_data_quality(run: RetrainRun, validated: ValidationResult, quarantine_path: Path) -> None:
    """Data-quality counts as parent-run metrics, the quarantine file, and the input dataset."""
    counts = quality_counts(validated.counts)
    tracking.log_data_quality(run.tracking_uri, run.run_id, counts, quarantine_path=quarantine_path)
    tracking.log_input_dataset(
        run.tracking_uri,
        run.run_id,
        validated.panel,
        source=validated.source,
        name="validated_panel",
    )


@task(cache_policy=NO_CACHE, **_RETRY)
def log_candidate(run: RetrainRun, outcome: Any, history: pl.DataFrame) -> str:
    """One child run per candidate (metrics, tables, plots; or its failure)."""
    return tracking.log_candidate_outcome(run, outcome, history)


@task(cache_policy=NO_CACHE)
def register(
    run: RetrainRun,
    forecaster: ChampionForecaster,
    example: pl.DataFrame,
    *,
    config: PipelineConfig,
    score: float,
    fingerprint: str,
    rescore: Callable[[str], float | None],
) -> Registration:
    """Log the champion as a pyfunc model and register it; decide the alias rule but leave the
    alias alone until the publish commits (see :func:`promote`). Not retried: a retry could
    register a second version."""
    reg = tracking.register_champion(
        run,
        forecaster,
        registered_model_name=config.tracking.registered_model_name,
        example=example,
        score=score,
        fingerprint=fingerprint,
        metric=config.backtest.selection_metric,
        rescore=rescore,
    )
    get_run_logger().info(
        "champion %s registered as v%s; alias pending publish (%s: %s)",
        forecaster.name,
        reg.version,
        "would move" if reg.decision.move else "stays",
        reg.decision.reason,
    )
    return reg


@task(cache_policy=NO_CACHE)
def promote(
    run: RetrainRun, registration: Registration, published: Any, *, backfill: bool = False
) -> Registration:
    """After the publish committed: move the alias per the rule, unless this run is a backfill
    of an older as-of (then only with ``backfill``). Not retried (the flow fails instead)."""
    reg = tracking.promote_champion(
        run,
        registration,
        as_of=published.as_of,
        latest_published_as_of=published.previous_latest_as_of,
        backfill=backfill,
    )
    get_run_logger().info(
        "alias %s: %s", "moved" if reg.decision.move else "stayed", reg.decision.reason
    )
    return reg


@task(cache_policy=NO_CACHE, **_RETRY)
def log_outputs(run: RetrainRun, forecast: pl.DataFrame, board: pl.DataFrame, metric: str) -> None:
    """The forecast distribution, the leaderboard table and its plot on the parent run."""
    tracking.log_run_outputs(run, forecast, board, metric=metric)


@task(cache_policy=NO_CACHE, **_RETRY)
def finish(run: RetrainRun) -> None:
    """Mark the parent run FINISHED."""
    tracking.finish_run(run.tracking_uri, run.run_id)


def fail_parent_run(flow: Any, flow_run: Any, state: Any) -> None:
    """Flow ``on_failure`` / ``on_crashed`` hook: mark the failed flow run's MLflow parent run FAILED."""
    p = flow_run.parameters
    config = load_config(
        p.get("config_path"),
        source=p.get("source"),
        mapping=p.get("mapping"),
        as_of=p.get("as_of"),
        work_dir=p.get("work_dir"),
    )
    tracking.fail_running_runs(
        config.mlflow_tracking_uri,
        config.tracking.experiment_name,
        tag=FLOW_RUN_TAG,
        value=str(flow_run.id),
    )
