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
    family: Literal["poisson", "negbin", "binomial"] = "poisson",
    method: Literal["laplace", "agq"] = "laplace",
    n_agq: int = 1,
    offset: Any = None,
    trials: Any = None,
    weights: Any = None,
    control: GlmmControl | None = None,
) -> GlmmResults:
    """Fit a GLMM by maximum likelihood (Laplace, or adaptive Gauss-Hermite quadrature).

    Parameters
    ----------
    formula : str
        lme4 syntax, e.g. ``"y ~ t + promo + (1 + promo | sku)"``; binomial may use
        ``cbind(successes, failures) ~ ...``.
    data : polars.DataFrame or pandas.DataFrame
    family : {"poisson", "negbin", "binomial"}
    method : {"laplace", "agq"}
        "agq" needs ``n_agq`` > 1 and a single scalar random-effects term.
    n_agq : int
        Quadrature nodes (1 = Laplace).
    offset, trials, weights : str or array-like, optional
        Column name or array.
    control : GlmmControl, optional

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
    control = control or GlmmControl()
    design = build_design(
        formula, data, family=family, offset=offset, trials=trials, weights=weights, control=control
    )
    objective = make_objective(design, n_agq=n_agq, control=control)
    return make_results(design, objective, optimize(objective, control=control))
