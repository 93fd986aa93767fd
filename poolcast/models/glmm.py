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
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import polars as pl

from poolcast.errors import InvalidParameterError, PoolcastError
from poolcast.glmm import GlmmControl
from poolcast.glmm import fit as glmm_fit
from poolcast.models._design import CovariateSpec, build_covariate_frame
from poolcast.models._validation import Interval, validate_parameters
from poolcast.models.base import (
    CovariateCandidate,
    HorizonReport,
    check_finite_coefficients,
    record_warnings,
)

__all__ = [
    "GlmmCandidate",
    "GlmmNegBinRandomIntercept",
    "GlmmNegBinRandomInterceptSlope",
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
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "customer_terms": CovariateCandidate._parameter_constraints["customer_terms"],
        "include_promo": [bool],
        "n_agq": [Interval(int, 1, 25)],
        "include_fixef_uncertainty": [bool],
        "control": [None, GlmmControl],
    }

    def __init__(
        self,
        *,
        customer_terms: str = "log",
        include_promo: bool = True,
        n_agq: int | None = None,
        include_fixef_uncertainty: bool = False,
        control: GlmmControl | None = None,
    ) -> None:
        self.customer_terms = customer_terms
        self.include_promo = include_promo
        self.n_agq = n_agq
        self.include_fixef_uncertainty = include_fixef_uncertainty
        self.control = control

    def _validate_params(self) -> None:
        params = self.get_params()
        if params["n_agq"] is None:
            params["n_agq"] = self._default_n_agq
        validate_parameters(self._parameter_constraints, params, caller=self.name)
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

    def _fit_horizon(self, train_h: pl.DataFrame, horizon: int) -> _GlmmModel:
        spec = self._covariate_spec(train_h)
        random, slope_dropped = self._random_part(spec)
        formula = spec.formula(random=random)
        data = build_covariate_frame(spec, train_h)
        n_agq = self.n_agq if self.n_agq is not None else self._default_n_agq
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                res = glmm_fit(
                    formula,
                    data,
                    family=self._family,
                    method=self._method,
                    n_agq=n_agq,
                    control=self.control,
                )
            except PoolcastError as exc:
                raise PoolcastError(f"{self.name}: horizon {horizon}: {exc}") from exc
            except (np.linalg.LinAlgError, ValueError, FloatingPointError) as exc:
                raise PoolcastError(
                    f"{self.name}: horizon {horizon}: GLMM fit failed: {exc}"
                ) from exc
        check_finite_coefficients(self.name, horizon, np.asarray(res.beta), list(res.fixef))
        return _GlmmModel(
            spec=spec,
            formula=formula,
            results=res,
            n_iter=int(getattr(res.opt_summary, "n_iter", 0)),
            slope_dropped=slope_dropped,
            warnings=record_warnings(caught),
        )

    @property
    def results_(self) -> dict[int, Any]:
        self._check_is_fitted()
        return {h: m.results for h, m in self.models_.items()}

    @property
    def coef_(self) -> dict[int, np.ndarray]:
        self._check_is_fitted()
        return {h: np.asarray(m.results.beta) for h, m in self.models_.items()}

    def _predict_horizon(
        self, model: _GlmmModel, rows_h: pl.DataFrame, n_samples: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        data = build_covariate_frame(model.spec, rows_h.drop("sales", strict=False))
        res = model.results
        try:
            mean = np.asarray(res.predict(data, level="conditional"), dtype=float)
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
                "n_evals": int(getattr(opt, "n_evals", 0)),
                "elapsed_seconds": float(getattr(opt, "elapsed_seconds", 0.0)),
                "messages": list(res.messages),
                "warnings": model.warnings,
                "random_slope_dropped": model.slope_dropped,
                "dropped_covariates": model.spec.dropped,
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
