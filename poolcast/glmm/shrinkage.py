"""Partial pooling at a glance: each group's own estimate next to the model's pooled one.

For every level j of a grouping factor the table holds, on the link scale,

* ``raw``: the group's own intercept, :math:`\\beta_0 + \\hat\\delta_j`, where
  :math:`\\hat\\delta_j` is the maximum-likelihood intercept shift of a one-parameter GLM fitted
  to the group's rows alone with the population fixed part :math:`x_i^\\top\\hat\\beta + o_i` as
  offset (no pooling, no random slopes);
* ``pooled``: the partially pooled intercept :math:`\\beta_0 + \\tilde b_{j0}`, with
  :math:`\\tilde b_{j0}` the conditional mode of the group's random intercept;
* ``mode`` (:math:`\\tilde b_{j0}`) and ``cond_sd`` (its conditional SD given y).

Plotting ``raw`` and ``pooled`` against ``n_obs`` shows the shrinkage: small groups are pulled
further towards :math:`\\beta_0` (lme4 users draw the same picture from ``coef`` and a
per-group ``glm``; Gelman & Hill 2007, §12.2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl
from scipy.special import expit

from poolcast.errors import InvalidParameterError

if TYPE_CHECKING:
    from poolcast.glmm.results import GlmmResults

__all__ = ["compute_raw_intercept_shift", "shrinkage"]

_INTERCEPT = "(Intercept)"
_BISECTION_STEPS = 80
_BISECTION_BOUND = 40.0


def shrinkage(results: GlmmResults, factor: str) -> pl.DataFrame:
    """Per-level raw and partially pooled intercepts of one grouping factor.

    Parameters
    ----------
    results : GlmmResults
        A fitted model whose random-effects term for ``factor`` has an intercept.
    factor : str
        Name of the grouping factor, as in ``results.ranef`` (e.g. ``"sku"``).

    Returns
    -------
    polars.DataFrame
        One row per level, in the factor's level order, with columns

        ``level`` (String), ``n_obs`` (Int64, rows of the level in the fit), ``raw`` (Float64,
        :math:`\\beta_0 + \\hat\\delta_j`; null when the group's own estimate is infinite: all-zero
        counts, or all successes / all failures for binomial), ``pooled``
        (:math:`\\beta_0 + \\tilde b_{j0}`), ``mode`` (:math:`\\tilde b_{j0}`) and ``cond_sd``
        (:math:`\\sqrt{\\operatorname{Var}(b_{j0} \\mid y)}`). :math:`\\beta_0` is the fixed
        intercept, 0 if the model has none. All on the link scale (log or logit).

    Notes
    -----
    The raw shift is found by :func:`compute_raw_intercept_shift`. Under the log link it is
    closed form, :math:`\\hat\\delta_j = \\log(\\sum_{i \\in j} w_i y_i / \\sum_{i \\in j} w_i
    e^{x_i^\\top\\hat\\beta + o_i})` (the Poisson score equation; the NB2 score equation has
    the same root only when all :math:`\\mu_i` of the group are equal, so for NB2 this is the
    Poisson "ratio" estimate, a consistent moment estimator). Under the logit link it solves
    :math:`\\sum_{i\\in j} w_i m_i\\, \\operatorname{expit}(x_i^\\top\\hat\\beta + o_i + \\delta) =
    \\sum_{i\\in j} w_i y_i` by bisection, vectorised over groups.

    Examples
    --------
    >>> import numpy as np, polars as pl
    >>> from poolcast.glmm import fit
    >>> rng = np.random.default_rng(2)
    >>> g = np.repeat(np.arange(20), 10)
    >>> y = rng.poisson(np.exp(1.0 + rng.normal(0, 0.5, 20)[g]))
    >>> res = fit("y ~ 1 + (1 | g)", pl.DataFrame({"y": y, "g": g.astype(str)}), family="poisson")
    >>> res.shrinkage("g").columns
    ['level', 'n_obs', 'raw', 'pooled', 'mode', 'cond_sd']
    """
    design = results.design
    blocks = {b.factor: b for b in design.blocks}
    if factor not in blocks:
        raise InvalidParameterError(
            f"factor={factor!r} is not a grouping factor of this model; use one of {sorted(blocks)}."
        )
    block = blocks[factor]
    if _INTERCEPT not in block.term_names:
        raise InvalidParameterError(
            f"the random-effects term of factor {factor!r} has no intercept "
            f"(terms {list(block.term_names)}); shrinkage() compares per-group intercepts, so "
            "it needs a term such as (1 | g) or (1 + x | g)."
        )
    col = block.term_names.index(_INTERCEPT)
    n_levels = len(block.levels)
    level_index = np.asarray(block.level_index)

    eta_pop = np.asarray(design.X, dtype=float) @ np.asarray(results.beta, dtype=float)
    eta_pop = eta_pop + np.asarray(design.offset, dtype=float)
    delta = compute_raw_intercept_shift(
        family=results.family.name,
        y=np.asarray(design.y, dtype=float),
        eta=eta_pop,
        level_index=level_index,
        n_levels=n_levels,
        weights=np.asarray(design.weights, dtype=float),
        trials=None if design.trials is None else np.asarray(design.trials, dtype=float),
    )
    beta0 = float(results.fixef.get(_INTERCEPT, 0.0))
    modes = np.asarray(results.b_modes[factor], dtype=float)[:, col]
    cond_sd = np.sqrt(np.maximum(np.asarray(results.b_cond_cov[factor])[:, col, col], 0.0))
    raw = beta0 + delta
    return pl.DataFrame(
        {
            "level": pl.Series("level", list(block.levels), dtype=pl.String),
            "n_obs": pl.Series(
                "n_obs", np.bincount(level_index, minlength=n_levels), dtype=pl.Int64
            ),
            "raw": pl.Series("raw", np.where(np.isfinite(raw), raw, np.nan)).fill_nan(None),
            "pooled": beta0 + modes,
            "mode": modes,
            "cond_sd": cond_sd,
        }
    )


def compute_raw_intercept_shift(
    *,
    family: str,
    y: np.ndarray,
    eta: np.ndarray,
    level_index: np.ndarray,
    n_levels: int,
    weights: np.ndarray | None = None,
    trials: np.ndarray | None = None,
) -> np.ndarray:
    """Per-group ML intercept shift with the population linear predictor as offset.

    Parameters
    ----------
    family : {"poisson", "negbin", "binomial"}
        Decides the link (log, or logit).
    y : numpy.ndarray
        (n,) responses (successes for binomial).
    eta : numpy.ndarray
        (n,) population linear predictor :math:`x_i^\\top\\hat\\beta + o_i`.
    level_index : numpy.ndarray
        (n,) group of each row, in 0..n_levels-1.
    n_levels : int
        Number of groups.
    weights : numpy.ndarray or None
        (n,) prior weights, ones if None.
    trials : numpy.ndarray or None
        (n,) binomial trials, ones if None.

    Returns
    -------
    numpy.ndarray
        (n_levels,) :math:`\\hat\\delta_j`; -inf / +inf when the group's estimate is on the
        boundary (no counts; all failures / all successes).
    """
    w = np.ones_like(y) if weights is None else weights
    sum_y = np.bincount(level_index, weights=w * y, minlength=n_levels)
    if family in ("poisson", "negbin", "tweedie"):
        # the Poisson score equation (for Tweedie a quasi-likelihood estimate of the offset)
        sum_mu = np.bincount(level_index, weights=w * np.exp(eta), minlength=n_levels)
        with np.errstate(divide="ignore"):
            return np.log(sum_y) - np.log(sum_mu)
    if family == "gamma":
        # Gamma score: sum w (y exp(-eta - delta) - 1) = 0
        ratio = np.bincount(level_index, weights=w * y * np.exp(-eta), minlength=n_levels)
        total = np.bincount(level_index, weights=w, minlength=n_levels)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(ratio) - np.log(total)
    if family != "binomial":
        raise InvalidParameterError(
            f"family={family!r} is not supported; use poisson, negbin, gamma, tweedie or binomial."
        )
    m = np.ones_like(y) if trials is None else trials
    sum_m = np.bincount(level_index, weights=w * m, minlength=n_levels)
    lo = np.full(n_levels, -_BISECTION_BOUND)
    hi = np.full(n_levels, _BISECTION_BOUND)
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        expected = np.bincount(
            level_index, weights=w * m * expit(eta + mid[level_index]), minlength=n_levels
        )
        too_high = expected > sum_y
        hi = np.where(too_high, mid, hi)
        lo = np.where(too_high, lo, mid)
    delta = 0.5 * (lo + hi)
    delta[sum_y <= 0] = -np.inf
    delta[sum_y >= sum_m] = np.inf
    return delta
