"""Compete: one task per candidate on the rolling-origin backtest, then select the champion."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import polars as pl
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from poolcast.backtest import (
    OriginSplit,
    backtest_candidate,
    build_leaderboard,
    select_champion,
)
from poolcast.config import PipelineConfig
from poolcast.models import default_candidates
from poolcast.reporting import CandidateFailure, CandidateRun, describe_candidate, split_outcomes
from poolcast.validation import ValidationResult

__all__ = ["candidate_lineup", "compete", "leaderboard", "select"]


@task(cache_policy=NO_CACHE)
def candidate_lineup(
    config: PipelineConfig, validated: ValidationResult
) -> dict[str, Callable[[], Any]]:
    """Factories of the candidates to run: the default line-up for what the data has (customer
    counts; a promo flag that is ever 1; the number of SKUs: above ``AGQ_MAX_SKUS`` the AGQ
    GLMM leaves the default line-up), or the names in ``[backtest] candidates``."""
    panel = validated.panel
    has_promo = bool(panel.get_column("promo").max() or 0)
    return default_candidates(
        has_customers=validated.has_customers,
        has_promo=has_promo,
        names=config.backtest.candidates,
        n_skus=panel.get_column("sku").n_unique(),
    )


@task(cache_policy=NO_CACHE)
def compete(
    name: str, factory: Callable[[], Any], splits: Sequence[OriginSplit], config: PipelineConfig
) -> CandidateRun | CandidateFailure:
    """Backtest one candidate and describe its last-origin fit; an exception becomes a recorded
    failure (never retried)."""
    b = config.backtest
    fitted: list[Any] = []  # the latest instance only; earlier ones leave their reason
    reasons: list[str] = []

    def tracked() -> Any:  # records each fitted instance's ineligibility (Bayesian diagnostics)
        if fitted and (reason := getattr(fitted.pop(), "ineligible_reason_", None)):
            reasons.append(reason)
        fitted.append(factory())
        return fitted[-1]

    try:
        result = backtest_candidate(
            name, tracked, splits, quantiles=b.quantiles, n_samples=b.n_samples, seed=b.seed
        )
        if fitted and (reason := getattr(fitted[-1], "ineligible_reason_", None)):
            reasons.append(reason)
        # the last origin's fit is described (as describe_candidate would refit it): no
        # second fit, which for the Bayesian candidate is a second MCMC run
        report = fitted[-1].describe() if fitted else describe_candidate(factory, splits[-1])
    except Exception as exc:  # the one broad catch: a failing candidate must not fail the month
        get_run_logger().warning("candidate %s failed: %s: %s", name, type(exc).__name__, exc)
        return CandidateFailure(name, type(exc).__name__, str(exc))
    get_run_logger().info(
        "candidate %s: %s", name, {k: round(v, 4) for k, v in result.metrics.items()}
    )
    if reasons:
        get_run_logger().warning("candidate %s is ineligible: %s", name, reasons[-1])
        return CandidateRun(result, report, ineligible_reason=" | ".join(dict.fromkeys(reasons)))
    return CandidateRun(result, report)


@task(cache_policy=NO_CACHE)
def leaderboard(outcomes: Sequence[Any], config: PipelineConfig) -> pl.DataFrame:
    """One row per candidate, failures included, best first."""
    results, failures = split_outcomes(outcomes)
    ineligible = {
        o.name: o.ineligible_reason for o in outcomes if getattr(o, "ineligible_reason", None)
    }
    return build_leaderboard(
        results, failures, sort_by=config.backtest.selection_metric, ineligible=ineligible
    )


@task(cache_policy=NO_CACHE)
def select(board: pl.DataFrame, config: PipelineConfig) -> str:
    """The champion: the smallest selection metric (ties by MASE); raises when all failed."""
    name = select_champion(board, metric=config.backtest.selection_metric)
    get_run_logger().info("champion: %s", name)
    return name
