"""GLM candidates: complete pooling (one equation for all SKUs) and no pooling (SKU fixed effects).

Complete pooling (IRLS, :mod:`poolcast.models._irls`; the same estimates as statsmodels'
``GLM``, several times faster) with a log link,

.. math:: \\log\\mu_{it} = \\beta_0 + x_{it}^\\top\\beta,

Poisson (:math:`\\operatorname{Var}y=\\mu`) or NB2 (:math:`\\operatorname{Var}y=\\mu+\\alpha\\mu^2`). The
NB2 :math:`\\alpha` is estimated (not statsmodels' default :math:`\\alpha=1`): IRLS for
:math:`\\beta` at fixed :math:`\\alpha` alternates with a 1-D maximum-likelihood update of
:math:`\\alpha` given :math:`\\mu` until :math:`|\\Delta\\log\\alpha|<10^{-4}` (coordinate ascent on the
joint NB2 likelihood, which converges to the joint MLE).

No pooling adds one intercept per SKU, :math:`\\log\\mu_{it}=a_i+x_{it}^\\top\\beta`, fitted by Fisher
scoring with the SKU block eliminated (:mod:`poolcast.models._sku_irls`). A SKU unseen in
training is forecast at the pooled level :math:`a_{new}=\\log\\big(\\frac1J\\sum_j e^{a_j}\\big)`
(the average SKU on the response scale).

The covariates (:mod:`poolcast.models._design`) are the ones the training frame supports:
``t``, Fourier terms, customer features, ``promo``.

Predictive draws: :math:`\\mu` at :math:`\\hat\\beta` (or, with ``parameter_uncertainty=True``,
one :math:`\\beta^{(s)}\\sim N(\\hat\\beta,\\widehat{\\operatorname{Cov}})` per draw), then Poisson or
NB2 observation noise with the estimated :math:`\\alpha`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import polars as pl

from poolcast.errors import PoolcastError
from poolcast.models._design import (
    CovariateSpec,
    build_covariates,
    build_design,
)
from poolcast.models._irls import GlmFitResult, fit_glm, fit_nb2_glm
from poolcast.models._negbin import sample_nb2
from poolcast.models._sku_irls import fit_sku_fixed_effects
from poolcast.models._validation import Interval
from poolcast.models.base import (
    CovariateCandidate,
    HorizonReport,
    check_finite_coefficients,
    record_warnings,
    warn_not_converged,
)

__all__ = ["PooledGlm", "PooledNegBinGlm", "PooledPoissonGlm", "SkuFixedEffectsNegBinGlm"]

_ETA_MAX = 30.0


@dataclass(frozen=True)
class _GlmModel:
    """One horizon's pooled GLM: covariate spec, coefficients, covariance, dispersion."""

    spec: CovariateSpec
    beta: np.ndarray
    cov: np.ndarray
    alpha: float
    n_iter: int
    converged: bool
    loglik: float
    warnings: list[str] = field(default_factory=list)


class PooledGlm(CovariateCandidate):
    """Complete-pooling GLM; the family is the hook ``_fit_family`` (see module notes).

    Parameters
    ----------
    customer_terms : {"log", "spline", "none"}
        Customer feature: ``log_customers``, the ``cust_spline_*`` basis, or none.
    include_promo : bool
        Use ``promo`` when it varies in the training frame.
    parameter_uncertainty : bool
        Draw :math:`\\beta` from its asymptotic normal per predictive draw.
    max_iter : int
        IRLS iteration limit of each fit.
    tol : float
        IRLS convergence tolerance.

    Attributes
    ----------
    coef_ : dict of int to ndarray
        Coefficients per horizon (intercept first).
    models_, horizons_, n_iter_, n_train_rows_
        See :class:`~poolcast.models.base.Candidate`.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **CovariateCandidate._parameter_constraints,
        "parameter_uncertainty": [bool],
    }

    def __init__(
        self,
        *,
        customer_terms: str = "log",
        include_promo: bool = True,
        parameter_uncertainty: bool = False,
        max_iter: int = 100,
        tol: float = 1e-8,
    ) -> None:
        self.customer_terms = customer_terms
        self.include_promo = include_promo
        self.parameter_uncertainty = parameter_uncertainty
        self.max_iter = max_iter
        self.tol = tol

    def _fit_family(self, y: np.ndarray, x: np.ndarray) -> GlmFitResult:
        """Hook: fit the family by IRLS (:mod:`poolcast.models._irls`)."""
        raise NotImplementedError

    def _fit_horizon(self, train_h: pl.DataFrame, horizon: int) -> _GlmModel:
        spec = self._covariate_spec(train_h)
        x = build_design(spec, train_h)
        y = train_h.get_column("sales").cast(pl.Float64).to_numpy()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                res = self._fit_family(y, x)
            except (np.linalg.LinAlgError, ValueError) as exc:
                raise PoolcastError(
                    f"{self.name}: horizon {horizon} fit failed ({exc}); the design "
                    f"{['Intercept', *spec.terms]} is singular or the data degenerate"
                ) from exc
        terms = ["Intercept", *spec.terms]
        check_finite_coefficients(self.name, horizon, res.beta, terms)
        if not res.converged:
            warn_not_converged(self.name, horizon, f"IRLS stopped after {res.n_iter} iterations")
        return _GlmModel(
            spec=spec,
            beta=res.beta,
            cov=res.cov,
            alpha=res.alpha,
            n_iter=res.n_iter,
            converged=res.converged,
            loglik=res.loglik,
            warnings=record_warnings(caught),
        )

    def _predict_horizon(
        self, model: _GlmModel, rows_h: pl.DataFrame, n_samples: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        x = build_design(model.spec, rows_h)
        mean = np.exp(np.minimum(x @ model.beta, _ETA_MAX))
        mu = mean
        if self.parameter_uncertainty:
            draws = rng.multivariate_normal(
                model.beta, model.cov, size=n_samples, method="cholesky"
            )
            mu = np.exp(np.minimum(x @ draws.T, _ETA_MAX))
        return mean, sample_nb2(mu, model.alpha, n_samples, rng)

    def _report_horizon(self, model: _GlmModel) -> HorizonReport:
        terms = ["Intercept", *model.spec.terms]
        coefs = pl.DataFrame(
            {"term": terms, "estimate": model.beta, "std_error": np.sqrt(np.diag(model.cov))}
        )
        return HorizonReport(
            formula=model.spec.formula(),
            coefficients=coefs,
            convergence={
                "converged": model.converged,
                "loglik": model.loglik,
                "nb2_alpha": model.alpha,
                "dropped_covariates": model.spec.dropped,
                "warnings": model.warnings,
                "imputation": dict(zip(model.spec.terms, model.spec.fill_values, strict=True)),
            },
        )


class PooledPoissonGlm(PooledGlm):
    """Complete-pooling Poisson GLM (statsmodels IRLS). See :class:`PooledGlm`."""

    name: ClassVar[str] = "glm_poisson_pooled"

    def _fit_family(self, y: np.ndarray, x: np.ndarray) -> GlmFitResult:
        return fit_glm(y, x, alpha=0.0, max_iter=self.max_iter, tol=self.tol)


class PooledNegBinGlm(PooledGlm):
    """Complete-pooling NB2 GLM with estimated :math:`\\alpha`. See :class:`PooledGlm`.

    Parameters
    ----------
    max_outer : int
        Limit of the alternations between IRLS and the 1-D :math:`\\alpha` update.
    """

    name: ClassVar[str] = "glm_nb2_pooled"
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **PooledGlm._parameter_constraints,
        "max_outer": [Interval(int, 1, None)],
    }

    def __init__(
        self,
        *,
        customer_terms: str = "log",
        include_promo: bool = True,
        parameter_uncertainty: bool = False,
        max_iter: int = 100,
        tol: float = 1e-8,
        max_outer: int = 25,
    ) -> None:
        super().__init__(
            customer_terms=customer_terms,
            include_promo=include_promo,
            parameter_uncertainty=parameter_uncertainty,
            max_iter=max_iter,
            tol=tol,
        )
        self.max_outer = max_outer

    def _fit_family(self, y: np.ndarray, x: np.ndarray) -> GlmFitResult:
        return fit_nb2_glm(y, x, max_iter=self.max_iter, tol=self.tol, max_outer=self.max_outer)


@dataclass(frozen=True)
class _SkuModel:
    spec: CovariateSpec
    levels: dict[str, int]
    a: np.ndarray
    a_se: np.ndarray
    a_new: float
    beta: np.ndarray
    cov: np.ndarray
    alpha: float
    degenerate: np.ndarray
    n_iter: int
    converged: bool
    loglik: float


class SkuFixedEffectsNegBinGlm(CovariateCandidate):
    """No pooling: NB2 GLM with one fixed intercept per SKU and shared slopes.

    Fitted by Fisher scoring with the SKU block eliminated (no dummy matrix), alternating
    with a 1-D ML update of :math:`\\alpha`; see :mod:`poolcast.models._sku_irls`. A SKU
    with all-zero training sales gets half a unit over its history; an unseen SKU the pooled
    level :math:`\\log(\\frac1J\\sum_j e^{a_j})`.

    Parameters
    ----------
    customer_terms, include_promo, max_iter, tol
        As in :class:`PooledGlm` (``max_iter`` caps each scoring run).

    Attributes
    ----------
    coef_ : dict of int to ndarray
        Shared slopes per horizon (no intercept; the SKU effects are in ``describe().sku_effects``).
    """

    name: ClassVar[str] = "glm_nb2_sku_fixed"
    _family: ClassVar[str] = "nb2"

    def __init__(
        self,
        *,
        customer_terms: str = "log",
        include_promo: bool = True,
        max_iter: int = 100,
        tol: float = 1e-8,
    ) -> None:
        self.customer_terms = customer_terms
        self.include_promo = include_promo
        self.max_iter = max_iter
        self.tol = tol

    def _fit_horizon(self, train_h: pl.DataFrame, horizon: int) -> _SkuModel:
        spec = self._covariate_spec(train_h)
        x = build_covariates(spec, train_h)
        y = train_h.get_column("sales").cast(pl.Float64).to_numpy()
        sku = train_h.get_column("sku")
        levels_series = sku.unique(maintain_order=True)
        levels = {s: i for i, s in enumerate(levels_series.to_list())}
        g = sku.replace_strict(levels, return_dtype=pl.Int64).to_numpy()
        if y.sum() <= 0:
            raise PoolcastError(
                f"{self.name}: horizon {horizon}: every training sale is 0; nothing to fit"
            )
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            try:
                res = fit_sku_fixed_effects(
                    y, x, g, len(levels), family=self._family, max_iter=self.max_iter, tol=self.tol
                )
            except np.linalg.LinAlgError as exc:
                raise PoolcastError(
                    f"{self.name}: horizon {horizon}: singular information matrix ({exc}); "
                    "a covariate is collinear with the SKU effects"
                ) from exc
        check_finite_coefficients(self.name, horizon, res.beta, spec.terms)
        if not res.converged:
            warn_not_converged(
                self.name,
                horizon,
                f"Fisher scoring / alpha loop stopped after {res.n_iter} iterations",
            )
        live = ~res.degenerate
        a_new = float(np.log(np.mean(np.exp(res.a[live])))) if live.any() else float(np.mean(res.a))
        return _SkuModel(
            spec=spec,
            levels=levels,
            a=res.a,
            a_se=res.a_se,
            a_new=a_new,
            beta=res.beta,
            cov=res.beta_cov,
            alpha=res.alpha,
            degenerate=res.degenerate,
            n_iter=res.n_iter,
            converged=res.converged,
            loglik=res.loglik,
        )

    def _predict_horizon(
        self, model: _SkuModel, rows_h: pl.DataFrame, n_samples: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        x = build_covariates(model.spec, rows_h)
        idx = (
            rows_h.get_column("sku")
            .replace_strict(model.levels, default=-1, return_dtype=pl.Int64)
            .to_numpy()
        )
        a = np.where(idx >= 0, model.a[np.maximum(idx, 0)], model.a_new)
        mean = np.exp(np.minimum(a + x @ model.beta, _ETA_MAX))
        return mean, sample_nb2(mean, model.alpha, n_samples, rng)

    def _report_horizon(self, model: _SkuModel) -> HorizonReport:
        coefs = pl.DataFrame(
            {
                "term": list(model.spec.terms),
                "estimate": model.beta,
                "std_error": np.sqrt(np.diag(model.cov)),
            },
            schema={"term": pl.String, "estimate": pl.Float64, "std_error": pl.Float64},
        )
        skus = pl.DataFrame(
            {
                "sku": list(model.levels),
                "estimate": model.a,
                "std_error": model.a_se,
                "all_zero": model.degenerate,
            }
        )
        return HorizonReport(
            formula=model.spec.formula().replace("~ ", "~ 0 + C(sku) + ", 1),
            coefficients=coefs,
            sku_effects=skus,
            convergence={
                "converged": model.converged,
                "loglik": model.loglik,
                "nb2_alpha": model.alpha,
                "n_sku": len(model.levels),
                "n_all_zero_sku": int(model.degenerate.sum()),
                "new_sku_level": model.a_new,
                "dropped_covariates": model.spec.dropped,
            },
        )
