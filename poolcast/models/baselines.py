"""Baseline candidates: seasonal naive (the scale of every scaled metric) and a moving average."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import polars as pl

from poolcast.models._negbin import estimate_alpha_moments, sample_nb2
from poolcast.models._validation import Interval, Options
from poolcast.models.base import Candidate, HorizonReport

__all__ = ["MovingAverage", "SeasonalNaive"]

_MIN_SEASONAL_ERRORS = 30


def _first_available(frame: pl.DataFrame, columns: tuple[str, ...]) -> np.ndarray:
    """Row-wise first non-null value among ``columns`` (those present), else 0."""
    present = [pl.col(c).cast(pl.Float64) for c in columns if c in frame.columns]
    if not present:
        return np.zeros(frame.height)
    expr = pl.coalesce([*present, pl.lit(0.0)])
    return frame.select(expr.alias("x")).get_column("x").to_numpy().astype(float)


@dataclass(frozen=True)
class _NaiveModel:
    errors: np.ndarray
    n_rows: int
    scales: dict[str, float] = field(default_factory=dict)
    relative_scale: float = 0.0
    n_iter: int = 0


class SeasonalNaive(Candidate):
    """Seasonal naive forecast :math:`\\hat y_T = y_{T-12}` with empirical predictive errors.

    The point forecast is the feature ``sales_lag_seasonal`` (sales at T-12), falling back to
    ``sales_lag_0`` (the origin month), then ``sales_rm_12``, then 0 when a SKU is too short.

    Predictive distribution, per horizon h, from the in-sample seasonal-naive errors of the
    training rows of that horizon (only the rows with an observed ``sales_lag_seasonal`` when
    there are at least 30 of them, so fallback forecasts do not blur the error distribution).
    A draw resamples one error :math:`e^*` (pooled over SKUs), is rounded and clipped at 0:

    * ``error_model="scaled"`` (default): :math:`e = (y-\\hat y)/s_i` with :math:`s_i` the SKU's
      in-sample seasonal-naive MAE (the MASE scale); draw :math:`\\hat y + s_i e^*`. A SKU not in
      the training rows gets :math:`s = \\hat y\\cdot\\operatorname{median}_i(s_i/\\bar{\\hat y}_i)`.
      Errors are in units of each SKU's own variability, so one SKU's outliers (a store closed
      for a month) do not multiply another's level;
    * ``error_model="log_ratio"``: :math:`e = \\log(1+y) - \\log(1+\\hat y)`; draw
      :math:`(1+\\hat y)e^{e^*} - 1` (scale-free but explosive with heavy-tailed errors);
    * ``error_model="additive"``: :math:`e = y - \\hat y`; draw :math:`\\hat y + e^*` (only for
      SKUs of similar size).

    The predictive ``mean`` is the point forecast itself (so MASE scores the textbook baseline);
    quantiles come from the draws.

    Parameters
    ----------
    error_model : {"scaled", "log_ratio", "additive"}
    max_errors : int
        At most this many training errors are kept per horizon (an even subsample).
    """

    name: ClassVar[str] = "seasonal_naive"
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "error_model": [Options(frozenset({"scaled", "log_ratio", "additive"}))],
        "max_errors": [Interval(int, 1, None)],
    }
    _point_columns: ClassVar[tuple[str, ...]] = ("sales_lag_seasonal", "sales_lag_0", "sales_rm_12")

    def __init__(self, *, error_model: str = "scaled", max_errors: int = 50_000) -> None:
        self.error_model = error_model
        self.max_errors = max_errors

    def _point(self, frame: pl.DataFrame) -> np.ndarray:
        return _first_available(frame, self._point_columns)

    def _fit_horizon(self, train_h: pl.DataFrame, horizon: int) -> _NaiveModel:
        if "sales_lag_seasonal" in train_h.columns:
            seasonal = train_h.filter(pl.col("sales_lag_seasonal").is_not_null())
            if seasonal.height >= _MIN_SEASONAL_ERRORS:
                train_h = seasonal
        y = train_h.get_column("sales").cast(pl.Float64).to_numpy()
        yhat = self._point(train_h)
        scales: dict[str, float] = {}
        relative = 0.0
        if self.error_model == "scaled":
            per_sku = (
                pl.DataFrame(
                    {"sku": train_h.get_column("sku"), "abs_err": np.abs(y - yhat), "yhat": yhat}
                )
                .group_by("sku", maintain_order=True)
                .agg(pl.col("abs_err").mean().alias("scale"), pl.col("yhat").mean().alias("level"))
            )
            scales = dict(zip(per_sku["sku"].to_list(), per_sku["scale"].to_list(), strict=True))
            ok = per_sku.filter((pl.col("level") > 0) & (pl.col("scale") > 0))
            if ok.height:
                relative = float((ok["scale"] / ok["level"]).median())
            s_rows = np.array([scales[k] for k in train_h.get_column("sku").to_list()])
            keep = s_rows > 0
            errors = (y[keep] - yhat[keep]) / s_rows[keep]
        elif self.error_model == "log_ratio":
            errors = np.log1p(y) - np.log1p(yhat)
        else:
            errors = y - yhat
        if errors.size > self.max_errors:
            errors = errors[np.linspace(0, errors.size - 1, self.max_errors).astype(int)]
        if errors.size == 0:
            errors = np.zeros(1)
        return _NaiveModel(
            errors=np.sort(errors), n_rows=train_h.height, scales=scales, relative_scale=relative
        )

    def _predict_horizon(
        self, model: _NaiveModel, rows_h: pl.DataFrame, n_samples: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        yhat = self._point(rows_h)
        e = model.errors[rng.integers(0, model.errors.size, size=(rows_h.height, n_samples))]
        if self.error_model == "scaled":
            skus = rows_h.get_column("sku").to_list()
            scale = np.array([model.scales.get(k, np.nan) for k in skus], dtype=float)
            scale = np.where(np.isnan(scale), model.relative_scale * yhat, scale)
            draws = yhat[:, None] + scale[:, None] * e
        elif self.error_model == "log_ratio":
            draws = np.expm1(np.log1p(yhat)[:, None] + e)
        else:
            draws = yhat[:, None] + e
        return yhat, np.clip(np.rint(draws), 0, None).astype(np.int64)

    def _report_horizon(self, model: _NaiveModel) -> HorizonReport:
        q = np.quantile(model.errors, [0.1, 0.5, 0.9])
        return HorizonReport(
            convergence={
                "error_model": self.error_model,
                "n_errors": int(model.errors.size),
                "error_q10": float(q[0]),
                "error_q50": float(q[1]),
                "error_q90": float(q[2]),
                "relative_scale_new_sku": model.relative_scale,
            }
        )


@dataclass(frozen=True)
class _MovingAverageModel:
    alpha: float
    n_rows: int
    n_iter: int = 0


class MovingAverage(Candidate):
    """Moving-average forecast :math:`\\hat y_T = \\frac1w\\sum_{k<w} y_{origin-k}` with NB2 noise.

    The point forecast is the feature ``sales_rm_<window>`` (null-skipping mean ending at the
    origin), falling back to the other rolling mean, then ``sales_lag_0``, then 0. The
    predictive distribution is NB2 with mean :math:`\\hat y` and a dispersion estimated per
    horizon from the training residuals by moments,
    :math:`\\hat\\alpha = \\sum[(y-\\hat y)^2-\\hat y]/\\sum \\hat y^2` (floored at 1e-8, i.e. Poisson).

    Parameters
    ----------
    window : {3, 12}
        Months in the rolling mean.
    """

    name: ClassVar[str] = "moving_average"
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "window": [Options(frozenset({3, 12}))],
    }

    def __init__(self, *, window: int = 3) -> None:
        self.window = window

    def _point(self, frame: pl.DataFrame) -> np.ndarray:
        other = 12 if self.window == 3 else 3
        return _first_available(
            frame, (f"sales_rm_{self.window}", f"sales_rm_{other}", "sales_lag_0")
        )

    def _fit_horizon(self, train_h: pl.DataFrame, horizon: int) -> _MovingAverageModel:
        y = train_h.get_column("sales").cast(pl.Float64).to_numpy()
        alpha = estimate_alpha_moments(y, self._point(train_h))
        return _MovingAverageModel(alpha=alpha, n_rows=train_h.height)

    def _predict_horizon(
        self,
        model: _MovingAverageModel,
        rows_h: pl.DataFrame,
        n_samples: int,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray]:
        yhat = self._point(rows_h)
        return yhat, sample_nb2(yhat, model.alpha, n_samples, rng)

    def _report_horizon(self, model: _MovingAverageModel) -> HorizonReport:
        return HorizonReport(convergence={"nb2_alpha": model.alpha, "window": self.window})
