"""GLMM candidate with a latent AR(1) SKU level, fitted once on the monthly panel.

``glmm_nb2_ar1`` is a *series* candidate (``needs_history = True``, like the classical ones):
``fit(train, history=panel)`` fits, once per origin, the NB2 GLMM

.. math::
   \\log\\mu_{it} = \\beta_0 + \\beta_1\\sin(2\\pi m_t/12) + \\beta_2\\cos(2\\pi m_t/12) + b_{it},
   \\qquad b_{i\\cdot} \\sim \\text{stationary AR(1)}(\\sigma, \\rho),

(``sales ~ fourier_s1 + fourier_c1 + ar1(month_index + 0 | sku)``; ``seasonal=False`` drops
the Fourier pair) on every SKU-month of the panel up to the origin with known sales, over the
calendar of the panel's months (:mod:`poolcast.glmm.ar1`). The forecast for h months ahead
projects each SKU's latent level from its conditional distribution at the origin:
mean :math:`\\rho^h\\tilde b_{iT}`, variance :math:`\\rho^{2h}V_{iT} + \\sigma^2(1-\\rho^{2h})`, so a
SKU that rose lately starts where it is now and is pulled towards the pooled level as h grows.
The point forecast (``mean``) is the conditional-mode plug-in
:math:`\\exp(x^\\top\\hat\\beta + m_h)`, as the other GLMM candidates' ``level="conditional"``
(the mean over the latent Gaussian, :math:`\\exp(\\dots + v_h/2)`, is pulled far up by a large
:math:`\\sigma`: on Online Retail, sigma ~ 3, it doubled the MASE); the draws share one latent path per SKU across the horizons of a
draw, then NB2 noise (:func:`poolcast.glmm.ar1.simulate_ar1`). A SKU without known sales in
the panel gets the pooled level with the stationary variance.

Without ``history`` (older callers) the monthly series is rebuilt from the training frame's
targets, as the classical candidates do.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import numpy as np
import polars as pl

from poolcast.errors import DataContractError, PoolcastError
from poolcast.glmm import GlmmControl
from poolcast.glmm import fit as glmm_fit
from poolcast.glmm.ar1 import ar1_latent_moments
from poolcast.glmm.simulate import MAX_POISSON_RATE
from poolcast.glmm.terms import design_for_newdata
from poolcast.models._design import (
    build_covariate_frame,
    make_covariate_spec,
    required_plan_columns,
)
from poolcast.models._dispersion import (
    DispersionClasses,
    finite_or_none,
    n_classes_of,
    refit_with_dispersion_classes,
)
from poolcast.models._validation import Interval, validate_parameters
from poolcast.models.base import Candidate, HorizonReport, record_warnings
from poolcast.models.classical import _history_from_train
from poolcast.models.forecast import KEY_COLUMNS, Forecast, quantiles_from_samples

__all__ = ["GlmmNegBinAr1"]

_TIME = "month_index"


def _features(frame: pl.DataFrame) -> pl.DataFrame:
    """``month_index`` (year * 12 + month - 1), ``month_of_year`` and the two yearly Fourier
    pairs of ``month`` (as :mod:`poolcast.features` defines them)."""
    moy = pl.col("month").dt.month().cast(pl.Float64)
    return frame.with_columns(
        (pl.col("month").dt.year().cast(pl.Int64) * 12 + pl.col("month").dt.month() - 1)
        .cast(pl.Int64)
        .alias(_TIME),
        pl.col("month").dt.month().cast(pl.Int64).alias("month_of_year"),
        (2 * np.pi * moy / 12).sin().alias("fourier_s1"),
        (2 * np.pi * moy / 12).cos().alias("fourier_c1"),
        (4 * np.pi * moy / 12).sin().alias("fourier_s2"),
        (4 * np.pi * moy / 12).cos().alias("fourier_c2"),
        pl.col("sku").cast(pl.String),
    )


#: Months at the end of each SKU's observed series behind the raw level of the shrinkage table.
RAW_LEVEL_MONTHS = 3


def _shrinkage(res: Any, panel: pl.DataFrame) -> pl.DataFrame:
    """Raw vs partially pooled SKU level at the origin (log scale).

    ``raw`` = :math:`\\hat\\beta_0 + \\log(\\sum y / \\sum e^{x^\\top\\hat\\beta})` over the SKU's last
    :data:`RAW_LEVEL_MONTHS` observed months (null when their sales are all 0); ``pooled`` =
    the intercept plus the latent level's conditional mode at the origin, ``mode`` and
    ``cond_sd`` that mode and its conditional SD.
    """
    design = res.design
    a = res.ar1
    fixed = np.exp(design.X @ res.beta + design.offset)
    frame = (
        panel.select("sku", _TIME, "sales")
        .with_columns(pl.Series("_fixed", fixed))
        .sort("sku", _TIME)
        .group_by("sku", maintain_order=True)
        .agg(
            pl.len().alias("n_obs"),
            pl.col("sales").tail(RAW_LEVEL_MONTHS).sum().cast(pl.Float64).alias("_y"),
            pl.col("_fixed").tail(RAW_LEVEL_MONTHS).sum().alias("_f"),
        )
    )
    raw = frame.select(
        pl.when(pl.col("_y") > 0).then((pl.col("_y") / pl.col("_f")).log()).alias("raw")
    )
    beta0 = float(res.fixef.get("(Intercept)", 0.0))
    levels = pl.DataFrame(
        {
            "sku": list(a.levels),
            "pooled": beta0 + a.modes[:, -1],
            "mode": a.modes[:, -1],
            "cond_sd": np.sqrt(a.cond_var[:, -1]),
        }
    )
    return (
        frame.select("sku", pl.col("n_obs").cast(pl.Int64))
        .with_columns(raw.get_column("raw") + beta0)
        .join(levels, on="sku", how="left")
    )


@dataclass(frozen=True)
class _Ar1Model:
    formula: str
    results: Any
    n_rows: int
    n_skus: int
    shrinkage: pl.DataFrame | None = None
    warnings: list[str] = field(default_factory=list)
    dispersion: DispersionClasses | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def beta(self) -> np.ndarray:
        return np.asarray(self.results.beta)

    @property
    def n_iter(self) -> int:
        return int(getattr(self.results.opt_summary, "n_iter", 0))


class GlmmNegBinAr1(Candidate):
    """NB2 GLMM with a latent AR(1) SKU level, fitted once per origin and projected h ahead.

    The fixed part is the shared covariate layout of :func:`poolcast.models._design.make_covariate_spec`
    on the panel's months (no trend: the latent level carries the drift; no customers): the
    seasonality (Fourier terms, or month-of-year indicators from 18 months on), ``promo`` and
    the plan columns at the month (``plan_terms``, set by the registry to the data's plan
    columns), each kept only when it varies; a forecast row takes them from the plan of its
    target month, so the candidate needs those plan columns (``required_plan_columns``).

    Parameters
    ----------
    seasonal : bool
        Seasonal fixed effects (``False``: none).
    include_promo : bool
        Use ``promo`` when it varies in the panel.
    include_fixef_uncertainty : bool
        Also draw beta from its estimated sampling distribution in the predictive draws.
    control : GlmmControl or None
        Engine settings.
    dispersion_classes : int or None
        0 = one NB2 size; K >= 2 = one size per quantile class of the SKUs' excess dispersion
        around the one-size fit (training panel only; :mod:`poolcast.models._dispersion`),
        refitted with ``dispformula="~ 0 + disp_class"``. None = the default, 5 classes: in
        the backtests of Online Retail (cut 2011-08) and Rossmann (cut 2015-04) they lowered
        this candidate's scaled pinball (1.643 -> 1.413, 0.372 -> 0.354), WAPE and MASE, at
        2-3.6x its fit time (README, "NB2 dispersion classes").
    """

    name: ClassVar[str] = "glmm_nb2_ar1"
    _default_dispersion_classes: ClassVar[int] = 5
    #: Panel months a SKU needs for a dispersion class of its own (else the middle class).
    dispersion_min_rows: ClassVar[int] = 6
    needs_history: ClassVar[bool] = True
    _required_columns: ClassVar[tuple[str, ...]] = ("sku", "horizon")
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "seasonal": [bool],
        "include_promo": [bool],
        "include_fixef_uncertainty": [bool],
        "control": [None, GlmmControl],
        "dispersion_classes": [None, Interval(int, 0, 10)],
    }

    def __init__(
        self,
        *,
        seasonal: bool = True,
        include_promo: bool = True,
        include_fixef_uncertainty: bool = False,
        control: GlmmControl | None = None,
        dispersion_classes: int | None = None,
    ) -> None:
        self.seasonal = seasonal
        self.include_promo = include_promo
        self.include_fixef_uncertainty = include_fixef_uncertainty
        self.control = control
        self.dispersion_classes = dispersion_classes

    @property
    def n_dispersion_classes(self) -> int:
        """The number of dispersion classes this candidate fits (0 = one NB2 size)."""
        return n_classes_of(self.name, self.dispersion_classes, self._default_dispersion_classes)

    def _validate_params(self) -> None:
        validate_parameters(self._parameter_constraints, self.get_params(), caller=self.name)
        _ = self.n_dispersion_classes  # refuses dispersion_classes=1

    #: Plan columns used as covariates besides ``promo`` (the registry sets them).
    plan_terms: tuple[str, ...] = ()

    @property
    def required_plan_columns(self) -> tuple[str, ...]:  # type: ignore[override]
        """``promo`` (when ``include_promo``) and the plan columns of the ``plan_terms``
        (``log1p_open_days`` needs ``open_days``)."""
        return required_plan_columns(self.include_promo, tuple(self.plan_terms))

    @property
    def formula(self) -> str:
        """The engine formula of the fit (before fitting: the one without covariates)."""
        spec = getattr(self, "spec_", None)
        fixed = spec.formula(random=f"ar1({_TIME} + 0 | sku)") if spec is not None else None
        return fixed or f"sales ~ 1 + ar1({_TIME} + 0 | sku)"

    def fit(self, train: pl.DataFrame, *, history: pl.DataFrame | None = None) -> Self:
        """Fit the AR(1) GLMM once on the monthly panel up to the origin.

        Parameters
        ----------
        train : pl.DataFrame
            The training frame: only its horizons are used, and, when ``history`` is None,
            its targets rebuild the monthly series.
        history : pl.DataFrame, optional
            The validated monthly panel up to the origin (``sku, month, sales``; NULL sales
            = unknown month, left out of the fit but kept in the latent calendar).

        Returns
        -------
        self
        """
        self._validate_params()
        self._check_columns(train, self._required_columns, "training")
        horizons = tuple(sorted(int(h) for h in train.get_column("horizon").unique().to_list()))
        if not horizons:
            raise DataContractError(f"{self.name}: the training frame has no rows")
        source = history if history is not None else _history_from_train(train)
        missing = [c for c in ("sku", "month", "sales") if c not in source.columns]
        if missing:
            raise DataContractError(
                f"{self.name}: history lacks column(s) {missing}; it must be the monthly panel"
            )
        panel = _features(source.filter(pl.col("sales").is_not_null()))
        if panel.height == 0 or not panel.get_column("sales").sum():
            raise PoolcastError(
                f"{self.name}: the panel has {panel.height} months with known sales and their "
                "total is 0; a log-link model has no finite estimate (the baselines forecast 0)"
            )
        panel = panel.with_columns(pl.col("sales").cast(pl.Int64)).sort("sku", _TIME)
        self.spec_ = make_covariate_spec(
            panel,
            customer_terms="none",
            include_promo=self.include_promo,
            plan_terms=tuple(self.plan_terms),
            seasonality="auto" if self.seasonal else "none",
        )
        panel = build_covariate_frame(self.spec_, panel).with_columns(panel.get_column(_TIME))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                res = glmm_fit(self.formula, panel, family="negbin", control=self.control)
            except PoolcastError as exc:
                raise PoolcastError(f"{self.name}: {exc}") from exc
            except (np.linalg.LinAlgError, ValueError, FloatingPointError) as exc:
                raise PoolcastError(f"{self.name}: AR(1) GLMM fit failed: {exc}") from exc
        if not np.all(np.isfinite(res.beta)) or not np.isfinite(res.loglik):
            raise PoolcastError(
                f"{self.name}: the AR(1) GLMM fit diverged (log-likelihood {res.loglik}, "
                f"beta {np.asarray(res.beta).tolist()}); leave this candidate out"
            )
        classes, notes = None, {}
        if self.n_dispersion_classes:
            with warnings.catch_warnings(record=True) as caught_disp:
                warnings.simplefilter("always")
                res, classes, notes = refit_with_dispersion_classes(
                    self.formula,
                    panel,
                    res,
                    n_classes=self.n_dispersion_classes,
                    min_rows=self.dispersion_min_rows,
                    control=self.control,
                    where="panel fit",
                )
            caught = [*caught, *caught_disp]
        model = _Ar1Model(
            dispersion=classes,
            notes=notes,
            formula=self.formula,
            results=res,
            n_rows=panel.height,
            n_skus=panel.get_column("sku").n_unique(),
            shrinkage=_shrinkage(res, panel),
            warnings=record_warnings(caught),
        )
        self.results_ = res
        self.horizons_ = horizons
        self.models_ = dict.fromkeys(horizons, model)
        self.n_iter_ = dict.fromkeys(horizons, model.n_iter)
        self.n_train_rows_ = {h: train.filter(pl.col("horizon") == h).height for h in horizons}
        return self

    def predict_distribution(
        self,
        rows: pl.DataFrame,
        *,
        quantiles: Any,
        n_samples: int,
        rng: np.random.Generator,
    ) -> Forecast:
        """Predictive mean, quantiles and draws; one latent path per SKU across the horizons.

        Parameters
        ----------
        rows : pl.DataFrame
            ``sku, origin, horizon, month`` (month = the target month).
        quantiles : sequence of float
            Levels in (0, 1).
        n_samples : int
            Predictive draws per row (>= 1).
        rng : numpy.random.Generator
            The only source of randomness.
        """
        levels = self._check_predict_arguments(rows, quantiles, n_samples, rng)
        res = self.results_
        data = _features(rows.drop("sales", strict=False))
        data = build_covariate_frame(self.spec_, data).with_columns(data.get_column(_TIME))
        classes = self.models_[self.horizons_[0]].dispersion
        if classes is not None:
            data = data.with_columns(classes.assign(data.get_column("sku")))
        try:
            new = design_for_newdata(res.design, data)
            (block,) = new.blocks
            m, _ = ar1_latent_moments(res.ar1, block.level_index, block.time_index)
            mean = np.minimum(np.exp(new.X @ res.beta + new.offset + m), MAX_POISSON_RATE)
            draws = res.simulate(
                data,
                int(n_samples),
                rng=rng,
                include_fixef_uncertainty=self.include_fixef_uncertainty,
            )
        except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
            raise PoolcastError(
                f"{self.name}: predictive simulation failed ({type(exc).__name__}: {exc})"
            ) from exc
        if not np.all(np.isfinite(mean)):
            raise PoolcastError(f"{self.name}: non-finite predictive mean; the fit is degenerate")
        samples = np.clip(np.rint(np.asarray(draws, dtype=float)), 0, None).astype(np.int64)
        return Forecast(
            keys=rows.select(KEY_COLUMNS),
            mean=mean,
            quantiles=quantiles_from_samples(samples, levels),
            samples=samples,
        )

    def _report_horizon(self, model: _Ar1Model) -> HorizonReport:
        res = model.results
        coefs = pl.DataFrame(
            {
                "term": list(res.fixef),
                "estimate": [float(v) for v in res.fixef.values()],
                "std_error": [float(res.fixef_se[k]) for k in res.fixef],
            }
        )
        a = res.ar1
        last = a.n_times - 1
        # the SKU levels at the origin (what the forecast projects), not the whole calendar
        ranef = pl.DataFrame(
            {
                "sku": list(a.levels),
                "term": [f"ar1 level at {_TIME} {a.time_max}"] * len(a.levels),
                "mode": a.modes[:, last],
                "cond_sd": np.sqrt(a.cond_var[:, last]),
            }
        )
        opt = res.opt_summary
        return HorizonReport(
            formula=model.formula,
            coefficients=coefs,
            random_effects=ranef,
            shrinkage=model.shrinkage,
            convergence={
                "converged": bool(res.converged),
                "method": res.method,
                "loglik": float(res.loglik),
                "aic": float(res.aic),
                "ar1_sd": float(a.sigma),
                "ar1_rho": float(a.rho),
                "nb2_theta": None if res.nb_theta is None else float(res.nb_theta),
                "nb2_alpha": None if res.nb_theta is None else 1.0 / float(res.nb_theta),
                "nb2_disp_coef": finite_or_none(res.disp_coef),
                "nb2_disp_coef_se": finite_or_none(res.disp_coef_se),
                **model.notes,
                "n_fit_rows": model.n_rows,
                "n_skus": model.n_skus,
                "n_evals": int(getattr(opt, "n_evals", 0)),
                "elapsed_seconds": float(getattr(opt, "elapsed_seconds", 0.0)),
                "messages": list(res.messages),
                "warnings": model.warnings,
                "fitted_once_on_panel": True,
            },
        )
