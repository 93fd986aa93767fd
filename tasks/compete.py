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
from poolcast.features import panel_plan_columns
from poolcast.models import default_candidates
from poolcast.models.classical import is_intermittent
from poolcast.plan import PlanResult, ineligibility_reason
from poolcast.reporting import CandidateFailure, CandidateRun, describe_candidate, split_outcomes
from poolcast.validation import ValidationResult

__all__ = ["candidate_lineup", "compete", "eligibility", "leaderboard", "select"]


@task(cache_policy=NO_CACHE)
def candidate_lineup(
    config: PipelineConfig, validated: ValidationResult
) -> dict[str, Callable[[], Any]]:
    """Factories of the candidates to run: the default line-up for what the data has (customer
    counts; a promo flag that is ever 1; the number of SKUs: above ``AGQ_MAX_SKUS`` the AGQ
    GLMM leaves the default line-up), or the names in ``[backtest] candidates``."""
    panel = validated.panel
    has_promo = bool(panel.get_column("promo").max() or 0)
    plan_columns = panel_plan_columns(panel)
    kwargs: dict[str, Any] = (
        {"plan_columns": plan_columns, "plan_transforms": dict(validated.plan_transforms)}
        if len(plan_columns) > 1
        else {}
    )
    if "sales" in panel.columns:  # Croston / TSB / ADIDA only for intermittent demand
        kwargs["intermittent"] = is_intermittent(panel)
    return default_candidates(
        has_customers=validated.has_customers,
        has_promo=has_promo,
        names=config.backtest.candidates,
        params=config.backtest.params,
        n_skus=panel.get_column("sku").n_unique(),
        **kwargs,
    )


@task(cache_policy=NO_CACHE)
def eligibility(
    factories: dict[str, Callable[[], Any]],
    panel: pl.DataFrame,
    plan: PlanResult | None,
    config: PipelineConfig,
) -> tuple[dict[str, Callable[[], Any]], dict[str, str]]:
    """Split the line-up into the eligible candidates and the ineligible ones with the reason:
    a candidate that needs a plan column the run lacks for the forecast months (no ``--plan``,
    a column or a SKU x month missing from it) does not compete this month."""
    available = panel_plan_columns(panel)
    # promo counts as a plan column only when the data has a promotion at all
    if not bool(panel.get_column("promo").max() or 0):
        available = tuple(c for c in available if c != "promo")
    as_of = config.as_of or panel.get_column("month").max()
    eligible: dict[str, Callable[[], Any]] = {}
    ineligible: dict[str, str] = {}
    for name, factory in factories.items():
        required = getattr(factory(), "required_plan_columns", ())
        reason = ineligibility_reason(
            required, plan, available=available, as_of=as_of, horizons=config.features.horizons
        )
        if reason is None:
            eligible[name] = factory
        else:
            ineligible[name] = reason
            get_run_logger().warning("candidate %s is not eligible: %s", name, reason)
    return eligible, ineligible


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
            name,
            tracked,
            splits,
            quantiles=b.quantiles,
            n_samples=b.n_samples,
            seed=b.seed,
            publish_quantiles=b.publish_quantiles,
            inactive_months=b.inactive_months,
            calibration=b.calibration,
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
    for skipped in result.calibration_skipped:
        get_run_logger().warning("candidate %s: calibration origin skipped: %s", name, skipped)
    if reasons:
        get_run_logger().warning("candidate %s is ineligible: %s", name, reasons[-1])
        return CandidateRun(result, report, ineligible_reason=" | ".join(dict.fromkeys(reasons)))
    return CandidateRun(result, report)


@task(cache_policy=NO_CACHE)
def leaderboard(
    outcomes: Sequence[Any], config: PipelineConfig, ineligible: dict[str, str] | None = None
) -> pl.DataFrame:
    """One row per candidate, failures and ineligible candidates included, best first."""
    results, failures = split_outcomes(outcomes)
    ineligible = dict(ineligible or {})  # candidates that did not run (plan columns)
    ineligible |= {  # candidates that ran but may not win (e.g. Bayesian diagnostics)
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
