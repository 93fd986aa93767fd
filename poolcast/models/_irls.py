"""Lean IRLS for log-link Poisson and NB2 GLMs (normal equations, Cholesky), and the NB2 alpha loop.

statsmodels' ``GLM.fit`` takes 2–3 s per fit at 230k rows (pinv/SVD per iteration); these
fits take a few hundred milliseconds and give the same estimates (the tests check them
against statsmodels fitted directly). Iteratively reweighted least squares (McCullagh &
Nelder 1989, §2.5) with the log link and variance :math:`V(\\mu)=\\mu+\\alpha\\mu^2`:

.. math::
   w_i=\\frac{\\mu_i}{1+\\alpha\\mu_i},\\quad z_i=\\eta_i+\\frac{y_i-\\mu_i}{\\mu_i},\\quad
   \\beta\\leftarrow(X^\\top WX)^{-1}X^\\top Wz,

started from :math:`\\mu=(y+\\bar y)/2` (statsmodels' start), with step halving when the
log-likelihood falls, stopping when the log-likelihood change is below ``tol * (|loglik| + n)``. The
covariance is :math:`(X^\\top WX)^{-1}` at the estimate (Fisher information, :math:`\\alpha` held
fixed). The NB2 :math:`\\alpha` alternates with IRLS: :math:`\\alpha\\leftarrow\\arg\\max_\\alpha\\ell(\\alpha\\mid\\hat\\mu)`
until :math:`|\\Delta\\log\\alpha|<10^{-4}`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg

from poolcast.models._negbin import (
    count_loglik,
    estimate_alpha_ml,
    nb2_kernel,
)

__all__ = ["GlmFitResult", "fit_glm", "fit_nb2_glm"]

_ETA_MAX = 30.0


@dataclass(frozen=True)
class GlmFitResult:
    """Fields: beta, cov (Fisher, alpha fixed), alpha (0 = Poisson), mu, n_iter, converged, loglik."""

    beta: np.ndarray
    cov: np.ndarray
    alpha: float
    mu: np.ndarray
    n_iter: int
    converged: bool
    loglik: float


def _wls(x: np.ndarray, w: np.ndarray, z: np.ndarray) -> np.ndarray:
    xtw = x.T * w
    return linalg.solve(xtw @ x, xtw @ z, assume_a="pos")


def fit_glm(
    y: np.ndarray,
    x: np.ndarray,
    *,
    alpha: float = 0.0,
    start: np.ndarray | None = None,
    max_iter: int = 100,
    tol: float = 1e-8,
) -> GlmFitResult:
    """Log-link GLM by IRLS: Poisson (``alpha=0``) or NB2 with fixed ``alpha``."""
    y = np.asarray(y, dtype=float)
    if start is None:
        mu = (y + y.mean()) / 2.0
        eta = np.log(mu)
        w = mu / (1.0 + alpha * mu)
        beta = _wls(x, w, eta + (y - mu) / mu)
    else:
        beta = np.asarray(start, dtype=float)
    mu = np.exp(np.minimum(x @ beta, _ETA_MAX))
    ll = nb2_kernel(y, mu, alpha)
    converged = False
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007
        eta = x @ beta
        w = mu / (1.0 + alpha * mu)
        new = _wls(x, w, eta + (y - mu) / np.maximum(mu, 1e-300))
        step = new - beta
        for _ in range(30):
            cand = beta + step
            mu_new = np.exp(np.minimum(x @ cand, _ETA_MAX))
            ll_new = nb2_kernel(y, mu_new, alpha)
            if ll_new >= ll - 1e-12 * abs(ll):
                break
            step = step / 2.0
        beta, mu = cand, mu_new
        rel = abs(ll_new - ll) / (abs(ll) + y.size)
        ll = ll_new
        if rel < tol:
            converged = True
            break
    w = mu / (1.0 + alpha * mu)
    cov = linalg.inv((x.T * w) @ x)
    return GlmFitResult(beta, cov, float(alpha), mu, it, converged, count_loglik(y, mu, alpha))


def fit_nb2_glm(
    y: np.ndarray, x: np.ndarray, *, max_iter: int = 100, tol: float = 1e-8, max_outer: int = 25
) -> GlmFitResult:
    """NB2 GLM with :math:`\\alpha` estimated by maximum likelihood (alternating; see module notes)."""
    res = fit_glm(y, x, alpha=0.0, max_iter=max_iter, tol=tol)
    n_iter = res.n_iter
    alpha = estimate_alpha_ml(y, res.mu)
    converged = False
    for _ in range(max_outer):
        res = fit_glm(y, x, alpha=alpha, start=res.beta, max_iter=max_iter, tol=tol)
        n_iter += res.n_iter
        new_alpha = estimate_alpha_ml(y, res.mu)
        done = abs(np.log(new_alpha) - np.log(alpha)) < 1e-4
        alpha = new_alpha
        if done:
            converged = res.converged
            break
    res = fit_glm(y, x, alpha=alpha, start=res.beta, max_iter=max_iter, tol=tol)
    return GlmFitResult(
        res.beta,
        res.cov,
        alpha,
        res.mu,
        n_iter + res.n_iter,
        converged and res.converged,
        res.loglik,
    )
