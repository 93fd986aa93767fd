"""Fisher scoring for an NB2 (or Poisson) log-link GLM with one fixed intercept per SKU.

Model: :math:`\\log\\mu_i = a_{g(i)} + x_i^\\top\\beta`, :math:`\\operatorname{Var}y_i=\\mu_i+\\alpha\\mu_i^2`.
With thousands of SKUs a dummy-coded design is wide; here the SKU block of the Fisher
information is diagonal and is eliminated by a Schur complement, so a step costs
:math:`O(np^2)` and no dummy matrix is built. With working weights
:math:`w_i=\\mu_i/(1+\\alpha\\mu_i)` and scores :math:`s_i=(y_i-\\mu_i)/(1+\\alpha\\mu_i)`:

.. math::
   D_j=\\sum_{g(i)=j} w_i,\\quad B_{j\\cdot}=\\sum_{g(i)=j} w_i x_i^\\top,\\quad C=X^\\top WX,\\\\
   (C-B^\\top D^{-1}B)\\,\\Delta\\beta = X^\\top s - B^\\top D^{-1}g_a,\\qquad
   \\Delta a = D^{-1}(g_a - B\\Delta\\beta),\\quad g_{a,j}=\\sum_{g(i)=j}s_i,

with step halving on the log-likelihood. The dispersion :math:`\\alpha` is updated by 1-D
maximum likelihood given :math:`\\mu` between scoring runs (coordinate ascent on the joint
likelihood) until :math:`|\\Delta\\log\\alpha|<10^{-4}`.

A SKU whose training sales are all zero has no finite MLE (:math:`a_j\\to-\\infty`); it is
left out of the estimation (its rows carry no information on :math:`\\beta` in the limit)
and gets :math:`a_j = \\log(0.5/\\sum_{g(i)=j} e^{x_i^\\top\\beta})`, i.e. half a unit expected
over its training history (a continuity correction).
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

__all__ = ["SkuFitResult", "fit_sku_fixed_effects"]

_ETA_MAX = 30.0


@dataclass(frozen=True)
class SkuFitResult:
    """Result of :func:`fit_sku_fixed_effects`.

    Fields
    ------
    a : ndarray (n_groups,)
        SKU intercepts (log scale).
    a_se : ndarray (n_groups,)
        Their standard errors (NaN for all-zero SKUs).
    beta, beta_cov : ndarray
        Shared slopes and their covariance (Fisher information at the final alpha).
    alpha : float
        NB2 dispersion (0 for Poisson).
    degenerate : ndarray of bool (n_groups,)
        SKUs with all-zero training sales.
    n_iter : int
        Total scoring iterations.
    converged : bool
    loglik : float
    """

    a: np.ndarray
    a_se: np.ndarray
    beta: np.ndarray
    beta_cov: np.ndarray
    alpha: float
    degenerate: np.ndarray
    n_iter: int
    converged: bool
    loglik: float


def _score_run(
    y: np.ndarray,
    x: np.ndarray,
    g: np.ndarray,
    n_groups: int,
    a: np.ndarray,
    beta: np.ndarray,
    alpha: float,
    *,
    max_iter: int,
    tol: float,
) -> tuple[np.ndarray, np.ndarray, int, bool, np.ndarray, np.ndarray]:
    p = x.shape[1]
    eta = np.minimum(a[g] + x @ beta, _ETA_MAX)
    mu = np.exp(eta)
    ll = nb2_kernel(y, mu, alpha)
    converged = False
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007
        denom = 1.0 + alpha * mu
        w = mu / denom
        s = (y - mu) / denom
        d = np.bincount(g, weights=w, minlength=n_groups)
        d = np.maximum(d, 1e-12)
        ga = np.bincount(g, weights=s, minlength=n_groups)
        bm = (
            np.column_stack(
                [np.bincount(g, weights=w * x[:, k], minlength=n_groups) for k in range(p)]
            )
            if p
            else np.zeros((n_groups, 0))
        )
        c = x.T @ (x * w[:, None])
        bd = bm / d[:, None]
        schur = c - bm.T @ bd
        rhs = x.T @ s - bd.T @ ga
        dbeta = linalg.solve(schur, rhs, assume_a="pos") if p else np.zeros(0)
        da = (ga - bm @ dbeta) / d
        step = 1.0
        for _ in range(30):
            a_new = a + step * da
            b_new = beta + step * dbeta
            mu_new = np.exp(np.minimum(a_new[g] + x @ b_new, _ETA_MAX))
            ll_new = nb2_kernel(y, mu_new, alpha)
            if ll_new >= ll - 1e-10 * abs(ll):
                break
            step *= 0.5
        change = max(
            np.max(np.abs(step * da), initial=0.0), np.max(np.abs(step * dbeta), initial=0.0)
        )
        a, beta, mu = a_new, b_new, mu_new
        rel = abs(ll_new - ll) / (abs(ll) + 1.0)
        ll = ll_new
        if change < tol or rel == 0.0:
            converged = True
            break
    # information at the final point
    denom = 1.0 + alpha * mu
    w = mu / denom
    d = np.maximum(np.bincount(g, weights=w, minlength=n_groups), 1e-12)
    bm = (
        np.column_stack([np.bincount(g, weights=w * x[:, k], minlength=n_groups) for k in range(p)])
        if p
        else np.zeros((n_groups, 0))
    )
    schur = x.T @ (x * w[:, None]) - bm.T @ (bm / d[:, None])
    beta_cov = linalg.inv(schur) if p else np.zeros((0, 0))
    bd = bm / d[:, None]
    a_var = 1.0 / d + np.einsum("ij,jk,ik->i", bd, beta_cov, bd)
    return a, beta, it, converged, beta_cov, np.sqrt(a_var)


def fit_sku_fixed_effects(
    y: np.ndarray,
    x: np.ndarray,
    g: np.ndarray,
    n_groups: int,
    *,
    family: str = "nb2",
    max_iter: int = 100,
    tol: float = 1e-8,
    max_outer: int = 25,
) -> SkuFitResult:
    """Fit :math:`\\log\\mu = a_{sku} + x^\\top\\beta` by Fisher scoring (see module notes).

    Parameters
    ----------
    y : ndarray (n,)
        Counts.
    x : ndarray (n, p)
        Covariates without an intercept column (the SKU intercepts play that role).
    g : ndarray of int (n,)
        SKU index in ``range(n_groups)``.
    family : {"nb2", "poisson"}
    """
    y = np.asarray(y, dtype=float)
    totals = np.bincount(g, weights=y, minlength=n_groups)
    counts = np.bincount(g, minlength=n_groups)
    degenerate = totals <= 0
    keep = ~degenerate[g]
    # re-index non-degenerate groups
    live = np.flatnonzero(~degenerate)
    remap = np.full(n_groups, -1)
    remap[live] = np.arange(live.size)
    yk, xk, gk = y[keep], x[keep], remap[g[keep]]
    nk = live.size
    a = np.log(totals[live] / counts[live])
    beta = np.zeros(x.shape[1])
    alpha = 0.0
    total_iter = 0
    a, beta, it, converged, beta_cov, a_se = _score_run(
        yk, xk, gk, nk, a, beta, alpha, max_iter=max_iter, tol=tol
    )
    total_iter += it
    if family == "nb2":
        mu = np.exp(np.minimum(a[gk] + xk @ beta, _ETA_MAX))
        alpha = estimate_alpha_ml(yk, mu)
        for _ in range(max_outer):
            a, beta, it, converged, beta_cov, a_se = _score_run(
                yk, xk, gk, nk, a, beta, alpha, max_iter=max_iter, tol=tol
            )
            total_iter += it
            mu = np.exp(np.minimum(a[gk] + xk @ beta, _ETA_MAX))
            new_alpha = estimate_alpha_ml(yk, mu)
            done = abs(np.log(new_alpha) - np.log(alpha)) < 1e-4
            alpha = new_alpha
            if done:
                break
        else:
            converged = False
        # final scoring run at the reported alpha, so (a, beta) and alpha belong together
        ok = converged
        a, beta, it, converged, beta_cov, a_se = _score_run(
            yk, xk, gk, nk, a, beta, alpha, max_iter=max_iter, tol=tol
        )
        total_iter += it
        converged = ok and converged
    mu = np.exp(np.minimum(a[gk] + xk @ beta, _ETA_MAX))
    loglik = count_loglik(yk, mu, alpha)
    a_full = np.empty(n_groups)
    se_full = np.full(n_groups, np.nan)
    a_full[live] = a
    se_full[live] = a_se
    if degenerate.any():
        xb_sum = np.bincount(g, weights=np.exp(np.minimum(x @ beta, _ETA_MAX)), minlength=n_groups)
        a_full[degenerate] = np.log(0.5 / np.maximum(xb_sum[degenerate], 1e-300))
    return SkuFitResult(
        a=a_full,
        a_se=se_full,
        beta=beta,
        beta_cov=beta_cov,
        alpha=float(alpha),
        degenerate=degenerate,
        n_iter=total_iter,
        converged=bool(converged),
        loglik=loglik,
    )
