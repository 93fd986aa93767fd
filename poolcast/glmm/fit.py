"""Entry point: chain design -> objective -> optimise -> results."""

from __future__ import annotations

from typing import Any, Literal

from poolcast.errors import InvalidParameterError
from poolcast.glmm.control import GlmmControl
from poolcast.glmm.objective import make_objective
from poolcast.glmm.optimize import optimize
from poolcast.glmm.results import GlmmResults, make_results
from poolcast.glmm.terms import build_design

__all__ = ["fit"]


def fit(
    formula: str,
    data: Any,
    *,
    family: Literal["poisson", "negbin", "gamma", "binomial"] = "poisson",
    method: Literal["laplace", "agq"] = "laplace",
    n_agq: int = 1,
    offset: Any = None,
    trials: Any = None,
    weights: Any = None,
    control: GlmmControl | None = None,
    start: dict[str, Any] | None = None,
) -> GlmmResults:
    """Fit a GLMM by maximum likelihood (Laplace, or adaptive Gauss-Hermite quadrature).

    Parameters
    ----------
    formula : str
        lme4 syntax, e.g. ``"y ~ t + promo + (1 + promo | sku)"``; binomial may use
        ``cbind(successes, failures) ~ ...``.
    data : polars.DataFrame or pandas.DataFrame
    family : {"poisson", "negbin", "gamma", "binomial"}
    method : {"laplace", "agq"}
        "agq" needs ``n_agq`` > 1 and a single scalar random-effects term.
    n_agq : int
        Quadrature nodes (1 = Laplace).
    offset, trials, weights : str or array-like, optional
        Column name or array.
    control : GlmmControl, optional
    start : dict, optional
        Start values of the outer optimisation, e.g. the estimates of a fit of the same
        formula on similar data (a warm start): keys ``"theta"`` (relative covariance
        factor, ``results.opt_summary.theta``), ``"beta"`` (fixed effects, design order) and,
        for NB2, ``"nb_theta"`` (the size); any key left out gets the default start (lme4's
        theta, a GLM's beta, a moment estimate of the size). Only the path to the optimum
        changes, not the optimum; with ``"theta"`` given the stage-1 search is skipped.

    Returns
    -------
    GlmmResults
    """
    if method not in ("laplace", "agq"):
        raise InvalidParameterError(f"method={method!r}; use 'laplace' or 'agq'.")
    if method == "laplace" and n_agq != 1:
        raise InvalidParameterError(
            f"method='laplace' needs n_agq=1 (got {n_agq}); use method='agq'."
        )
    unknown = sorted(set(start or {}) - {"theta", "beta", "nb_theta"})
    if unknown:
        raise InvalidParameterError(
            f"start has unknown key(s) {unknown}; use 'theta', 'beta' and/or 'nb_theta'."
        )
    control = control or GlmmControl()
    design = build_design(
        formula, data, family=family, offset=offset, trials=trials, weights=weights, control=control
    )
    objective = make_objective(design, n_agq=n_agq, control=control)
    return make_results(design, objective, optimize(objective, start=start, control=control))
