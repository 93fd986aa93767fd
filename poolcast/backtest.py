"""Rolling-origin backtest of candidate models, leaderboard and champion selection.

For each of the last K origins that leave a full horizon, the features are rebuilt from
``panel.filter(month <= origin)`` alone (spec, knots, training rows and the MASE scale);
only the target months' truth and their *planned* covariates come from after the origin,
the truth for scoring only. A fresh candidate is fitted per origin and scored on horizons
1..H.

One path: :func:`make_origin_split` (features) and :func:`forecast_at_origin` (inactive
rule, recalibration, draws seeded by the origin, non-negative monotone quantiles) are what
the published forecast at the as-of runs too (:mod:`poolcast.champion`), so the champion
publishes exactly the kind of forecast its backtest scored.

``backtest_candidate`` raises whatever the candidate raises (and raises
:class:`~poolcast.errors.PoolcastError` on non-finite or misaligned predictions); the
pipeline's compete task is the one place that catches a failure and records it, so the
month goes on without that candidate (:func:`build_leaderboard` takes the failures).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from poolcast.config import FeatureConfig
from poolcast.errors import DataContractError, InvalidParameterError, PoolcastError
from poolcast.features import (
    FeatureSpec,
    build_origin_frames,
    make_feature_spec,
)
from poolcast.metrics import (
    crps_from_quantiles,
    crps_from_samples,
    interval_levels,
    pinball_loss,
    seasonal_naive_scale,
)
from poolcast.models.forecast import quantile_column

if TYPE_CHECKING:
    from poolcast.models.forecast import Forecast

__all__ = [
    "INTERVALS",
    "CandidateBacktest",
    "OriginForecast",
    "OriginSplit",
    "active_training_rows",
    "all_levels",
    "backtest_candidate",
    "build_horizon_table",
    "build_leaderboard",
    "default_n_origins",
    "forecast_at_origin",
    "make_origin_split",
    "months_since_sale",
    "origin_rng",
    "pit_coverage",
    "pit_recalibrate",
    "prepare_splits",
    "randomized_pit",
    "residual_column",
    "rolling_origins",
    "score_predictions",
    "select_champion",
    "stated_coverage",
]

INTERVALS: tuple[float, ...] = (0.8, 0.95)
"""Nominal coverages of the central prediction intervals scored (``coverage_80``, ``coverage_95``)."""

_ROW_KEYS = ("sku", "origin", "horizon")

MAX_ORIGINS = 12
"""Most backtest origins ([backtest] n_origins)."""

MIN_DEFAULT_ORIGINS = 6
"""Fewest origins the default chooses (when the panel is long enough)."""

MIN_HISTORY_MONTHS = 12
"""The default's earliest origin gets ``MIN_HISTORY_MONTHS + H`` months of history when the
panel allows it (a year of training targets for every horizon)."""


@dataclass(frozen=True)
class OriginSplit:
    """Training and test rows of one forecast origin.

    Fields
    ------
    origin : date
        The last month the features and the model may see.
    train : pl.DataFrame
        :func:`~poolcast.features.build_training_frame` of the history up to the origin.
    test : pl.DataFrame
        :func:`~poolcast.features.build_forecast_frame` rows from the origin (promo at the
        target month from the plan): one row per SKU present at the origin and horizon;
        ``sales`` holds the true target, NULL when unknown (for scoring only: the candidate
        is given the rows with ``sales`` set to NULL).
    spec : FeatureSpec
        The feature spec learned from the history up to the origin.
    scale : pl.DataFrame
        ``sku, mase_scale, scale_lag, n_observed`` from
        :func:`~poolcast.metrics.seasonal_naive_scale` on the history up to the origin.
    history : pl.DataFrame
        The validated panel up to the origin, for series candidates
        (``fit(train, history=...)``).
    activity : pl.DataFrame or None
        ``sku, months_since_sale`` at the origin (:func:`months_since_sale`), for the
        inactive rule; None: every SKU is active.
    scored : bool
        False for a *calibration origin* (:func:`prepare_splits` ``calibration_origins``):
        forecast like any other, but only so that the scored origins after it have earlier
        errors to recalibrate on; never in the metrics, the predictions or the coverage.
    """

    origin: date
    train: pl.DataFrame
    test: pl.DataFrame
    spec: FeatureSpec
    scale: pl.DataFrame
    history: pl.DataFrame
    activity: pl.DataFrame | None = None
    scored: bool = True


CALIBRATION_ORIGIN_ERRORS: tuple[type[BaseException], ...] = (
    PoolcastError,
    ArithmeticError,
    np.linalg.LinAlgError,
    ValueError,
)
"""Errors of a fit or forecast at a calibration origin that skip the origin (recorded in
:attr:`CandidateBacktest.calibration_skipped`) instead of failing the candidate."""


@dataclass(frozen=True)
class CandidateBacktest:
    """One candidate's backtest over all origins.

    Fields
    ------
    name : str
        Candidate name.
    predictions : pl.DataFrame
        One row per scored (sku, origin, horizon) (active SKU, known truth):
        ``sku, origin, horizon, month, y, mean``, one ``q_<level>`` column per level
        predicted (service and published quantiles plus the interval bounds 0.025, 0.1,
        0.9, 0.975), ``crps``, ``pit`` (randomised PIT of the raw forecast, NULL without
        draws) and ``mase_scale``.
    metrics : dict of str to float
        Overall metrics (all origins and horizons), see :func:`score_predictions`.
    horizon_metrics : pl.DataFrame
        ``horizon`` plus the metric columns, one row per horizon.
    per_sku_metrics : pl.DataFrame
        ``sku`` plus the metric columns (over all origins and horizons).
    fit_seconds : float
        Wall time spent in ``fit`` over all origins.
    predict_seconds : float
        Wall time spent in ``predict_distribution`` over all origins.
    quantiles : tuple of float
        The service quantiles scored by the pinball losses.
    coverage : pl.DataFrame or None
        Per origin: ``origin, skus`` (present at the origin), ``skus_scored,
        rows_scored``, ``rows_unknown_target`` (active rows whose truth is unknown, not
        scored), ``skus_inactive, rows_inactive`` (forecast 0, reported apart) and
        ``inactive_months``.
    inactive : pl.DataFrame or None
        The inactive SKUs' rows (same columns as ``predictions`` plus ``reason``).
    calibration_history : pl.DataFrame or None
        ``month, pit`` and the ``res_<level>`` residuals of every forecast row with known
        truth, calibration origins included: the recalibration set of the published
        forecast (all its targets are at or before the as-of).
    calibration_skipped : tuple of str
        ``"<origin>: <error>"`` for each calibration origin whose fit or forecast failed
        (:data:`CALIBRATION_ORIGIN_ERRORS`): its rows are missing from the recalibration set.
    """

    name: str
    predictions: pl.DataFrame
    metrics: dict[str, float]
    horizon_metrics: pl.DataFrame
    per_sku_metrics: pl.DataFrame
    fit_seconds: float
    predict_seconds: float
    quantiles: tuple[float, ...]
    coverage: pl.DataFrame | None = None
    inactive: pl.DataFrame | None = None
    calibration_history: pl.DataFrame | None = None
    calibration_skipped: tuple[str, ...] = ()


# --------------------------------------------------------------------------- splits


def _month_index(d: date) -> int:
    return d.year * 12 + d.month - 1


def _from_index(i: int) -> date:
    return date(i // 12, i % 12 + 1, 1)


def rolling_origins(panel: pl.DataFrame, *, n_origins: int, horizons: int) -> list[date]:
    """The last ``n_origins`` months that still leave ``horizons`` months of truth.

    Parameters
    ----------
    panel : pl.DataFrame
        Validated panel (needs ``month``).
    n_origins : int
        K >= 1.
    horizons : int
        H >= 1.

    Returns
    -------
    list of date
        Ascending origins :math:`L-H-K+1, \\dots, L-H` (months), :math:`L` the panel's last
        month.

    Raises
    ------
    InvalidParameterError
        When the panel spans fewer than :math:`2H + K` months: the earliest origin must have
        at least H months before it so every horizon has training rows.
    """
    for arg, value in (("n_origins", n_origins), ("horizons", horizons)):
        if not isinstance(value, int) or value < 1:
            raise InvalidParameterError(f"{arg}={value!r}: must be an integer >= 1")
    if panel.height == 0:
        raise DataContractError("panel is empty: no origins to backtest")
    first = _month_index(panel.get_column("month").min())
    last = _month_index(panel.get_column("month").max())
    span = last - first + 1
    if span < 2 * horizons + n_origins:
        raise InvalidParameterError(
            f"panel spans {span} months ({_from_index(first)} to {_from_index(last)}); a backtest "
            f"with n_origins={n_origins} and horizons={horizons} needs at least "
            f"{2 * horizons + n_origins}: lower n_origins or horizons, or supply more history"
        )
    return [_from_index(last - horizons - k) for k in range(n_origins - 1, -1, -1)]


def default_n_origins(horizons: int) -> int:
    """Default number of backtest origins for horizons 1..H.

    The next forecast months after the last month :math:`L` are :math:`L+1, \\dots, L+H`; one
    year earlier they fell in :math:`L-11, \\dots, L-12+H`. The backtest's origins
    :math:`L-H-K+1, \\dots, L-H` score target months :math:`L-H-K+2, \\dots, L`, which
    include :math:`L-11` (and so all of those seasonally matched months) when
    :math:`K \\ge 13 - H`. The default is :math:`K = \\min(12, \\max(6, 13 - H))`: 10 for
    H = 3, never fewer than 6 nor more than 12. :func:`prepare_splits` lowers it when the
    panel is too short: to the K whose earliest origin still has
    :data:`MIN_HISTORY_MONTHS` + H months of history, a year of training targets for every
    horizon (a trend and Fourier seasonality fitted on less extrapolate wildly, and the
    seasonal lag is then never observed), else to what :func:`rolling_origins` accepts.
    """
    return min(MAX_ORIGINS, max(MIN_DEFAULT_ORIGINS, 13 - int(horizons)))


def months_since_sale(history: pl.DataFrame, origin: date) -> pl.DataFrame:
    """``sku, months_since_sale`` at ``origin`` for every SKU with a month at or before it.

    :math:`m_i = \\text{origin} - \\text{last month with sales} > 0`, in months (0 when it sold
    at the origin); a SKU that never sold up to the origin gets
    :math:`\\text{origin} - \\text{first month} + 1` (the months it has been listed without a
    sale). Months with unknown sales (NULL, gap policy "missing") count as months without a
    sale. A SKU is inactive under rule N when :math:`m_i \\ge N`.
    """
    idx = origin.year * 12 + origin.month - 1
    month_idx = pl.col("month").dt.year().cast(pl.Int32) * 12 + pl.col("month").dt.month() - 1
    sold = pl.col("sales").fill_null(0) > 0
    return (
        history.filter(pl.col("month") <= origin)
        .group_by("sku")
        .agg(
            month_idx.filter(sold).max().alias("_last_sale"),
            month_idx.min().alias("_first"),
        )
        .select(
            pl.col("sku"),
            pl.when(pl.col("_last_sale").is_not_null())
            .then(idx - pl.col("_last_sale"))
            .otherwise(idx - pl.col("_first") + 1)
            .cast(pl.Int32)
            .alias("months_since_sale"),
        )
        .sort("sku")
    )


def active_training_rows(split: OriginSplit, inactive_months: int) -> pl.DataFrame:
    """``split.train`` without the rows whose SKU was inactive at the row's own origin.

    A row (sku, origin o, h) is dropped when the SKU had no sale in the ``inactive_months``
    months up to o (the rule of :func:`months_since_sale` applied at o): such a SKU is
    forecast 0 by the rule, so the model learns only from SKU-origins it will forecast
    (long runs of a dead SKU's zeros made the NB2 GLMM's fit degenerate). 0 keeps every row.
    Used by the backtest and the champion refit alike.
    """
    if not inactive_months or inactive_months <= 0 or split.train.height == 0:
        return split.train
    month_idx = pl.col("month").dt.year().cast(pl.Int32) * 12 + pl.col("month").dt.month() - 1
    state = (
        split.history.sort("sku", "month")
        .select(
            "sku",
            pl.col("month").alias("origin"),
            month_idx.alias("_idx"),
            pl.when(pl.col("sales").fill_null(0) > 0)
            .then(month_idx)
            .otherwise(None)
            .forward_fill()
            .over("sku")
            .alias("_last"),
            month_idx.min().over("sku").alias("_first"),
        )
        .select(
            "sku",
            "origin",
            pl.when(pl.col("_last").is_not_null())
            .then(pl.col("_idx") - pl.col("_last"))
            .otherwise(pl.col("_idx") - pl.col("_first") + 1)
            .alias("_since"),
        )
        .filter(pl.col("_since") >= inactive_months)
        .select("sku", "origin")
    )
    return split.train.join(state, on=["sku", "origin"], how="anti", maintain_order="left")


def make_origin_split(
    panel: pl.DataFrame,
    origin: date,
    *,
    feature_config: FeatureConfig | None = None,
    spec: FeatureSpec | None = None,
    plan: pl.DataFrame | None = None,
) -> OriginSplit:
    """Everything needed to fit and forecast at one origin, from data up to it only.

    The one place where both the backtest (:func:`prepare_splits`, per origin) and the
    published forecast (:meth:`poolcast.champion.ChampionForecaster.forecast`, at the as-of)
    turn a panel into feature rows.

    Parameters
    ----------
    panel : pl.DataFrame
        Validated panel, every SKU completed to its end (see :mod:`poolcast.validation`).
        Rows after the origin only give the truth of ``test`` (for scoring) and, when
        ``plan`` is None, the planned promo of the target months.
    origin : date
        First day of the origin month.
    feature_config : FeatureConfig, optional
        Learn a new spec from the history (needed unless ``spec`` is given).
    spec : FeatureSpec, optional
        A frozen spec (the champion's), used instead of learning one.
    plan : pl.DataFrame, optional
        ``sku, month`` and the plan columns for the target months (the known-future
        covariates). None: taken from the panel's rows after the origin (none for a
        published forecast without ``--plan``: the plan columns are then NULL and the
        candidates that need them are ineligible).

    Returns
    -------
    OriginSplit
        ``test`` holds one row per (SKU present at the origin, horizon), with ``sales`` the
        truth when the panel knows it, else NULL.
    """
    history = panel.filter(pl.col("month") <= origin)
    later = panel.filter(pl.col("month") > origin)
    if spec is None:
        if feature_config is None:
            raise InvalidParameterError("make_origin_split needs feature_config or spec")
        spec = make_feature_spec(history, feature_config)
    if plan is None and later.height:
        # the plan columns at the target months: the panel's own values after the origin
        plan = later.select("sku", "month", *(c for c in spec.plan_columns if c in later.columns))
    train, rows = build_origin_frames(history, spec, origin=origin, future=plan)
    truth = later.select("sku", "month", pl.col("sales").cast(pl.Int64).alias("_y"))
    test = (
        rows.join(truth, on=["sku", "month"], how="left", maintain_order="left")
        .with_columns(pl.col("_y").alias("sales"))
        .drop("_y")
        .sort("horizon", "sku")
    )
    return OriginSplit(
        origin=origin,
        train=train,
        test=test,
        spec=spec,
        scale=seasonal_naive_scale(history),
        history=history,
        activity=months_since_sale(history, origin),
    )


def prepare_splits(
    panel: pl.DataFrame,
    *,
    feature_config: FeatureConfig,
    n_origins: int | None = None,
    plan: pl.DataFrame | None = None,
    calibration_origins: int | None = 0,
) -> list[OriginSplit]:
    """Build train and test rows for each rolling origin, from data up to that origin only.

    Parameters
    ----------
    panel : pl.DataFrame
        Validated panel (data contract), every SKU completed to the panel's end.
    feature_config : FeatureConfig
        Its ``horizons`` is H.
    n_origins : int, optional
        K in 1..12; None: :func:`default_n_origins` (lowered to what the panel allows).
    plan : pl.DataFrame, optional
        Known-future covariates for every origin's target months; None: the panel's own
        rows after each origin (see :func:`make_origin_split`).
    calibration_origins : int or None
        C in 0..12 further origins *before* the K scored ones, forecast only for the
        recalibration set (``scored=False``): without them the first scored origins have
        no earlier errors, so their intervals stay uncalibrated while the published
        forecast (calibrated on the whole backtest) always has them. None: H (so the
        first scored origin has earlier errors at every horizon), lowered so that every
        calibration origin has :data:`MIN_HISTORY_MONTHS` + H months of history, as the
        default scored origins do (0 when the scored origins already start there); an
        explicit C only needs the span :func:`rolling_origins` asks for; 0: none.

    Returns
    -------
    list of OriginSplit
        One per origin, ascending (:func:`make_origin_split` at each); the first C are the
        calibration origins.
    """
    horizons = feature_config.horizons
    span = (
        _month_index(panel.get_column("month").max())
        - _month_index(panel.get_column("month").min())
        + 1
        if panel.height
        else 0
    )
    # origins with a year of training targets per horizon (12 + H months of history:
    # seasonality, trend and the seasonal lag identified) the panel allows
    year = span - horizons - (MIN_HISTORY_MONTHS + horizons - 1)
    if n_origins is None:
        n_origins = default_n_origins(horizons)
        if panel.height:
            # as many of those as the default asks when the panel allows it, else the
            # shortest history rolling_origins accepts
            n_origins = max(1, min(n_origins, year if year >= 1 else span - 2 * horizons))
    else:
        _check_origin_count("n_origins", n_origins, 1, "omit it for the seasonal default")
    room = span - 2 * horizons - n_origins  # months left before the first scored origin
    if calibration_origins is None:
        # only origins with a year of training targets per horizon, as the default scored
        # ones: forecasts from a shorter history are worse than any scored or published one
        # (measured on Rossmann cut at 2015-04: calibration origins with 12-14 months of
        # history had scaled residuals at the 0.99 level of 1.2-1.8 against 0.5 later, and
        # widened the NB2 GLMMs' well-covering intervals until their scaled pinball went
        # from 0.345 to 3.9)
        calibration_origins = max(0, min(horizons, room, year - n_origins))
    else:
        _check_origin_count("calibration_origins", calibration_origins, 0, "omit it for H")
        if calibration_origins > max(room, 0) and room >= 0:
            raise InvalidParameterError(
                f"calibration_origins={calibration_origins}: the panel spans {span} months, "
                f"which leaves room for {room} before the {n_origins} scored origins "
                f"(horizons={horizons}); lower calibration_origins or n_origins, or omit it"
            )
    origins = rolling_origins(panel, n_origins=n_origins + calibration_origins, horizons=horizons)
    return [
        replace(
            make_origin_split(panel, origin, feature_config=feature_config, plan=plan),
            scored=k >= calibration_origins,
        )
        for k, origin in enumerate(origins)
    ]


def _check_origin_count(name: str, value: object, low: int, hint: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_ORIGINS:
        raise InvalidParameterError(
            f"{name}={value!r}: must be an integer in {low}..{MAX_ORIGINS} "
            f"([backtest] {name}; {hint})"
        )


# --------------------------------------------------------------------------- one path


def origin_rng(seed: int, origin: date) -> np.random.Generator:
    """The generator of the predictive draws at an origin: ``default_rng([seed, month index])``.

    Keyed by the origin month (not its position among the origins), so the backtest at
    origin T and the published forecast at as-of T draw the same numbers.
    """
    return np.random.default_rng([int(seed), _month_index(origin)])


def all_levels(quantiles: Sequence[float], publish: Sequence[float] = ()) -> tuple[float, ...]:
    """Every level forecast: service quantiles, published ones, and the interval bounds."""
    return _all_levels((*quantiles, *publish))


@dataclass(frozen=True)
class OriginForecast:
    """The forecast of one origin, as published and as scored.

    Fields
    ------
    frame : pl.DataFrame
        ``sku, origin, horizon, month, mean``, ``q_<level>`` per level (non-negative and
        non-decreasing in the level), ``reason`` (NULL for a model forecast,
        ``inactive_<N>_months`` for an inactive SKU's zero forecast); rows in the order of
        ``split.test``.
    samples : ndarray of shape (n, n_samples) or None
        Predictive draws aligned with ``frame`` (zeros for inactive rows), or None when the
        candidate gives closed-form quantiles.
    recalibrated : bool
        Whether a recalibration was applied (:func:`conformal_shifts`, :func:`pit_recalibrate`).
    raw_quantiles : ndarray of shape (n, n_levels)
        The candidate's own quantiles at the nominal levels, before recalibration, clipping
        and sorting (zeros for inactive rows): what the next origins calibrate on.
    """

    frame: pl.DataFrame
    samples: np.ndarray | None
    recalibrated: bool
    raw_quantiles: np.ndarray | None = None


def residual_column(level: float) -> str:
    """Column of the scaled raw residual at a level in a calibration history (``res_0.9``)."""
    return f"res_{float(level):g}"


def calibration_residuals(
    y: np.ndarray, mean: np.ndarray, raw_quantiles: np.ndarray, levels: Sequence[float]
) -> dict[str, np.ndarray]:
    """Scaled residuals :math:`r_{i\tau} = (y_i - \\hat q_{i\tau}) / \\max(\\hat\\mu_i, 1)`."""
    w = np.maximum(np.asarray(mean, dtype=float), 1.0)
    return {
        residual_column(lv): (np.asarray(y, dtype=float) - raw_quantiles[:, j]) / w
        for j, lv in enumerate(levels)
    }


def stated_column(nominal: float) -> str:
    """Column of :func:`stated_coverage` in the predictions (``stated_80``)."""
    return f"stated_{round(nominal * 100)}"


def stated_coverage(lower: np.ndarray, upper: np.ndarray, samples: np.ndarray) -> np.ndarray:
    r"""The forecast's own probability of its interval, per row.

    :math:`\hat P_i(l_i \le Y \le u_i)` from the predictive draws (rows of ``samples``).
    For the raw central interval of a continuous forecast it is the nominal level; for
    counts it is higher, because an interval with integer end points cannot hold exactly the
    nominal probability (a part with :math:`P(y=0) = 0.9` has the 80% interval [0, 0],
    which holds 0.9). A calibrated count forecast's raw interval coverage equals the mean of
    this, not the nominal level.
    """
    s = np.asarray(samples, dtype=float)
    lo = np.asarray(lower, dtype=float)[:, None]
    hi = np.asarray(upper, dtype=float)[:, None]
    return ((s >= lo) & (s <= hi)).mean(axis=1)


def _raw_coverage(history: pl.DataFrame) -> dict[float, float]:
    out = {}
    for nominal in INTERVALS:
        lo, hi = (residual_column(b) for b in interval_levels(nominal))
        if lo in history.columns and hi in history.columns:
            part = history.select(lo, hi).drop_nulls()
            if part.height:
                inside = (part.get_column(lo) >= 0) & (part.get_column(hi) <= 0)
                out[nominal] = float(inside.mean())
    return out


def conformal_shifts(
    levels: Sequence[float],
    calibration_history: pl.DataFrame | None,
    *,
    origin: date,
    mode: str = "auto",
) -> dict[float, float]:
    r"""Per-level shifts of a scaled one-sided split-conformal correction.

    For each level :math:`\tau`, with :math:`r_{j\tau} = (y_j - \hat q_{j\tau})/\max(\hat\mu_j, 1)`
    the scaled residuals of the candidate's *earlier* raw forecasts whose target month is at
    or before ``origin``, :math:`c_\tau` is their empirical :math:`\tau`-quantile and the
    corrected quantile is :math:`\hat q_{i\tau} + c_\tau \max(\hat\mu_i, 1)`, so that
    :math:`P(y \le \hat q') \approx \tau` on the calibration rows (split conformal,
    Vovk et al. 2005; scaled as in conformalised quantile regression, Romano et al. 2019).
    Unlike a remapping of levels it can widen an interval beyond the candidate's draws (a
    Poisson model on overdispersed data).

    Parameters
    ----------
    levels : sequence of float
    calibration_history : pl.DataFrame or None
        ``month`` and ``res_<level>`` columns (:func:`calibration_residuals`).
    origin : date
    mode : {"auto", "none", "conformal", "pit"}
        "conformal": shift every level whenever there are :data:`CALIBRATION_MIN_ROWS`
        rows; "auto": only the levels hit at the wrong rate on those rows (an upper level
        :math:`\tau` whose share of :math:`y \le \hat q_\tau` is more than
        :data:`CALIBRATION_LEVEL_TOLERANCE` below :math:`\tau`, a lower level more than that
        above), and only widening (:math:`c_\tau \ge 0` upper, :math:`\le 0` lower, the
        median unchanged): measured on Rossmann, the errors of one month are shared by all
        stores (not exchangeable), and a two-sided shift narrowed the well-covering NB2
        intervals to 74% / 88%;
        "none" / "pit": no shift.

    Returns
    -------
    dict of float to float
        ``{level: c_tau}``; empty when no correction applies.
    """
    if mode not in CALIBRATION_MODES:
        raise InvalidParameterError(
            f"calibration={mode!r}: must be one of {list(CALIBRATION_MODES)} ([backtest] calibration)"
        )
    if mode not in ("auto", "conformal") or calibration_history is None:
        return {}
    past = calibration_history.filter(pl.col("month") <= origin)
    if past.height < CALIBRATION_MIN_ROWS:
        return {}
    shifts = {}
    for lv in levels:
        col = residual_column(lv)
        if col not in past.columns:
            return {}
        r = past.get_column(col).drop_nulls().drop_nans().to_numpy()
        if r.size < CALIBRATION_MIN_ROWS:
            return {}
        c = float(np.quantile(r, lv))
        if mode == "auto":  # only a level hit too rarely (upper) / too often (lower), widening
            hit = float((r <= 0).mean())  # share of earlier rows with y <= q_tau
            too_low = lv > 0.5 and hit < lv - CALIBRATION_LEVEL_TOLERANCE
            too_high = lv < 0.5 and hit > lv + CALIBRATION_LEVEL_TOLERANCE
            c = max(c, 0.0) if too_low else min(c, 0.0) if too_high else 0.0
        shifts[float(lv)] = c
    if mode == "auto" and not any(shifts.values()):
        return {}
    return shifts


CALIBRATION_MODES: tuple[str, ...] = ("auto", "none", "conformal", "pit")
"""Recalibration modes: see :func:`conformal_shifts` and :func:`pit_recalibrate`."""

CALIBRATION_MIN_ROWS = 100
"""Fewest earlier PIT values (targets at or before the origin) a recalibration needs."""

CALIBRATION_TOLERANCE = 0.05
"""The calibration aim: an 80% / 95% interval covers within this of nominal."""

CALIBRATION_LEVEL_TOLERANCE = CALIBRATION_TOLERANCE / 2
""""auto" widens a level whose one-sided hit rate is off by more than this: half the
interval's tolerance, one per end. Before 2026-12-01 "auto" widened every level once an
interval's coverage was 5 points low; on Online Retail cut at 2011-08 the champion's 95%
interval then stayed at 0.884 (every origin's earlier rows were just inside 0.90), while this
rule gives 0.924, at the cost of scaled pinball 1.154 -> 1.264 (the 0.95 and 0.99 levels
widened by shifts the later months did not need)."""


def pit_recalibrate(
    levels: Sequence[float],
    calibration_history: pl.DataFrame | None,
    *,
    origin: date,
    mode: str = "auto",
) -> dict[float, float]:
    """Remapped quantile levels from earlier probability integral transforms (PIT).

    Kuleshov, Fenner & Ermon (2018): with :math:`u_j = F_j(y_j)` the (randomised, for counts)
    PIT of earlier forecasts and :math:`\\hat G` their empirical CDF, the recalibrated
    :math:`\\tau`-quantile is :math:`F^{-1}(\\hat G^{-1}(\\tau))`: the level asked of the
    candidate is the :math:`\\tau`-quantile of the earlier PITs (clipped to
    [1e-4, 1 - 1e-4]). Only PITs whose target month is at or before ``origin`` are used, so
    no data after the origin enters. Monotone in :math:`\\tau` by construction.

    Parameters
    ----------
    levels : sequence of float
        Nominal levels.
    calibration_history : pl.DataFrame or None
        Columns ``month`` (target month) and ``pit`` of the candidate's earlier forecasts.
    origin : date
        Only rows with ``month <= origin`` are used.
    mode : {"auto", "none", "conformal", "pit"}
        "pit": remap whenever there are at least :data:`CALIBRATION_MIN_ROWS` PITs; every
        other mode: no remapping ("auto" uses :func:`conformal_shifts`).

    Returns
    -------
    dict of float to float
        ``{nominal: level to ask}``; empty when no remapping applies.
    """
    if mode not in CALIBRATION_MODES:
        raise InvalidParameterError(
            f"calibration={mode!r}: must be one of {list(CALIBRATION_MODES)} ([backtest] calibration)"
        )
    if mode != "pit" or calibration_history is None or calibration_history.height == 0:
        return {}
    pits = (
        calibration_history.filter((pl.col("month") <= origin) & pl.col("pit").is_not_null())
        .get_column("pit")
        .to_numpy()
        .astype(float)
    )
    if pits.size < CALIBRATION_MIN_ROWS:
        return {}
    mapped = np.clip(np.quantile(pits, np.asarray(levels, dtype=float)), 1e-4, 1 - 1e-4)
    return {float(q): float(m) for q, m in zip(levels, mapped, strict=True)}


def pit_coverage(pit: np.ndarray, nominal: float) -> float:
    """Share of randomised PITs in the central interval :math:`[(1-c)/2, (1+c)/2]`.

    For counts an interval with integer end points cannot cover exactly :math:`c` (a SKU
    with :math:`P(y = 0) = 0.9` has the 80% interval [0, 0], which covers 90%); the
    randomised PIT of a calibrated forecast is uniform all the same, so this is the
    coverage of the *distribution*, free of that discreteness. NaN without PITs (no draws).
    """
    pit = np.asarray(pit, dtype=float)
    pit = pit[np.isfinite(pit)]
    if pit.size == 0:
        return math.nan
    lo, hi = (1.0 - nominal) / 2.0, (1.0 + nominal) / 2.0
    return float(((pit >= lo) & (pit <= hi)).mean())


def randomized_pit(y: np.ndarray, samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Randomised PIT of counts from predictive draws.

    :math:`u = \\hat F(y-1) + V\\,(\\hat F(y) - \\hat F(y-1))`, :math:`V \\sim U(0,1)`, with
    :math:`\\hat F` the empirical CDF of the row's draws (Czado, Gneiting & Held 2009); NaN
    where ``y`` is NaN. Uniform on (0, 1) under a calibrated forecast.
    """
    y = np.asarray(y, dtype=float)
    s = np.asarray(samples, dtype=float)
    below = (s < y[:, None]).mean(axis=1)
    at_or_below = (s <= y[:, None]).mean(axis=1)
    u = below + rng.uniform(size=y.shape) * (at_or_below - below)
    return np.where(np.isnan(y), np.nan, u)


def forecast_at_origin(
    model: Any,
    split: OriginSplit,
    *,
    levels: Sequence[float],
    n_samples: int,
    seed: int,
    inactive_months: int = 12,
    calibration: str = "none",
    calibration_history: pl.DataFrame | None = None,
    name: str = "",
) -> OriginForecast:
    """Forecast every SKU of an origin with a fitted candidate: the one forecast path.

    Called per origin by :func:`backtest_candidate` and, at the as-of, by
    :meth:`poolcast.champion.ChampionForecaster.forecast`; same rows (``split.test`` with
    the truth hidden), same inactive rule, same recalibration, same draws
    (:func:`origin_rng`).

    Steps: SKUs with ``months_since_sale >= inactive_months`` (> 0) are forecast exactly 0
    (mean, every quantile, every draw) with reason ``inactive_<N>_months`` and not shown to
    the model; the others get ``model.predict_distribution`` at the levels (remapped by
    :func:`pit_recalibrate` when it applies); quantiles are then clipped at 0 and made
    non-decreasing in the level (a running maximum), so the published table is a valid
    distribution.

    Raises
    ------
    PoolcastError
        When the candidate's forecast is non-finite or does not cover the requested rows.
    """
    levels = tuple(sorted({float(q) for q in levels}))
    origin = split.origin
    rows = split.test.with_columns(sales=pl.lit(None, pl.Int64))
    keys = rows.select(*_ROW_KEYS, "month")
    reason = f"inactive_{int(inactive_months)}_months"
    if inactive_months and inactive_months > 0 and split.activity is not None:
        dead = split.activity.filter(pl.col("months_since_sale") >= inactive_months)
        is_dead = rows.get_column("sku").is_in(dead.get_column("sku").implode()).to_numpy()
    else:
        is_dead = np.zeros(rows.height, dtype=bool)
    active_idx = np.flatnonzero(~is_dead)
    n = rows.height
    mean = np.zeros(n)
    q = np.zeros((n, len(levels)))
    samples: np.ndarray | None = np.zeros((n, int(n_samples)), dtype=np.int64)
    remap = pit_recalibrate(levels, calibration_history, origin=origin, mode=calibration)
    shifts = conformal_shifts(levels, calibration_history, origin=origin, mode=calibration)
    raw = np.zeros((n, len(levels)))
    if active_idx.size:
        active = rows[active_idx]
        asked = tuple(sorted(set(levels) | set(remap.values())))
        forecast = model.predict_distribution(
            active, quantiles=asked, n_samples=n_samples, rng=origin_rng(seed, origin)
        )
        order = _align(name, forecast, active, origin)
        got = {float(k): np.asarray(v, dtype=float)[order] for k, v in forecast.quantiles.items()}
        missing = [lv for lv in asked if lv not in got]
        if missing:
            raise PoolcastError(
                f"candidate {name!r} at origin {origin}: forecast lacks quantile level(s) {missing}"
            )
        m = np.asarray(forecast.mean, dtype=float)[order]
        raw[active_idx] = np.column_stack([got[lv] for lv in levels])
        qa = np.column_stack([got[remap.get(lv, lv)] for lv in levels])
        if shifts:
            w = np.maximum(m, 1.0)[:, None]
            qa = qa + w * np.array([shifts[lv] for lv in levels])[None, :]
        bad = int((~np.isfinite(m)).sum() + (~np.isfinite(qa)).sum())
        if bad:
            raise PoolcastError(
                f"candidate {name!r} diverged at origin {origin}: {bad} non-finite predicted "
                "values (mean or quantiles)"
            )
        mean[active_idx] = m
        q[active_idx] = qa
        if forecast.samples is None:
            samples = None
        else:
            s = np.asarray(forecast.samples)[order]
            if samples.shape[1] != s.shape[1]:
                samples = np.zeros((n, s.shape[1]), dtype=s.dtype)
            samples = samples.astype(np.result_type(samples.dtype, s.dtype), copy=False)
            samples[active_idx] = s
    q = np.maximum.accumulate(np.clip(q, 0.0, None), axis=1)
    frame = keys.with_columns(
        pl.Series("mean", mean),
        *(pl.Series(quantile_column(lv), q[:, j]) for j, lv in enumerate(levels)),
        pl.Series("reason", [reason if d else None for d in is_dead.tolist()], dtype=pl.String),
    )
    return OriginForecast(
        frame=frame, samples=samples, recalibrated=bool(remap or shifts), raw_quantiles=raw
    )


def _align(name: str, forecast: Forecast, rows: pl.DataFrame, origin: date) -> np.ndarray:
    """Index into the forecast's rows giving the order of ``rows``; checks completeness."""
    if len(forecast.mean) != forecast.keys.height:
        raise PoolcastError(f"candidate {name!r}: forecast keys and mean differ in length")
    frame = forecast.keys.select(
        pl.col("sku").cast(pl.String), pl.col("origin"), pl.col("horizon").cast(pl.Int32)
    ).with_columns(pl.Series("_row", np.arange(forecast.keys.height)))
    joined = rows.select(*_ROW_KEYS).join(frame, on=list(_ROW_KEYS), how="left")
    n = rows.height
    if frame.height != n or joined.height != n or joined.get_column("_row").null_count():
        raise PoolcastError(
            f"candidate {name!r} at origin {origin}: forecast rows do not match the "
            f"{n} requested (sku, origin, horizon) rows (got {frame.height})"
        )
    return joined.get_column("_row").to_numpy()


# --------------------------------------------------------------------------- backtest


def _all_levels(quantiles: Sequence[float]) -> tuple[float, ...]:
    levels = {float(q) for q in quantiles}
    bad = sorted(q for q in levels if not 0.0 < q < 1.0)
    if bad or not levels:
        raise InvalidParameterError(
            f"quantiles={tuple(quantiles)!r}: need one or more levels in (0, 1); bad: {bad}"
        )
    for nominal in INTERVALS:
        levels.update(interval_levels(nominal))
    return tuple(sorted(levels))


def backtest_coverage(splits: Sequence[OriginSplit], *, inactive_months: int) -> pl.DataFrame:
    """Per origin: how many SKUs and rows the backtest scores, and why any are left out.

    The same for every candidate (same splits, same inactive rule); columns as
    :attr:`CandidateBacktest.coverage`.
    """
    rows = []
    for split in (s for s in splits if s.scored):
        dead: set[str] = set()
        if inactive_months and inactive_months > 0 and split.activity is not None:
            dead = set(
                split.activity.filter(pl.col("months_since_sale") >= inactive_months)
                .get_column("sku")
                .to_list()
            )
        frame = split.test.select(
            "sku",
            pl.col("sales").cast(pl.Float64).alias("y"),
            pl.when(pl.col("sku").is_in(sorted(dead)))
            .then(pl.lit(f"inactive_{int(inactive_months)}_months"))
            .otherwise(None)
            .alias("reason"),
        )
        rows.append(_coverage_row(split, frame, inactive_months))
    return pl.DataFrame(rows)


def _coverage_row(split: OriginSplit, frame: pl.DataFrame, inactive_months: int) -> dict[str, Any]:
    active = frame.filter(pl.col("reason").is_null())
    dead = frame.filter(pl.col("reason").is_not_null())
    scored = active.filter(pl.col("y").is_not_null())
    return {
        "origin": split.origin,
        "skus": frame.get_column("sku").n_unique(),
        "skus_scored": scored.get_column("sku").n_unique(),
        "rows_scored": scored.height,
        "rows_unknown_target": active.height - scored.height,
        "skus_inactive": dead.get_column("sku").n_unique(),
        "rows_inactive": dead.height,
        "inactive_months": int(inactive_months),
    }


def backtest_candidate(
    name: str,
    factory: Callable[[], Any],
    splits: Sequence[OriginSplit],
    *,
    quantiles: Sequence[float],
    n_samples: int,
    seed: int,
    publish_quantiles: Sequence[float] = (),
    inactive_months: int = 12,
    calibration: str = "none",
) -> CandidateBacktest:
    """Fit a fresh candidate at each origin, forecast horizons 1..H and score it.

    Every origin goes through :func:`forecast_at_origin`, the path of the published
    forecast. Every SKU present at the origin is forecast for every target month; a row is
    scored when its truth is known (under gap policy "missing" an unknown target month is
    counted in ``coverage.rows_unknown_target`` and not scored). Inactive SKUs are forecast
    0 and kept apart in ``inactive`` (not in the candidate's metrics, the same for all).

    Parameters
    ----------
    name : str
        Candidate name (for messages and the result).
    factory : callable
        Returns a new unfitted candidate (``fit(train, history=) -> self``,
        ``predict_distribution(rows, *, quantiles, n_samples, rng) -> Forecast``).
    splits : sequence of OriginSplit
        From :func:`prepare_splits`; a calibration origin (``scored=False``) is fitted and
        forecast like the others, but its rows only join the recalibration set, and when
        its fit or forecast raises one of :data:`CALIBRATION_ORIGIN_ERRORS` it is skipped
        (``calibration_skipped``) rather than failing the candidate.
    quantiles : sequence of float
        Service quantiles (pinball losses); the interval bounds 0.025, 0.1, 0.9 and 0.975
        and ``publish_quantiles`` are requested as well.
    n_samples : int
        Predictive draws per row, for candidates that simulate.
    seed : int
        The origin's draws come from :func:`origin_rng` ``(seed, origin)``.
    publish_quantiles : sequence of float
        Further levels forecast (so the backtest forecasts exactly what is published).
    inactive_months : int
        The inactive rule N (0 disables).
    calibration : {"none", "auto", "conformal", "pit"}
        See :func:`conformal_shifts` and :func:`pit_recalibrate`; the raw forecasts of the
        earlier origins with a target month at or before the current origin are the
        calibration set. ``metrics`` gain ``raw_coverage_80/95`` (before recalibration),
        ``pit_coverage_80/95`` (:func:`pit_coverage` of the raw forecasts),
        ``stated_coverage_80/95`` (:func:`stated_coverage` of the raw intervals, to compare
        with ``raw_coverage``; NaN without draws),
        ``recalibrated_origins`` and ``calibration_origins``.

    Returns
    -------
    CandidateBacktest

    Raises
    ------
    Exception
        Whatever the candidate raises; :class:`~poolcast.errors.PoolcastError` when its
        forecast is non-finite or does not cover the requested rows.
    """
    if not any(s.scored for s in splits):
        raise InvalidParameterError(
            "splits has no scored origin: prepare_splits gives one per origin"
        )
    service = tuple(sorted({float(q) for q in quantiles}))
    levels = all_levels(service, publish_quantiles)
    fit_seconds = predict_seconds = 0.0
    frames: list[pl.DataFrame] = []
    coverage_rows: list[dict[str, Any]] = []
    calibration_history: pl.DataFrame | None = None
    n_recalibrated = n_calibration = 0
    calibration_skipped: list[str] = []
    for split in splits:
        start = time.perf_counter()
        try:
            model = factory()
            model.fit(active_training_rows(split, inactive_months), history=split.history)
            fit_seconds += time.perf_counter() - start
            start = time.perf_counter()
            fc = forecast_at_origin(
                model,
                split,
                levels=levels,
                n_samples=n_samples,
                seed=seed,
                inactive_months=inactive_months,
                calibration=calibration,
                calibration_history=calibration_history,
                name=name,
            )
        except CALIBRATION_ORIGIN_ERRORS as exc:
            if split.scored:
                raise
            # a calibration origin has less history than the design guarantees the scored
            # ones (e.g. no seasonal lag yet): its rows are lost, not the candidate
            calibration_skipped.append(f"{split.origin}: {type(exc).__name__}: {exc}")
            continue
        predict_seconds += time.perf_counter() - start
        n_recalibrated += fc.recalibrated and split.scored
        n_calibration += not split.scored
        y = split.test.get_column("sales").cast(pl.Float64).to_numpy()
        y = np.where(split.test.get_column("sales").is_null().to_numpy(), np.nan, y)
        known = ~np.isnan(y)
        crps = np.full(y.shape, np.nan)
        pit = np.full(y.shape, np.nan)
        stated = {nominal: np.full(y.shape, np.nan) for nominal in INTERVALS}
        if fc.samples is not None:
            s = np.asarray(fc.samples, dtype=float)
            crps[known] = crps_from_samples(y[known], s[known])
            pit_rng = np.random.default_rng([int(seed), _month_index(split.origin), 1])
            pit[known] = randomized_pit(y[known], s[known], pit_rng)
            for nominal, p_in in stated.items():  # of the raw interval: what the draws say
                lo, hi = (levels.index(b) for b in interval_levels(nominal))
                p_in[:] = stated_coverage(fc.raw_quantiles[:, lo], fc.raw_quantiles[:, hi], s)
        else:
            qd = {lv: fc.frame.get_column(quantile_column(lv)).to_numpy() for lv in levels}
            crps[known] = crps_from_quantiles(y[known], {lv: v[known] for lv, v in qd.items()})
        residuals = calibration_residuals(
            y, fc.frame.get_column("mean").to_numpy(), fc.raw_quantiles, levels
        )
        frame = fc.frame.with_columns(
            pl.Series("y", y).fill_nan(None),
            pl.Series("crps", crps).fill_nan(None),
            pl.Series("pit", pit).fill_nan(None),
            *(pl.Series(stated_column(n), v).fill_nan(None) for n, v in stated.items()),
            *(pl.Series(k, v).fill_nan(None) for k, v in residuals.items()),
        ).join(split.scale.select("sku", "mase_scale"), on="sku", how="left")
        if split.scored:
            coverage_rows.append(_coverage_row(split, frame, inactive_months))
            frames.append(frame)
        new = frame.filter(pl.col("reason").is_null() & pl.col("y").is_not_null()).select(
            "month", "pit", *residuals
        )
        calibration_history = (
            new if calibration_history is None else pl.concat([calibration_history, new])
        )
    columns = [
        "sku", "origin", "horizon", "month", "y", "mean",
        *(quantile_column(q) for q in levels), "crps", "pit", "mase_scale",
        *(stated_column(n) for n in INTERVALS), *(residual_column(q) for q in levels),
    ]  # fmt: skip
    everything = pl.concat(frames).sort("origin", "horizon", "sku")
    predictions = everything.filter(pl.col("reason").is_null() & pl.col("y").is_not_null()).select(
        columns
    )
    inactive = everything.filter(pl.col("reason").is_not_null()).select(*columns, "reason")
    overall = score_predictions(predictions, quantiles=service)
    metrics = {k: float(v) for k, v in overall.row(0, named=True).items()}
    raw_cov = _raw_coverage(predictions)
    for nominal in INTERVALS:
        metrics[f"raw_coverage_{round(nominal * 100)}"] = raw_cov.get(nominal, math.nan)
    pits = predictions.get_column("pit").drop_nulls().to_numpy().astype(float)
    for nominal in INTERVALS:
        metrics[f"pit_coverage_{round(nominal * 100)}"] = pit_coverage(pits, nominal)
    for nominal in INTERVALS:
        p_in = predictions.get_column(stated_column(nominal)).drop_nulls()
        metrics[f"stated_coverage_{round(nominal * 100)}"] = (
            float(p_in.mean()) if p_in.len() else math.nan
        )
    metrics["recalibrated_origins"] = float(n_recalibrated)
    metrics["calibration_origins"] = float(n_calibration)
    return CandidateBacktest(
        name=name,
        predictions=predictions,
        metrics=metrics,
        horizon_metrics=score_predictions(predictions, quantiles=service, by=("horizon",)),
        per_sku_metrics=score_predictions(predictions, quantiles=service, by=("sku",)),
        fit_seconds=fit_seconds,
        predict_seconds=predict_seconds,
        quantiles=service,
        coverage=pl.DataFrame(coverage_rows),
        inactive=inactive,
        calibration_history=calibration_history,
        calibration_skipped=tuple(calibration_skipped),
    )


def score_predictions(
    predictions: pl.DataFrame, *, quantiles: Sequence[float], by: Sequence[str] = ()
) -> pl.DataFrame:
    """Aggregate forecast metrics, overall or per group.

    Parameters
    ----------
    predictions : pl.DataFrame
        Columns ``y``, ``mean``, ``q_<level>`` for the service quantiles and the interval
        bounds, ``crps``, ``mase_scale`` (as in :attr:`CandidateBacktest.predictions`).
    quantiles : sequence of float
        Service quantiles.
    by : sequence of str
        Group columns (empty: one overall row).

    Returns
    -------
    pl.DataFrame
        ``by`` columns then ``n, mae, rmse, mase, wape, bias, pinball_<q>...,
        scaled_pinball, coverage_80, coverage_95, crps``.

    Notes
    -----
    With error :math:`e = \\hat y - y` (the predictive mean), scale :math:`s` the
    SKU's in-sample seasonal-naive MAE up to the origin and :math:`Q` the service levels:
    MAE :math:`= \\overline{|e|}`, RMSE :math:`= \\sqrt{\\overline{e^2}}`,
    MASE :math:`= \\overline{|e| / s}`, WAPE :math:`= \\sum|e| / \\sum|y|`,
    bias :math:`= \\bar e` (positive = over-forecast), pinball_q :math:`= \\overline{L_q}`,
    scaled_pinball :math:`= \\overline{\\tfrac{1}{|Q|}\\sum_{q \\in Q} L_q / s}`,
    coverage_80 = share of :math:`y` in :math:`[\\hat y_{0.1}, \\hat y_{0.9}]`, coverage_95 in
    :math:`[\\hat y_{0.025}, \\hat y_{0.975}]`, crps = mean CRPS (from samples, or the
    quantile approximation). Averages run over rows (SKU x origin x horizon); rows with a
    NULL truth are ignored.
    """
    service = tuple(sorted({float(q) for q in quantiles}))
    frame = predictions.filter(pl.col("y").is_not_null())
    y = frame.get_column("y").to_numpy().astype(float)
    mean = frame.get_column("mean").to_numpy().astype(float)
    scale = frame.get_column("mase_scale").to_numpy().astype(float)
    pins = {q: pinball_loss(y, frame.get_column(quantile_column(q)).to_numpy(), q) for q in service}
    scaled_pin = sum(pins.values()) / len(service) / scale
    inside = {}
    for nominal in INTERVALS:
        lo, hi = interval_levels(nominal)
        lower = frame.get_column(quantile_column(lo)).to_numpy()
        upper = frame.get_column(quantile_column(hi)).to_numpy()
        inside[nominal] = ((lower <= y) & (y <= upper)).astype(float)
    err = mean - y
    loss_columns = [
        pl.Series("_ae", np.abs(err)),
        pl.Series("_se", err**2),
        pl.Series("_err", err),
        pl.Series("_ay", np.abs(y)),
        pl.Series("_sae", np.abs(err) / scale),
        pl.Series("_spin", scaled_pin),
        *(pl.Series(f"pinball_{q:g}", v) for q, v in pins.items()),
        *(pl.Series(f"coverage_{round(n * 100)}", v) for n, v in inside.items()),
        frame.get_column("crps").cast(pl.Float64),
    ]
    rows = frame.select(*by).with_columns(loss_columns) if by else pl.DataFrame(loss_columns)
    aggs = [
        pl.len().cast(pl.Int64).alias("n"),
        pl.col("_ae").mean().alias("mae"),
        pl.col("_se").mean().sqrt().alias("rmse"),
        pl.col("_sae").mean().alias("mase"),
        pl.when(pl.col("_ay").sum() > 0)
        .then(pl.col("_ae").sum() / pl.col("_ay").sum())
        .otherwise(float("nan"))
        .alias("wape"),
        pl.col("_err").mean().alias("bias"),
        *(pl.col(f"pinball_{q:g}").mean() for q in service),
        pl.col("_spin").mean().alias("scaled_pinball"),
        *(pl.col(f"coverage_{round(n * 100)}").mean() for n in INTERVALS),
        pl.col("crps").mean(),
    ]
    if by:
        return rows.group_by(*by).agg(aggs).sort(*by)
    return rows.select(aggs)


# --------------------------------------------------------------------------- selection


def build_leaderboard(
    results: Sequence[CandidateBacktest],
    failures: Mapping[str, str],
    *,
    sort_by: str = "scaled_pinball",
    ineligible: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """One row per candidate: ``candidate, status ("ok" | "ineligible" | "failed"), error``,
    the overall metrics, ``fit_seconds`` and ``predict_seconds``.

    Successful candidates come first, ordered by ``sort_by`` then ``mase``; ineligible ones
    follow with the reason in ``error`` (``ineligible``: name -> reason): a candidate that
    finished the backtest but may not become champion (e.g. a Bayesian fit that failed its
    diagnostics) keeps its metrics; one that did not run (e.g. it needs a plan column the run
    lacks for the forecast months) has NULL metrics. Failed ones come last with NULL metrics
    and their error message. Only ``ok`` rows can become champion (:func:`select_champion`).
    """
    ineligible = dict(ineligible or {})
    names = {r.name for r in results}
    for a, b, what in (
        (names, set(failures), "results and failures"),
        (set(failures), set(ineligible), "failures and ineligible"),
    ):
        overlap = sorted(a & b)
        if overlap:
            raise InvalidParameterError(f"candidate(s) {overlap} are both in {what}")
    metric_names: list[str] = []
    for r in results:
        metric_names += [m for m in r.metrics if m not in metric_names]
    records: list[dict[str, Any]] = []
    for r in results:
        reason = ineligible.get(r.name)
        rec: dict[str, Any] = {
            "candidate": r.name,
            "status": "ok" if reason is None else "ineligible",
            "error": reason,
        }
        rec |= {m: r.metrics.get(m) for m in metric_names}
        rec |= {"fit_seconds": r.fit_seconds, "predict_seconds": r.predict_seconds}
        records.append(rec)
    for name, error in failures.items():
        rec = {"candidate": name, "status": "failed", "error": str(error)}
        rec |= dict.fromkeys(metric_names)
        rec |= {"fit_seconds": None, "predict_seconds": None}
        records.append(rec)
    for name, reason in ineligible.items():
        if name in names:  # ran: its row above keeps the metrics
            continue
        rec = {"candidate": name, "status": "ineligible", "error": str(reason)}
        rec |= dict.fromkeys(metric_names)
        rec |= {"fit_seconds": None, "predict_seconds": None}
        records.append(rec)
    schema: dict[str, Any] = {"candidate": pl.String, "status": pl.String, "error": pl.String}
    schema |= {m: (pl.Int64 if m == "n" else pl.Float64) for m in metric_names}
    schema |= {"fit_seconds": pl.Float64, "predict_seconds": pl.Float64}
    board = (
        pl.DataFrame(records, schema=schema, orient="row")
        if records
        else pl.DataFrame(schema=schema)
    )
    keys = ["status"] + [c for c in (sort_by, "mase") if c in board.columns] + ["candidate"]
    return (
        board.with_columns(
            pl.col("status").replace_strict({"ok": 0, "ineligible": 1}, default=2).alias("_failed")
        )
        .sort(["_failed", *keys[1:]], nulls_last=True)
        .drop("_failed")
    )


def build_horizon_table(results: Sequence[CandidateBacktest]) -> pl.DataFrame:
    """Per-horizon metrics of every successful candidate, long: ``candidate, horizon, metric, value``."""
    frames = [
        r.horizon_metrics.with_columns(pl.col("n").cast(pl.Float64))
        .unpivot(index="horizon", variable_name="metric", value_name="value")
        .with_columns(pl.lit(r.name).alias("candidate"))
        .select("candidate", "horizon", "metric", "value")
        for r in results
    ]
    if not frames:
        return pl.DataFrame(
            schema={
                "candidate": pl.String,
                "horizon": pl.Int32,
                "metric": pl.String,
                "value": pl.Float64,
            }
        )
    return pl.concat(frames)


def select_champion(leaderboard: pl.DataFrame, *, metric: str = "scaled_pinball") -> str:
    """Name of the successful candidate with the smallest ``metric`` (ties broken by MASE).

    Candidates with status "failed" or a NaN / NULL ``metric`` cannot win; remaining ties
    go to the alphabetically first name, so the choice is deterministic.

    Raises
    ------
    InvalidParameterError
        When ``metric`` is not a leaderboard column.
    PoolcastError
        When no candidate succeeded.
    """
    failed = leaderboard.filter(pl.col("status") != "ok")
    reasons = "; ".join(f"{c}: {e}" for c, e in failed.select("candidate", "error").iter_rows())
    if failed.height == leaderboard.height:
        raise PoolcastError(
            "no candidate can be champion: every candidate failed the backtest"
            + (f" ({reasons})" if reasons else " (none ran)")
            + "; check the data and the candidate list in [backtest] candidates"
        )
    if metric not in leaderboard.columns:
        numeric = [c for c, t in leaderboard.schema.items() if t.is_numeric()]
        raise InvalidParameterError(
            f"selection metric {metric!r} is not on the leaderboard; choose one of {numeric}"
        )
    ok = leaderboard.filter(
        (pl.col("status") == "ok") & pl.col(metric).is_not_null() & pl.col(metric).is_not_nan()
    )
    if ok.height == 0:
        raise PoolcastError(
            f"no candidate can be champion: none finished the backtest with a finite {metric!r}"
            + (f" (failures: {reasons})" if reasons else "")
        )
    tie = ["mase"] if "mase" in ok.columns else []
    ordered = ok.with_columns(*(pl.col(c).fill_nan(math.inf) for c in tie)).sort(
        [metric, *tie, "candidate"], nulls_last=True
    )
    return str(ordered.get_column("candidate")[0])
