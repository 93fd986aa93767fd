"""Leakage-safe features in the long direct-horizon layout.

One feature row per (sku, origin, horizon h), with target month :math:`T = \\text{origin} + h`.
Every feature of the row is computed from data with ``month <= origin`` only, except two
things known in advance: the calendar of :math:`T` (``t``, ``month_of_year``, Fourier terms)
and the *plan columns* at :math:`T` (``FeatureSpec.plan_columns``: ``promo``, a planned
promotion / deployment flag, plus the numeric plan columns of the mapping, e.g. Rossmann's
``open_days``, ``promo_days``, ``state_holiday_days``, ``school_holiday_days``). In training
rows (and in the backtest's test rows) a plan column at T is the panel's value at T; in a
forecast frame it comes from the ``future`` plan frame, and is NULL (unavailable, never 0)
where the plan has no value.

Columns (fixed names; the models code against them)

=====================  =======  ==========================================================
column                 dtype    meaning
=====================  =======  ==========================================================
sku                    String   key
origin                 Date     last month the row's features may see
horizon                Int32    h = months from origin to T
month                  Date     target month T
sales                  Int64    target at T (NULL in a forecast frame)
category               String   the SKU's category at the origin (may be null)
promo                  Int8     promo flag at T (planned, known in advance)
<plan columns>         Float64  each further plan column's value at T (``plan_columns``)
t                      Float64  years from the spec's epoch (first month of history) to T
month_of_year          Int8     calendar month of T, 1..12
fourier_s1 ... c2      Float64  :math:`\\sin, \\cos(2\\pi k m / 12)`, k = 1, 2, m = month_of_year
log_customers          Float64  :math:`\\log(1 + \\bar c_3)`, mean customer count of the last 3
                                observed months up to the origin
cust_spline_1..k       Float64  natural cubic spline basis of ``log_customers`` (frozen knots)
cust_rm_<w>            Float64  null-skipping mean customer count over the w months ending at
                                the origin
sales_lag_<k>          Float64  sales at origin - k months (NULL on a gap month)
sales_rm_<w>           Float64  null-skipping mean of sales over the w months ending at origin
sales_lag_seasonal     Float64  sales at T - 12 (<= origin because h <= 12)
n_history              Int32    observed (non-null) sales months up to the origin
=====================  =======  ==========================================================

The customer columns exist only when the history has customer counts: when
``customer_count`` is absent or all null (e.g. the car-parts source) they are omitted and
``FeatureSpec.has_customers`` is False, ``FeatureSpec.customer_columns`` empty.

Missing months (gap rows with NULL sales under ``gap_policy="missing"``) are never read as
zeros: a lag that lands on a gap is NULL, rolling means average only the observed months in
their window (NULL when there are none), ``n_history`` counts only observed months, and
training rows need an observed target. Rolling windows are counted in calendar months on the
SKU's regular monthly grid. Everything is vectorised polars (``over("sku")``), no row loops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date

import polars as pl

from poolcast.config import FeatureConfig
from poolcast.errors import DataContractError, InvalidParameterError
from poolcast.splines import make_spline_knots, natural_spline_basis
from schemas.sales_input import PANEL_COLUMNS

__all__ = [
    "CALENDAR_COLUMNS",
    "KEY_COLUMNS",
    "FeatureSpec",
    "build_forecast_frame",
    "build_origin_frames",
    "build_training_frame",
    "make_feature_spec",
    "panel_plan_columns",
]

KEY_COLUMNS: tuple[str, ...] = ("sku", "origin", "horizon", "month", "sales")
CALENDAR_COLUMNS: tuple[str, ...] = (
    "t",
    "month_of_year",
    "fourier_s1",
    "fourier_c1",
    "fourier_s2",
    "fourier_c2",
)
_REQUIRED = ("sku", "month", "sales")
_MAX_HORIZON = 12  # sales_lag_seasonal (T - 12) must be at or before the origin
_LOG_CUSTOMER_WINDOW = 3


@dataclass(frozen=True)
class FeatureSpec:
    """Frozen feature layout, learned from the training history only.

    Fields
    ------
    horizons : tuple of int
        Horizons 1..H.
    epoch : date
        First month of the history; ``t`` counts years from it.
    spline_knots : tuple of float or None
        Knots (boundary knots included) of the natural-spline basis of ``log_customers``,
        the quantiles of ``log_customers`` over the history; None without customers or when
        the history has fewer than two distinct values.
    rolling_windows : tuple of int
        Windows (months) of the rolling means ending at the origin.
    sales_lags : tuple of int
        Lags of sales from the origin (0 = the origin month).
    has_customers : bool
        Whether the history had customer counts (customer features present).
    feature_columns : tuple of str
        Every feature column, in frame order (keys and target excluded).
    customer_columns : tuple of str
        The customer features (a subset of ``feature_columns``; empty without customers).
    plan_columns : tuple of str
        The plan columns present in the history (``promo`` first), valued at the target
        month T in every row (a subset of ``feature_columns``).
    """

    horizons: tuple[int, ...]
    epoch: date
    spline_knots: tuple[float, ...] | None
    rolling_windows: tuple[int, ...]
    sales_lags: tuple[int, ...]
    has_customers: bool
    feature_columns: tuple[str, ...]
    customer_columns: tuple[str, ...]
    plan_columns: tuple[str, ...] = ("promo",)

    @property
    def spline_columns(self) -> tuple[str, ...]:
        """Names of the spline basis columns (``cust_spline_1..k``)."""
        if not self.spline_knots:
            return ()
        return tuple(f"cust_spline_{j}" for j in range(1, len(self.spline_knots)))


def panel_plan_columns(panel: pl.DataFrame) -> tuple[str, ...]:
    """The plan columns a validated panel carries: ``promo`` (when present), then every
    floating-point column outside the contract that is not all null (validation writes the
    mapping's ``[plan_columns]`` as Float64 after the contract columns)."""
    extra = tuple(
        c
        for c, dtype in panel.schema.items()
        if c not in PANEL_COLUMNS
        and dtype in (pl.Float64, pl.Float32)
        and panel.get_column(c).null_count() < panel.height
    )
    return (("promo",) if "promo" in panel.columns else ()) + extra


def make_feature_spec(
    history: pl.DataFrame, config: FeatureConfig, *, plan_columns: tuple[str, ...] | None = None
) -> FeatureSpec:
    """Learn the feature layout (epoch, customer presence, spline knots) from ``history``.

    Parameters
    ----------
    history : pl.DataFrame
        Validated panel (data contract) of the months the model may see.
    config : FeatureConfig
        Horizons (1..12), spline df, rolling windows, sales lags.
    plan_columns : tuple of str, optional
        The plan columns (default: :func:`panel_plan_columns` of ``history``). ``promo`` is
        always a feature column.

    Returns
    -------
    FeatureSpec

    Notes
    -----
    The spline knots are ``df + 1`` quantiles of ``log_customers`` computed at every
    (sku, month) of the history, at levels equally spaced from 0.05 to 0.95 (Harrell's
    knots; see :func:`poolcast.splines.make_spline_knots`), so they depend on ``history``
    alone.
    """
    _check_history(history)
    _check_config(config)
    if history.height == 0:
        raise DataContractError("history is empty: features need at least one SKU-month")
    has_customers = (
        "customer_count" in history.columns
        and history.get_column("customer_count").null_count() < history.height
    )
    epoch = history.get_column("month").min()
    knots: tuple[float, ...] | None = None
    if has_customers:
        state = _log_customers(_sorted(history))
        knots = make_spline_knots(state.get_column("log_customers").to_numpy(), df=config.spline_df)
        knots = knots or None
    if plan_columns is None:
        plan_columns = panel_plan_columns(history)
    missing = [c for c in plan_columns if c != "promo" and c not in history.columns]
    if missing:
        raise DataContractError(
            f"plan column(s) {missing} are not in the history (columns {history.columns})"
        )
    plan = ("promo", *(c for c in plan_columns if c != "promo"))
    windows = tuple(int(w) for w in config.rolling_windows)
    lags = tuple(int(k) for k in config.sales_lags)
    customer_columns: list[str] = []
    if has_customers:
        customer_columns.append("log_customers")
        if knots:
            customer_columns += [f"cust_spline_{j}" for j in range(1, len(knots))]
        customer_columns += [f"cust_rm_{w}" for w in windows]
    feature_columns = [
        "category",
        *plan,
        *CALENDAR_COLUMNS,
        *customer_columns,
        *(f"sales_lag_{k}" for k in lags),
        *(f"sales_rm_{w}" for w in windows),
        "sales_lag_seasonal",
        "n_history",
    ]
    return FeatureSpec(
        horizons=tuple(range(1, config.horizons + 1)),
        epoch=epoch,
        spline_knots=knots,
        rolling_windows=windows,
        sales_lags=lags,
        has_customers=has_customers,
        feature_columns=tuple(feature_columns),
        customer_columns=tuple(customer_columns),
        plan_columns=plan,
    )


def build_training_frame(history: pl.DataFrame, spec: FeatureSpec) -> pl.DataFrame:
    """Every (sku, origin, h) whose target month lies in ``history`` and is observed.

    Parameters
    ----------
    history : pl.DataFrame
        Validated panel; every month of a SKU's grid serves as an origin.
    spec : FeatureSpec
        From :func:`make_feature_spec` (on this history or an earlier part of it).

    Returns
    -------
    pl.DataFrame
        Columns ``sku, origin, horizon, month, sales`` then ``spec.feature_columns``; only
        rows with :math:`T \\le` the last month of ``history`` and non-null ``sales`` at T.
        Sorted by (horizon, sku, origin).

    Examples
    --------
    March is a gap (NULL sales): it is no target, and a lag landing on it reads NULL.

    >>> from datetime import date
    >>> panel = pl.DataFrame({
    ...     "sku": ["a"] * 4, "month": [date(2024, m, 1) for m in range(1, 5)],
    ...     "sales": [3, 5, None, 4], "customer_count": [30, 40, None, 35], "promo": [0, 1, 0, 0],
    ... })
    >>> spec = make_feature_spec(panel, FeatureConfig(horizons=2))
    >>> frame = build_training_frame(panel, spec)
    >>> for row in frame.select("origin", "horizon", "sales", "sales_lag_0", "sales_rm_3").rows():
    ...     print(row)
    (datetime.date(2024, 1, 1), 1, 5, 3.0, 3.0)
    (datetime.date(2024, 3, 1), 1, 4, None, 4.0)
    (datetime.date(2024, 2, 1), 2, 4, 5.0, 4.0)
    """
    _check_history(history)
    panel = _sorted(history)
    return _training_rows(panel, _origin_state(panel, spec), spec)


def build_forecast_frame(
    history: pl.DataFrame,
    spec: FeatureSpec,
    *,
    origin: date | None = None,
    future: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Feature rows (sku, origin, h, T = origin + h) to forecast from one origin.

    Parameters
    ----------
    history : pl.DataFrame
        Validated panel; rows after ``origin`` are ignored.
    spec : FeatureSpec
        The spec the model was trained with.
    origin : date, optional
        Forecast origin (first day of a month); default the last month of ``history``.
    future : pl.DataFrame, optional
        The plan for the target months: ``sku, month`` and any of ``spec.plan_columns``
        (e.g. the validated ``--plan`` frame of :func:`poolcast.plan.validate_plan`). A plan
        column it lacks, or a (sku, month) it does not cover, is NULL in the rows: the value
        is unavailable, never taken as 0.

    Returns
    -------
    pl.DataFrame
        One row per SKU with data at or before the origin and per horizon; ``sales`` NULL.
        A SKU whose history ends before the origin gets NULL lags for the unseen months.
        Sorted by (horizon, sku).
    """
    panel, origin = _panel_up_to(history, origin)
    state = _origin_state(panel, spec)
    return _forecast_rows(state, spec, origin, future)


def build_origin_frames(
    history: pl.DataFrame,
    spec: FeatureSpec,
    *,
    origin: date,
    future: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Training and forecast frames of one origin, sharing one pass over the history.

    Equal to ``(build_training_frame(history.filter(month <= origin), spec),
    build_forecast_frame(history, spec, origin=origin, future=future))`` and cheaper: the
    origin-side features are computed once (the backtest calls this per origin).
    """
    panel, origin = _panel_up_to(history, origin)
    state = _origin_state(panel, spec)
    return _training_rows(panel, state, spec), _forecast_rows(state, spec, origin, future)


def _panel_up_to(history: pl.DataFrame, origin: date | None) -> tuple[pl.DataFrame, date]:
    """Sorted rows up to the origin, SKUs that ended earlier padded with empty months."""
    _check_history(history)
    if origin is None:
        origin = history.get_column("month").max()
    elif not isinstance(origin, date) or origin.day != 1:
        raise InvalidParameterError(
            f"origin={origin!r}: must be a date on the first day of a month"
        )
    panel = _sorted(history.filter(pl.col("month") <= origin))
    if panel.height == 0:
        raise DataContractError(f"history has no month at or before origin {origin}")
    # Padding only appends months after a SKU's last one: the state of earlier months is
    # unchanged (every feature is causal) and padded months hold no target.
    return _extend_to(panel, origin), origin


def _training_rows(panel: pl.DataFrame, state: pl.DataFrame, spec: FeatureSpec) -> pl.DataFrame:
    rows = _expand(state, spec)
    targets = panel.filter(pl.col("sales").is_not_null()).select(
        "sku",
        "month",
        pl.col("sales").cast(pl.Int64),
        pl.col("promo").cast(pl.Int8)
        if "promo" in panel.columns
        else pl.lit(0, pl.Int8).alias("promo"),
        *_plan_values(panel, spec, include_promo=False),
    )
    rows = rows.join(targets, on=["sku", "month"], how="inner", maintain_order="left")
    return _finish(rows, spec)


def _forecast_rows(
    state: pl.DataFrame, spec: FeatureSpec, origin: date, future: pl.DataFrame | None
) -> pl.DataFrame:
    rows = _expand(state.filter(pl.col("origin") == origin), spec)
    plan_cols = list(spec.plan_columns)
    if future is not None:
        missing = [c for c in ("sku", "month") if c not in future.columns]
        if missing:
            raise DataContractError(
                f"future lacks column(s) {missing}; a plan frame has sku, month and plan "
                f"columns among {plan_cols}"
            )
        plan = (
            future.filter(pl.col("month") > origin)
            .select("sku", "month", *_plan_values(future, spec))
            .unique(["sku", "month"], keep="last")
        )
        rows = rows.join(plan, on=["sku", "month"], how="left", maintain_order="left")
    else:
        rows = rows.with_columns(_null_plan(spec))
    return _finish(rows.with_columns(sales=pl.lit(None, pl.Int64)), spec)


def _plan_values(
    frame: pl.DataFrame, spec: FeatureSpec, *, include_promo: bool = True
) -> list[pl.Expr]:
    """The spec's plan columns as typed expressions over ``frame``; NULL for those it lacks."""
    out = []
    for c in spec.plan_columns:
        if c == "promo" and not include_promo:
            continue
        dtype = pl.Int8 if c == "promo" else pl.Float64
        out.append(pl.col(c).cast(dtype) if c in frame.columns else pl.lit(None, dtype).alias(c))
    return out


def _null_plan(spec: FeatureSpec) -> list[pl.Expr]:
    return [
        pl.lit(None, pl.Int8 if c == "promo" else pl.Float64).alias(c) for c in spec.plan_columns
    ]


# --------------------------------------------------------------------------- helpers


def _check_config(config: FeatureConfig) -> None:
    if not isinstance(config.horizons, int) or not 1 <= config.horizons <= _MAX_HORIZON:
        raise InvalidParameterError(
            f"FeatureConfig.horizons={config.horizons!r}: must be an integer in 1..{_MAX_HORIZON} "
            "(sales_lag_seasonal reads T - 12, which must not be after the origin)"
        )
    if any(int(w) < 1 for w in config.rolling_windows):
        raise InvalidParameterError(
            f"FeatureConfig.rolling_windows={config.rolling_windows!r}: windows must be >= 1 month"
        )
    if any(int(k) < 0 for k in config.sales_lags):
        raise InvalidParameterError(
            f"FeatureConfig.sales_lags={config.sales_lags!r}: lags must be >= 0 (0 = the origin)"
        )


def _check_history(history: pl.DataFrame) -> None:
    missing = [c for c in _REQUIRED if c not in history.columns]
    if missing:
        raise DataContractError(
            f"panel lacks column(s) {missing}; features need the validated panel "
            "(sku, month, sales, customer_count, promo, category, on_hand, is_gap)"
        )


def _month_index(col: str) -> pl.Expr:
    return pl.col(col).dt.year().cast(pl.Int32) * 12 + pl.col(col).dt.month().cast(pl.Int32) - 1


def _date_from_index(expr: pl.Expr) -> pl.Expr:
    return pl.date(expr // 12, expr % 12 + 1, 1)


def _sorted(history: pl.DataFrame) -> pl.DataFrame:
    panel = history.sort("sku", "month")
    step = panel.select(
        step=_month_index("month").diff().over("sku"),
    ).get_column("step")
    bad = step.is_not_null() & (step != 1)
    if bad.any():
        raise DataContractError(
            "panel is not on a regular monthly grid per SKU (duplicate or missing months); "
            "run poolcast validation first, which fills gaps per gap_policy",
            rows=panel.filter(bad),
        )
    return panel


def _extend_to(panel: pl.DataFrame, origin: date) -> pl.DataFrame:
    """Append empty months (sales and customers NULL) to SKUs whose history ends before origin."""
    last = panel.group_by("sku").agg(_month_index("month").max().alias("_last"))
    origin_idx = origin.year * 12 + origin.month - 1
    short = last.filter(pl.col("_last") < origin_idx)
    if short.height == 0:
        return panel
    extra = (
        short.with_columns(_idx=pl.int_ranges(pl.col("_last") + 1, origin_idx + 1))
        .explode("_idx")
        .with_columns(month=_date_from_index(pl.col("_idx")))
        .drop("_last", "_idx")
    )
    extra = extra.with_columns(
        [pl.lit(None, panel.schema[c]).alias(c) for c in panel.columns if c not in extra.columns]
    ).select(panel.columns)
    return pl.concat([panel, extra]).sort("sku", "month")


def _rolling_mean(value: pl.Expr, window: int) -> pl.Expr:
    """Mean of the non-null values in the ``window`` rows ending here (per SKU); NULL if none."""
    total = value.fill_null(0.0).rolling_sum(window, min_samples=1).over("sku")
    count = value.is_not_null().cast(pl.Int32).rolling_sum(window, min_samples=1).over("sku")
    return pl.when(count > 0).then(total / count).otherwise(None)


def _log_customers(panel: pl.DataFrame) -> pl.DataFrame:
    """(sku, month, log_customers): log1p of the mean of the last 3 observed customer counts."""
    observed = panel.filter(pl.col("customer_count").is_not_null()).select(
        "sku",
        "month",
        pl.col("customer_count")
        .cast(pl.Float64)
        .rolling_mean(_LOG_CUSTOMER_WINDOW, min_samples=1)
        .over("sku")
        .log1p()
        .alias("log_customers"),
    )
    return (
        panel.select("sku", "month")
        .join(observed, on=["sku", "month"], how="left", maintain_order="left")
        .with_columns(pl.col("log_customers").forward_fill().over("sku"))
    )


def _origin_state(panel: pl.DataFrame, spec: FeatureSpec) -> pl.DataFrame:
    """Origin-side features at every (sku, month) of a sorted, regular panel (month -> origin)."""
    sales = pl.col("sales").cast(pl.Float64)
    exprs: list[pl.Expr] = [pl.col("sku"), pl.col("month").alias("origin")]
    if "category" in panel.columns:
        exprs.append(
            pl.col("category").cast(pl.String).forward_fill().over("sku").alias("category")
        )
    else:
        exprs.append(pl.lit(None, pl.String).alias("category"))
    if spec.has_customers:
        if "customer_count" not in panel.columns:
            raise DataContractError(
                "the FeatureSpec has customer features but the panel lacks customer_count; "
                "build the spec and the frames from the same source"
            )
        cust = pl.col("customer_count").cast(pl.Float64)
        exprs += [_rolling_mean(cust, w).alias(f"cust_rm_{w}") for w in spec.rolling_windows]
    exprs += [sales.shift(k).over("sku").alias(f"sales_lag_{k}") for k in spec.sales_lags]
    exprs += [_rolling_mean(sales, w).alias(f"sales_rm_{w}") for w in spec.rolling_windows]
    exprs += [
        sales.shift(_MAX_HORIZON - h).over("sku").alias(f"_seasonal_{h}") for h in spec.horizons
    ]
    exprs.append(sales.is_not_null().cast(pl.Int32).cum_sum().over("sku").alias("n_history"))
    state = panel.select(exprs)
    if spec.has_customers:
        log_c = _log_customers(panel).get_column("log_customers")
        state = state.with_columns(log_c.alias("log_customers"))
        if spec.spline_knots:
            basis = natural_spline_basis(log_c.to_numpy().astype(float), spec.spline_knots)
            state = state.with_columns(
                pl.Series(name, basis[:, j]).fill_nan(None)
                for j, name in enumerate(spec.spline_columns)
            )
    return state


def _expand(state: pl.DataFrame, spec: FeatureSpec) -> pl.DataFrame:
    """Cross origins with horizons; add T, the seasonal lag for h and the calendar of T.

    Built as one block per horizon (each in the state's (sku, origin) order), so the
    result is already sorted by (horizon, sku, origin).
    """
    epoch_idx = spec.epoch.year * 12 + spec.epoch.month - 1
    seasonal = [f"_seasonal_{h}" for h in spec.horizons]
    base = state.drop(seasonal)
    blocks = []
    for h in spec.horizons:
        target_idx = _month_index("origin") + h
        blocks.append(
            base.with_columns(
                pl.lit(h, pl.Int32).alias("horizon"),
                _date_from_index(target_idx).alias("month"),
                ((target_idx - epoch_idx).cast(pl.Float64) / 12.0).alias("t"),
                state.get_column(f"_seasonal_{h}").alias("sales_lag_seasonal"),
            )
        )
    rows = pl.concat(blocks)
    moy = pl.col("month").dt.month()
    angle = 2.0 * math.pi * moy.cast(pl.Float64) / 12.0
    return rows.with_columns(
        month_of_year=moy.cast(pl.Int8),
        fourier_s1=angle.sin(),
        fourier_c1=angle.cos(),
        fourier_s2=(2.0 * angle).sin(),
        fourier_c2=(2.0 * angle).cos(),
    )


def _finish(rows: pl.DataFrame, spec: FeatureSpec) -> pl.DataFrame:
    missing = [c for c in spec.feature_columns if c not in rows.columns]
    if missing:  # pragma: no cover - guards a spec / builder mismatch
        raise DataContractError(f"feature builder did not produce column(s) {missing}")
    return rows.select(*KEY_COLUMNS, *spec.feature_columns)
