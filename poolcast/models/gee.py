"""GEE candidates: population-average Poisson models with a working correlation per SKU.

Generalized estimating equations (Liang & Zeger 1986) for the marginal mean,

.. math:: \\log E[y_{it}] = \\beta_0 + x_{it}^\\top\\beta,\\qquad
   \\sum_i D_i^\\top V_i^{-1}(y_i-\\mu_i)=0,\\quad V_i=\\phi A_i^{1/2}R(\\rho)A_i^{1/2},

with SKUs as clusters and the working correlation :math:`R(\\rho)` exchangeable or AR(1) over
consecutive months; robust (sandwich) standard errors. ``solver="numpy"`` (default) runs
statsmodels' algorithm vectorised over clusters (:mod:`poolcast.models._gee_solver`; the
same numbers, ~10x faster at 10k SKUs); ``solver="statsmodels"`` calls ``statsmodels.GEE``.
Both start from the independence Poisson GLM (statsmodels' default start).

Predictive distribution around the marginal mean :math:`\\hat\\mu` from statsmodels'
``predict``: the quasi-Poisson dispersion from Pearson residuals,
:math:`\\hat\\phi=\\frac{1}{n-p}\\sum (y-\\hat\\mu)^2/\\hat\\mu`, gives draws with mean :math:`\\hat\\mu` and
variance :math:`\\hat\\phi\\hat\\mu` (a gamma–Poisson mixture, i.e. an NB with
:math:`\\alpha=(\\hat\\phi-1)/\\hat\\mu`; Poisson when :math:`\\hat\\phi\\le 1`). The population-average
mean ignores a SKU's own level: that is what this candidate stands for in the comparison.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import polars as pl
import statsmodels.api as sm
from statsmodels.genmod import cov_struct
from statsmodels.tools import sm_exceptions

from poolcast.errors import PoolcastError
from poolcast.models._design import CovariateSpec, build_design
from poolcast.models._gee_solver import fit_gee_poisson
from poolcast.models._irls import fit_glm
from poolcast.models._negbin import sample_quasi_poisson
from poolcast.models._validation import Interval, Options
from poolcast.models.base import (
    CovariateCandidate,
    HorizonReport,
    check_finite_coefficients,
    record_warnings,
    warn_not_converged,
)

__all__ = ["GeePoisson", "GeePoissonAR1", "GeePoissonExchangeable"]


@dataclass(frozen=True)
class _GeeModel:
    spec: CovariateSpec
    results: Any
    beta: np.ndarray
    bse: np.ndarray
    phi: float
    dep_params: Any
    n_iter: int
    converged: bool
    warnings: list[str] = field(default_factory=list)


class GeePoisson(CovariateCandidate):
    """Population-average Poisson GEE; the working correlation is the hook ``_make_cov_struct``.

    Parameters
    ----------
    customer_terms : {"log", "spline", "none"}
    include_promo : bool
    max_iter : int
        GEE iteration limit (statsmodels ``maxiter``).
    tol : float
        Convergence tolerance on the score norm (statsmodels ``ctol``).
    solver : {"numpy", "statsmodels"}
        Vectorised statsmodels algorithm (default) or ``statsmodels.GEE`` itself.

    Attributes
    ----------
    results_ : dict of int to GeeFitResult or statsmodels GEEResults
        The fitted GEE per horizon (by solver).
    coef_ : dict of int to ndarray
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **CovariateCandidate._parameter_constraints,
        "tol": [Interval(float, 0.0, None, closed="neither")],
        "solver": [Options(frozenset({"numpy", "statsmodels"}))],
    }
    _corr: ClassVar[str] = ""

    def __init__(
        self,
        *,
        customer_terms: str = "log",
        include_promo: bool = True,
        max_iter: int = 60,
        tol: float = 1e-6,
        solver: str = "numpy",
    ) -> None:
        self.customer_terms = customer_terms
        self.include_promo = include_promo
        self.max_iter = max_iter
        self.tol = tol
        self.solver = solver

    def _make_cov_struct(self) -> cov_struct.CovStruct:
        """Hook: the working correlation structure."""
        raise NotImplementedError

    def _fit_horizon(self, train_h: pl.DataFrame, horizon: int) -> _GeeModel:
        spec = self._covariate_spec(train_h)
        x = build_design(spec, train_h)
        y = train_h.get_column("sales").cast(pl.Float64).to_numpy()
        groups = train_h.get_column("sku").rank("dense").to_numpy().astype(np.int64) - 1
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                start = fit_glm(y, x, alpha=0.0).beta
                if self.solver == "statsmodels":
                    model = sm.GEE(
                        y,
                        x,
                        groups=groups,
                        family=sm.families.Poisson(),
                        cov_struct=self._make_cov_struct(),
                    )
                    res = model.fit(maxiter=self.max_iter, ctol=self.tol, start_params=start)
                    beta = np.asarray(res.params, dtype=float)
                    bse = np.asarray(res.bse, dtype=float)
                    rho = float(np.atleast_1d(res.cov_struct.dep_params)[0])
                    n_iter = len(res.fit_history["params"])
                    converged = bool(res.converged)
                else:
                    res = fit_gee_poisson(
                        y,
                        x,
                        groups,
                        corr=self._corr,
                        start=start,
                        max_iter=self.max_iter,
                        tol=self.tol,
                    )
                    beta, rho, n_iter, converged = res.beta, res.rho, res.n_iter, res.converged
                    bse = np.sqrt(np.maximum(np.diag(res.cov_robust), 0.0))
            except (np.linalg.LinAlgError, ValueError) as exc:
                raise PoolcastError(
                    f"{self.name}: horizon {horizon} GEE fit failed: {exc}"
                ) from exc
        terms = ["Intercept", *spec.terms]
        check_finite_coefficients(self.name, horizon, beta, terms)
        if not converged:
            warn_not_converged(
                self.name, horizon, f"GEE score norm above tol={self.tol} after {n_iter} iterations"
            )
        found = [
            w
            for w in caught
            if issubclass(
                w.category, (sm_exceptions.ConvergenceWarning, sm_exceptions.IterationLimitWarning)
            )
        ]
        mu = np.exp(np.minimum(x @ beta, 30.0))
        dof = max(1, y.size - x.shape[1])
        phi = float(np.sum((y - mu) ** 2 / np.maximum(mu, 1e-12)) / dof)
        return _GeeModel(
            spec=spec,
            results=res,
            beta=beta,
            bse=bse,
            phi=phi,
            dep_params=rho,
            n_iter=n_iter,
            converged=converged,
            warnings=record_warnings(found),
        )

    @property
    def results_(self) -> dict[int, Any]:
        self._check_is_fitted()
        return {h: m.results for h, m in self.models_.items()}

    def _predict_horizon(
        self, model: _GeeModel, rows_h: pl.DataFrame, n_samples: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        x = build_design(model.spec, rows_h)
        if self.solver == "statsmodels":
            mean = np.asarray(model.results.predict(exog=x), dtype=float)
        else:
            mean = np.exp(np.minimum(x @ model.beta, 30.0))
        return mean, sample_quasi_poisson(mean, model.phi, n_samples, rng)

    def _report_horizon(self, model: _GeeModel) -> HorizonReport:
        terms = ["Intercept", *model.spec.terms]
        coefs = pl.DataFrame({"term": terms, "estimate": model.beta, "std_error": model.bse})
        dep = np.atleast_1d(np.asarray(model.dep_params, dtype=float)).tolist()
        return HorizonReport(
            formula=model.spec.formula(),
            coefficients=coefs,
            convergence={
                "converged": model.converged,
                "quasi_poisson_phi": model.phi,
                "working_correlation": dep,
                "dropped_covariates": model.spec.dropped,
                "warnings": model.warnings,
            },
        )


class GeePoissonExchangeable(GeePoisson):
    """Poisson GEE with an exchangeable working correlation within SKU. See :class:`GeePoisson`."""

    name: ClassVar[str] = "gee_poisson_exchangeable"
    _corr: ClassVar[str] = "exchangeable"

    def _make_cov_struct(self) -> cov_struct.CovStruct:
        return cov_struct.Exchangeable()


class GeePoissonAR1(GeePoisson):
    """Poisson GEE with an AR(1) working correlation in the month index. See :class:`GeePoisson`."""

    name: ClassVar[str] = "gee_poisson_ar1"
    _corr: ClassVar[str] = "ar1"

    def _make_cov_struct(self) -> cov_struct.CovStruct:
        return cov_struct.Autoregressive(grid=True)
