"""Classical per-SKU series candidates: Naive, AutoETS, Croston (classic / SBA), TSB and ADIDA.

These are what a forecaster would use instead of a GLMM, run on every SKU at once by
statsforecast (``StatsForecast(models=..., freq=1, n_jobs=1).forecast(df=..., h=...)``, the
month index as the integer time axis). They are *series* candidates (``needs_history =
True``): ``fit(train, history=panel)`` fits each SKU's monthly series up to the origin once
and projects it ``step`` months ahead, where ``step`` is the number of months between the
SKU's last used observation and the target month (``horizon`` when the panel is completed to
the origin, more for a SKU whose trailing months are unknown).

The monthly series of a SKU (:func:`prepare_series`)
----------------------------------------------------
* Rows with a NULL ``sales`` (gap months under ``gap_policy = "missing"``) are **never read as
  zeros**: leading and trailing NULL months are dropped (the series starts at the first and
  ends at the last observed month; the forecast step then counts from that last observed
  month), interior NULL months are linearly interpolated between their observed neighbours.
  Under ``gap_policy = "zero"`` the validated panel already holds zeros there.
* A SKU with fewer than ``MIN_OBSERVATIONS`` = 3 observed months is not given to statsforecast:
  its forecast is the mean of its observations (recorded as ``n_short_series``); a SKU with no
  observation at all is forecast as 0 (``n_no_data``).
* ``fit(train)`` without ``history`` (older callers) rebuilds the series from the training
  frame: the smallest horizon's ``(sku, month, sales)`` plus ``(sku, origin, sales_lag_0)``.

Predictive distributions
------------------------
* ``auto_ets``: Gaussian around the ETS point forecast :math:`\\hat y_{i,s}` with the standard
  deviation implied by statsforecast's 80% interval,
  :math:`\\hat\\sigma_{i,s} = (u_{i,s} - l_{i,s}) / (2 z_{0.9})`; quantiles in closed form
  :math:`\\max(0, \\hat y + \\hat\\sigma z_q)` (monotone, non-negative), draws
  :math:`\\operatorname{rint}\\max(0, \\hat y + \\hat\\sigma\\varepsilon)`, mean
  :math:`\\max(0, \\hat y)`.
* ``naive``, ``croston``, ``tsb``, ``adida`` give point forecasts only. Their distribution is
  the empirical distribution of the model's *own* out-of-sample errors inside the history:
  the series is cut back by k = 1..K months (K = ``n_windows`` + H - 1, H the largest training
  horizon), the same model forecasts the next months from each cut, and every error
  :math:`e = (y - \\hat y)/s_i` with :math:`step \\le k` is kept per step, scaled by the SKU's
  recent one-step naive MAE :math:`s_i = \\max(1, \\overline{|y_t - y_{t-1}|})` over the last
  ``scale_window`` = 12 months of its series (floor one unit, as the MASE scale; recent, so
  a SKU that stopped selling is not given the spread of its busy years). A draw for a row of step s resamples one pooled error
  :math:`e^*` of step :math:`\\min(s, H)`: :math:`\\operatorname{rint}\\max(0, \\hat y + s_i e^*)`.
  Quantiles come from the draws (monotone, non-negative); the mean is the point forecast.
  Only data up to the origin enter.

Which candidates run by default: ``naive`` and ``auto_ets`` always; ``croston``, ``tsb`` and
``adida`` when the data are intermittent (:func:`is_intermittent`, see
:func:`poolcast.models.registry.default_candidates`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from datetime import date
from typing import Any, ClassVar, Self

import numpy as np
import polars as pl
from scipy.stats import norm

from poolcast.errors import DataContractError, InvalidParameterError
from poolcast.models._validation import Interval, Options
from poolcast.models.base import Candidate, HorizonReport
from poolcast.models.forecast import KEY_COLUMNS, Forecast, quantiles_from_samples

__all__ = [
    "ETS_MIN_MONTHS",
    "INTERMITTENT_ZERO_SHARE",
    "MIN_OBSERVATIONS",
    "Adida",
    "AutoEts",
    "Croston",
    "Naive",
    "SeriesCandidate",
    "Tsb",
    "is_intermittent",
    "prepare_series",
    "zero_share",
]

MIN_OBSERVATIONS = 3
"""A SKU with fewer observed months is forecast by the mean of its observations."""

INTERMITTENT_ZERO_SHARE = 0.3
"""Data are intermittent when at least this share of the observed SKU-months are zero."""

ETS_MIN_MONTHS = 7
"""statsforecast's ETS needs more than 6 months (``n > npars + 4``); shorter series get Naive
(with its intervals) inside ``auto_ets``."""

_Z80 = float(norm.ppf(0.9))
_ALIAS = "model"


def _month_index(col: str = "month") -> pl.Expr:
    return pl.col(col).dt.year().cast(pl.Int64) * 12 + pl.col(col).dt.month().cast(pl.Int64) - 1


def _from_index(i: int) -> date:
    return date(i // 12, i % 12 + 1, 1)


def zero_share(panel: pl.DataFrame) -> float:
    """Share of observed (non-NULL) SKU-months whose sales are 0 (NaN for no observation).

    >>> zero_share(pl.DataFrame({"sales": [0, 3, None, 0]}))
    0.6666666666666666
    """
    if "sales" not in panel.columns:
        raise DataContractError("zero_share: the panel lacks the column 'sales'")
    observed = panel.get_column("sales").drop_nulls()
    if observed.len() == 0:
        return float("nan")
    return float((observed == 0).mean())


def is_intermittent(panel: pl.DataFrame, *, threshold: float = INTERMITTENT_ZERO_SHARE) -> bool:
    """True when at least ``threshold`` (default 30%) of the observed SKU-months are zero.

    This is the rule that puts Croston, TSB and ADIDA in the default line-up. Unknown
    (NULL) months do not count. Computed on the validated panel up to the as-of month, so
    under ``gap_policy = "zero"`` the filled gap months count as zeros.

    >>> is_intermittent(pl.DataFrame({"sales": [0, 0, 5, 1]}))
    True
    """
    if not 0.0 < threshold <= 1.0:
        raise InvalidParameterError(f"threshold={threshold!r}: must be in (0, 1]")
    share = zero_share(panel)
    return bool(np.isfinite(share) and share >= threshold)


# --------------------------------------------------------------------------- series


@dataclass(frozen=True)
class PreparedSeries:
    """The SKU series given to statsforecast and what was done to build them.

    Fields
    ------
    frame : pl.DataFrame
        ``unique_id`` (sku), ``ds`` (month index, Int64), ``y`` (Float64) of the SKUs with
        at least ``MIN_OBSERVATIONS`` observed months, sorted.
    info : pl.DataFrame
        One row per SKU: ``sku``, ``last_idx`` (month index of the last observation, NULL
        when none), ``n_obs`` (observed months), ``n_interpolated``, ``mean`` (of the
        observations), ``scale`` (one-step naive MAE, floored at 1), ``method``
        ("model", "mean" or "zero").
    origin_idx : int
        Month index of the origin (the panel's last month).
    """

    frame: pl.DataFrame
    info: pl.DataFrame
    origin_idx: int


def _history_from_train(train: pl.DataFrame) -> pl.DataFrame:
    """The monthly series implied by a training frame (smallest horizon's targets + origins)."""
    need = ["sku", "horizon", "month", "sales"]
    missing = [c for c in need if c not in train.columns]
    if missing:
        raise DataContractError(
            f"the training frame lacks column(s) {missing}; pass history=<monthly panel> to fit"
        )
    h0 = train.get_column("horizon").min()
    parts = [train.filter(pl.col("horizon") == h0).select("sku", "month", "sales")]
    if {"origin", "sales_lag_0"} <= set(train.columns):
        parts.append(
            train.select(
                "sku", pl.col("origin").alias("month"), pl.col("sales_lag_0").alias("sales")
            )
        )
    frame = pl.concat(
        [p.with_columns(pl.col("sales").cast(pl.Float64)) for p in parts], how="vertical"
    )
    # one value per (sku, month): the observed target wins over the lag feature
    return frame.group_by("sku", "month").agg(pl.col("sales").drop_nulls().first())


def prepare_series(history: pl.DataFrame, *, scale_window: int | None = None) -> PreparedSeries:
    """Per-SKU monthly series from the panel up to the origin, NULL months never read as 0.

    Parameters
    ----------
    history : pl.DataFrame
        ``sku``, ``month`` (Date, first of month), ``sales`` (NULL = unknown month).
    scale_window : int or None
        The SKU scale is the mean absolute one-step change over the last ``scale_window``
        months of its series (None: the whole series), floored at 1.

    Returns
    -------
    PreparedSeries
        Leading/trailing NULL months dropped, interior NULL months (and absent interior
        months) linearly interpolated; see the module docstring.
    """
    missing = [c for c in ("sku", "month", "sales") if c not in history.columns]
    if missing:
        raise DataContractError(f"history lacks column(s) {missing}; it must be the monthly panel")
    if history.height == 0:
        raise DataContractError("history is empty: no monthly series to fit")
    panel = history.select(
        pl.col("sku").cast(pl.String), _month_index().alias("ds"), pl.col("sales").cast(pl.Float64)
    )
    origin_idx = int(panel.get_column("ds").max())
    observed = panel.filter(pl.col("sales").is_not_null())
    bounds = observed.group_by("sku").agg(
        pl.col("ds").min().alias("first_idx"),
        pl.col("ds").max().alias("last_idx"),
        pl.len().cast(pl.Int64).alias("n_obs"),
        pl.col("sales").mean().alias("mean"),
    )
    grid = (
        bounds.select("sku", pl.int_ranges("first_idx", pl.col("last_idx") + 1).alias("ds"))
        .explode("ds")
        .join(observed.unique(["sku", "ds"], keep="first"), on=["sku", "ds"], how="left")
        .sort("sku", "ds")
    )
    grid = grid.with_columns(
        pl.col("sales").is_null().alias("_imputed"),
        pl.col("sales").interpolate().over("sku").alias("y"),
    )
    scale = grid.group_by("sku").agg(
        pl.col("_imputed").sum().cast(pl.Int64).alias("n_interpolated"),
        (
            pl.col("y").diff().abs().tail(scale_window)
            if scale_window is not None
            else pl.col("y").diff().abs()
        )
        .mean()
        .alias("scale"),
    )
    skus = panel.select("sku").unique()
    info = (
        skus.join(bounds, on="sku", how="left")
        .join(scale, on="sku", how="left")
        .with_columns(
            pl.col("n_obs").fill_null(0),
            pl.col("n_interpolated").fill_null(0),
            pl.col("mean").fill_null(0.0),
            pl.max_horizontal(pl.col("scale").fill_null(0.0).fill_nan(0.0), pl.lit(1.0)).alias(
                "scale"
            ),
            pl.when(pl.col("n_obs") >= MIN_OBSERVATIONS)
            .then(pl.lit("model"))
            .when(pl.col("n_obs") > 0)
            .then(pl.lit("mean"))
            .otherwise(pl.lit("zero"))
            .alias("method"),
        )
        .select("sku", "last_idx", "n_obs", "n_interpolated", "mean", "scale", "method")
        .sort("sku")
    )
    modelled = info.filter(pl.col("method") == "model").select("sku")
    frame = grid.join(modelled, on="sku", how="semi").select(
        pl.col("sku").alias("unique_id"), "ds", "y"
    )
    return PreparedSeries(frame=frame, info=info, origin_idx=origin_idx)


def _cut_back(frame: pl.DataFrame, k: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Drop each series' last ``k`` months; return (the shortened series, the dropped truth)."""
    pos = pl.int_range(pl.len()).over("unique_id")
    n = pl.len().over("unique_id")
    tagged = frame.with_columns((n - pos).alias("_from_end"))
    kept = tagged.filter(pl.col("_from_end") > k)
    kept = kept.filter(pl.len().over("unique_id") >= MIN_OBSERVATIONS).drop("_from_end")
    truth = tagged.filter(pl.col("_from_end") <= k).select(
        "unique_id", "ds", pl.col("y").alias("_y")
    )
    return kept, truth


# --------------------------------------------------------------------------- candidates


@dataclass(frozen=True)
class _SeriesSummary:
    """What a series fit reports (per horizon, for ``describe``)."""

    values: dict[str, Any] = field(default_factory=dict)
    n_iter: int = 0


class SeriesCandidate(Candidate):
    """Base of the per-SKU series candidates (``needs_history = True``).

    Subclasses set ``name`` and implement ``_sf_model()`` (the statsforecast model, alias
    ``"model"``); ``_with_intervals`` says whether its own intervals are used (ETS) or the
    empirical cut-back errors (the module docstring).

    Attributes (after fit)
    ----------------------
    series_ : PreparedSeries
        The series fitted and what was done to build them.
    point_ : pl.DataFrame
        ``sku, step, point`` (and ``sd`` for interval models): forecasts from each SKU's last
        observation, steps 1..``max_step_``.
    errors_ : dict of int to ndarray
        Sorted scaled errors per step (empirical-error models only).
    """

    needs_history: ClassVar[bool] = True
    _with_intervals: ClassVar[bool] = False
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "n_windows": [Interval(int, 1, 24)],
        "max_errors": [Interval(int, 1, None)],
        "scale_window": [Interval(int, 2, None), None],
    }

    def __init__(
        self, *, n_windows: int = 3, max_errors: int = 50_000, scale_window: int | None = 12
    ) -> None:
        self.n_windows = n_windows
        self.max_errors = max_errors
        self.scale_window = scale_window

    # -- hooks --------------------------------------------------------------------------
    def _sf_model(self, frame: pl.DataFrame) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _sf_fallback(self) -> Any:
        """The model statsforecast uses for a series where the candidate's model raises."""
        from statsforecast.models import Naive as SfNaive

        return SfNaive(alias=_ALIAS)

    def _sf_groups(self, frame: pl.DataFrame) -> list[tuple[pl.DataFrame, Any]]:
        """(series, model) pairs to forecast; one group by default."""
        return [(frame, self._sf_model(frame))]

    # -- statsforecast --------------------------------------------------------------------
    def _run(self, frame: pl.DataFrame, h: int, *, level: bool) -> pl.DataFrame:
        """``unique_id, step, point`` (``sd`` when ``level``) for every series of ``frame``."""
        from statsforecast import StatsForecast

        cols = {"unique_id": pl.String, "step": pl.Int64, "point": pl.Float64}
        if level:
            cols["sd"] = pl.Float64
        if frame.height == 0:
            return pl.DataFrame(schema=cols)
        parts = []
        last = frame.group_by("unique_id").agg(pl.col("ds").max().alias("_last"))
        for group, model in self._sf_groups(frame):
            if group.height == 0:
                continue
            sf = StatsForecast(models=[model], freq=1, n_jobs=1, fallback_model=self._sf_fallback())
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                out = sf.forecast(df=group, h=h, level=[80] if level else None)
            self._n_warnings += len(caught)
            out = pl.from_pandas(out) if not isinstance(out, pl.DataFrame) else out
            out = out.join(last, on="unique_id").select(
                pl.col("unique_id").cast(pl.String),
                (pl.col("ds") - pl.col("_last")).cast(pl.Int64).alias("step"),
                pl.col(_ALIAS).cast(pl.Float64).alias("point"),
                *(
                    [
                        ((pl.col(f"{_ALIAS}-hi-80") - pl.col(f"{_ALIAS}-lo-80")) / (2 * _Z80))
                        .cast(pl.Float64)
                        .alias("sd")
                    ]
                    if level
                    else []
                ),
            )
            parts.append(out)
        return pl.concat(parts) if parts else pl.DataFrame(schema=cols)

    # -- fit ------------------------------------------------------------------------------
    def fit(self, train: pl.DataFrame, *, history: pl.DataFrame | None = None) -> Self:
        """Fit every SKU's monthly series up to the origin (statsforecast, all SKUs at once).

        Parameters
        ----------
        train : pl.DataFrame
            The training frame: only its horizons are used (H = the largest), and, when
            ``history`` is None, its targets rebuild the monthly series.
        history : pl.DataFrame, optional
            The validated monthly panel up to the origin (``sku, month, sales``).

        Returns
        -------
        self
        """
        self._validate_params()
        self._check_columns(train, ("sku", "horizon"), "training")
        horizons = tuple(sorted(int(h) for h in train.get_column("horizon").unique().to_list()))
        if not horizons:
            raise DataContractError(f"{self.name}: the training frame has no rows")
        source = history if history is not None else _history_from_train(train)
        self._n_warnings = 0
        series = prepare_series(source, scale_window=self.scale_window)
        self.series_ = series
        self.horizon_max_ = max(horizons)
        self.max_step_ = 0
        self._forecast_steps(self._needed_steps(series))
        if not self._with_intervals:
            self.errors_ = self._cut_back_errors(series)
        self.horizons_ = horizons
        summary = self._summary(history is not None)
        self.models_ = dict.fromkeys(horizons, summary)
        self.n_iter_ = dict.fromkeys(horizons, 0)
        self.n_train_rows_ = {h: train.filter(pl.col("horizon") == h).height for h in horizons}
        self.ineligible_reason_ = None
        return self

    def _needed_steps(self, series: PreparedSeries) -> int:
        last = series.info.filter(pl.col("method") == "model").get_column("last_idx")
        stale = int(series.origin_idx - last.min()) if last.len() else 0
        return self.horizon_max_ + max(stale, 0)

    def _forecast_steps(self, steps: int) -> None:
        self.point_ = self._run(self.series_.frame, steps, level=self._with_intervals).rename(
            {"unique_id": "sku"}
        )
        self.max_step_ = steps

    def _cut_back_errors(self, series: PreparedSeries) -> dict[int, np.ndarray]:
        """Scaled out-of-sample errors per step from the series cut back by 1..K months."""
        H = self.horizon_max_
        scale = series.info.select(pl.col("sku").alias("unique_id"), "scale")
        errors: dict[int, list[np.ndarray]] = {s: [] for s in range(1, H + 1)}
        for k in range(1, self.n_windows + H):
            kept, truth = _cut_back(series.frame, k)
            if kept.height == 0:
                continue
            fc = self._run(kept, min(k, H), level=False)
            last = kept.group_by("unique_id").agg(pl.col("ds").max().alias("_last"))
            scored = (
                fc.join(last, on="unique_id")
                .with_columns((pl.col("_last") + pl.col("step")).alias("ds"))
                .join(truth, on=["unique_id", "ds"], how="inner")
                .join(scale, on="unique_id", how="left")
                .filter(pl.col("point").is_finite())
                .with_columns(((pl.col("_y") - pl.col("point")) / pl.col("scale")).alias("e"))
            )
            for s, part in scored.partition_by("step", as_dict=True).items():
                step = int(s[0])
                if 1 <= step <= H:
                    errors[step].append(part.get_column("e").to_numpy())
        out: dict[int, np.ndarray] = {}
        for s in range(1, H + 1):
            e = np.concatenate(errors[s]) if errors[s] else np.zeros(0)
            if e.size > self.max_errors:
                e = np.sort(e)[np.linspace(0, e.size - 1, self.max_errors).astype(int)]
            out[s] = np.sort(e)
        # a step without errors borrows the nearest step that has some (else: no noise)
        for s in range(1, H + 1):
            if out[s].size == 0:
                donors = [t for t in sorted(out, key=lambda t: abs(t - s)) if out[t].size]
                out[s] = out[donors[0]] if donors else np.zeros(1)
        return out

    def _summary(self, had_history: bool) -> _SeriesSummary:
        info = self.series_.info
        counts = dict(info.group_by("method").len().iter_rows())
        values: dict[str, Any] = {
            "history_source": "panel" if had_history else "rebuilt_from_train",
            "n_skus": info.height,
            "n_modelled": int(counts.get("model", 0)),
            "n_short_series": int(counts.get("mean", 0)),
            "n_no_data": int(counts.get("zero", 0)),
            "n_interpolated_months": int(info.get_column("n_interpolated").sum()),
            "origin": _from_index(self.series_.origin_idx).isoformat(),
            "max_step": self.max_step_,
            "n_statsforecast_warnings": self._n_warnings,
            "short_series_rule": f"< {MIN_OBSERVATIONS} observed months: mean of the observations",
        }
        if not self._with_intervals:
            values["n_errors"] = {s: int(e.size) for s, e in self.errors_.items()}
        if "sd" in self.point_.columns:
            values["n_nonfinite_model_forecasts"] = int(
                self.point_.filter(~pl.col("point").is_finite() | ~pl.col("sd").is_finite()).height
            )
        return _SeriesSummary(values=values)

    def _report_horizon(self, model: _SeriesSummary) -> HorizonReport:
        return HorizonReport(convergence=dict(model.values))

    # -- predict ----------------------------------------------------------------------
    def _row_points(self, rows: pl.DataFrame) -> pl.DataFrame:
        """Per forecast row: ``step``, ``point``, ``sd`` (or NULL), ``scale``, ``method``."""
        info = self.series_.info
        keyed = (
            rows.select(pl.col("sku").cast(pl.String), _month_index().alias("_m"))
            .with_row_index("_row")
            .join(info, on="sku", how="left")
            .with_columns(
                pl.max_horizontal(
                    (pl.col("_m") - pl.col("last_idx")).fill_null(1), pl.lit(1)
                ).alias("step"),
                pl.col("method").fill_null("zero"),
                pl.col("scale").fill_null(1.0),
                pl.col("mean").fill_null(0.0),
            )
        )
        need = int(keyed.filter(pl.col("method") == "model").get_column("step").max() or 0)
        if need > self.max_step_:
            self._forecast_steps(need)
        cols = ["sku", "step", "point"] + (["sd"] if "sd" in self.point_.columns else [])
        joined = keyed.join(self.point_.select(cols), on=["sku", "step"], how="left").sort("_row")
        if "sd" not in joined.columns:
            joined = joined.with_columns(pl.lit(None, pl.Float64).alias("sd"))
        # short series, no-data SKUs and non-finite model output: the mean of the observations
        bad = ~pl.col("point").is_finite() | pl.col("point").is_null()
        return joined.with_columns(
            pl.when((pl.col("method") == "model") & ~bad.fill_null(True))
            .then(pl.col("point"))
            .otherwise(pl.col("mean"))
            .alias("point"),
            pl.when(pl.col("sd").is_finite()).then(pl.col("sd")).otherwise(None).alias("sd"),
        )

    def predict_distribution(
        self,
        rows: pl.DataFrame,
        *,
        quantiles: Any,
        n_samples: int,
        rng: np.random.Generator,
    ) -> Forecast:
        """Predictive mean, quantiles and draws for forecast rows (see the module docstring).

        Parameters
        ----------
        rows : pl.DataFrame
            ``sku, origin, horizon, month`` (other columns ignored).
        quantiles : sequence of float
            Levels in (0, 1).
        n_samples : int
            Draws per row (>= 1).
        rng : numpy.random.Generator
            The only source of randomness.
        """
        levels = self._check_predict_arguments(rows, quantiles, n_samples, rng)
        n, m = rows.height, int(n_samples)
        if n == 0:
            return Forecast(
                keys=rows.select(KEY_COLUMNS),
                mean=np.zeros(0),
                quantiles={q: np.zeros(0) for q in levels},
                samples=np.zeros((0, m), dtype=np.int64),
            )
        table = self._row_points(rows)
        point = table.get_column("point").to_numpy().astype(float)
        if self._with_intervals:
            mean, qs, samples = self._gaussian(table, point, levels, m, rng)
        else:
            mean, qs, samples = self._empirical(table, point, levels, m, rng)
        return Forecast(keys=rows.select(KEY_COLUMNS), mean=mean, quantiles=qs, samples=samples)

    def _empirical(
        self,
        table: pl.DataFrame,
        point: np.ndarray,
        levels: list[float],
        m: int,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, dict[float, np.ndarray], np.ndarray]:
        step = np.minimum(table.get_column("step").to_numpy(), self.horizon_max_)
        scale = table.get_column("scale").to_numpy().astype(float)
        point = np.maximum(point, 0.0)
        draws = np.empty((point.size, m))
        for s in np.unique(step):
            idx = np.flatnonzero(step == s)
            errs = self.errors_[int(s)]
            e = errs[rng.integers(0, errs.size, size=(idx.size, m))]
            draws[idx] = point[idx, None] + scale[idx, None] * e
        samples = np.clip(np.rint(draws), 0, None).astype(np.int64)
        return point, quantiles_from_samples(samples, levels), samples

    def _gaussian(
        self,
        table: pl.DataFrame,
        point: np.ndarray,
        levels: list[float],
        m: int,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, dict[float, np.ndarray], np.ndarray]:
        sd = table.get_column("sd").to_numpy().astype(float)
        # short series / failed fits: Poisson-like spread around the mean of the observations
        fallback = np.sqrt(np.maximum(point, 1.0))
        sd = np.where(np.isfinite(sd) & (sd >= 0), sd, fallback)
        z = rng.standard_normal((point.size, m))
        samples = np.clip(np.rint(point[:, None] + sd[:, None] * z), 0, None).astype(np.int64)
        qs = {q: np.maximum(point + sd * float(norm.ppf(q)), 0.0) for q in levels}
        return np.maximum(point, 0.0), qs, samples


class Naive(SeriesCandidate):
    """Naive forecast: every future month equals the SKU's last observed month.

    Distribution: the empirical cut-back errors of the naive forecast itself (module
    docstring), i.e. scaled in-sample h-step naive errors :math:`y_{t+h} - y_t`.
    """

    name: ClassVar[str] = "naive"

    def _sf_model(self, frame: pl.DataFrame) -> Any:
        from statsforecast.models import Naive as SfNaive

        return SfNaive(alias=_ALIAS)


class Croston(SeriesCandidate):
    """Croston's method for intermittent demand (classic or the SBA bias correction).

    With non-zero demands :math:`z_j` and the intervals :math:`p_j` between them, both are
    smoothed by simple exponential smoothing (statsforecast: :math:`\\alpha = 0.1`) and the
    flat forecast is :math:`\\hat y = \\hat z / \\hat p` (classic) or
    :math:`(1 - \\alpha/2)\\,\\hat z / \\hat p` (SBA, Syntetos & Boylan 2005).

    Parameters
    ----------
    variant : {"classic", "sba"}
    """

    name: ClassVar[str] = "croston"
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **SeriesCandidate._parameter_constraints,
        "variant": [Options(frozenset({"classic", "sba"}))],
    }

    def __init__(
        self,
        *,
        variant: str = "sba",
        n_windows: int = 3,
        max_errors: int = 50_000,
        scale_window: int | None = 12,
    ) -> None:
        super().__init__(n_windows=n_windows, max_errors=max_errors, scale_window=scale_window)
        self.variant = variant

    def _sf_model(self, frame: pl.DataFrame) -> Any:
        from statsforecast.models import CrostonClassic, CrostonSBA

        cls = CrostonClassic if self.variant == "classic" else CrostonSBA
        return cls(alias=_ALIAS)


class Tsb(SeriesCandidate):
    """Teunter-Syntetos-Babai: smoothed demand probability times smoothed demand size.

    Every month updates the probability :math:`\\hat d \\leftarrow \\hat d + \\alpha_p(1[y>0] - \\hat d)`;
    months with demand update the size :math:`\\hat z \\leftarrow \\hat z + \\alpha_d(y - \\hat z)`;
    the flat forecast is :math:`\\hat d\\,\\hat z` (it decays towards 0 for a SKU that stopped selling).

    Parameters
    ----------
    alpha_d, alpha_p : float in (0, 1]
    """

    name: ClassVar[str] = "tsb"
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **SeriesCandidate._parameter_constraints,
        "alpha_d": [Interval(float, 0.0, 1.0, closed="right")],
        "alpha_p": [Interval(float, 0.0, 1.0, closed="right")],
    }

    def __init__(
        self,
        *,
        alpha_d: float = 0.1,
        alpha_p: float = 0.1,
        n_windows: int = 3,
        max_errors: int = 50_000,
        scale_window: int | None = 12,
    ) -> None:
        super().__init__(n_windows=n_windows, max_errors=max_errors, scale_window=scale_window)
        self.alpha_d = alpha_d
        self.alpha_p = alpha_p

    def _sf_model(self, frame: pl.DataFrame) -> Any:
        from statsforecast.models import TSB

        return TSB(alpha_d=float(self.alpha_d), alpha_p=float(self.alpha_p), alias=_ALIAS)


class Adida(SeriesCandidate):
    """ADIDA: temporal aggregation into buckets of the mean inter-demand interval, SES on the
    buckets, the bucket forecast spread evenly over its months (Nikolopoulos et al. 2011)."""

    name: ClassVar[str] = "adida"

    def _sf_model(self, frame: pl.DataFrame) -> Any:
        from statsforecast.models import ADIDA

        return ADIDA(alias=_ALIAS)


class AutoEts(SeriesCandidate):
    """statsforecast's AutoETS per SKU, with Gaussian predictive intervals.

    A SKU with at least ``min_seasonal_months`` months in its series gets
    ``season_length = 12``; shorter series are fitted non-seasonal (season 1). The model space
    is ``model`` (default ``"ZZZ"``: error, trend and season chosen by AICc); ``damped``
    None lets AutoETS choose. The distribution is Gaussian with the ETS forecast variance
    (module docstring).

    Parameters
    ----------
    model : str
        Three letters: error (A, M, Z), trend (N, A, M, Z), season (N, A, M, Z).
    damped : bool or None
    season_length : int
        12 for monthly data.
    min_seasonal_months : int
        Series at least this long are fitted with the season (default 24: two years).
    """

    name: ClassVar[str] = "auto_ets"
    _with_intervals: ClassVar[bool] = True
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **SeriesCandidate._parameter_constraints,
        "model": [str],
        "damped": [bool, None],
        "season_length": [Interval(int, 1, None)],
        "min_seasonal_months": [Interval(int, 2, None)],
    }

    def __init__(
        self,
        *,
        model: str = "ZZZ",
        damped: bool | None = None,
        season_length: int = 12,
        min_seasonal_months: int = 24,
        n_windows: int = 3,
        max_errors: int = 50_000,
        scale_window: int | None = 12,
    ) -> None:
        super().__init__(n_windows=n_windows, max_errors=max_errors, scale_window=scale_window)
        self.model = model
        self.damped = damped
        self.season_length = season_length
        self.min_seasonal_months = min_seasonal_months

    def _validate_params(self) -> None:
        super()._validate_params()
        spec = self.model
        if not (
            isinstance(spec, str)
            and len(spec) == 3
            and spec[0] in "AMZ"
            and spec[1] in "NAMZ"
            and spec[2] in "NAMZ"
        ):
            raise InvalidParameterError(
                f"{self.name}: model={spec!r}: give three letters, error in A/M/Z, trend and "
                "season in N/A/M/Z (e.g. 'ZZZ', 'ZZN', 'AAN')"
            )

    def _ets(self, season: int) -> Any:
        from statsforecast.models import AutoETS

        spec = self.model if season > 1 else self.model[:2] + "N"
        return AutoETS(season_length=season, model=spec, damped=self.damped, alias=_ALIAS)

    def _sf_groups(self, frame: pl.DataFrame) -> list[tuple[pl.DataFrame, Any]]:
        from statsforecast.models import Naive as SfNaive

        length = pl.len().over("unique_id")
        seasonal = self.season_length > 1 and self.model[2] != "N"
        long_min = self.min_seasonal_months if seasonal else None
        tiny = frame.filter(length < ETS_MIN_MONTHS)
        groups = [(tiny, SfNaive(alias=_ALIAS))]
        if long_min is None:
            return [*groups, (frame.filter(length >= ETS_MIN_MONTHS), self._ets(1))]
        long = frame.filter(length >= max(long_min, ETS_MIN_MONTHS))
        short = frame.filter((length >= ETS_MIN_MONTHS) & (length < long_min))
        return [*groups, (long, self._ets(self.season_length)), (short, self._ets(1))]

    def _summary(self, had_history: bool) -> _SeriesSummary:
        out = super()._summary(had_history)
        lengths = self.series_.frame.group_by("unique_id").len().get_column("len")
        out.values["n_seasonal"] = int(
            (lengths >= max(self.min_seasonal_months, ETS_MIN_MONTHS)).sum()
        )
        out.values["n_naive_tiny_series"] = int((lengths < ETS_MIN_MONTHS).sum())
        out.values["model_space"] = self.model
        return out
