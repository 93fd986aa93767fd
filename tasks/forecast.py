"""Refit the champion on all history and forecast the next horizons (fits are not retried)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import polars as pl
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from poolcast.backtest import OriginForecast, OriginSplit
from poolcast.champion import (
    ChampionForecaster,
    backtest_fingerprint,
    fit_champion,
    leaderboard_score,
    make_rescorer,
)
from poolcast.config import PipelineConfig

__all__ = ["backtest_options", "fingerprint", "forecast", "refit", "rescorer", "score_of"]


@task(cache_policy=NO_CACHE)
def refit(
    name: str,
    factories: Mapping[str, Callable[[], Any]],
    panel: pl.DataFrame,
    config: PipelineConfig,
    outcomes: Sequence[Any] = (),
) -> ChampionForecaster:
    """The champion's candidate class fitted on the whole validated panel, as at a backtest
    origin; its backtest PITs (from ``outcomes``) are the recalibration set."""
    b = config.backtest
    calibration_history = None
    for outcome in outcomes:
        result = getattr(outcome, "result", None)
        if result is not None and result.name == name:
            if result.calibration_history is not None:
                calibration_history = result.calibration_history
            elif "month" in result.predictions.columns:
                calibration_history = result.predictions.select("month", "pit", pl.col("^res_.*$"))
    return fit_champion(
        name,
        factories[name],
        panel,
        config.features,
        quantiles=b.quantiles,
        n_samples=b.n_samples,
        seed=b.seed,
        publish_quantiles=b.publish_quantiles,
        inactive_months=b.inactive_months,
        calibration=b.calibration,
        calibration_history=calibration_history,
    )


@task(cache_policy=NO_CACHE)
def forecast(
    forecaster: ChampionForecaster, panel: pl.DataFrame, plan: Any | None = None
) -> OriginForecast:
    """Forecast distribution for the next horizons from the end of the panel (the as-of),
    through the backtest's path (``poolcast.backtest.forecast_at_origin``); the plan
    columns at the target months come from the validated ``--plan`` (a PlanResult). The
    published table is its ``frame``; the inventory plan uses its ``samples`` (one forecast,
    computed once)."""
    distribution = forecaster.forecast_distribution(
        panel, future=plan.frame if plan is not None else None
    )
    frame = distribution.frame
    inactive = frame.filter(pl.col("reason").is_not_null())
    get_run_logger().info(
        "forecast: %d rows (%d SKUs; %d SKUs inactive, forecast 0)",
        frame.height,
        frame.get_column("sku").n_unique(),
        inactive.get_column("sku").n_unique(),
    )
    return distribution


@task(cache_policy=NO_CACHE)
def fingerprint(panel: pl.DataFrame, splits: Sequence[OriginSplit], config: PipelineConfig) -> str:
    """Fingerprint of this run's backtest (data + origins + horizons + metric + quantiles)."""
    return backtest_fingerprint(
        panel,
        origins=[s.origin for s in splits],
        horizons=config.features.horizons,
        metric=config.backtest.selection_metric,
        quantiles=config.backtest.quantiles,
    )


@task(cache_policy=NO_CACHE)
def score_of(board: pl.DataFrame, name: str, config: PipelineConfig) -> float:
    """The champion's backtest score on the leaderboard."""
    return leaderboard_score(board, name, metric=config.backtest.selection_metric)


@task(cache_policy=NO_CACHE)
def rescorer(
    board: pl.DataFrame,
    factories: Mapping[str, Callable[[], Any]],
    splits: Sequence[OriginSplit],
    config: PipelineConfig,
) -> Callable[[str], float | None]:
    """How to score the current registry champion on this run's backtest (see poolcast.champion)."""
    b = config.backtest
    return make_rescorer(
        board,
        factories,
        splits,
        metric=b.selection_metric,
        quantiles=b.quantiles,
        n_samples=b.n_samples,
        seed=b.seed,
        backtest_options=backtest_options(config),
    )


def backtest_options(config: PipelineConfig) -> dict[str, Any]:
    """The keyword arguments of ``backtest_candidate`` that come from ``[backtest]``."""
    b = config.backtest
    return {
        "publish_quantiles": b.publish_quantiles,
        "inactive_months": b.inactive_months,
        "calibration": b.calibration,
    }
