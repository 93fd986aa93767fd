"""Mean-response prediction from a fitted GLMM at three levels of the random effects.

The linear predictor of a new row i is

.. math:: \\eta_i = x_i^\\top \\beta + o_i + \\sum_f z_{fi}^\\top b_{f, g_f(i)},

with one term per grouping factor f, the row's random-effect covariates :math:`z_{fi}` (k_f of
them) and the group :math:`g_f(i)` the row belongs to. The three levels differ only in what
stands for :math:`b`:

* ``"conditional"``: the conditional modes :math:`\\tilde b` of the fit (lme4's
  ``predict(fit)``); a level the fit never saw gets :math:`b = 0`, the population level
  (lme4's ``allow.new.levels = TRUE``).
* ``"population"``: :math:`b = 0` for every row (lme4's ``re.form = NA``), i.e. the GLM-style
  prediction :math:`g^{-1}(x^\\top\\beta + o)`.
* ``"marginal"``: :math:`E[y]` with :math:`b_f \\sim N(0, \\Sigma_f)` integrated out. The random
  part of :math:`\\eta_i` is a sum of independent Gaussians, so it is one scalar
  :math:`N(0, v_i)` with :math:`v_i = \\sum_f z_{fi}^\\top \\Sigma_f z_{fi}` whatever the number
  of factors and terms, and the integral is always one-dimensional.

This module holds the functions :class:`~poolcast.glmm.results.GlmmResults` delegates to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from scipy.special import expit

from poolcast.errors import InvalidParameterError
from poolcast.glmm.terms import design_for_newdata

if TYPE_CHECKING:
    from poolcast.glmm.results import GlmmResults
    from poolcast.glmm.terms import NewDesign

__all__ = [
    "N_GAUSS_HERMITE_NODES",
    "compute_eta",
    "compute_marginal_variance",
    "predict",
]

#: Gauss–Hermite nodes for the logit-link marginal mean. The integrand is smooth and bounded,
#: so 64 nodes are exact to ~1e-10 for random-effect SDs up to about 5 on the logit scale.
N_GAUSS_HERMITE_NODES = 64

_LEVELS = ("conditional", "population", "marginal")
_LOG_LINK_FAMILIES = ("poisson", "negbin", "gamma", "tweedie")


def predict(
    results: GlmmResults,
    newdata: Any,
    *,
    level: Literal["conditional", "population", "marginal"] = "conditional",
    offset: Any = None,
    trials: Any = None,
) -> np.ndarray:
    """Predict the mean response of new rows.

    Parameters
    ----------
    results : GlmmResults
        A fitted model.
    newdata : polars.DataFrame or pandas.DataFrame
        Rows with every column the formula uses (the response may be absent). Grouping levels
        the fit never saw are allowed: they get the population level.
    level : {"conditional", "population", "marginal"}
        Which random effects to use (see the module docstring): the groups' conditional modes,
        none, or integrated over their distribution :math:`N(0, \\Sigma)`.
    offset : str, array-like or None
        Offset of the new rows, passed to :func:`~poolcast.glmm.terms.design_for_newdata`
        (a column name or an array, as in ``fit``).
    trials : str, array-like or None
        Binomial only. When given, the prediction is the expected *count*
        :math:`n_i \\mu_i`; when None it is the expected *proportion* :math:`\\mu_i`.

    Returns
    -------
    numpy.ndarray
        Shape (len(newdata),), the mean response on the data scale.

    Notes
    -----
    The marginal mean under the log link (Poisson, NB2) has the closed form of the log-normal
    mean,

    .. math:: E[y_i] = \\exp\\left(x_i^\\top\\beta + o_i + \\tfrac12 v_i\\right),
              \\qquad v_i = \\sum_f z_{fi}^\\top \\Sigma_f z_{fi}.

    Under the logit link (binomial) it is the logistic-normal integral

    .. math:: E[y_i / n_i] = \\int \\operatorname{expit}(\\eta_i^{0} + \\sqrt{v_i}\\, s)\\,
              \\phi(s)\\, ds \\approx \\frac{1}{\\sqrt{2\\pi}} \\sum_{k=1}^{K} w_k\\,
              \\operatorname{expit}(\\eta_i^{0} + \\sqrt{v_i}\\, x_k),

    computed with K = :data:`N_GAUSS_HERMITE_NODES` probabilists' Gauss–Hermite nodes
    :math:`(x_k, w_k)` (``numpy.polynomial.hermite_e.hermegauss``). Because the random part of
    :math:`\\eta_i` is a scalar Gaussian, this one-dimensional rule is exact in the limit for
    vector-valued and crossed random effects too; no sampling is involved.

    Examples
    --------
    >>> import numpy as np, polars as pl
    >>> from poolcast.glmm import fit
    >>> rng = np.random.default_rng(0)
    >>> g = np.repeat(np.arange(20), 10)
    >>> y = rng.poisson(np.exp(1.0 + rng.normal(0, 0.5, 20)[g]))
    >>> res = fit("y ~ 1 + (1 | g)", pl.DataFrame({"y": y, "g": g.astype(str)}), family="poisson")
    >>> new = pl.DataFrame({"g": ["0", "new"]})
    >>> mu = res.predict(new, level="conditional")
    >>> bool(mu[1] == res.predict(new, level="population")[1])
    True
    """
    if level not in _LEVELS:
        raise InvalidParameterError(
            f"level={level!r} is not a prediction level; use one of {', '.join(_LEVELS)}."
        )
    family = results.family
    design_trials = trials
    if family.name == "binomial" and trials is None:
        # The mean proportion needs no trials; ones keep the design from asking for them.
        design_trials = np.ones(newdata.shape[0])
    new = design_for_newdata(results.design, newdata, offset=offset, trials=design_trials)
    if level == "marginal":
        eta0 = compute_eta(results, new, level="population")
        v = compute_marginal_variance(results, new)
        if family.name in _LOG_LINK_FAMILIES:
            mu = np.exp(eta0 + 0.5 * v)
        elif family.name == "binomial":
            mu = _logistic_normal_mean(eta0, v)
        else:  # pragma: no cover - the core only builds these three families
            raise InvalidParameterError(
                f"level='marginal' is not implemented for family {family.name!r}."
            )
    else:
        mu = np.asarray(family.linkinv(compute_eta(results, new, level=level)), dtype=float)
    if family.name == "binomial" and trials is not None:
        mu = mu * np.asarray(new.trials, dtype=float)
    return mu


def compute_eta(
    results: GlmmResults,
    new: NewDesign,
    *,
    level: Literal["conditional", "population"] = "conditional",
    beta: np.ndarray | None = None,
) -> np.ndarray:
    """Linear predictor of new rows at the conditional modes or at the population level.

    Parameters
    ----------
    results : GlmmResults
        A fitted model.
    new : NewDesign
        The new rows' design (from :func:`~poolcast.glmm.terms.design_for_newdata`).
    level : {"conditional", "population"}
        Add the conditional modes :math:`\\tilde b` (0 for unseen levels) or not.
    beta : numpy.ndarray or None
        Fixed effects to use instead of :math:`\\hat\\beta`, shape (p,).

    Returns
    -------
    numpy.ndarray
        :math:`\\eta = X\\beta + o\\; [+ \\sum_f (Z_f \\odot \\tilde b_{f, g_f})\\mathbf 1]`,
        shape (n,).
    """
    beta = results.beta if beta is None else beta
    eta = np.asarray(new.X, dtype=float) @ np.asarray(beta, dtype=float)
    if new.offset is not None:
        eta = eta + np.asarray(new.offset, dtype=float)
    if level == "conditional":
        for block in new.blocks:
            if block.time_index is not None:
                from poolcast.glmm.ar1 import ar1_eta_conditional

                eta = eta + ar1_eta_conditional(results.ar1, block.level_index, block.time_index)
                continue
            modes = np.asarray(results.b_modes[block.factor], dtype=float)
            idx = np.asarray(block.level_index)
            seen = idx >= 0
            b_rows = np.zeros((idx.shape[0], modes.shape[1]))
            b_rows[seen] = modes[idx[seen]]
            eta = eta + np.einsum("ik,ik->i", np.asarray(block.Z, dtype=float), b_rows)
    return eta


def compute_marginal_variance(results: GlmmResults, new: NewDesign) -> np.ndarray:
    """Variance of the random part of each new row's linear predictor under the prior.

    Returns
    -------
    numpy.ndarray
        :math:`v_i = \\sum_f z_{fi}^\\top \\Sigma_f z_{fi}`, shape (n,).
    """
    v = np.zeros(np.asarray(new.X).shape[0])
    for block in new.blocks:
        if block.time_index is not None:  # stationary AR(1): variance sigma^2 at every step
            v = v + results.ar1.sigma**2
            continue
        z = np.asarray(block.Z, dtype=float)
        sigma = np.asarray(results.cov_re[block.factor], dtype=float)
        v = v + np.einsum("ik,kl,il->i", z, sigma, z)
    return np.maximum(v, 0.0)


def _logistic_normal_mean(eta0: np.ndarray, v: np.ndarray) -> np.ndarray:
    """:math:`E[\\operatorname{expit}(\\eta_0 + \\sqrt v\\, s)]`, s ~ N(0, 1), by Gauss–Hermite."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(N_GAUSS_HERMITE_NODES)
    weights = weights / np.sqrt(2.0 * np.pi)
    p = expit(eta0[:, None] + np.sqrt(v)[:, None] * nodes[None, :])
    return p @ weights
