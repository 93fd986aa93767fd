"""Rolling-origin backtest of candidate models, leaderboard and champion selection.

For each of the last K origins that leave a full horizon, the features are rebuilt from
``panel.filter(month <= origin)`` alone (spec, knots, training rows and the MASE scale);
only the target months' truth and their *planned* promo flags come from after the origin,
the truth for scoring only. A fresh candidate is fitted per origin and scored on horizons
1..H.

``backtest_candidate`` raises whatever the candidate raises (and raises
:class:`~poolcast.errors.PoolcastError` on non-finite or misaligned predictions); the
pipeline's compete task is the one place that catches a failure and records it, so the
month goes on without that candidate (:func:`build_leaderboard` takes the failures).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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
    "OriginSplit",
    "backtest_candidate",
    "build_horizon_table",
    "build_leaderboard",
    "prepare_splits",
    "rolling_origins",
    "score_predictions",
    "select_champion",
]

INTERVALS: tuple[float, ...] = (0.8, 0.95)
"""Nominal coverages of the central prediction intervals scored (``coverage_80``, ``coverage_95``)."""

_ROW_KEYS = ("sku", "origin", "horizon")


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
        target month from the planned calendar), restricted to rows whose target is
        observed; ``sales`` holds the true target (for scoring only: the candidate is given
        the rows with ``sales`` set to NULL).
    spec : FeatureSpec
        The feature spec learned from the history up to the origin.
    scale : pl.DataFrame
        ``sku, mase_scale, scale_lag, n_observed`` from
        :func:`~poolcast.metrics.seasonal_naive_scale` on the history up to the origin.
    history : pl.DataFrame
        The validated panel up to the origin, for series candidates
        (``fit(train, history=...)``).
    """

    origin: date
    train: pl.DataFrame
    test: pl.DataFrame
    spec: FeatureSpec
    scale: pl.DataFrame
    history: pl.DataFrame


@dataclass(frozen=True)
class CandidateBacktest:
    """One candidate's backtest over all origins.

    Fields
    ------
    name : str
        Candidate name.
    predictions : pl.DataFrame
        One row per (sku, origin, horizon): ``sku, origin, horizon, month, y, mean``, one
        ``q_<level>`` column per level predicted (service quantiles plus the interval
        bounds 0.025, 0.1, 0.9, 0.975), ``crps`` and ``mase_scale``.
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
    """

    name: str
    predictions: pl.DataFrame
    metrics: dict[str, float]
    horizon_metrics: pl.DataFrame
    per_sku_metrics: pl.DataFrame
    fit_seconds: float
    predict_seconds: float
    quantiles: tuple[float, ...]


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


def prepare_splits(
    panel: pl.DataFrame, *, feature_config: FeatureConfig, n_origins: int
) -> list[OriginSplit]:
    """Build train and test rows for each rolling origin, from data up to that origin only.

    Parameters
    ----------
    panel : pl.DataFrame
        Validated panel (data contract).
    feature_config : FeatureConfig
        Its ``horizons`` is H.
    n_origins : int
        K.

    Returns
    -------
    list of OriginSplit
        One per origin, ascending.
    """
    origins = rolling_origins(panel, n_origins=n_origins, horizons=feature_config.horizons)
    has_promo = "promo" in panel.columns
    splits = []
    for origin in origins:
        history = panel.filter(pl.col("month") <= origin)
        later = panel.filter(pl.col("month") > origin)
        spec = make_feature_spec(history, feature_config)
        plan = later.select("sku", "month", "promo") if has_promo else None
        train, rows = build_origin_frames(history, spec, origin=origin, future=plan)
        truth = later.filter(pl.col("sales").is_not_null()).select(
            "sku", "month", pl.col("sales").cast(pl.Int64).alias("_y")
        )
        test = (
            rows.join(truth, on=["sku", "month"], how="inner")
            .with_columns(pl.col("_y").alias("sales"))
            .drop("_y")
            .sort("horizon", "sku")
        )
        scale = seasonal_naive_scale(history)
        splits.append(
            OriginSplit(
                origin=origin, train=train, test=test, spec=spec, scale=scale, history=history
            )
        )
    return splits


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


def _forecast_frame(
    name: str, forecast: Forecast, split: OriginSplit, levels: tuple[float, ...]
) -> pl.DataFrame:
    """Align one origin's forecast with its truth; check it is complete and finite."""
    n = split.test.height
    if len(forecast.mean) != forecast.keys.height:
        raise PoolcastError(f"candidate {name!r}: forecast keys and mean differ in length")
    missing = [q for q in levels if q not in {float(k) for k in forecast.quantiles}]
    if missing:
        raise PoolcastError(
            f"candidate {name!r} at origin {split.origin}: forecast lacks quantile level(s) {missing}"
        )
    q_by_level = {float(k): np.asarray(v, dtype=float) for k, v in forecast.quantiles.items()}
    arrays = [np.asarray(forecast.mean, dtype=float), *(q_by_level[q] for q in levels)]
    bad = int(sum((~np.isfinite(a)).sum() for a in arrays))
    if bad:
        raise PoolcastError(
            f"candidate {name!r} diverged at origin {split.origin}: {bad} non-finite predicted "
            "values (mean or quantiles)"
        )
    frame = forecast.keys.select(
        pl.col("sku").cast(pl.String), pl.col("origin"), pl.col("horizon").cast(pl.Int32)
    ).with_columns(
        pl.Series("mean", arrays[0]),
        *(pl.Series(quantile_column(q), a) for q, a in zip(levels, arrays[1:], strict=True)),
        pl.Series("_row", np.arange(forecast.keys.height)),
    )
    truth = split.test.select(*_ROW_KEYS, "month", pl.col("sales").cast(pl.Float64).alias("y"))
    joined = truth.join(frame, on=list(_ROW_KEYS), how="left")
    if frame.height != n or joined.get_column("_row").null_count() or joined.height != n:
        raise PoolcastError(
            f"candidate {name!r} at origin {split.origin}: forecast rows do not match the "
            f"{n} requested (sku, origin, horizon) rows (got {frame.height})"
        )
    y = joined.get_column("y").to_numpy()
    order = joined.get_column("_row").to_numpy()
    if forecast.samples is not None:
        crps = crps_from_samples(y, np.asarray(forecast.samples, dtype=float)[order])
    else:
        crps = crps_from_quantiles(y, {q: q_by_level[q][order] for q in levels})
    scale = split.scale.select("sku", "mase_scale")
    return (
        joined.drop("_row")
        .with_columns(pl.Series("crps", crps))
        .join(scale, on="sku", how="left")
        .select(
            "sku", "origin", "horizon", "month", "y", "mean",
            *(quantile_column(q) for q in levels), "crps", "mase_scale",
        )
    )  # fmt: skip


def backtest_candidate(
    name: str,
    factory: Callable[[], Any],
    splits: Sequence[OriginSplit],
    *,
    quantiles: Sequence[float],
    n_samples: int,
    seed: int,
) -> CandidateBacktest:
    """Fit a fresh candidate at each origin, forecast horizons 1..H and score it.

    Parameters
    ----------
    name : str
        Candidate name (for messages and the result).
    factory : callable
        Returns a new unfitted candidate (``fit(train) -> self``,
        ``predict_distribution(rows, *, quantiles, n_samples, rng) -> Forecast``).
    splits : sequence of OriginSplit
        From :func:`prepare_splits`.
    quantiles : sequence of float
        Service quantiles (pinball losses); the interval bounds 0.025, 0.1, 0.9 and 0.975
        are requested as well for the coverage metrics.
    n_samples : int
        Predictive draws per row, for candidates that simulate.
    seed : int
        Origin k uses ``numpy.random.default_rng([seed, k])``.

    Returns
    -------
    CandidateBacktest

    Raises
    ------
    Exception
        Whatever the candidate raises; :class:`~poolcast.errors.PoolcastError` when its
        forecast is non-finite or does not cover the requested rows.
    """
    if not splits:
        raise InvalidParameterError("splits is empty: prepare_splits gives one per origin")
    service = tuple(sorted({float(q) for q in quantiles}))
    levels = _all_levels(service)
    fit_seconds = predict_seconds = 0.0
    frames = []
    for k, split in enumerate(splits):
        model = factory()
        start = time.perf_counter()
        model.fit(split.train, history=split.history)
        fit_seconds += time.perf_counter() - start
        rows = split.test.with_columns(sales=pl.lit(None, pl.Int64))
        start = time.perf_counter()
        forecast = model.predict_distribution(
            rows, quantiles=levels, n_samples=n_samples, rng=np.random.default_rng([seed, k])
        )
        predict_seconds += time.perf_counter() - start
        frames.append(_forecast_frame(name, forecast, split, levels))
    predictions = pl.concat(frames).sort("origin", "horizon", "sku")
    overall = score_predictions(predictions, quantiles=service)
    return CandidateBacktest(
        name=name,
        predictions=predictions,
        metrics={k: float(v) for k, v in overall.row(0, named=True).items()},
        horizon_metrics=score_predictions(predictions, quantiles=service, by=("horizon",)),
        per_sku_metrics=score_predictions(predictions, quantiles=service, by=("sku",)),
        fit_seconds=fit_seconds,
        predict_seconds=predict_seconds,
        quantiles=service,
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
    (``ineligible = {name: reason}``: finished the backtest but may not become champion,
    e.g. a Bayesian fit that failed its diagnostics) follow with their metrics and the reason
    in ``error``; failed ones come last with NULL metrics and their error message.
    """
    ineligible = dict(ineligible or {})
    overlap = sorted({r.name for r in results} & set(failures))
    if overlap:
        raise InvalidParameterError(f"candidate(s) {overlap} are both in results and failures")
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
