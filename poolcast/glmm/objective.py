"""Objective stage: the approximate marginal deviance as a function of (theta, beta[, nb_theta]).

``make_objective`` binds a design to its family and random-effects system; the returned
:class:`Objective` keeps its state in explicit attributes (the warm-start ``u_warm`` /
``beta_warm`` and the last PIRLS result), no hidden closures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from poolcast.errors import InvalidParameterError
from poolcast.glmm._resystem import make_system
from poolcast.glmm._selinv import schur_applies
from poolcast.glmm.control import GlmmControl
from poolcast.glmm.families import Family, get_family
from poolcast.glmm.laplace import laplace_deviance, laplace_gradient
from poolcast.glmm.pirls import PirlsResult, pirls
from poolcast.glmm.quadrature import agq_deviance, check_agq
from poolcast.glmm.terms import GlmmDesign

__all__ = ["Objective", "make_objective"]


@dataclass
class Objective:
    """Deviance function of a GLMM.

    Attributes
    ----------
    design : GlmmDesign
        Model matrices.
    family : Family
        Response family.
    system : BlockSystem or SparseSystem
        Random-effects linear algebra.
    n_agq : int
        Quadrature nodes (1 = Laplace).
    control : GlmmControl
        Tolerances.
    u_warm : np.ndarray
        Warm start of u for the next PIRLS call (TMB's ``random.start``).
    beta_warm : np.ndarray
        Warm start of beta for the nAGQ=0 deviance.
    last : PirlsResult or None
        The last PIRLS result.
    du_dx, x_last : np.ndarray or None
        Derivative of the mode u with respect to x = (theta, beta[, log nb_theta]) at ``x_last``
        (set by the exact gradient); the next warm start is ``u_warm + du_dx (x - x_last)``.
    unit_weights, zero_offset : bool
        All prior weights are 1 / the offset is 0 (the inner loop then skips those passes).
    ll_const : np.ndarray
        (n,) weighted data-only log-likelihood terms (computed once).
    ll_const_total : float
        Their sum.
    n_evals : int
        Number of deviance evaluations so far.
    disp_X : np.ndarray or None
        (n, k_d) dispersion model matrix (``design.X_disp``). When set, the dispersion
        argument ``nb_theta`` of :meth:`mode`, :meth:`deviance` and
        :meth:`deviance_and_gradient` is the coefficient vector gamma of the log NB2
        size (per-row size ``exp(X_disp[i] @ gamma)``, see :meth:`sizes`);
        otherwise it is the scalar size itself.
    """

    design: GlmmDesign
    family: Family
    system: Any
    n_agq: int
    control: GlmmControl
    u_warm: np.ndarray
    beta_warm: np.ndarray
    unit_weights: bool = False
    zero_offset: bool = False
    ll_const: np.ndarray | None = None
    ll_const_total: float = 0.0
    last: PirlsResult | None = None
    du_dx: np.ndarray | None = None
    x_last: np.ndarray | None = None
    n_evals: int = 0
    warm_start: bool = field(default=True)
    disp_X: np.ndarray | None = None

    def sizes(self, nb_theta):
        """The NB2 size(s) of the fitted rows: ``nb_theta`` itself (scalar model), or
        ``exp(disp_X @ gamma)`` (n,) for a dispersion formula (``nb_theta`` = gamma)."""
        if self.disp_X is None or nb_theta is None:
            return nb_theta
        return np.exp(self.disp_X @ np.asarray(nb_theta, dtype=float))

    def dispersion_x(self, nb_theta) -> list:
        """The dispersion entries of the outer parameter vector x: [log size] or gamma."""
        if nb_theta is None:
            return []
        if self.disp_X is None:
            return [np.log(nb_theta)]
        return list(np.asarray(nb_theta, dtype=float))

    @property
    def analytic_gradient(self) -> bool:
        """True when the exact gradient is available (Laplace; several factors need q <=
        grad_q_max, or all blocks but the largest small: poolcast.glmm._selinv)."""
        if self.n_agq != 1:
            return False
        return (
            self.system.single
            or getattr(self.system, "ar1", False)
            or self.system.q <= self.control.grad_q_max
            or schur_applies(self.system)
        )

    def mode(self, theta, beta=None, nb_theta=None) -> PirlsResult:
        """Run PIRLS at (theta, beta); beta=None optimises beta jointly (nAGQ=0)."""
        vary = beta is None
        start_beta = self.beta_warm if vary else beta
        u_start = self.u_warm if self.warm_start else None
        x = None
        if not vary:
            x = np.concatenate([theta, beta, self.dispersion_x(nb_theta)])
            if (
                u_start is not None
                and self.du_dx is not None
                and self.x_last is not None
                and self.x_last.shape == x.shape
            ):
                u_start = (u_start + self.du_dx @ (x - self.x_last), u_start)
        if u_start is not None and getattr(self.system, "ar1", False):
            # warm-start an AR(1) term in b-space: the latent values move little when
            # (sigma, rho) change, their spherical coordinates u a lot (rho near 1); PIRLS keeps
            # the start with the smallest penalised deviance, so offer u = 0 as well
            u_start = self.system.warm_starts(np.asarray(self.u_warm), np.asarray(theta, float))
        pr = pirls(
            self,
            np.asarray(theta, dtype=float),
            start_beta,
            vary_beta=vary,
            nb_theta=self.sizes(nb_theta),
            control=self.control,
            u_start=u_start,
        )
        if np.isfinite(pr.pdev) and np.all(np.isfinite(pr.u)):
            self.u_warm = pr.u
            if vary:
                self.beta_warm = pr.beta
        self.du_dx, self.x_last = None, x
        self.last = pr
        self.n_evals += 1
        return pr

    def deviance(self, theta, beta=None, nb_theta=None) -> float:
        """Approximate -2 log-likelihood at (theta, beta).

        With ``beta=None`` beta is optimised inside PIRLS (lme4 nAGQ=0); otherwise the Laplace
        (n_agq=1) or AGQ deviance at the given beta.
        """
        pr = self.mode(theta, beta, nb_theta)
        if beta is not None and self.n_agq > 1:
            return agq_deviance(self, pr, np.asarray(beta, float), self.n_agq, nb_theta)
        return laplace_deviance(pr)

    def deviance_and_gradient(
        self, theta, beta, nb_theta=None
    ) -> tuple[float, np.ndarray, np.ndarray, float | None]:
        """Laplace deviance and its exact gradient (see :attr:`analytic_gradient`)."""
        pr = self.mode(theta, beta, nb_theta)
        gt, gb, gp = laplace_gradient(self, pr, nb_theta=nb_theta)  # sets du_dx (one factor)
        return laplace_deviance(pr), gt, gb, gp


def make_objective(
    design: GlmmDesign, *, n_agq: int = 1, control: GlmmControl | None = None
) -> Objective:
    """Bind a design to its family and random-effects system.

    Parameters
    ----------
    design : GlmmDesign
        From :func:`poolcast.glmm.terms.build_design`.
    n_agq : int
        1 for Laplace; > 1 for adaptive Gauss-Hermite quadrature (single scalar term only).
    control : GlmmControl, optional

    Returns
    -------
    Objective
    """
    control = control or GlmmControl()
    if design.ar1_block is not None and n_agq != 1:
        raise InvalidParameterError(
            f"n_agq={n_agq}: a model with an ar1() term is fitted by the Laplace approximation "
            "only (its latent values are correlated, so the integral does not factor into "
            "one-dimensional ones; glmmTMB has no AGQ either); use method='laplace'."
        )
    if design.X_disp is not None and n_agq != 1:
        raise InvalidParameterError(
            f"n_agq={n_agq}: a model with a dispformula is fitted by the Laplace approximation "
            "only; use method='laplace' (n_agq=1) or dispformula=None."
        )
    check_agq(design, n_agq)
    system = make_system(design, control.dense_q_max)
    family = design.family_object or get_family(design.family)
    ll_const = design.weights * family.loglik_const(design.y, design.trials)
    return Objective(
        disp_X=design.X_disp,
        unit_weights=bool(np.all(design.weights == 1.0)),
        zero_offset=bool(not np.any(design.offset)),
        ll_const=ll_const,
        ll_const_total=float(ll_const.sum()),
        design=design,
        family=family,
        system=system,
        n_agq=int(n_agq),
        control=control,
        u_warm=np.zeros(system.q),
        beta_warm=np.zeros(design.X.shape[1]),
    )
