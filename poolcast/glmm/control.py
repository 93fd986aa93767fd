"""Control settings of the GLMM engine: tolerances, iteration limits and check levels.

One frozen :class:`GlmmControl` holds every number the fitting stages use, so no loop carries a
magic constant (cf. lme4's ``glmerControl``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from poolcast.errors import InvalidParameterError

__all__ = ["CheckLevel", "GlmmControl"]

CheckLevel = Literal["ignore", "warn", "raise"]
_CHECK_LEVELS = ("ignore", "warn", "raise")


@dataclass(frozen=True)
class GlmmControl:
    """Tolerances, iteration limits and data-check levels for :func:`poolcast.glmm.fit`.

    Attributes
    ----------
    pirls_tol : float
        Inner (PIRLS / Newton) convergence: stop when the Newton decrement of the penalised
        deviance is below this value (lme4 uses a relative change of 1e-7; we iterate to a
        tighter absolute decrement because the outer gradient and the numerical Hessian need a
        precise mode).
    pirls_max_iter : int
        Maximum Newton iterations of the inner problem.
    pirls_max_halvings : int
        Maximum step halvings per Newton iteration (lme4: 20).
    outer_max_iter : int
        Maximum iterations of the outer optimiser (L-BFGS-B) in each stage.
    outer_gtol : float
        Projected-gradient tolerance of the outer optimiser (deviance scale).
    outer_restarts : int
        Restarts of stage 2 from its polished end point while the scaled gradient there is
        above ``grad_tol`` (L-BFGS-B stalled on its relative-reduction test); each is kept only
        when it lowers the deviance (0 disables).
    outer_ftol : float
        Relative deviance-change tolerance of the outer optimiser.
    grad_tol : float
        Tolerance of the post-fit scaled-gradient check (lme4 ``check.conv.grad``: 2e-3).
    singular_tol : float
        A fit is singular when a relative-covariance-factor diagonal is below this (lme4 ``isSingular``: 1e-4).
    hessian_step : float
        Step of the finite differences for the Hessian over the outer parameters (lme4: 1e-4).
    stage1 : bool
        Run the nAGQ=0-like first stage (beta inside PIRLS, theta outer, lme4 default) for start
        values. Off by default: the exact-gradient stage 2 from lme4's start converged on every
        reference fit with a third of the evaluations, and nAGQ=0 is biased towards small variances
        (it once stopped on a boundary saddle, epil random slopes; a guard restarts stage 2 then).
    check_n_levels, check_rank_x, check_z_rank, check_response, check_conv, check_singular : {"ignore", "warn", "raise"}
        What to do when a grouping factor has too many levels (>= n), X is rank deficient, the
        random effects outnumber the observations (q >= n, lme4's ``check.nobs.vs.nRE``),
        the response is invalid, the optimiser did not converge, or the fit is singular.
    dense_q_max : int
        For several grouping factors, use a dense Cholesky of the q x q system when q is at most this;
        above it a sparse LU (scipy.sparse.linalg.splu; CHOLMOD is not available).
    grad_q_max : int
        For several grouping factors, the exact outer gradient needs a dense q x q inverse; above
        this q the gradient is by central differences (2 deviance evaluations per parameter).
    """

    pirls_tol: float = 1e-12
    pirls_max_iter: int = 100
    pirls_max_halvings: int = 20
    outer_max_iter: int = 500
    outer_gtol: float = 1e-6
    outer_restarts: int = 3
    outer_ftol: float = 1e-13
    grad_tol: float = 2e-3
    singular_tol: float = 1e-4
    hessian_step: float = 1e-4
    stage1: bool = False
    check_n_levels: CheckLevel = "raise"
    check_rank_x: CheckLevel = "raise"
    check_z_rank: CheckLevel = "raise"
    check_response: CheckLevel = "raise"
    check_conv: CheckLevel = "warn"
    check_singular: CheckLevel = "warn"
    dense_q_max: int = 300
    grad_q_max: int = 4000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.startswith("check_") and value not in _CHECK_LEVELS:
                raise InvalidParameterError(
                    f"GlmmControl.{f.name}={value!r} is not a check level; use one of {_CHECK_LEVELS}."
                )
            if f.name == "outer_restarts":
                if not (isinstance(value, int) and value >= 0):
                    raise InvalidParameterError(
                        f"GlmmControl.outer_restarts={value!r} must be an integer >= 0 "
                        "(0 disables the restarts)."
                    )
            elif f.type in ("float", "int") and not value > 0:
                raise InvalidParameterError(
                    f"GlmmControl.{f.name}={value!r} must be positive; pass a positive number."
                )
