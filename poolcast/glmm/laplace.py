r"""Laplace approximation of the marginal deviance and its exact gradient (one grouping factor).

.. math:: -2\ell_L(\theta,\beta) = -2\sum_i w_i\ell_i(\hat\eta_i) + \lVert\hat u\rVert^2
          + \log\det\big(\Lambda^\top Z^\top W Z\Lambda + I\big)

at the conditional mode :math:`\hat u` (lme4 glmer.Rnw eq. ``LaplaceDev``; ``glmResp::Laplace`` =
ldL2 + ‖u‖² + aic()). With all constants of the log-likelihood it equals :math:`-2` times lme4's
and glmmTMB's Laplace log-likelihood.

The gradient follows TMB's implicit-function route specialised to block-diagonal H:
with :math:`S_j = H_j^{-1}`, :math:`a_i = \Lambda^\top z_i`, :math:`s_i = a_i^\top S_j a_i`,
:math:`c_i = w_i h'_i s_i`, :math:`r_j = \sum_{i\in j} c_i a_i`, :math:`v_j = S_j r_j`,

.. math:: \nabla_\beta = X^\top\big(-2 w g + c - D\odot(A v)\big),

and for :math:`\theta_m` (entry (r, c) of Λ), with :math:`e_i = z_{ir}u_{jc}`,
:math:`\rho_j = \sum_{i\in j} (w_i g_i z_{ir} \epsilon_c - D_i a_i e_i)`,

.. math:: \partial_{\theta_m} = \textstyle\sum_i (-2 w_i g_i e_i + c_i e_i + 2 D_i z_{ir}(S_j a_i)_c)
          + \sum_j v_j^\top\rho_j .

The envelope theorem removes :math:`d\hat u` from the first two terms; the third needs it through
:math:`h'` (the third derivative of :math:`\ell`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from poolcast.glmm._selinv import row_inverse_blocks, schur_applies
from poolcast.glmm.pirls import PirlsResult

__all__ = ["dispersion_gradient", "laplace_deviance", "laplace_gradient"]


def laplace_deviance(pr: PirlsResult) -> float:
    """Laplace deviance at a PIRLS mode: penalised deviance + log det H."""
    return float(pr.pdev + pr.factor.logdet)


def dispersion_gradient(
    objective: Any, pr: PirlsResult, gamma: np.ndarray, av: np.ndarray, s: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    r"""Gradient of the Laplace deviance over the dispersion coefficients :math:`\gamma`.

    With a dispersion formula each row has its own :math:`\psi_i = \log\theta_i =
    x_{d,i}^\top\gamma`. The scalar model's derivative in :math:`\psi` is a sum over rows of

    .. math:: r_i = -2 w_i \ell_{\psi,i} + (Z\Lambda v)_i\, w_i g_{\psi,i} + w_i h_{\psi,i} s_i

    (the three terms of the scalar formula, :math:`v^\top \Lambda^\top Z^\top (w g_\psi)`
    written row by row), so by the chain rule :math:`\nabla_\gamma = X_d^\top r`.

    Parameters
    ----------
    objective : Objective
        With ``disp_X`` set.
    pr : PirlsResult
        Mode at (theta, beta, gamma).
    gamma : np.ndarray
        Dispersion coefficients.
    av : np.ndarray
        (n,) :math:`Z\Lambda v`, the vector v of the gradient mapped to the rows.
    s : np.ndarray
        (n,) :math:`s_i = a_i^\top H^{-1} a_i`.

    Returns
    -------
    (grad_gamma (k_d,), w * g_psi (n,): with a column of X_d, the right-hand side of du/dgamma)
    """
    d, fam = objective.design, objective.family
    w = d.weights
    l_psi, g_psi, h_psi = fam.derivs_log_theta(pr.eta, d.y, objective.sizes(gamma))
    wg_psi = w * g_psi
    per_row = -2.0 * w * l_psi + av * wg_psi + w * h_psi * s
    return objective.disp_X.T @ per_row, wg_psi


def laplace_gradient(
    objective: Any, pr: PirlsResult, *, nb_theta: float | None = None
) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Exact gradient of the Laplace deviance for a single grouping factor.

    Parameters
    ----------
    objective : Objective
        With a :class:`~poolcast.glmm._resystem.BlockSystem` whose theta is the one of ``pr``.
    pr : PirlsResult
        Mode at (theta, beta).
    nb_theta : float, optional
        NB2 size; when given the derivative in log(nb_theta) is returned too.

    Returns
    -------
    (grad_theta, grad_beta, grad_log_nb_theta or None); with a dispersion formula
    (``objective.disp_X``) ``nb_theta`` is the coefficient vector gamma and the last entry
    its gradient (:func:`dispersion_gradient`).
    """
    if getattr(objective.system, "ar1", False):
        from poolcast.glmm.ar1 import ar1_gradient

        return ar1_gradient(objective, pr, nb_theta=nb_theta)
    if not objective.system.single:
        return _sparse_gradient(objective, pr, nb_theta=nb_theta)
    d, sysm, fam = objective.design, objective.system, objective.family
    w, X, y = d.weights, d.X, d.y
    unit_w = objective.unit_weights
    k, G = sysm.k, sysm.G
    S = pr.factor.S  # (G, k, k)
    U = pr.u.reshape(G, k)
    D = pr.h if unit_w else w * pr.h
    # SA_i = S_j a_i, s_i = a_i' S_j a_i
    Acols = sysm.Acols
    SA = []
    for r in range(k):
        col = sysm.expand(S[:, r, 0]) * Acols[0]
        for c in range(1, k):
            col += sysm.expand(S[:, r, c]) * Acols[c]
        SA.append(col)
    s = Acols[0] * SA[0]
    for r in range(1, k):
        s += Acols[r] * SA[r]
    c_vec = pr.h3 * s if unit_w else w * pr.h3 * s
    v = pr.factor.solve(sysm.crossprod(c_vec))  # flat (q,)
    wg = pr.g if unit_w else w * pr.g
    t1 = c_vec - 2.0 * wg
    DAv = sysm.re_eta(v)
    DAv *= D
    grad_beta = X.T @ (t1 - DAv)

    Zc, ones = sysm.Zcols, sysm.z_ones
    DSA = [D * SA[c] for c in range(k)]
    seg_wgz = {}
    rows, cols = d.blocks[0].tril_index()
    grad_theta = np.empty(len(rows))
    # du/dx (q x n_x): a first-order predictor of the next mode (warm start of PIRLS)
    du_dx = [None] * len(rows)
    for m, (r, c) in enumerate(zip(rows, cols, strict=True)):
        e = sysm.expand(U[:, c])
        if not ones[r]:
            e *= Zc[r]
        rho = -sysm.crossprod(D * e).reshape(G, k)
        if r not in seg_wgz:
            seg_wgz[r] = sysm.segsum(wg if ones[r] else wg * Zc[r])
        rho[:, c] += seg_wgz[r]
        du_dx[m] = pr.factor.solve(rho.ravel())
        z_dsa = DSA[c].sum() if ones[r] else np.dot(Zc[r], DSA[c])
        grad_theta[m] = np.dot(t1, e) + 2.0 * z_dsa + float(np.dot(v, rho.ravel()))
    DX = np.empty((sysm.q, X.shape[1]))
    DAc = [D * Acols[c] for c in range(k)]
    for j in range(X.shape[1]):
        xj = X[:, j]
        for c in range(k):
            DX[c::k, j] = sysm.segsum(DAc[c] * xj)
    du_dx.extend(-pr.factor.solve(DX).T)
    grad_psi = None
    if nb_theta is not None and objective.disp_X is not None:
        grad_psi, wg_psi = dispersion_gradient(objective, pr, nb_theta, sysm.re_eta(v), s)
        for col in objective.disp_X.T:
            du_dx.append(pr.factor.solve(sysm.crossprod(wg_psi * col)))
    elif nb_theta is not None:
        l_psi, g_psi, h_psi = fam.derivs_log_theta(pr.eta, y, nb_theta)
        rho = sysm.crossprod(w * g_psi)
        grad_psi = float(-2.0 * np.dot(w, l_psi) + np.dot(v, rho) + np.dot(w * h_psi, s))
        du_dx.append(pr.factor.solve(rho))
    objective.du_dx = np.column_stack(du_dx)
    return grad_theta, grad_beta, grad_psi


def _sparse_gradient(
    objective: Any, pr: PirlsResult, *, nb_theta: float | None = None
) -> tuple[np.ndarray, np.ndarray, float | None]:
    r"""The same gradient for several factors, from the entries of H^{-1} among each row's
    columns: by a Schur complement when all blocks but the largest are small
    (:mod:`poolcast.glmm._selinv`), else from a dense H^{-1} (q up to ``grad_q_max``).

    Row i of Z Λ has K non-zeros (columns ``cols[i]``, values ``vals[i]``), so
    :math:`s_i = \sum_{a,b} v_{ia} v_{ib} (H^{-1})_{c_{ia} c_{ib}}` and
    :math:`(H^{-1}a_i)_p = \sum_a (H^{-1})_{p\,c_{ia}} v_{ia}`.
    """
    d, sysm, fam = objective.design, objective.system, objective.family
    w, X, y = d.weights, d.X, d.y
    cols, vals = sysm.cols, sysm.vals
    D = w * pr.h
    # M[i] = H^{-1} among row i's columns: by the Schur complement onto the small blocks when
    # one block is large and the rest small (poolcast.glmm._selinv), else from a dense H^{-1}
    if schur_applies(sysm):
        M = row_inverse_blocks(sysm, D)
    else:
        Hinv = pr.factor.solve(np.eye(sysm.q))
        Hinv = 0.5 * (Hinv + Hinv.T)
        M = Hinv[cols[:, :, None], cols[:, None, :]]
    s = np.einsum("ia,iab,ib->i", vals, M, vals)
    c_vec = w * pr.h3 * s
    v = pr.factor.solve(sysm.crossprod(c_vec))
    wg = w * pr.g
    grad_beta = X.T @ (-2.0 * wg + c_vec - D * sysm.re_eta(v))
    grad_theta = np.empty(d.n_theta)
    offsets = np.cumsum([0] + [k for _, _, k in sysm.layout])
    for blk, (start, G, k), off in zip(d.blocks, sysm.layout, offsets, strict=False):
        rows_t, cols_t = blk.tril_index()
        for t, (r, cc) in enumerate(zip(rows_t, cols_t, strict=True)):
            pos = start + blk.level_index * k + cc
            zr = blk.Z[:, r]
            e = zr * pr.u[pos]
            rho = -sysm.crossprod(D * e)
            rho[start + np.arange(G) * k + cc] += np.bincount(
                blk.level_index, weights=wg * zr, minlength=G
            )
            # (H^{-1} a_i)[pos_i]: pos_i is the column at position off + cc of row i's pattern
            hinv_a = np.einsum("ia,ia->i", M[:, off + cc, :], vals)
            grad_theta[blk.theta_slice.start + t] = (
                ((-2.0 * wg + c_vec) * e).sum()
                + 2.0 * (D * zr * hinv_a).sum()
                + float((v * rho).sum())
            )
    grad_psi = None
    if nb_theta is not None and objective.disp_X is not None:
        grad_psi = dispersion_gradient(objective, pr, nb_theta, sysm.re_eta(v), s)[0]
    elif nb_theta is not None:
        l_psi, g_psi, h_psi = fam.derivs_log_theta(pr.eta, y, nb_theta)
        rho = sysm.crossprod(w * g_psi)
        grad_psi = float(-2.0 * (w * l_psi).sum() + (v * rho).sum() + (w * h_psi * s).sum())
    return grad_theta, grad_beta, grad_psi
