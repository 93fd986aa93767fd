r"""Adaptive Gauss-Hermite quadrature (AGQ) for a single scalar random-effects term.

For one scalar term the q-dimensional integral factors into G one-dimensional integrals
(lme4 glmer.Rnw, "Decomposing the deviance for simple models"). With the mode
:math:`\hat u_j` and curvature :math:`H_j` from PIRLS, :math:`\sigma_j = H_j^{-1/2}` and
Gauss-Hermite nodes/weights :math:`(z_k, w_k)` for the standard normal density,

.. math:: -2\log\int e^{\ell_j(u)}\varphi(u)\,du \approx \log H_j
          - 2\log\sum_k w_k \exp\big(\ell_j(\hat u_j+\sigma_j z_k) - \tfrac12(\hat u_j+\sigma_j z_k)^2
          + \tfrac12 z_k^2\big)

(lme4 ``glmerAGQ``: shift all groups at once, per-group sums by ``devcCol``). With one node this
is the Laplace deviance. Unlike lme4 (which drops the saturated-model terms for nAGQ > 1) the
deviance here keeps every constant, so AGQ and Laplace log-likelihoods are comparable.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from numpy.polynomial.hermite_e import hermegauss
from scipy.special import logsumexp

from poolcast.errors import InvalidParameterError
from poolcast.glmm.pirls import PirlsResult

__all__ = ["agq_deviance", "check_agq", "gauss_hermite"]

MAX_AGQ = 100


@lru_cache(maxsize=32)
def _gh(k: int) -> tuple[np.ndarray, np.ndarray]:
    z, w = hermegauss(k)
    w = w / w.sum()
    # symmetrise (lme4 2.1-0, GH#968)
    z = 0.5 * (z - z[::-1])
    w = 0.5 * (w + w[::-1])
    return z, w


def gauss_hermite(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of k-point Gauss-Hermite quadrature for the standard normal density.

    The weights sum to 1, so :math:`\\int f(z)\\varphi(z)dz \\approx \\sum_k w_k f(z_k)`,
    exact for polynomials of degree up to 2k-1 (like lme4's ``GHrule``).

    >>> z, w = gauss_hermite(3)
    >>> [round(float(v), 6) for v in z], round(float(w @ z**2), 12)
    ([-1.732051, 0.0, 1.732051], 1.0)
    """
    if not isinstance(k, int | np.integer) or not 1 <= k <= MAX_AGQ:
        raise InvalidParameterError(
            f"n_agq={k!r} must be an integer between 1 and {MAX_AGQ} (lme4's limit)."
        )
    z, w = _gh(int(k))
    return z.copy(), w.copy()


def check_agq(design: Any, n_agq: int) -> None:
    """Refuse AGQ (n_agq > 1) unless the model has a single scalar random-effects term."""
    if n_agq > 1 and (len(design.blocks) != 1 or design.blocks[0].k != 1):
        terms = [f"({' + '.join(b.term_names)} | {b.group})" for b in design.blocks]
        raise InvalidParameterError(
            f"n_agq={n_agq} (method='agq') is only available for models with a single, scalar "
            f"random-effects term (like lme4), but the model has {terms}; use method='laplace' "
            "(n_agq=1) or reduce the random part to one (1 | group) term."
        )
    gauss_hermite(n_agq)


def agq_deviance(
    objective: Any, pr: PirlsResult, beta: np.ndarray, n_agq: int, nb_theta=None
) -> float:
    """AGQ deviance at a PIRLS mode for a single scalar random-effects term."""
    d, sysm, fam = objective.design, objective.system, objective.family
    z, wk = gauss_hermite(n_agq)
    a = sysm.Acols[0]
    H = pr.factor.S[:, 0, 0] ** -1.0
    sigma = 1.0 / np.sqrt(H)
    u_hat = pr.u
    eta0 = d.X @ beta + d.offset
    terms = np.empty((sysm.G, len(z)))
    for j, (zk, wj) in enumerate(zip(z, wk, strict=True)):
        uk = u_hat + sigma * zk
        ll = sysm.segsum(
            d.weights * fam.loglik_kernel(eta0 + a * sysm.expand(uk), d.y, d.trials, nb_theta)
            + objective.ll_const
        )
        terms[:, j] = np.log(wj) + ll - 0.5 * uk**2 + 0.5 * zk**2
    return float(np.sum(np.log(H) - 2.0 * logsumexp(terms, axis=1)))
