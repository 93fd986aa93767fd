r"""Inner loop: penalised iteratively re-weighted least squares (a Newton method) for the
conditional mode of the spherical random effects :math:`u`.

Minimises the penalised deviance

.. math:: f(u) = -2\sum_i w_i \ell_i(\eta_i) + \lVert u\rVert^2, \qquad
          \eta = X\beta + Z\Lambda_\theta u + o,

by Newton steps :math:`H\,\delta = \Lambda^\top Z^\top (w\odot g) - u`,
:math:`H = \Lambda^\top Z^\top \operatorname{diag}(w\odot h) Z\Lambda + I` (lme4 glmer.Rnw,
"Determining the conditional mode"; for canonical links the Newton and IRLS weights coincide),
with step halving when f increases. With ``vary_beta=True`` (lme4's nAGQ=0) beta is updated
jointly; the arrowhead system is solved through the p x p Schur complement
:math:`X^\top D X - M^\top H^{-1} M`, :math:`M = \Lambda^\top Z^\top D X` (lme4's R_ZX / R_X).
Iteration stops when the Newton decrement :math:`\nabla^\top \delta` falls below
``control.pirls_tol``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from poolcast.glmm.control import GlmmControl

__all__ = ["PirlsResult", "pirls"]


@dataclass(frozen=True)
class PirlsResult:
    r"""State at the conditional mode.

    Attributes
    ----------
    u : np.ndarray
        (q,) conditional mode of the spherical random effects.
    beta : np.ndarray
        (p,) fixed effects (updated when ``vary_beta``).
    eta, mu : np.ndarray
        (n,) linear predictor and mean at the mode.
    g, h, h3 : np.ndarray
        (n,) family derivatives at the mode (see :mod:`poolcast.glmm.families`).
    factor : object
        Factor of H at the mode (``logdet``, ``solve``, ``cond_cov``).
    pdev : float
        Penalised deviance :math:`-2\sum w\ell + \lVert u\rVert^2` at the mode.
    iterations, halvings : int
        Newton iterations and step halvings used.
    converged : bool
        Whether the decrement criterion was met.
    """

    u: np.ndarray
    beta: np.ndarray
    eta: np.ndarray
    mu: np.ndarray
    g: np.ndarray
    h: np.ndarray
    h3: np.ndarray
    factor: Any
    pdev: float
    iterations: int
    halvings: int
    converged: bool


def pirls(
    objective: Any,
    theta: np.ndarray,
    beta: np.ndarray,
    *,
    vary_beta: bool = False,
    nb_theta: float | None = None,
    control: GlmmControl | None = None,
    u_start: Any = None,
) -> PirlsResult:
    """Find the conditional mode of u (and beta when ``vary_beta``) at fixed theta.

    Parameters
    ----------
    objective : Objective
        Holds the design, family and random-effects system.
    theta : np.ndarray
        Relative covariance parameters.
    beta : np.ndarray
        Fixed effects (the start when ``vary_beta``).
    vary_beta : bool
        Update beta jointly (lme4 nAGQ=0).
    nb_theta : float, optional
        NB2 size.
    control : GlmmControl, optional
        Tolerances.
    u_start : np.ndarray or sequence of np.ndarray, optional
        Warm start(s) for u; the one with the smallest penalised deviance among them and
        zeros (lme4's deterministic start) is used.

    Returns
    -------
    PirlsResult
    """
    control = control or objective.control
    d, fam, sysm = objective.design, objective.family, objective.system
    sysm.set_theta(theta)
    X, y, tr, w, off = d.X, d.y, d.trials, d.weights, d.offset
    beta = np.array(beta, dtype=float)
    # u = 0 is always a candidate: a warm start from a far-away theta (e.g. a trial near
    # theta = 0, where u is barely penalised and runs to hundreds) can put eta beyond what
    # exp() represents, and PIRLS cannot step back from there (seen on Rossmann's euros)
    candidates = [np.zeros(sysm.q)]
    if isinstance(u_start, tuple | list):
        candidates += [np.asarray(c, dtype=float) for c in u_start]
    elif u_start is not None:
        candidates.append(np.asarray(u_start, dtype=float))

    ll_const = objective.ll_const_total
    shape = fam.loglik_shape(y, nb_theta)
    if not np.isscalar(shape):
        ll_const += float((w * shape).sum())

    unit_w = objective.unit_weights
    zero_off = objective.zero_offset

    def state_at(beta_: np.ndarray, u_: np.ndarray):
        eta_ = sysm.re_eta(u_)
        eta_ += X @ beta_
        if not zero_off:
            eta_ += off
        ll_eta, g_, h_, h3_ = fam.evaluate(eta_, y, tr, nb_theta)
        ll_sum = float(ll_eta.sum()) if unit_w else float((w * ll_eta).sum())
        pdev_ = -2.0 * (ll_sum + ll_const) + float((u_ * u_).sum())
        return pdev_, eta_, g_, h_, h3_

    # start from the candidate with the smallest penalised deviance (u = 0 if none is finite)
    best = None
    for cand in candidates:
        state = state_at(beta, cand)
        if np.isfinite(state[0]) and (best is None or state[0] < best[1][0]):
            best = (cand, state)
    if best is None:
        best = (np.zeros(sysm.q), state_at(beta, np.zeros(sysm.q)))
    u, (pdev, eta, g, h, h3) = best
    halvings_total, converged, it = 0, False, 0
    for it in range(1, control.pirls_max_iter + 1):  # noqa: B007 (it is reported)
        D = h if unit_w else w * h
        fac = sysm.factor(D)
        wg = g if unit_w else w * g
        grad_u = sysm.crossprod(wg) - u
        if vary_beta:
            grad_b = X.T @ wg
            M = sysm.crossprod(D[:, None] * X)  # (q, p)
            HiM = fac.solve(M)
            schur = X.T @ (D[:, None] * X) - M.T @ HiM
            rhs = grad_b - HiM.T @ grad_u
            d_beta = np.linalg.solve(schur, rhs)
            d_u = fac.solve(grad_u - M @ d_beta)
            decrement = float(grad_u @ d_u + grad_b @ d_beta)
        else:
            d_beta = None
            d_u = fac.solve(grad_u)
            decrement = float(grad_u @ d_u)
        if decrement < control.pirls_tol:
            converged = True
            break
        step = 1.0
        for _ in range(control.pirls_max_halvings + 1):
            u_new = u + step * d_u
            beta_new = beta + step * d_beta if vary_beta else beta
            new = state_at(beta_new, u_new)
            if np.isfinite(new[0]) and new[0] <= pdev + 1e-12 * max(1.0, abs(pdev)):
                break
            step *= 0.5
            halvings_total += 1
        else:
            # no decrease possible: at the mode up to rounding
            converged = decrement < 1e-6 * max(1.0, abs(pdev))
            break
        u, beta = u_new, beta_new
        pdev, eta, g, h, h3 = new
    else:
        fac = sysm.factor(w * h)
    return PirlsResult(
        u=u,
        beta=beta,
        eta=eta,
        mu=fam.linkinv(eta),
        g=g,
        h=h,
        h3=h3,
        factor=fac,
        pdev=pdev,
        iterations=it,
        halvings=halvings_total,
        converged=converged,
    )
