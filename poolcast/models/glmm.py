"""GLMM candidates (partial pooling) on the poolcast GLMM engine.

Per horizon h the engine fits, by maximum likelihood (Laplace, or adaptive Gauss–Hermite
quadrature for a scalar random intercept),

.. math::
   \\log\\mu_{it} = x_{it}^\\top\\beta + b_{i0} + b_{i1}\\,\\text{promo}_{it},\\qquad
   b_i\\sim N(0,\\Sigma),\\qquad y_{it}\\mid b_i\\sim\\text{Poisson}(\\mu_{it})\\ \\text{or}\\ \\text{NB2}(\\mu_{it},\\theta),

with the shared covariates of :mod:`poolcast.models._design` in :math:`x` (the formula is built
from what the training frame supports, e.g.
``sales ~ t + fourier_s1 + fourier_c1 + fourier_s2 + fourier_c2 + log_customers + promo + (1 + promo | sku)``)
and the random promo slope only in the ``*_ri_slope`` candidates (dropped, and recorded,
when promo is constant in the training frame).

Prediction: the mean is ``results.predict(rows, level="conditional")`` (the SKU's conditional
mode added; a SKU unseen in training gets the population level, b = 0); the draws are
``results.simulate(rows, n_samples, rng=rng)``, which draws each known SKU's random effects
from their conditional distribution given the data and each new SKU's from
:math:`N(0,\\Sigma)` (random-effect uncertainty included), then Poisson / NB2 noise.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Self

import numpy as np
import polars as pl

from poolcast.errors import DataContractError, InvalidParameterError, PoolcastError
from poolcast.glmm import GlmmControl
from poolcast.glmm import fit as glmm_fit
from poolcast.glmm.families import Tweedie
from poolcast.glmm.simulate import MAX_POISSON_RATE
from poolcast.models._design import CovariateSpec, add_covariate, build_covariate_frame
from poolcast.models._dispersion import (
    DispersionClasses,
    finite_or_none,
    n_classes_of,
    refit_with_dispersion_classes,
)
from poolcast.models._validation import Interval, Options, validate_parameters
from poolcast.models.base import (
    CovariateCandidate,
    HorizonReport,
    check_finite_coefficients,
    record_warnings,
)

__all__ = [
    "GlmmCandidate",
    "GlmmNegBinDynamic",
    "GlmmNegBinDynamicDisp",
    "GlmmNegBinRandomIntercept",
    "GlmmNegBinRandomInterceptDisp",
    "GlmmNegBinRandomInterceptSlope",
    "GlmmNegBinSeasonal",
    "GlmmPoissonRandomIntercept",
    "GlmmPoissonRandomInterceptAgq",
    "GlmmPoissonRandomInterceptSlope",
]


@dataclass(frozen=True)
class _GlmmModel:
    spec: CovariateSpec
    formula: str
    results: Any
    n_iter: int
    slope_dropped: str | None
    warnings: list[str] = field(default_factory=list)
    warm_start_from: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)  # extra describe() entries
    dispersion: DispersionClasses | None = None  # the SKUs' dispersion classes (training rows)

    @property
    def beta(self) -> np.ndarray:
        return np.asarray(self.results.beta)


class GlmmCandidate(CovariateCandidate):
    """Random-intercept (and optional promo-slope) GLMM per horizon; see module notes.

    Subclasses set the class attributes ``name``, ``_family`` ("poisson" or "negbin"),
    ``_random_slope`` and ``_method`` ("laplace" or "agq"); the hook ``_random_part(spec)``
    gives the random-effects term.

    Parameters
    ----------
    customer_terms : {"log", "spline", "none"}
    include_promo : bool
    n_agq : int
        Quadrature nodes (used by the AGQ candidate; Laplace candidates need 1).
    include_fixef_uncertainty : bool
        Also draw :math:`\\beta\\sim N(\\hat\\beta, \\widehat{\\operatorname{Cov}})` per predictive draw.
    control : poolcast.glmm.GlmmControl or None
        Engine tolerances and check levels.
    dispersion_classes : int or None
        NB2 candidates: 0 = one NB2 size for all SKUs; K >= 2 = K quantile classes of the
        SKUs' excess dispersion, built per horizon from the training rows after a first fit
        with one size, then a refit with ``dispformula="~ 0 + disp_class"`` (one size per class;
        :mod:`poolcast.models._dispersion`). None = the candidate's default
        (``_default_dispersion_classes``). Other families refuse K > 0.

    Attributes
    ----------
    results_ : dict of int to poolcast.glmm.GlmmResults
        The engine's fit per horizon.
    """

    name: ClassVar[str] = "glmm"
    _family: ClassVar[str] = "poisson"
    _random_slope: ClassVar[bool] = False
    _method: ClassVar[str] = "laplace"
    _default_n_agq: ClassVar[int] = 1
    _default_dispersion_classes: ClassVar[int] = 0
    #: Training rows a SKU needs for a dispersion class of its own (else the middle class).
    dispersion_min_rows: ClassVar[int] = 6
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "customer_terms": CovariateCandidate._parameter_constraints["customer_terms"],
        "include_promo": [bool],
        "n_agq": [Interval(int, 1, 25)],
        "include_fixef_uncertainty": [bool],
        "control": [None, GlmmControl],
        "dispersion_classes": [None, Interval(int, 0, 10)],
    }

    def __init__(
        self,
        *,
        customer_terms: str = "log",
        include_promo: bool = True,
        n_agq: int | None = None,
        include_fixef_uncertainty: bool = False,
        control: GlmmControl | None = None,
        dispersion_classes: int | None = None,
    ) -> None:
        self.customer_terms = customer_terms
        self.include_promo = include_promo
        self.n_agq = n_agq
        self.include_fixef_uncertainty = include_fixef_uncertainty
        self.control = control
        self.dispersion_classes = dispersion_classes

    @property
    def n_dispersion_classes(self) -> int:
        """The number of dispersion classes this candidate fits (0 = one NB2 size)."""
        return n_classes_of(
            self.name, getattr(self, "dispersion_classes", None), self._default_dispersion_classes
        )

    def _validate_params(self) -> None:
        params = self.get_params()
        if params["n_agq"] is None:
            params["n_agq"] = self._default_n_agq
        validate_parameters(self._parameter_constraints, params, caller=self.name)
        k = self.n_dispersion_classes  # refuses dispersion_classes=1
        if k and (self._family != "negbin" or self._method != "laplace"):
            raise InvalidParameterError(
                f"{self.name}: dispersion_classes={k} needs an NB2 Laplace candidate (the "
                f"engine's dispformula); this one is {self._family!r} / {self._method!r}, "
                "so leave dispersion_classes at 0"
            )
        n_agq = params["n_agq"]
        if self._method == "laplace" and n_agq != 1:
            raise InvalidParameterError(
                f"{self.name}: n_agq={n_agq} but this candidate uses the Laplace approximation; "
                "leave n_agq=None (1) or use glmm_poisson_ri_agq"
            )
        if self._method == "agq" and n_agq < 2:
            raise InvalidParameterError(
                f"{self.name}: n_agq={n_agq}; adaptive quadrature needs n_agq >= 2"
            )

    def _random_part(self, spec: CovariateSpec) -> tuple[str, str | None]:
        """Hook: the random-effects term, and why a requested slope was dropped (or None)."""
        if not self._random_slope:
            return "(1 | sku)", None
        if "promo" in spec.terms:
            return "(1 + promo | sku)", None
        return "(1 | sku)", spec.dropped.get("promo", "promo not in the fixed part")

    def fit(self, train: pl.DataFrame, *, history: pl.DataFrame | None = None) -> Self:
        """Fit one GLMM per horizon (see :meth:`CovariateCandidate.fit`).

        Horizons are fitted in ascending order and each fit starts the outer optimisation
        from the previous horizon's estimates when the formula is the same (a warm start:
        the horizons share the SKUs and almost all the data, so their optima are close).
        The warm start changes the optimiser's path, not the maximum-likelihood optimum;
        ``describe()`` records it as ``warm_start_from_horizon``.
        """
        self._warm_start: tuple[int, str, dict[str, Any]] | None = None
        try:
            return super().fit(train, history=history)
        finally:
            self._warm_start = None

    def _fit_horizon(self, train_h: pl.DataFrame, horizon: int) -> _GlmmModel:
        spec = self._covariate_spec(train_h)
        random, slope_dropped = self._random_part(spec)
        formula = spec.formula(random=random)
        data = self._design_frame(spec, train_h, formula)
        n_agq = self.n_agq if self.n_agq is not None else self._default_n_agq
        warm = getattr(self, "_warm_start", None)
        start = warm[2] if warm is not None and warm[1] == formula else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = self._fit_glmm(formula, data, n_agq=n_agq, start=start, horizon=horizon)
            if start is not None and not res.converged:
                # A warm start only shortens the path; when it ends somewhere the checks do
                # not accept (seen on Rossmann), fit again from the default start.
                res = self._fit_glmm(formula, data, n_agq=n_agq, start=None, horizon=horizon)
                start = None
        check_finite_coefficients(self.name, horizon, np.asarray(res.beta), list(res.fixef))
        if not np.isfinite(res.loglik):
            # a diverged fit (seen on Rossmann's euros): its modes and conditional SDs are
            # garbage and its draws NaN; refuse it here with the reason, not at simulation
            raise PoolcastError(
                f"{self.name}: horizon {horizon}: the GLMM fit diverged (log-likelihood "
                f"{res.loglik}, converged={res.converged}); rescale the response or "
                "covariates, or leave this candidate out"
            )
        opt = res.opt_summary
        self._warm_start = (
            horizon,
            formula,
            {"theta": np.array(opt.theta), "beta": np.array(opt.beta), "nb_theta": opt.nb_theta},
        )
        classes, notes = None, {}
        if self.n_dispersion_classes:
            with warnings.catch_warnings(record=True) as caught_disp:
                warnings.simplefilter("always")
                res, classes, notes = self._fit_dispersion(formula, data, res, horizon)
            caught = [*caught, *caught_disp]
        return _GlmmModel(
            spec=spec,
            formula=formula,
            results=res,
            n_iter=int(getattr(res.opt_summary, "n_iter", 0)),
            slope_dropped=slope_dropped,
            warnings=record_warnings(caught),
            warm_start_from=None if start is None else warm[0],
            notes=notes,
            dispersion=classes,
        )

    def _fit_dispersion(
        self, formula: str, data: pl.DataFrame, res: Any, horizon: int
    ) -> tuple[Any, DispersionClasses | None, dict[str, Any]]:
        """Dispersion classes from the one-size fit ``res`` and the refit with one NB2 size per
        class (:func:`poolcast.models._dispersion.refit_with_dispersion_classes`)."""
        return refit_with_dispersion_classes(
            formula,
            data,
            res,
            n_classes=self.n_dispersion_classes,
            min_rows=self.dispersion_min_rows,
            control=self.control,
            where=f"horizon {horizon}",
        )

    def _fit_glmm(
        self, formula: str, data: Any, *, n_agq: int, start: dict[str, Any] | None, horizon: int
    ) -> Any:
        """One engine fit; engine and numerical errors become a PoolcastError naming the horizon."""
        try:
            return glmm_fit(
                formula,
                data,
                family=self._engine_family(),
                method=self._method,
                n_agq=n_agq,
                control=self.control,
                start=start,
            )
        except PoolcastError as exc:
            raise PoolcastError(f"{self.name}: horizon {horizon}: {exc}") from exc
        except (np.linalg.LinAlgError, ValueError, FloatingPointError) as exc:
            raise PoolcastError(f"{self.name}: horizon {horizon}: GLMM fit failed: {exc}") from exc

    def _engine_family(self) -> Any:
        """The ``family`` argument of the engine fit (a hook for families with a parameter)."""
        return self._family

    def _design_frame(self, spec: CovariateSpec, frame: pl.DataFrame, formula: str) -> pl.DataFrame:
        """Hook: the engine's frame for ``formula`` (``sku``, ``sales`` and the covariates)."""
        return build_covariate_frame(spec, frame)

    @property
    def results_(self) -> dict[int, Any]:
        self._check_is_fitted()
        return {h: m.results for h, m in self.models_.items()}

    def _predict_horizon(
        self, model: _GlmmModel, rows_h: pl.DataFrame, n_samples: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        data = self._design_frame(model.spec, rows_h.drop("sales", strict=False), model.formula)
        if model.dispersion is not None:
            data = data.with_columns(model.dispersion.assign(data.get_column("sku")))
        res = model.results
        try:
            # an overflowing mean is clipped at the draws' bound (poolcast.glmm.simulate)
            mean = np.minimum(
                np.asarray(res.predict(data, level="conditional"), dtype=float), MAX_POISSON_RATE
            )
            draws = res.simulate(
                data, n_samples, rng=rng, include_fixef_uncertainty=self.include_fixef_uncertainty
            )
        except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
            raise PoolcastError(
                f"{self.name}: predictive simulation failed ({type(exc).__name__}: {exc}); "
                "a random-effect draw gave an extreme mean"
            ) from exc
        return mean, np.clip(np.rint(np.asarray(draws, dtype=float)), 0, None).astype(np.int64)

    def _report_horizon(self, model: _GlmmModel) -> HorizonReport:
        res = model.results
        coefs = pl.DataFrame(
            {
                "term": list(res.fixef),
                "estimate": [float(v) for v in res.fixef.values()],
                "std_error": [float(res.fixef_se[k]) for k in res.fixef],
            }
        )
        ranef = res.ranef.get("sku")
        if ranef is not None:
            ranef = ranef.rename({"level": "sku"}).select("sku", "term", "mode", "cond_sd")
        try:
            shrink = res.shrinkage("sku").rename({"level": "sku"})
        except (PoolcastError, ValueError, KeyError):
            shrink = None
        theta = res.theta
        opt = res.opt_summary
        return HorizonReport(
            formula=model.formula,
            coefficients=coefs,
            random_effects=ranef,
            shrinkage=shrink,
            convergence={
                "converged": bool(res.converged),
                "method": res.method,
                "n_agq": res.n_agq,
                "loglik": float(res.loglik),
                "aic": float(res.aic),
                "sd": {k: dict(v) for k, v in res.sd.items()},
                "corr": {k: list(v) for k, v in res.corr.items()},
                "nb2_theta": None if theta is None else float(theta),
                "nb2_alpha": None if not theta else 1.0 / float(theta),
                "nb2_disp_coef": finite_or_none(res.disp_coef),
                "nb2_disp_coef_se": finite_or_none(res.disp_coef_se),
                "n_evals": int(getattr(opt, "n_evals", 0)),
                "elapsed_seconds": float(getattr(opt, "elapsed_seconds", 0.0)),
                "messages": list(res.messages),
                "warnings": model.warnings,
                "random_slope_dropped": model.slope_dropped,
                "warm_start_from_horizon": model.warm_start_from,
                "dropped_covariates": model.spec.dropped,
                **model.notes,
            },
        )


class GlmmPoissonRandomIntercept(GlmmCandidate):
    """Poisson GLMM, random intercept per SKU, Laplace."""

    name: ClassVar[str] = "glmm_poisson_ri"


class GlmmNegBinRandomIntercept(GlmmCandidate):
    """NB2 GLMM, random intercept per SKU, Laplace."""

    name: ClassVar[str] = "glmm_nb2_ri"
    _family: ClassVar[str] = "negbin"


class GlmmPoissonRandomInterceptSlope(GlmmCandidate):
    """Poisson GLMM, random intercept + promo slope per SKU, Laplace."""

    name: ClassVar[str] = "glmm_poisson_ri_slope"
    _random_slope: ClassVar[bool] = True


class GlmmNegBinRandomInterceptSlope(GlmmCandidate):
    """NB2 GLMM, random intercept + promo slope per SKU, Laplace."""

    name: ClassVar[str] = "glmm_nb2_ri_slope"
    _family: ClassVar[str] = "negbin"
    _random_slope: ClassVar[bool] = True


class GlmmPoissonRandomInterceptAgq(GlmmCandidate):
    """Poisson GLMM, random intercept per SKU, adaptive Gauss–Hermite quadrature (default 7 nodes)."""

    name: ClassVar[str] = "glmm_poisson_ri_agq"
    _method: ClassVar[str] = "agq"
    _default_n_agq: ClassVar[int] = 7


class GlmmTweedieRandomIntercept(GlmmCandidate):
    """Tweedie GLMM (log link), random intercept per SKU, Laplace: for sales in money or
    quantities with many exact zeros (compound Poisson-Gamma, Var = phi mu^p).

    The power p is estimated by profile likelihood on the first horizon fitted and kept for
    the later horizons (the horizons share almost all their data; profiling each would cost
    ~15 fits per horizon); ``describe()`` shows it in each horizon's summary.
    """

    name: ClassVar[str] = "glmm_tweedie_ri"
    _family: ClassVar[str] = "tweedie"

    def fit(self, train: pl.DataFrame, *, history: pl.DataFrame | None = None) -> Self:
        self._tweedie_power: float | None = None
        return super().fit(train, history=history)

    def _engine_family(self) -> Any:
        power = getattr(self, "_tweedie_power", None)
        return Tweedie(power=power) if power else "tweedie"

    def _fit_glmm(
        self, formula: str, data: Any, *, n_agq: int, start: dict[str, Any] | None, horizon: int
    ) -> Any:
        res = super()._fit_glmm(formula, data, n_agq=n_agq, start=start, horizon=horizon)
        self._tweedie_power = float(res.family.power)
        return res


#: The category level of a SKU without a category (null in the feature frame).
NO_CATEGORY = "(no category)"


class GlmmNegBinSeasonal(GlmmNegBinRandomIntercept):
    r"""NB2 GLMM with seasonality that belongs to the SKU and its category: random intercepts
    and uncorrelated random first-harmonic Fourier slopes per category and per SKU, Laplace.

    .. math::
       \log\mu_{it} = x_{it}^\top\beta + a_{c0} + b_{i0}
       + (a_{c1} + u_{i1})\sin(2\pi m_t/12) + (a_{c2} + u_{i2})\cos(2\pi m_t/12),

    with :math:`c = c(i)` the SKU's category, :math:`a_{c0}\sim N(0,\tau_0^2)`,
    :math:`a_{ck}\sim N(0,\tau_k^2)`, :math:`b_{i0}\sim N(0,\sigma_0^2)`,
    :math:`u_{ik}\sim N(0,\sigma_k^2)`, all independent, i.e.
    ``sales ~ <shared covariates> + (1 | category) + (0 + fourier_s1 + fourier_c1 || category)
    + (1 | sku) + (0 + fourier_s1 + fourier_c1 || sku)`` (reproduced against glmmTMB in
    ``tests/poolcast/glmm/test_reference_category_seasonal.py``). The fixed Fourier terms give
    the pooled seasonal shape, the category's slopes its category's shape, and a SKU's own
    shape is shrunk towards its category's by :math:`\sigma_k` (strongly for a young or noisy
    SKU, which then forecasts with about its category's shape, not the pooled one). A SKU
    never seen in training gets its category's effects (its own are 0); an unseen category
    gets the pooled ones.

    The SKU terms are on ``sku``, not ``category:sku``: SKU ids are the panel's key, unique
    across categories, so ``(1 | category) + (1 | sku)`` is the nested model
    ``(1 | category/sku)`` (lme4 reads unique ids the same way; the reference test fits both
    spellings to the same optimum), and the feature rows carry the category at the origin,
    so a SKU that moves category keeps one SKU effect (under ``category:sku`` its history
    would split into two SKUs and a forecast after the move would treat it as new).

    The seasonal slopes are used only when the horizon's training targets span at least
    ``min_months`` distinct months (two annual cycles by default) and the fixed part has both
    ``fourier_s1`` and ``fourier_c1``; otherwise the model is the random intercept and
    ``describe().convergence["h=..."]["random_slope_dropped"]`` says why. The category level
    is added to the slopes when the training frame has a ``category`` column with at least
    ``min_categories`` distinct non-null categories; otherwise the model is the SKU-only
    ``(1 | sku) + (0 + fourier_s1 + fourier_c1 || sku)`` and
    ``describe().convergence["h=..."]["category_level_dropped"]`` says why (None when used;
    ``"n_categories"`` beside it). SKUs without a category (null) share the level
    ``"(no category)"``, in training and in forecasts alike.

    Parameters
    ----------
    min_months : int
        Least number of distinct training target months for the seasonal slopes.
    min_categories : int
        Least number of distinct categories for the category level (a variance estimated
        from two or three levels is little more than a guess).
    correlated : bool
        Use ``(1 + fourier_s1 + fourier_c1 | sku)`` (an unstructured 3 x 3 covariance) for
        the SKU level instead (the category level stays uncorrelated: a 3 x 3 covariance
        from a handful of categories is not estimable). One grouping term goes through the
        engine's block-diagonal path, which is much cheaper without categories: at 1k SKUs x
        36 months 0.50 CPU-s against 14.8 for the ``||`` form, which the engine splits into
        three terms on the same factor and solves as a sparse system (benchmarks/README.md,
        ``family_benchmark.py``).
    customer_terms, include_promo, n_agq, include_fixef_uncertainty, control
        As in :class:`GlmmCandidate`.
    """

    name: ClassVar[str] = "glmm_nb2_seasonal"
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **GlmmCandidate._parameter_constraints,
        "min_months": [Interval(int, 2, None)],
        "min_categories": [Interval(int, 2, None)],
        "correlated": [bool],
    }

    def __init__(
        self,
        *,
        customer_terms: str = "log",
        include_promo: bool = True,
        n_agq: int | None = None,
        include_fixef_uncertainty: bool = False,
        control: GlmmControl | None = None,
        min_months: int = 24,
        min_categories: int = 3,
        correlated: bool = False,
        dispersion_classes: int | None = None,
    ) -> None:
        super().__init__(
            customer_terms=customer_terms,
            include_promo=include_promo,
            n_agq=n_agq,
            include_fixef_uncertainty=include_fixef_uncertainty,
            control=control,
            dispersion_classes=dispersion_classes,
        )
        self.min_months = min_months
        self.min_categories = min_categories
        self.correlated = correlated

    # its seasonal slopes are on the Fourier terms, so the fixed part keeps them too
    _seasonality: ClassVar[str] = "fourier"

    _CATEGORY_TERMS: ClassVar[str] = "(1 | category) + (0 + fourier_s1 + fourier_c1 || category)"

    def _fit_horizon(self, train_h: pl.DataFrame, horizon: int) -> _GlmmModel:
        self._n_months = int(train_h.get_column("month").n_unique())
        n_categories = (
            int(train_h.get_column("category").drop_nulls().n_unique())
            if "category" in train_h.columns
            else 0
        )
        if "category" not in train_h.columns:
            self._category_dropped = "the training frame has no category column"
        elif n_categories < self.min_categories:
            self._category_dropped = (
                f"the training frame has {n_categories} categories, the category level needs "
                f">= {self.min_categories} (min_categories)"
            )
        else:
            self._category_dropped = None
        model = super()._fit_horizon(train_h, horizon)
        reason = self._category_dropped
        if reason is None and not _uses_category(model.formula):
            reason = f"no seasonal slopes: {model.slope_dropped}"
        notes = {"category_level_dropped": reason, "n_categories": n_categories}
        return replace(model, notes={**model.notes, **notes})

    def _random_part(self, spec: CovariateSpec) -> tuple[str, str | None]:
        n_months = getattr(self, "_n_months", 0)
        if n_months < self.min_months:
            return "(1 | sku)", (
                f"SKU seasonal slopes need >= {self.min_months} training months, "
                f"the horizon has {n_months}"
            )
        missing = [c for c in ("fourier_s1", "fourier_c1") if c not in spec.terms]
        if missing:
            return "(1 | sku)", f"{missing} not in the fixed part ({spec.dropped})"
        if self.correlated:
            sku = "(1 + fourier_s1 + fourier_c1 | sku)"
        else:
            sku = "(1 | sku) + (0 + fourier_s1 + fourier_c1 || sku)"
        if getattr(self, "_category_dropped", "not checked") is None:
            return f"{self._CATEGORY_TERMS} + {sku}", None
        return sku, None

    def _design_frame(self, spec: CovariateSpec, frame: pl.DataFrame, formula: str) -> pl.DataFrame:
        data = super()._design_frame(spec, frame, formula)
        if not _uses_category(formula):
            return data
        if "category" not in frame.columns:
            raise DataContractError(
                f"{self.name}: the model has category-level terms but the rows lack the "
                "category column; build them with poolcast.features (build_forecast_frame)"
            )
        category = frame.get_column("category").cast(pl.String).fill_null(NO_CATEGORY)
        return data.with_columns(category.alias("category"))

    def _report_horizon(self, model: _GlmmModel) -> HorizonReport:
        report = super()._report_horizon(model)
        ranef = model.results.ranef
        if _uses_category(model.formula):
            effects: dict[str, dict[str, float]] = {}
            for group in (g for g in ranef if g.split(".")[0] == "category"):
                for level, term, mode in ranef[group].select("level", "term", "mode").iter_rows():
                    effects.setdefault(str(level), {})[str(term)] = float(mode)
            report = replace(
                report, convergence={**report.convergence, "category_effects": effects}
            )
        groups = [g for g in ranef if g.split(".")[0] == "sku" and g != "sku"]
        if not groups or report.random_effects is None:  # one term: all slopes already in
            return report
        extra = [
            ranef[g].rename({"level": "sku"}).select("sku", "term", "mode", "cond_sd")
            for g in groups
        ]
        return replace(report, random_effects=pl.concat([report.random_effects, *extra]))


def _uses_category(formula: str) -> bool:
    """True when ``formula`` has a random term grouped by ``category``."""
    return "| category)" in formula


@dataclass
class _HurdleModel:
    spec: CovariateSpec
    formula: str
    zero: Any  # logistic GLMM of P(sales > 0)
    count: Any  # zero-truncated NB2 GLMM of sales given sales > 0
    n_iter: int
    slope_dropped: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def results(self) -> Any:
        return self.count


class GlmmHurdleNegBin(GlmmCandidate):
    r"""Hurdle GLMM for intermittent demand: whether a SKU sells, and how much when it does.

    Per horizon two GLMMs share the covariates and a random intercept per SKU: a logistic
    GLMM of :math:`\pi = P(y > 0)` and a zero-truncated NB2 GLMM of :math:`y \mid y > 0`
    (glmmTMB's ``truncated_nbinom2`` with a zero formula; the likelihood factorises, so the
    parts are fitted apart). The predictive distribution is their product: a draw is
    :math:`B \cdot C` with :math:`B \sim` Bernoulli(:math:`\pi`) and :math:`C` a truncated
    NB2 draw, each with its SKU's conditional random-effect uncertainty; the mean is
    :math:`\pi\,\mu/(1 - (\theta/(\theta+\mu))^\theta)`.
    """

    name: ClassVar[str] = "glmm_hurdle_nb2"
    _family: ClassVar[str] = "truncated_negbin"

    def _fit_horizon(self, train_h: pl.DataFrame, horizon: int) -> _HurdleModel:
        spec = self._covariate_spec(train_h)
        formula = spec.formula(random="(1 | sku)")
        data = build_covariate_frame(spec, train_h)
        positive = data.filter(pl.col("sales") > 0)
        if positive.height == 0:
            raise DataContractError(
                f"{self.name}: horizon {horizon}: no month with sales > 0 to fit the count part"
            )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            zero = self._fit_part(
                formula.replace("sales ~", "sold ~", 1),
                data.with_columns(sold=(pl.col("sales") > 0).cast(pl.Int32)),
                family="binomial",
                horizon=horizon,
            )
            count = self._fit_part(formula, positive, family="truncated_negbin", horizon=horizon)
        for part in (zero, count):
            check_finite_coefficients(self.name, horizon, np.asarray(part.beta), list(part.fixef))
        n_iter = sum(int(getattr(p.opt_summary, "n_iter", 0)) for p in (zero, count))
        return _HurdleModel(
            spec=spec,
            formula=formula,
            zero=zero,
            count=count,
            n_iter=n_iter,
            warnings=record_warnings(caught),
        )

    def _fit_part(self, formula: str, data: Any, *, family: str, horizon: int) -> Any:
        try:
            return glmm_fit(formula, data, family=family, control=self.control)
        except PoolcastError as exc:
            raise PoolcastError(f"{self.name}: horizon {horizon} ({family}): {exc}") from exc
        except (np.linalg.LinAlgError, ValueError, FloatingPointError) as exc:
            raise PoolcastError(
                f"{self.name}: horizon {horizon} ({family}): GLMM fit failed: {exc}"
            ) from exc

    def _predict_horizon(
        self, model: _HurdleModel, rows_h: pl.DataFrame, n_samples: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        data = build_covariate_frame(model.spec, rows_h.drop("sales", strict=False))
        try:
            p_sell = np.asarray(model.zero.predict(data, level="conditional"), dtype=float)
            mu = np.asarray(model.count.predict(data, level="conditional"), dtype=float)
            sold = np.asarray(model.zero.simulate(data, n_samples, rng=rng), dtype=float)
            amount = np.asarray(model.count.simulate(data, n_samples, rng=rng), dtype=float)
        except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
            raise PoolcastError(
                f"{self.name}: predictive simulation failed ({type(exc).__name__}: {exc})"
            ) from exc
        theta = float(model.count.nb_theta)
        p_zero = np.exp(theta * (np.log(theta) - np.logaddexp(np.log(mu), np.log(theta))))
        mean = p_sell * mu / -np.expm1(np.log(np.clip(p_zero, 0.0, 1.0 - 1e-12)))
        draws = np.clip(np.rint(sold * amount), 0, None).astype(np.int64)
        return mean, draws

    def _report_horizon(self, model: _HurdleModel) -> HorizonReport:
        parts = {"zero": model.zero, "count": model.count}
        coefs = pl.concat(
            [
                pl.DataFrame(
                    {
                        "term": [f"{part}:{k}" for k in res.fixef],
                        "estimate": [float(v) for v in res.fixef.values()],
                        "std_error": [float(res.fixef_se[k]) for k in res.fixef],
                    }
                )
                for part, res in parts.items()
            ]
        )
        ranef = pl.concat(
            [
                res.ranef["sku"]
                .rename({"level": "sku"})
                .select(
                    "sku", (pl.lit(f"{part}:") + pl.col("term")).alias("term"), "mode", "cond_sd"
                )
                for part, res in parts.items()
            ]
        )
        try:  # partial pooling of the chance to sell (the zero part)
            shrink = model.zero.shrinkage("sku").rename({"level": "sku"})
        except (PoolcastError, ValueError, KeyError):
            shrink = None
        return HorizonReport(
            formula=f"{model.formula}  [zero part: logistic; count part: truncated NB2]",
            coefficients=coefs,
            random_effects=ranef,
            shrinkage=shrink,
            convergence={
                "converged": bool(model.zero.converged and model.count.converged),
                "loglik": float(model.zero.loglik + model.count.loglik),
                "sd": {p: {k: dict(v) for k, v in r.sd.items()} for p, r in parts.items()},
                "nb2_theta": float(model.count.nb_theta),
                "warnings": model.warnings,
                "dropped_covariates": model.spec.dropped,
            },
        )


_HISTORY_SOURCES: dict[str, str] = {
    "rm_3": "sales_rm_3",
    "rm_12": "sales_rm_12",
    "lag_seasonal": "sales_lag_seasonal",
}
_SEASONAL_MISSING = "seasonal_lag_missing"


def _history_columns(terms: tuple[str, ...], *, indicator: bool) -> tuple[str, ...]:
    """Names of the derived covariates of ``history_terms`` (log terms, then the indicator)."""
    cols = tuple(f"log1p_{_HISTORY_SOURCES[k]}" for k in terms)
    return (*cols, _SEASONAL_MISSING) if "lag_seasonal" in terms and indicator else cols


class GlmmNegBinDynamic(GlmmNegBinRandomIntercept):
    """NB2 GLMM, random intercept per SKU, with the SKU's own recent sales as covariates.

    Adds to the shared covariates of :class:`GlmmNegBinRandomIntercept`, per ``history_terms``,

    .. math::
       \\gamma_3 \\log(1 + \\bar y_{i,3}) + \\gamma_{12} \\log(1 + \\bar y_{i,12})
       + \\gamma_s \\log(1 + \\tilde y_{i,T-12}),

    with :math:`\\bar y_{i,w}` the SKU's mean sales over the w months ending at the origin
    (``sales_rm_w``) and :math:`\\tilde y_{i,T-12}` its sales a year before the target
    (``sales_lag_seasonal``) or, when that is missing (``seasonal_fallback="recent"``), its
    3-month mean :math:`\\bar y_{i,3}`. With ``seasonal_fallback="indicator"`` the missing
    seasonal term is 0 instead and :math:`\\delta\\, m_{iT}` is added (:math:`m_{iT}` = 1
    when the lag is missing). All are known at the origin, so the model stays
    leakage-safe; the random intercept keeps partially pooling the SKU's residual level.
    The log terms are centred at their training mean; a term with nulls in training (a
    rolling mean over unknown months) gets a ``<term>_missing`` indicator and its nulls the
    training mean (see :mod:`poolcast.models._design`), and a term constant in the training frame is dropped (recorded in
    ``describe().convergence[...]["dropped_covariates"]``).

    The terms let a SKU's own level shifts (:math:`\\gamma_3`) and its own seasonal shape
    (:math:`\\gamma_s`, e.g. Christmas gift items) move its forecast, which a random
    intercept with global Fourier seasonality cannot do.

    Parameters
    ----------
    history_terms : tuple of str
        Any of ``"rm_3"``, ``"rm_12"``, ``"lag_seasonal"`` (non-empty, no repeats).
    seasonal_fallback : {"indicator", "recent"}
        A missing seasonal lag (history shorter than a year): ``"recent"`` (the default,
        chosen on the Online Retail and Rossmann backtests) uses the SKU's 3-month mean
        instead, :math:`\\log(1 + \\bar y_{i,3})`, with no indicator; ``"indicator"`` sets the log
        term to 0 and adds the 0/1 indicator :math:`m_{iT}`. When the
        panel starts less than a year before the training targets, :math:`m_{iT}` is 1 for
        every SKU in the first year, i.e. a first-year dummy that is confounded with the
        trend ``t``: on Rossmann (2013-01 start) it made 2015 forecasts overshoot.
    customer_terms, include_promo, n_agq, include_fixef_uncertainty, control, dispersion_classes
        As in :class:`GlmmCandidate`.
    """

    name: ClassVar[str] = "glmm_nb2_ri_dynamic"
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **GlmmCandidate._parameter_constraints,
        "history_terms": [tuple],
        "seasonal_fallback": [Options(frozenset({"indicator", "recent"}))],
    }

    def __init__(
        self,
        *,
        customer_terms: str = "log",
        include_promo: bool = True,
        n_agq: int | None = None,
        include_fixef_uncertainty: bool = False,
        control: GlmmControl | None = None,
        history_terms: tuple[str, ...] = ("rm_3", "lag_seasonal"),
        seasonal_fallback: str = "recent",
        dispersion_classes: int | None = None,
    ) -> None:
        super().__init__(
            customer_terms=customer_terms,
            include_promo=include_promo,
            n_agq=n_agq,
            include_fixef_uncertainty=include_fixef_uncertainty,
            control=control,
            dispersion_classes=dispersion_classes,
        )
        self.history_terms = history_terms
        self.seasonal_fallback = seasonal_fallback

    def _validate_params(self) -> None:
        super()._validate_params()
        terms = self.history_terms
        bad = [k for k in terms if k not in _HISTORY_SOURCES]
        if not terms or bad or len(set(terms)) != len(terms):
            raise InvalidParameterError(
                f"{self.name}: history_terms={terms!r}; give a non-empty tuple without repeats "
                f"of {sorted(_HISTORY_SOURCES)}"
            )

    def _with_history(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` plus the derived history covariates (see the class notes)."""
        sources = [_HISTORY_SOURCES[k] for k in self.history_terms]
        needed = [*sources, "sales_rm_3"] if self.seasonal_fallback == "recent" else sources
        missing = [c for c in dict.fromkeys(needed) if c not in frame.columns]
        if missing:
            raise DataContractError(
                f"{self.name}: the frame lacks sales-history column(s) {missing}; build it with "
                "poolcast.features (build_training_frame / build_forecast_frame)"
            )
        exprs = []
        for src in sources:
            x = pl.col(src).cast(pl.Float64)
            if src == "sales_lag_seasonal" and self.seasonal_fallback == "recent":
                recent = pl.col("sales_rm_3").cast(pl.Float64)
                exprs.append(pl.coalesce(x, recent).clip(0.0).log1p().alias(f"log1p_{src}"))
            elif src == "sales_lag_seasonal":
                exprs += [
                    x.is_null().cast(pl.Float64).alias(_SEASONAL_MISSING),
                    x.clip(0.0).log1p().fill_null(0.0).alias(f"log1p_{src}"),
                ]
            else:
                exprs.append(x.clip(0.0).log1p().alias(f"log1p_{src}"))
        return frame.with_columns(exprs)

    def _covariate_spec(self, train_h: pl.DataFrame) -> CovariateSpec:
        base = super()._covariate_spec(train_h)
        terms, centres, fills = list(base.terms), list(base.centres), list(base.fill_values)
        dropped, indicators = dict(base.dropped), list(base.indicators)
        indicator = self.seasonal_fallback == "indicator"
        for name in _history_columns(tuple(self.history_terms), indicator=indicator):
            add_covariate(
                train_h.get_column(name),
                name,
                centred=name != _SEASONAL_MISSING,
                terms=terms,
                centres=centres,
                fills=fills,
                indicators=indicators,
                dropped=dropped,
            )
        return CovariateSpec(tuple(terms), tuple(centres), tuple(fills), dropped, tuple(indicators))

    def _fit_horizon(self, train_h: pl.DataFrame, horizon: int) -> _GlmmModel:
        return super()._fit_horizon(self._with_history(train_h), horizon)

    def _predict_horizon(
        self, model: _GlmmModel, rows_h: pl.DataFrame, n_samples: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        return super()._predict_horizon(model, self._with_history(rows_h), n_samples, rng)


#: Dispersion classes of the ``*_disp`` candidates (quintiles of the SKUs' excess dispersion,
#: the split of the diagnosis in :mod:`poolcast.models._dispersion`; not tuned).
DISPERSION_CLASSES = 5


class GlmmNegBinRandomInterceptDisp(GlmmNegBinRandomIntercept):
    """:class:`GlmmNegBinRandomIntercept` with one NB2 size per dispersion class of SKUs
    (``dispersion_classes`` = 5 quantile classes by default; :mod:`poolcast.models._dispersion`)."""

    name: ClassVar[str] = "glmm_nb2_ri_disp"
    _default_dispersion_classes: ClassVar[int] = DISPERSION_CLASSES


class GlmmNegBinDynamicDisp(GlmmNegBinDynamic):
    """:class:`GlmmNegBinDynamic` with one NB2 size per dispersion class of SKUs
    (``dispersion_classes`` = 5 quantile classes by default; :mod:`poolcast.models._dispersion`)."""

    name: ClassVar[str] = "glmm_nb2_ri_dynamic_disp"
    _default_dispersion_classes: ClassVar[int] = DISPERSION_CLASSES
