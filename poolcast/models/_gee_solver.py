"""Vectorised Poisson GEE with exchangeable or AR(1) working correlation.

Same estimating equations, moment estimators and iteration order as statsmodels' ``GEE``
(``Exchangeable()`` and ``Autoregressive(grid=True)``), without its per-cluster Python loop,
which takes ~10 s per fit at 10k SKUs × 24 months. With :math:`A_i=\\operatorname{diag}(\\mu_i)`,
:math:`\\tilde X_i=A_i^{1/2}X_i` and Pearson residuals :math:`\\tilde r_i=A_i^{-1/2}(y_i-\\mu_i)`,

.. math::
   H=\\sum_i \\tilde X_i^\\top R_i^{-1}\\tilde X_i,\\quad U=\\sum_i \\tilde X_i^\\top R_i^{-1}\\tilde r_i,\\quad
   \\beta\\leftarrow\\beta+H^{-1}U,

and the robust covariance :math:`H^{-1}\\big(\\sum_i u_iu_i^\\top\\big)H^{-1}`,
:math:`u_i=\\tilde X_i^\\top R_i^{-1}\\tilde r_i`. :math:`R_i^{-1}` is used in closed form:

* exchangeable: :math:`R^{-1}=\\frac{1}{1-\\rho}\\big(I-c\\,\\mathbf 1\\mathbf 1^\\top\\big)`,
  :math:`c=\\rho/(1-\\rho+m_i\\rho)`, so only per-cluster sums are needed;
* AR(1) on the row positions within a cluster: :math:`R^{-1}=W^\\top W` with the whitening
  :math:`w_1=v_1`, :math:`w_k=(v_k-\\rho v_{k-1})/\\sqrt{1-\\rho^2}` (a month missing inside a history is
  treated as adjacent, as statsmodels' grid estimator does).

Moment estimators (statsmodels): exchangeable
:math:`\\hat\\rho=\\frac{\\sum_i\\sum_{j<k}\\tilde r_{ij}\\tilde r_{ik}/\\hat\\phi}{\\sum_i m_i(m_i-1)/2-p}` with
:math:`\\hat\\phi=\\sum\\tilde r^2/(N-p)`; AR(1)
:math:`\\hat\\rho=\\sum_i\\frac{\\sum_k\\tilde r_{ik}\\tilde r_{i,k+1}}{m_i-1}\\big/\\sum_i\\frac{\\sum_k\\tilde r_{ik}^2}{m_i}`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg

__all__ = ["GeeDivergedError", "GeeFitResult", "fit_gee_poisson"]

_ETA_MAX = 30.0
_STEP_TOL = 1e-10
_MAX_STEP = 10.0
"""A Fisher-scoring step larger than this (log scale: a factor e^10 in a mean) is divergence."""


class GeeDivergedError(ValueError):
    """The GEE iterations ran off: the message says at which iteration and how."""


@dataclass(frozen=True)
class GeeFitResult:
    """Fields: beta, cov_robust, cov_naive, rho (working correlation), n_iter, converged, score_norm."""

    beta: np.ndarray
    cov_robust: np.ndarray
    cov_naive: np.ndarray
    rho: float
    n_iter: int
    converged: bool
    score_norm: float


class _Clusters:
    """Cluster layout: rows sorted by cluster, contiguous; index of the previous row in the cluster."""

    def __init__(self, g: np.ndarray) -> None:
        if np.any(np.diff(g) < 0):
            raise ValueError("GEE rows must be sorted by cluster")
        self.g = g
        self.n_groups = int(g.max()) + 1 if g.size else 0
        self.m = np.bincount(g, minlength=self.n_groups).astype(float)
        self.has_prev = np.concatenate([[False], g[1:] == g[:-1]])
        self.starts = np.flatnonzero(~self.has_prev)
        if self.starts.size != self.n_groups:
            raise ValueError("GEE cluster indices must be 0..n_groups-1 with no empty cluster")

    def sums(self, values: np.ndarray) -> np.ndarray:
        """Per-cluster sums of ``values`` (rows contiguous by cluster), shape (n_groups, ...)."""
        return np.add.reduceat(values, self.starts, axis=0)


def _whiten_ar1(v: np.ndarray, clusters: _Clusters, rho: float) -> np.ndarray:
    out = np.array(v, dtype=float, copy=True)
    if rho == 0.0:
        return out
    hp = clusters.has_prev
    prev = np.roll(v, 1, axis=0)
    out[hp] = (v[hp] - rho * prev[hp]) / np.sqrt(1.0 - rho * rho)
    return out


def _info_score(
    xt: np.ndarray, rt: np.ndarray, clusters: _Clusters, rho: float, corr: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """H, U and the per-cluster score contributions u_i (n_groups, p)."""
    if corr == "ar1":
        xw = _whiten_ar1(xt, clusters, rho)
        rw = _whiten_ar1(rt, clusters, rho)
        h = xw.T @ xw
        u_i = clusters.sums(xw * rw[:, None])
        return h, u_i.sum(axis=0), u_i
    sx = clusters.sums(xt)
    sr = clusters.sums(rt)
    c = rho / (1.0 - rho + clusters.m * rho)
    scale = 1.0 / (1.0 - rho)
    h = scale * (xt.T @ xt - sx.T @ (sx * c[:, None]))
    u_i = scale * (clusters.sums(xt * rt[:, None]) - sx * (c * sr)[:, None])
    return h, u_i.sum(axis=0), u_i


def _update_rho(rt: np.ndarray, clusters: _Clusters, corr: str, p: int) -> float:
    g, n = clusters.g, clusters.n_groups
    m = clusters.m
    if corr == "ar1":
        hp = clusters.has_prev
        prod = np.zeros_like(rt)
        prod[hp] = rt[hp] * np.roll(rt, 1)[hp]
        lag1_i = np.bincount(g, weights=prod, minlength=n)
        lag0_i = np.bincount(g, weights=rt * rt, minlength=n)
        ok = m > 1
        lag1 = np.sum(lag1_i[ok] / (m[ok] - 1))
        lag0 = np.sum(lag0_i[ok] / m[ok])
        rho = lag1 / lag0 if lag0 > 0 else 0.0
        return float(np.clip(rho, -0.99, 0.99))
    nobs = rt.size
    ssr = float(rt @ rt)
    scale = ssr / (nobs - p)
    sr = np.bincount(g, weights=rt, minlength=n)
    ssr_i = np.bincount(g, weights=rt * rt, minlength=n)
    resid_sum = float(np.sum(sr * sr - ssr_i) / 2.0) / scale
    n_pairs = float(np.sum(0.5 * m * (m - 1)))
    rho = resid_sum / (n_pairs - p) if n_pairs > p else 0.0
    lower = -1.0 / (m.max() - 1) + 1e-6 if m.max() > 1 else -0.99
    return float(np.clip(rho, lower, 0.99))


def fit_gee_poisson(
    y: np.ndarray,
    x: np.ndarray,
    g: np.ndarray,
    *,
    corr: str,
    start: np.ndarray,
    max_iter: int = 60,
    tol: float = 1e-6,
    rho: float | None = None,
) -> GeeFitResult:
    """Poisson log-link GEE (statsmodels' algorithm, vectorised; see module notes).

    Parameters
    ----------
    y, x : ndarray
        Counts (n,) and design (n, p) with intercept.
    g : ndarray of int (n,)
        Cluster index, rows sorted by cluster (and by time within a cluster).
    corr : {"exchangeable", "ar1"}
    start : ndarray (p,)
        Starting coefficients (statsmodels starts at the independence GLM fit).
    max_iter, tol
        statsmodels' ``maxiter`` and ``ctol`` (on the score norm). The fit also stops when the
        largest coefficient step is below 1e-10 (1 + max|beta|): the score norm grows with the
        scale of the counts (Rossmann's monthly sales ~2e5), so an absolute ``ctol`` alone
        can be out of reach of floating point.
    rho : float or None
        Hold the working correlation fixed at this value instead of estimating it.
    """
    clusters = _Clusters(np.asarray(g))
    y = np.asarray(y, dtype=float)
    beta = np.array(start, dtype=float, copy=True)
    p = x.shape[1]
    fixed = rho is not None
    cur_rho = float(rho) if fixed else 0.0
    n_assoc = 0
    score_norm = np.inf
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        mu = np.exp(np.minimum(x @ beta, _ETA_MAX))
        sq = np.sqrt(mu)
        xt = x * sq[:, None]
        rt = (y - mu) / sq
        h, u, _ = _info_score(xt, rt, clusters, cur_rho, corr)
        if not (np.all(np.isfinite(h)) and np.all(np.isfinite(u))):
            raise GeeDivergedError(
                f"the GEE iterations diverged at iteration {it} (a fitted mean reached 0 or "
                f"overflowed; working correlation {cur_rho:.3f})"
            )
        update = linalg.solve(h, u, assume_a="pos")
        if float(np.max(np.abs(update))) > _MAX_STEP:
            raise GeeDivergedError(
                f"the GEE iterations diverged at iteration {it} (a coefficient step of "
                f"{float(np.max(np.abs(update))):.3g} on the log scale; working correlation "
                f"{cur_rho:.3f}): no finite solution was found on these rows"
            )
        beta = beta + update
        score_norm = float(np.sqrt(u @ u))
        small_step = float(np.max(np.abs(update))) < _STEP_TOL * (1.0 + float(np.max(np.abs(beta))))
        converged = score_norm < tol or small_step
        if converged and (n_assoc > 0 or fixed):
            break
        if not fixed:
            mu = np.exp(np.minimum(x @ beta, _ETA_MAX))
            cur_rho = _update_rho((y - mu) / np.sqrt(mu), clusters, corr, p)
            n_assoc += 1
    mu = np.exp(np.minimum(x @ beta, _ETA_MAX))
    sq = np.sqrt(mu)
    h, _, u_i = _info_score(x * sq[:, None], (y - mu) / sq, clusters, cur_rho, corr)
    h_inv = linalg.inv(h)
    cov_robust = h_inv @ (u_i.T @ u_i) @ h_inv
    return GeeFitResult(
        beta=beta,
        cov_robust=cov_robust,
        cov_naive=h_inv,
        rho=cur_rho,
        n_iter=it,
        converged=converged,
        score_norm=score_norm,
    )
