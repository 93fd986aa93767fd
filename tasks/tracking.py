"""MLflow tasks: the parent run, its data-quality record, child runs, the champion, the forecast.

These touch the outside (the tracking server), so they retry, but only on transient errors.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
from prefect import get_run_logger, runtime, task
from prefect.cache_policies import NO_CACHE

from poolcast import secrets, tracking
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
    """Start the retrain's MLflow parent run (first marking FAILED any run a killed process left
    RUNNING, see ``poolcast.tracking.fail_stale_runs``)."""
    stale = tracking.fail_stale_runs(config.mlflow_tracking_uri, config.tracking.experiment_name)
    if stale:
        get_run_logger().warning(
            "marked FAILED %d run(s) left RUNNING by a killed process: %s",
            len(stale),
            ", ".join(stale),
        )
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
    board: pl.DataFrame | None = None,
) -> Registration:
    """Log the champion as a pyfunc model and register it; decide the alias rule but leave the
    alias alone until the publish commits (see :func:`promote`). Not retried: a retry could
    register a second version. The champion's leaderboard metrics (`board`) are logged on
    the model."""
    reg = tracking.register_champion(
        run,
        forecaster,
        registered_model_name=config.tracking.registered_model_name,
        example=example,
        score=score,
        fingerprint=fingerprint,
        metric=config.backtest.selection_metric,
        rescore=rescore,
        metrics=_champion_metrics(board, forecaster.name),
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


def _champion_metrics(board: pl.DataFrame | None, name: str) -> dict[str, float]:
    """The numeric backtest metrics of `name`'s leaderboard row (empty without a board)."""
    if board is None or "candidate" not in board.columns:
        return {}
    row = board.filter(pl.col("candidate") == name)
    if row.height == 0:
        return {}
    numeric = [c for c, t in row.schema.items() if t.is_numeric()]
    return {c: v for c, v in row.select(numeric).row(0, named=True).items() if v is not None}


@task(cache_policy=NO_CACHE, **_RETRY)
def log_outputs(run: RetrainRun, forecast: pl.DataFrame, board: pl.DataFrame, metric: str) -> None:
    """The forecast distribution, the leaderboard table and its plot on the parent run."""
    tracking.log_run_outputs(run, forecast, board, metric=metric)


@task(cache_policy=NO_CACHE, **_RETRY)
def finish(run: RetrainRun) -> None:
    """Mark the parent run FINISHED."""
    tracking.finish_run(run.tracking_uri, run.run_id)


#: Seconds the failure hooks may spend on MLflow in total (``POOLCAST_HOOK_TIMEOUT``).
HOOK_TIMEOUT = float(os.environ.get("POOLCAST_HOOK_TIMEOUT", "10"))


def fail_parent_run(flow: Any, flow_run: Any, state: Any) -> None:
    """Flow ``on_failure`` / ``on_crashed`` hook: mark the failed flow run's MLflow parent run FAILED.

    It never hangs and never raises: MLflow's HTTP client gets a short request timeout and no
    retries, the whole call runs in a daemon thread bounded by ``HOOK_TIMEOUT`` seconds, and
    any failure is logged (the next run marks a run left RUNNING as FAILED).
    """
    logger = logging.getLogger("poolcast.hooks")
    saved = {key: os.environ.get(key) for key in _HOOK_MLFLOW_ENV}
    os.environ.update(_HOOK_MLFLOW_ENV)  # MLflow reads them at each request

    def mark() -> list[str]:
        p = flow_run.parameters
        config = load_config(
            p.get("config_path"),
            source=secrets.mask(str(p.get("source") or "")),
            mapping=p.get("mapping"),
            as_of=p.get("as_of"),
            work_dir=p.get("work_dir"),
        )
        return tracking.fail_running_runs(
            config.mlflow_tracking_uri,
            config.tracking.experiment_name,
            tag=FLOW_RUN_TAG,
            value=str(flow_run.id),
        )

    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["runs"] = mark()
        except BaseException as exc:  # logged below; a hook must not raise
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name="poolcast-fail-hook")
    thread.start()
    thread.join(HOOK_TIMEOUT)
    if not thread.is_alive():
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if thread.is_alive():
        logger.warning(
            "could not mark the MLflow parent run FAILED within %g s (tracking store "
            "unresponsive); the next run marks it FAILED",
            HOOK_TIMEOUT,
        )
    elif "error" in box:
        exc = box["error"]
        logger.warning(
            "could not mark the MLflow parent run FAILED: %s: %s",
            type(exc).__name__,
            secrets.mask(str(exc).strip().splitlines()[0] if str(exc).strip() else ""),
        )
    elif box.get("runs"):
        logger.info("marked MLflow run(s) %s FAILED", ", ".join(box["runs"]))


_HOOK_MLFLOW_ENV = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "3",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
}
