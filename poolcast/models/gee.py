"""GEE candidates: population-average Poisson models with a working correlation per SKU.

Generalized estimating equations (Liang & Zeger 1986) for the marginal mean,

.. math:: \\log E[y_{it}] = \\beta_0 + x_{it}^\\top\\beta,\\qquad
   \\sum_i D_i^\\top V_i^{-1}(y_i-\\mu_i)=0,\\quad V_i=\\phi A_i^{1/2}R(\\rho)A_i^{1/2},

solved by statsmodels' ``GEE`` with SKUs as clusters and the working correlation
:math:`R(\\rho)` exchangeable or AR(1) in the month index; robust (sandwich) standard errors.

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
from poolcast.models._negbin import sample_quasi_poisson
from poolcast.models._validation import Interval
from poolcast.models.base import HorizonReport, check_finite_coefficients, record_warnings
from poolcast.models.glm import _ModelCandidate

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


class GeePoisson(_ModelCandidate):
    """Population-average Poisson GEE; the working correlation is the hook ``_make_cov_struct``.

    Parameters
    ----------
    customer_terms : {"log", "spline", "none"}
    include_promo : bool
    max_iter : int
        GEE iteration limit (statsmodels ``maxiter``).
    tol : float
        Convergence tolerance on the parameter change (statsmodels ``ctol``).

    Attributes
    ----------
    results_ : dict of int to statsmodels GEEResults
        The fitted GEE per horizon.
    coef_ : dict of int to ndarray
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **_ModelCandidate._parameter_constraints,
        "tol": [Interval(float, 0.0, None, closed="neither")],
    }

    def __init__(
        self,
        *,
        customer_terms: str = "log",
        include_promo: bool = True,
        max_iter: int = 30,
        tol: float = 1e-6,
    ) -> None:
        self.customer_terms = customer_terms
        self.include_promo = include_promo
        self.max_iter = max_iter
        self.tol = tol

    def _make_cov_struct(self) -> cov_struct.CovStruct:
        """Hook: the working correlation structure."""
        raise NotImplementedError

    def _fit_horizon(self, train_h: pl.DataFrame, horizon: int) -> _GeeModel:
        spec = self._covariate_spec(train_h)
        x = build_design(spec, train_h)
        y = train_h.get_column("sales").cast(pl.Float64).to_numpy()
        groups = train_h.get_column("sku").rank("dense").to_numpy()
        month = train_h.get_column("month")
        time = (month.dt.year().cast(pl.Int64) * 12 + month.dt.month().cast(pl.Int64)).to_numpy()
        time = time - time.min()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                model = sm.GEE(
                    y, x, groups=groups, time=time, family=sm.families.Poisson(), cov_struct=self._make_cov_struct()
                )
                res = model.fit(maxiter=self.max_iter, ctol=self.tol)
            except (np.linalg.LinAlgError, ValueError) as exc:
                raise PoolcastError(f"{self.name}: horizon {horizon} GEE fit failed: {exc}") from exc
        terms = ["Intercept", *spec.terms]
        beta = np.asarray(res.params, dtype=float)
        check_finite_coefficients(self.name, horizon, beta, terms)
        found = [w for w in caught if issubclass(w.category, (sm_exceptions.ConvergenceWarning, sm_exceptions.IterationLimitWarning, RuntimeWarning))]
        mu = np.asarray(res.fittedvalues, dtype=float)
        dof = max(1, y.size - x.shape[1])
        phi = float(np.sum((y - mu) ** 2 / np.maximum(mu, 1e-12)) / dof)
        fit_history = getattr(res, "fit_history", None) or {}
        n_iter = len(fit_history.get("params", [])) if isinstance(fit_history, dict) else 0
        converged = not any(issubclass(w.category, sm_exceptions.ConvergenceWarning) for w in found)
        return _GeeModel(
            spec=spec,
            results=res,
            beta=beta,
            bse=np.asarray(res.bse, dtype=float),
            phi=phi,
            dep_params=res.cov_struct.dep_params,
            n_iter=n_iter,
            converged=converged,
            warnings=record_warnings(found),
        )

    @property
    def results_(self) -> dict[int, Any]:
        self._check_is_fitted()
        return {h: m.results for h, m in self.models_.items()}

    @property
    def coef_(self) -> dict[int, np.ndarray]:
        self._check_is_fitted()
        return {h: m.beta for h, m in self.models_.items()}

    def _predict_horizon(
        self, model: _GeeModel, rows_h: pl.DataFrame, n_samples: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        x = build_design(model.spec, rows_h)
        mean = np.asarray(model.results.predict(exog=x), dtype=float)
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

    def _make_cov_struct(self) -> cov_struct.CovStruct:
        return cov_struct.Exchangeable()


class GeePoissonAR1(GeePoisson):
    """Poisson GEE with an AR(1) working correlation in the month index. See :class:`GeePoisson`."""

    name: ClassVar[str] = "gee_poisson_ar1"

    def _make_cov_struct(self) -> cov_struct.CovStruct:
        return cov_struct.Autoregressive(grid=True)
