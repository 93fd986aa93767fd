"""The PyMC model behind :mod:`poolcast.models.bayes`: build, sample, diagnose, keep the draws.

Kept apart from the candidate so that the truth-recovery and Laplace-agreement checks (and
the benchmark) can fit the hierarchical model on any design matrix, without the feature
pipeline. PyMC, nutpie and ArviZ are imported lazily: importing poolcast stays fast.

The model (see :class:`~poolcast.models.bayes.BayesNegBinHierarchical` for the priors and
their reasons), for observation t of SKU i in category c = c(i), with k = 1 (intercept) or
k = 2 (intercept and promo slope) random coefficients :math:`z_{it} = (1, \\text{promo}_{it})`:

.. math::
   \\log\\mu_{it} = x_{it}^\\top\\beta + z_{it}^\\top (a_c + b_i),\\qquad
   a_c = \\tau\\circ u_c,\\quad u_c \\sim N(0, I_k),\\qquad
   b_i = L\\,v_i,\\quad v_i \\sim N(0, I_k),\\quad LL^\\top = \\Sigma,

:math:`y_{it} \\sim \\text{NB2}(\\mu_{it}, \\alpha)` (Var = :math:`\\mu + \\alpha\\mu^2`) or
Poisson. Two parameterisations of the same model (:func:`build_model`): non-centred (the
sampler sees :math:`u, v` and scales, not :math:`a, b`: no funnel between a scale and its
effects when groups are thin) and hierarchically centred (the sampler sees the SKU and
category totals: no additive trade-off between the levels when every SKU has a long history);
:func:`choose_parameterization` picks one by rows per SKU. Without a category the :math:`a_c`
term is absent (two levels).
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "CENTRED_MIN_ROWS_PER_SKU",
    "CENTRED_MIN_SKUS_PER_CATEGORY",
    "DIAGNOSTIC_THRESHOLDS",
    "FIXED_BASES",
    "INTERCEPT_CENTRED_MAX_POOLING",
    "PARAMETERIZATIONS",
    "SLOPE_CENTRED_MAX_POOLING",
    "HierData",
    "Posterior",
    "build_model",
    "choose_parameterization",
    "choose_sku_slope_form",
    "diagnostics",
    "fit_posterior",
    "fixed_effects_rotation",
    "ineligibility",
    "pooling_factors",
    "resolve_parameterization",
]

#: Gate of the issue: R-hat above, bulk ESS below, divergences above -> not eligible.
DIAGNOSTIC_THRESHOLDS: dict[str, float] = {
    "rhat_max": 1.01,
    "ess_bulk_min": 400.0,
    "divergences": 0,
}


@dataclass(frozen=True)
class HierData:
    """Inputs of one hierarchical fit.

    Fields
    ------
    y : (n,) int array
        Counts.
    X : (n, p) float array
        Fixed-effect covariates, **without** the intercept (centred where it matters).
    terms : tuple of str
        Names of the columns of X.
    sku_idx : (n,) int array
        SKU code 0..n_sku-1 of each row.
    sku_levels : tuple of str
        SKU names by code.
    sku_category : (n_sku,) int array or None
        Category code of each SKU (None: no category, two levels).
    category_levels : tuple of str
        Category names by code (empty without categories).
    slope : (n,) float array or None
        The random-slope covariate (promo), or None for a random intercept only.
    slope_term : str
        The name of the slope's column in X (its fixed effect is the mean of the SKU slopes).
    """

    y: np.ndarray
    X: np.ndarray
    terms: tuple[str, ...]
    sku_idx: np.ndarray
    sku_levels: tuple[str, ...]
    sku_category: np.ndarray | None = None
    category_levels: tuple[str, ...] = ()
    slope: np.ndarray | None = None
    slope_term: str = "promo"

    @property
    def k(self) -> int:
        """Number of random coefficients per group (1 or 2)."""
        return 1 if self.slope is None else 2

    @property
    def has_categories(self) -> bool:
        """True when the model has the category level."""
        return self.sku_category is not None and len(self.category_levels) >= 1


@dataclass
class Posterior:
    """Draws of one fit (flattened over chains), enough to forecast without PyMC.

    Fields
    ------
    beta : (S, 1 + p)
        Intercept then the fixed effects of ``terms``.
    sku_effects : (S, n_sku, k)
        :math:`b_i` (deviation of the SKU from its category).
    category_effects : (S, n_cat, k) or None
        :math:`a_c`.
    sku_chol : (S, k, k)
        Cholesky factor of the SKU covariance :math:`\\Sigma` (new SKUs).
    category_sd : (S, k) or None
        :math:`\\tau` (new categories).
    alpha : (S,) or None
        NB2 dispersion (None for Poisson).
    method : str
        ``"nuts"`` (nutpie) or ``"advi"`` (approximate fallback) or ``"nuts_pymc"``.
    diagnostics : dict
        :func:`diagnostics` of the fit.
    idata : object
        ArviZ DataTree of the fit (posterior and sample stats), for the MLflow artifact.
    seconds : dict
        ``compile`` and ``sample`` wall times.
    parameterization : str
        ``"centred"``, ``"centred_sku"`` or ``"noncentred"`` (what ``"auto"`` resolved to).
    options : dict
        How the centred forms were sampled: ``centre_sku_slope`` (what ``"auto"`` resolved
        to), ``within_sku_covariates``, the pilot's median pooling factors and ``adaptation``.
    """

    beta: np.ndarray
    sku_effects: np.ndarray
    category_effects: np.ndarray | None
    sku_chol: np.ndarray
    category_sd: np.ndarray | None
    alpha: np.ndarray | None
    method: str
    diagnostics: dict[str, float]
    idata: Any = field(repr=False, default=None)
    seconds: dict[str, float] = field(default_factory=dict)
    parameterization: str = "noncentred"
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def n_draws(self) -> int:
        """Number of stored draws S."""
        return int(self.beta.shape[0])

    def sku_sd(self) -> np.ndarray:
        """(S, k) SDs of the SKU effects."""
        return np.sqrt(np.einsum("sij,sij->si", self.sku_chol, self.sku_chol))

    def sku_corr(self) -> np.ndarray | None:
        """(S,) correlation of intercept and slope (None when k = 1)."""
        if self.sku_chol.shape[1] < 2:
            return None
        cov = self.sku_chol @ np.swapaxes(self.sku_chol, 1, 2)
        return cov[:, 0, 1] / np.sqrt(cov[:, 0, 0] * cov[:, 1, 1])


def _prior_scales(data: HierData) -> dict[str, float]:
    y = data.y.astype(float)
    return {"intercept_centre": float(np.log(max(y.mean(), 1e-3)))}


#: Median training rows per SKU at or above which ``parameterization="auto"`` picks the
#: hierarchically centred model (``benchmarks/README.md``, "Bayesian hierarchical GLMM").
CENTRED_MIN_ROWS_PER_SKU = 12

#: Median SKUs per category at or above which ``"auto"`` centres the category level too.
CENTRED_MIN_SKUS_PER_CATEGORY = 10

#: The parameterisations :func:`build_model` knows (``"auto"`` picks one of them).
PARAMETERIZATIONS = ("centred", "centred_sku", "noncentred")


def choose_parameterization(data: HierData, requested: str = "auto") -> str:
    """``"centred"``, ``"centred_sku"`` or ``"noncentred"``: ``requested`` unless it is
    ``"auto"``, then non-centred when the median SKU has fewer than
    :data:`CENTRED_MIN_ROWS_PER_SKU` rows; else the SKU level centred (its own history pins
    a SKU's effects down, the regime where centring mixes better), and the category level
    too when the median category has at least :data:`CENTRED_MIN_SKUS_PER_CATEGORY` SKUs
    (``"centred"``), else only the SKU level (``"centred_sku"``: a category of two or three
    SKUs is a thin group, where a centred level is a funnel)."""
    if requested in PARAMETERIZATIONS:
        return requested
    if requested != "auto":
        raise ValueError(f"parameterization={requested!r}")
    counts = np.bincount(data.sku_idx, minlength=len(data.sku_levels))
    if float(np.median(counts)) < CENTRED_MIN_ROWS_PER_SKU:
        return "noncentred"
    if data.has_categories:
        per_cat = np.bincount(
            np.asarray(data.sku_category, dtype=np.int64), minlength=len(data.category_levels)
        )
        if float(np.median(per_cat[per_cat > 0])) < CENTRED_MIN_SKUS_PER_CATEGORY:
            return "centred_sku"
    return "centred"


#: Median pooling factor of the SKU intercepts at or above which ``parameterization="auto"``
#: samples the SKU level non-centred even when the rows per SKU would centre it: the prior,
#: not the data, pins the intercepts down (intermittent SKUs, most months zero: car parts'
#: first 100 SKUs have 94% zeros and a Laplace SKU SD of 0, and their centred fits diverged).
INTERCEPT_CENTRED_MAX_POOLING = 0.5


def resolve_parameterization(
    data: HierData, requested: str = "auto", *, family: str = "negbin"
) -> tuple[str, dict[str, float] | None]:
    """The parameterisation :func:`fit_posterior` samples, and the Laplace pilot's figures
    when one ran (:func:`pooling_factors`; None otherwise).

    ``requested`` other than ``"auto"`` is kept. ``"auto"``: :func:`choose_parameterization`
    (rows per SKU, SKUs per category); when that centres, a pilot's median pooling factor of
    the SKU intercepts at or above :data:`INTERCEPT_CENTRED_MAX_POOLING` (a singular pilot:
    1) overrides it with ``"noncentred"``: many rows that each carry little information
    (intermittent demand) leave the intercepts to their prior, where centring is a funnel. A
    failed pilot (NaN) keeps the rows' choice."""
    param = choose_parameterization(data, requested)
    if requested != "auto" or param == "noncentred":
        return param, None
    pilot = pooling_factors(data, family=family)
    if pilot["intercept"] >= INTERCEPT_CENTRED_MAX_POOLING:  # False when NaN
        param = "noncentred"
    return param, pilot


#: Median pooling factor of the SKU slopes below which ``centre_sku_slope="auto"`` samples
#: them centred: the data's information about a slope then outweighs its prior's (the
#: Gaussian crossover of centred and non-centred Gibbs rates, Papaspiliopoulos, Roberts &
#: Skold 2007: centred mixes at rate lambda, non-centred at 1 - lambda).
SLOPE_CENTRED_MAX_POOLING = 0.5


def pooling_factors(data: HierData, *, family: str = "negbin") -> dict[str, float]:
    """Median pooling factors of the SKU effects from a Laplace pilot (``poolcast.glmm.fit``,
    two levels: observations in SKUs, the same fixed covariates, ``(1 + slope | sku)`` or
    ``(1 | sku)`` without a random slope).

    For SKU i the pooling factor of its slope is :math:`\\lambda_i = v_i / s^2` with
    :math:`v_i` the conditional variance of its slope given its intercept under the Laplace
    posterior and :math:`s^2 = \\Sigma_{11} - \\Sigma_{10}^2/\\Sigma_{00}` the same under the
    prior (the scale ``L11`` the sampler sees): near 0 the data pin the slope down (centred
    mixes well), near 1 the prior does (non-centred). A singular fit (slope SD 0) gives 1.
    Keys ``slope`` (NaN without a random slope) and ``intercept`` (:math:`C_{00}/\\Sigma_{00}`,
    1 when the pilot's intercept SD is 0), NaN when the pilot fails; ``pilot_seconds``."""
    nan = float("nan")
    out = {"slope": nan, "intercept": nan, "pilot_seconds": nan}
    import polars as pl

    from poolcast.glmm import fit as glmm_fit

    j_slope, _ = _slope_column(data)
    cols = {f"x{j}": data.X[:, j] for j in range(data.X.shape[1]) if j != j_slope}
    slope = {"s": np.asarray(data.slope, dtype=float)} if data.slope is not None else {}
    frame = pl.DataFrame(
        {"y": np.asarray(data.y), "sku": np.asarray(data.sku_idx, dtype=np.int64)} | cols | slope
    ).with_columns(pl.col("sku").cast(pl.String))
    fixed = " + ".join([*cols, *slope]) or "1"
    formula = f"y ~ {fixed} + ({'1 + s' if slope else '1'} | sku)"
    t0 = time.perf_counter()
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. a singular fit: lambda = 1 says it
            res = glmm_fit(formula, frame, family=family)
        cov = np.asarray(res.b_cond_cov["sku"], dtype=float)
        sig = np.asarray(res.cov_re["sku"], dtype=float)
    except Exception:  # the pilot only advises; the caller falls back
        out["pilot_seconds"] = time.perf_counter() - t0
        return out
    out["pilot_seconds"] = time.perf_counter() - t0
    lam0 = np.clip(cov[:, 0, 0] / sig[0, 0], 0.0, 1.0) if sig[0, 0] > 1e-12 else np.ones(len(cov))
    out["intercept"] = float(np.median(lam0))
    if not slope:
        return out
    prior1 = sig[1, 1] - (sig[1, 0] ** 2 / sig[0, 0] if sig[0, 0] > 0 else 0.0)
    post1 = cov[:, 1, 1] - np.where(cov[:, 0, 0] > 0, cov[:, 1, 0] ** 2 / cov[:, 0, 0], 0.0)
    lam1 = np.clip(post1 / prior1, 0.0, 1.0) if prior1 > 1e-12 else np.ones(len(cov))
    out["slope"] = float(np.median(lam1))
    return out


def choose_sku_slope_form(
    data: HierData,
    parameterization: str,
    requested: bool | str = "auto",
    *,
    family: str = "negbin",
    pooling: dict[str, float] | None = None,
) -> tuple[bool, dict[str, float]]:
    """Whether the centred forms sample the SKU slopes centred (True) or non-centred given
    the intercepts (False), and the pilot's pooling factors (:func:`pooling_factors`).

    ``requested`` True / False is kept; ``"auto"``: centred when the median pooling factor
    of the SKU slopes is below :data:`SLOPE_CENTRED_MAX_POOLING`, else non-centred (also when
    the pilot fails: a non-centred slope has no funnel, the failure that stops a fit).
    Irrelevant (True, no pilot) without a random slope or for ``"noncentred"``. ``pooling``:
    a pilot's figures already computed (:func:`pooling_factors`), else it is run here."""
    if isinstance(requested, bool):
        return requested, {}
    if requested != "auto":
        raise ValueError(f"centre_sku_slope={requested!r}")
    if data.slope is None or parameterization == "noncentred":
        return True, {}
    pooling = pooling if pooling is not None else pooling_factors(data, family=family)
    lam = pooling["slope"]
    return bool(np.isfinite(lam) and lam < SLOPE_CENTRED_MAX_POOLING), pooling


def _slope_column(data: HierData) -> tuple[int | None, float]:
    """Index j of the random-slope covariate among the fixed terms, and the constant c with
    ``slope = X[:, j] + c`` (None when the slope is not one of the fixed terms up to a shift)."""
    if data.slope is None or data.slope_term not in data.terms:
        return None, 0.0
    j = data.terms.index(data.slope_term)
    diff = np.asarray(data.slope, dtype=float) - data.X[:, j]
    if diff.size and np.allclose(diff, diff[0]):
        return j, float(diff[0])
    return None, 0.0


#: How the sampler sees the fixed effects (:func:`build_model`): ``"raw"`` the coefficients,
#: ``"qr"`` a rotation that makes their approximate posterior covariance the identity.
FIXED_BASES = ("raw", "qr")


def _working_weights(data: HierData, family: str) -> np.ndarray:
    """(n,) approximate GLM working weights of the log link, :math:`w = m/(1 + a m)`, from
    each SKU's mean count :math:`m_i` (floored at 0.01) and, for NB2, the moment estimate
    :math:`a = \\max(0, \\sum((y - m)^2 - m) / \\sum m^2)` of the dispersion (a = 0 for
    Poisson). Only a preconditioner: any positive weights give the same model."""
    y = np.asarray(data.y, dtype=float)
    n_sku = len(data.sku_levels)
    cnt = np.maximum(np.bincount(data.sku_idx, minlength=n_sku), 1)
    m = np.maximum(np.bincount(data.sku_idx, weights=y, minlength=n_sku) / cnt, 0.01)
    m_row = m[data.sku_idx]
    a = 0.0
    if family == "negbin":
        a = max(0.0, float(np.sum((y - m_row) ** 2 - m_row) / np.sum(m_row**2)))
    return m_row / (1.0 + a * m_row)


def fixed_effects_rotation(X: np.ndarray, weights: np.ndarray, prior_sd: float) -> np.ndarray:
    """Upper-triangular :math:`R` with :math:`R^\\top R = X^\\top W X + I/s^2`, the precision of
    the Gaussian approximation to the fixed effects' posterior (weights W, prior N(0, s^2)).

    ``fixed_basis="qr"`` samples :math:`\\gamma = R\\beta` (the weighted QR
    reparameterisation: :math:`\\sqrt W X = QR` up to the prior's ridge), whose approximate
    posterior covariance is the identity, so a diagonal mass matrix suffices even for strongly
    correlated covariates (month dummies, trend and Fourier terms); :math:`\\beta =
    R^{-1}\\gamma` and the prior :math:`\\gamma \\sim N(0, s^2 RR^\\top)` keep the model."""
    Xw = np.asarray(X, dtype=float) * np.sqrt(np.asarray(weights, dtype=float))[:, None]
    prec = Xw.T @ Xw + np.eye(X.shape[1]) / prior_sd**2
    return np.linalg.cholesky(prec).T


def _fixed_coefficients(
    name: str,
    X: np.ndarray,
    dim: str,
    prior_sd: float,
    basis: str,
    weights: np.ndarray | None,
):
    """The fixed effects :math:`\\beta \\sim N(0, s^2 I)` named ``name``: sampled directly
    (``"raw"``) or as :math:`\\gamma = R\\beta` (``"qr"``, :func:`fixed_effects_rotation`;
    ``name`` is then a deterministic and ``name + "_qr"`` the sampled vector)."""
    import pymc as pm
    import pytensor.tensor as pt

    if basis == "raw":
        return pm.Normal(name, 0.0, prior_sd, dims=dim)
    if basis != "qr":
        raise ValueError(f"fixed_basis={basis!r}: use one of {FIXED_BASES}")
    R = fixed_effects_rotation(X, weights, prior_sd)
    chol = prior_sd * np.linalg.cholesky(R @ R.T)
    gamma = pm.MvNormal(name + "_qr", mu=np.zeros(R.shape[0]), chol=chol, dims=dim)
    r_inv = np.linalg.solve(R, np.eye(R.shape[0]))
    return pm.Deterministic(name, pt.dot(pt.as_tensor_variable(r_inv), gamma), dims=dim)


def build_model(
    data: HierData,
    *,
    family: str = "negbin",
    priors: dict[str, float] | None = None,
    parameterization: str = "noncentred",
    centre_category_slope: bool = False,
    centre_sku_slope: bool = True,
    within_sku_covariates: bool = False,
    levels_at_covariate_mean: bool = False,
    fixed_basis: str = "raw",
):
    """The PyMC model of the module docstring (coordinates: term, sku, category, effect).

    ``parameterization="noncentred"``: :math:`a_c = \\tau\\circ u_c`, :math:`b_i = L v_i`
    with standard-normal :math:`u, v` and a separate intercept. ``"centred"`` is hierarchical
    centring (Gelfand, Sahu & Carlin 1995): the sampler sees each category's total coefficient
    :math:`m_c = (\\beta_0, \\beta_{promo}) + a_c` and each SKU's :math:`\\theta_i = m_{c(i)}
    + b_i` directly, :math:`\\theta_i \\sim N(m_{c(i)}, \\Sigma)`, :math:`m_c \\sim
    N(\\mu, \\operatorname{diag}\\tau^2)`, so the additive trade-offs intercept vs. mean
    category effect and category effect vs. mean SKU effect (the slow directions of the
    non-centred model) are not in the sampled space. The same model, the same priors; the
    outputs ``intercept``, ``beta``, ``category_effect``, ``sku_effect`` are deterministics.
    With a random slope the category *slopes* stay non-centred
    (:math:`m_{c1} = \\beta_{promo} + \\tau_1 u_{c1}`) unless ``centre_category_slope``:
    their scale is often near 0, where a centred level is a funnel (``benchmarks/README.md``).
    ``"centred_sku"``: the SKU level centred, the category level non-centred
    (:math:`m_c = \\mu + \\tau\\circ u_c`), for categories of few SKUs.
    ``centre_sku_slope=False`` (centred forms with a random slope; experimental, not used by
    the candidate): the SKU intercepts stay centred but the SKU slopes are sampled given them,
    non-centred: with :math:`\\Sigma = LL^T`, :math:`\\theta_{i0} \\sim N(m_0, L_{00})` and
    :math:`\\theta_{i1} = m_1 + L_{10}(\\theta_{i0} - m_0)/L_{00} + L_{11} z_i`,
    :math:`z_i \\sim N(0, 1)`: the same bivariate normal, without the funnel of a centred slope
    whose SD is near 0 (Rossmann's store promo slopes, ``benchmarks/README.md``).
    :func:`fit_posterior` picks it with :func:`choose_sku_slope_form` (``"auto"``).
    ``within_sku_covariates=True`` (centred forms; what :func:`fit_posterior` uses): the
    fixed covariates other than the slope's enter the likelihood centred within SKU,
    :math:`\\tilde x_{it} = x_{it} - (\\bar x_i - \\bar x)`, and the sampler sees each SKU's
    intercept level plus its covariates' contribution, :math:`\\tilde\\theta_{i0} = \\theta_{i0}
    + (\\bar x_i - \\bar x)^\\top\\beta \\sim N(m_{c(i)0} + (\\bar x_i - \\bar x)^\\top\\beta, \\cdot)`
    (:math:`\\bar x_i` the SKU's training mean, :math:`\\bar x` their mean over SKUs). Since
    :math:`\\tilde x^\\top\\beta + \\tilde\\theta_{i0} = x^\\top\\beta + \\theta_{i0}` and the
    shift has Jacobian 1, this is the same model with the same log density; it removes the
    trade-off between a covariate's slope and the SKU levels when the covariate differs
    between SKUs (a store's log customers), which the data only see through their sum.
    ``sku_level`` (:math:`\\theta`) is then a deterministic of the sampled ``sku_level_within``
    (or ``sku_level_intercept_within``).
    ``levels_at_covariate_mean=True`` (with ``within_sku_covariates``; what
    :func:`fit_posterior` uses): the covariates enter fully centred within SKU,
    :math:`x_{it} - \\bar x_i`, and every sampled level carries the covariates' mean
    contribution: the SKU levels :math:`\\theta_{i0} + \\bar x_i^\\top\\beta`, the population
    and centred category intercepts :math:`\\mu_0 + \\bar x^\\top\\beta`, :math:`m_{c0} + \\bar
    x^\\top\\beta` (sampled as ``level_intercept_at_mean``, ``category_level_at_mean``). A
    shift with Jacobian 1 again, the same model; it removes the trade-off between a common
    shift of uncentred covariates (all month dummies against the reference month) and every
    level, which ``within_sku_covariates`` alone leaves when the SKUs share the covariate's
    mean (Rossmann's month dummies, ``benchmarks/README.md``).
    ``fixed_basis="qr"`` (what :func:`fit_posterior` uses): the fixed effects, and in the
    centred forms the mean promo slope with them (column: promo), are sampled in the rotated
    basis of :func:`fixed_effects_rotation` (``beta_fixed_qr`` / ``fixed_and_slope_qr``; a
    linear map: the same model, the log density shifted by the constant log |R|).
    """
    import pymc as pm
    import pytensor.tensor as pt

    pri = {
        "intercept_sd": 2.0,
        "beta_sd": 1.0,
        "sku_sd": 1.0,
        "category_sd": 0.5,
        "lkj_eta": 2.0,
        "sqrt_alpha_sd": 1.0,
    }
    pri |= priors or {}
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization={parameterization!r}")
    k = data.k
    effects = ["intercept", "promo"][:k]
    coords: dict[str, Any] = {
        "term": list(data.terms),
        "sku": list(data.sku_levels),
        "effect": effects,
    }
    if data.has_categories:
        coords["category"] = list(data.category_levels)
    centre = _prior_scales(data)["intercept_centre"]
    cat_of_sku = np.asarray(data.sku_category, dtype=np.int64) if data.has_categories else None
    j_slope, shift = _slope_column(data) if k == 2 else (None, 0.0)
    hier_centred = parameterization in ("centred", "centred_sku")
    weights = _working_weights(data, family) if fixed_basis == "qr" else None
    with pm.Model(coords=coords) as model:
        sku_idx = pm.Data("sku_idx", data.sku_idx.astype(np.int64), dims="obs")
        # SKU covariance: LKJ(eta) on the correlation, half-normal SDs (k = 2) / SDs (k = 1)
        if k == 2:
            chol, _, _ = pm.LKJCholeskyCov(
                "sku_chol_cov",
                n=2,
                eta=pri["lkj_eta"],
                sd_dist=pm.HalfNormal.dist(pri["sku_sd"], shape=2),
                compute_corr=True,
                store_in_trace=True,
            )
        else:
            sd = pm.HalfNormal("sku_sd", pri["sku_sd"], dims="effect")
        tau = (
            pm.HalfNormal("category_sd", pri["category_sd"], dims="effect")
            if data.has_categories
            else None
        )
        if not hier_centred:
            X = pm.Data("X", data.X, dims=("obs", "term")) if data.terms else None
            intercept = pm.Normal("intercept", centre, pri["intercept_sd"])
            eta = intercept
            if data.terms:
                beta = _fixed_coefficients(
                    "beta", data.X, "term", pri["beta_sd"], fixed_basis, weights
                )
                eta = eta + pt.dot(X, beta)
            v = pm.Normal("sku_z", 0.0, 1.0, dims=("sku", "effect"))
            b = pm.Deterministic(
                "sku_effect", pt.dot(v, chol.T) if k == 2 else v * sd, dims=("sku", "effect")
            )
            coef = b
            if data.has_categories:
                u = pm.Normal("category_z", 0.0, 1.0, dims=("category", "effect"))
                a = pm.Deterministic("category_effect", u * tau, dims=("category", "effect"))
                coef = coef + a[cat_of_sku]
        else:
            other = [j for j in range(len(data.terms)) if j != j_slope]
            eta = 0.0
            offset = None  # (n_sku,) the covariates' share of each SKU's sampled level
            at_mean = None  # x_bar' beta: the covariates' share of the sampled population level
            Xo = np.asarray(data.X[:, other], dtype=float)  # (n, 0) without other terms
            if other and within_sku_covariates:
                n_sku = len(data.sku_levels)
                cnt = np.maximum(np.bincount(data.sku_idx, minlength=n_sku), 1)
                xbar = np.column_stack(
                    [
                        np.bincount(data.sku_idx, weights=Xo[:, j], minlength=n_sku) / cnt
                        for j in range(Xo.shape[1])
                    ]
                )
                grand = xbar.mean(axis=0)
                if not levels_at_covariate_mean:
                    xbar = xbar - grand
                Xo = Xo - xbar[data.sku_idx]
            if other:
                model.add_coord("fixed_term", [data.terms[j] for j in other])
            # with fixed_basis="qr" the mean promo slope joins the rotation: its column (promo)
            # is nearly collinear with plan covariates such as Rossmann's promo days
            coefs = None
            if fixed_basis == "qr" and k == 2 and j_slope is not None:
                model.add_coord("rotated_term", [data.terms[j] for j in other] + [data.slope_term])
                coefs = _fixed_coefficients(
                    "fixed_and_slope",
                    np.column_stack([Xo, np.asarray(data.slope, dtype=float)]),
                    "rotated_term",
                    pri["beta_sd"],
                    fixed_basis,
                    weights,
                )
            if other:
                beta_other = (
                    pm.Deterministic("beta_fixed", coefs[: len(other)], dims="fixed_term")
                    if coefs is not None
                    else _fixed_coefficients(
                        "beta_fixed", Xo, "fixed_term", pri["beta_sd"], fixed_basis, weights
                    )
                )
                if within_sku_covariates:
                    offset = pt.dot(pt.as_tensor_variable(xbar), beta_other)
                    if levels_at_covariate_mean:
                        at_mean = pt.dot(pt.as_tensor_variable(grand), beta_other)
                X = pm.Data("X", Xo, dims=("obs", "fixed_term"))
                eta = pt.dot(X, beta_other)
            # population mean of the SKU coefficients: (intercept, promo slope); sampled at the
            # covariates' mean (level0 + x_bar' beta) when levels_at_covariate_mean
            if at_mean is None:
                level0 = pm.Normal("level_intercept", centre, pri["intercept_sd"])
            else:
                level0 = (
                    pm.Normal("level_intercept_at_mean", centre + at_mean, pri["intercept_sd"])
                    - at_mean
                )
            means = [level0]
            if k == 2:
                if coefs is not None:
                    level1 = pm.Deterministic("level_slope", coefs[-1])
                elif j_slope is not None:
                    level1 = pm.Normal("level_slope", 0.0, pri["beta_sd"])
                else:
                    level1 = pt.as_tensor_variable(0.0)
                means.append(level1)
            mean_vec = pt.stack(means)
            # the sampled category levels: m_c, or m_c + (x_bar' beta, 0) with at_mean
            cat_shift = 0.0 if at_mean is None else at_mean
            cat_sfx = "" if at_mean is None else "_at_mean"
            if data.has_categories:
                if parameterization == "centred_sku":  # thin categories: non-centred level
                    u = pm.Normal("category_z", 0.0, 1.0, dims=("category", "effect"))
                    m = mean_vec + u * tau
                elif k == 2 and not centre_category_slope:
                    # the category intercepts centred (each is the mean of many SKUs), the
                    # category slopes non-centred: their scale tau_1 is often near 0 (no
                    # category differences in promo lift), the funnel centring walks into
                    m0 = (
                        pm.Normal(
                            "category_level" + cat_sfx,
                            level0 + cat_shift,
                            tau[0],
                            dims="category",
                        )
                        - cat_shift
                    )
                    u1 = pm.Normal("category_slope_z", 0.0, 1.0, dims="category")
                    m = pt.stack([m0, level1 + tau[1] * u1], axis=1)
                else:
                    vec_shift = (
                        0.0
                        if at_mean is None
                        else pt.stack([at_mean] + [pt.zeros_like(at_mean)] * (k - 1))
                    )
                    m = (
                        pm.Normal(
                            "category_level" + cat_sfx,
                            mean_vec + vec_shift,
                            tau,
                            dims=("category", "effect"),
                        )
                        - vec_shift
                    )
                sku_mean = m[cat_of_sku]
                pm.Deterministic("category_effect", m - mean_vec, dims=("category", "effect"))
            else:
                sku_mean = pt.zeros((len(data.sku_levels), k)) + mean_vec
            # the sampled SKU levels: theta, or theta + (offset, 0) with within-SKU covariates
            sfx = "_within" if offset is not None else ""
            level_shift = (
                pt.stack([offset] + [pt.zeros_like(offset)] * (k - 1), axis=1)
                if offset is not None
                else 0.0
            )
            if k == 2 and not centre_sku_slope:
                # intercepts centred, slopes non-centred given them (the same MvNormal)
                lik0 = pm.Normal(
                    "sku_level_intercept" + sfx,
                    sku_mean[:, 0] + (offset if offset is not None else 0.0),
                    chol[0, 0],
                    dims="sku",
                )
                theta0 = lik0 - offset if offset is not None else lik0
                z1 = pm.Normal("sku_slope_z", 0.0, 1.0, dims="sku")
                theta1 = (
                    sku_mean[:, 1]
                    + chol[1, 0] * (theta0 - sku_mean[:, 0]) / chol[0, 0]
                    + chol[1, 1] * z1
                )
                theta = pm.Deterministic(
                    "sku_level", pt.stack([theta0, theta1], axis=1), dims=("sku", "effect")
                )
                coef = pt.stack([lik0, theta1], axis=1)
            else:
                if k == 2:
                    sampled = pm.MvNormal(
                        "sku_level" + sfx,
                        mu=sku_mean + level_shift,
                        chol=chol,
                        dims=("sku", "effect"),
                    )
                else:
                    sampled = pm.Normal(
                        "sku_level" + sfx, sku_mean + level_shift, sd, dims=("sku", "effect")
                    )
                theta = (
                    pm.Deterministic("sku_level", sampled - level_shift, dims=("sku", "effect"))
                    if offset is not None
                    else sampled
                )
                coef = sampled
            pm.Deterministic("sku_effect", theta - sku_mean, dims=("sku", "effect"))
            # the intercept and slopes of the non-centred model, as deterministics
            pm.Deterministic("intercept", level0 + (level1 * shift if j_slope is not None else 0.0))
            if data.terms:
                parts = []
                for j in range(len(data.terms)):
                    parts.append(level1 if j == j_slope else beta_other[other.index(j)])
                pm.Deterministic("beta", pt.stack(parts), dims="term")
        eta = eta + coef[sku_idx, 0]
        if k == 2:
            slope = pm.Data("slope", data.slope.astype(float), dims="obs")
            eta = eta + coef[sku_idx, 1] * slope
        mu = pt.exp(eta)
        if family == "negbin":
            sqrt_alpha = pm.HalfNormal("sqrt_alpha", pri["sqrt_alpha_sd"])
            alpha = pm.Deterministic("alpha", sqrt_alpha**2)
            pm.NegativeBinomial("y", mu=mu, alpha=1.0 / alpha, observed=data.y, dims="obs")
        else:
            pm.Poisson("y", mu=mu, observed=data.y, dims="obs")
    return model


def diagnostics(idata: Any, *, method: str) -> dict[str, float]:
    """Max R-hat, min bulk / tail ESS (over every scalar of the sampled parameters),
    divergences and min E-BFMI over chains (NaN where they do not apply, e.g. ADVI)."""
    nan = float("nan")
    out = {
        "rhat_max": nan,
        "ess_bulk_min": nan,
        "ess_tail_min": nan,
        "divergences": nan,
        "bfmi_min": nan,
    }
    if method == "advi":
        return out
    import arviz as az

    post = (
        idata["posterior"].to_dataset()
        if hasattr(idata["posterior"], "to_dataset")
        else idata.posterior
    )
    names = [v for v in post.data_vars if not v.endswith("_corr") and v != "alpha"]
    ds = post[names]

    def _extreme(values: Any, fn: Any) -> float:
        arrs = [np.asarray(values[v]).ravel() for v in values.data_vars]
        flat = np.concatenate([a[np.isfinite(a)] for a in arrs]) if arrs else np.array([])
        return float(fn(flat)) if flat.size else nan

    out["rhat_max"] = _extreme(az.rhat(ds), np.max)
    out["ess_bulk_min"] = _extreme(az.ess(ds, method="bulk"), np.min)
    out["ess_tail_min"] = _extreme(az.ess(ds, method="tail"), np.min)
    stats = (
        idata["sample_stats"].to_dataset()
        if hasattr(idata["sample_stats"], "to_dataset")
        else idata.sample_stats
    )
    if "diverging" in stats:
        out["divergences"] = float(np.asarray(stats["diverging"]).sum())
    if "energy" in stats:
        energy = np.asarray(stats["energy"], dtype=float)  # (chain, draw)
        num = np.sum(np.diff(energy, axis=1) ** 2, axis=1) / energy.shape[1]
        den = np.var(energy, axis=1)
        out["bfmi_min"] = float(np.min(num / den))
    return out


def ineligibility(diag: dict[str, float], *, method: str) -> str | None:
    """The reason a fit is not eligible for champion (None = eligible), per the gate
    R-hat > 1.01, bulk ESS < 400 or any divergence. ADVI fits have no such diagnostics
    and are eligible, labelled ``approximate`` in the run."""
    if method == "advi":
        return None
    reasons = []
    if not np.isfinite(diag["rhat_max"]) or diag["rhat_max"] > DIAGNOSTIC_THRESHOLDS["rhat_max"]:
        reasons.append(f"rhat_max={diag['rhat_max']:.4f} > 1.01")
    if (
        not np.isfinite(diag["ess_bulk_min"])
        or diag["ess_bulk_min"] < DIAGNOSTIC_THRESHOLDS["ess_bulk_min"]
    ):
        reasons.append(f"ess_bulk_min={diag['ess_bulk_min']:.0f} < 400")
    if diag["divergences"] and diag["divergences"] > 0:
        reasons.append(f"divergences={int(diag['divergences'])} > 0")
    return "; ".join(reasons) if reasons else None


def _flat(post: Any, name: str) -> np.ndarray:
    arr = np.asarray(post[name], dtype=float)
    return arr.reshape(-1, *arr.shape[2:])


def fit_posterior(
    data: HierData,
    *,
    family: str = "negbin",
    method: str = "nuts",
    chains: int = 2,
    tune: int = 1000,
    draws: int = 3000,
    seed: int = 0,
    cores: int | None = None,
    advi_iterations: int = 20_000,
    priors: dict[str, float] | None = None,
    parameterization: str = "auto",
    centred: bool | None = None,
    centre_sku_slope: bool | str = "auto",
    within_sku_covariates: bool = True,
    levels_at_covariate_mean: bool = True,
    adaptation: str = "diag",
    fixed_basis: str = "qr",
    target_accept: float = 0.8,
) -> Posterior:
    """Build the model, sample it (nutpie NUTS, PyMC's own NUTS, or ADVI) and keep the draws.

    Parameters
    ----------
    method : {"nuts", "nuts_pymc", "advi"}
        ``"nuts"``: nutpie (numba backend); ``"nuts_pymc"``: ``pm.sample`` (for the speed
        benchmark); ``"advi"``: mean-field ADVI, ``draws * chains`` draws from the fitted
        approximation (approximate: no R-hat / ESS).
    parameterization : {"auto", "centred", "centred_sku", "noncentred"}
        See :func:`build_model`; ``"auto"`` resolves with :func:`choose_parameterization`,
        then a centred choice becomes ``"noncentred"`` when a Laplace pilot's median pooling
        factor of the SKU intercepts is at least :data:`INTERCEPT_CENTRED_MAX_POOLING`.
    centred : bool, optional
        Older spelling: True / False = ``"centred"`` / ``"noncentred"`` (overrides).
    centre_sku_slope : bool or "auto"
        See :func:`build_model`; ``"auto"`` (default) resolves with
        :func:`choose_sku_slope_form` (a Laplace pilot's pooling factor of the SKU slopes).
    within_sku_covariates : bool
        See :func:`build_model` (default True: the same model, covariates centred within SKU).
    levels_at_covariate_mean : bool
        See :func:`build_model` (default True: the same model, the levels sampled at the
        covariates' mean; only with ``within_sku_covariates``).
    adaptation : str
        nutpie's mass-matrix adaptation (``"diag"``, its default; ``"low_rank"``...).
    fixed_basis : {"qr", "raw"}
        See :func:`build_model` (default ``"qr"``: the same model, the fixed effects sampled
        in a basis where their approximate posterior is uncorrelated).
    target_accept : float
        NUTS's target acceptance rate (nutpie's and PyMC's default 0.8; higher: smaller steps,
        fewer divergences, more gradient evaluations per draw).
    """
    import pymc as pm

    if centred is not None:  # the older boolean spelling
        parameterization = "centred" if centred else "noncentred"
    param, pilot = resolve_parameterization(data, parameterization, family=family)
    seconds: dict[str, float] = {}
    centre_slope, pooling = choose_sku_slope_form(
        data, param, centre_sku_slope, family=family, pooling=pilot
    )
    pooling = pooling or pilot or {}
    if np.isfinite(pooling.get("pilot_seconds", float("nan"))):
        seconds["pilot"] = pooling["pilot_seconds"]
    options: dict[str, Any] = {
        "centre_sku_slope": centre_slope,
        "centre_sku_slope_requested": centre_sku_slope,
        "within_sku_covariates": within_sku_covariates and param != "noncentred",
        "levels_at_covariate_mean": levels_at_covariate_mean
        and within_sku_covariates
        and param != "noncentred",
        "pooling_slope_median": pooling.get("slope"),
        "pooling_intercept_median": pooling.get("intercept"),
        "adaptation": adaptation,
        "fixed_basis": fixed_basis,
        "target_accept": target_accept,
    }
    model = build_model(
        data,
        family=family,
        priors=priors,
        parameterization=param,
        centre_sku_slope=centre_slope,
        within_sku_covariates=within_sku_covariates,
        levels_at_covariate_mean=levels_at_covariate_mean and within_sku_covariates,
        fixed_basis=fixed_basis,
    )
    t0 = time.perf_counter()
    if method == "nuts":
        import nutpie

        compiled = nutpie.compile_pymc_model(model)
        seconds["compile"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        idata = nutpie.sample(
            compiled,
            draws=draws,
            tune=tune,
            chains=chains,
            cores=cores or min(chains, os.cpu_count() or 1),
            seed=seed,
            progress_bar=False,
            save_warmup=False,
            adaptation=adaptation,
            target_accept=target_accept,
        )
        seconds["sample"] = time.perf_counter() - t1
    elif method == "nuts_pymc":
        with model:
            idata = pm.sample(
                draws=draws,
                tune=tune,
                chains=chains,
                cores=cores or 1,
                random_seed=seed,
                progressbar=False,
                compute_convergence_checks=False,
                target_accept=target_accept,
            )
        seconds["sample"] = time.perf_counter() - t0
    elif method == "advi":
        with model:
            approx = pm.fit(n=advi_iterations, method="advi", random_seed=seed, progressbar=False)
            seconds["compile_and_optimise"] = time.perf_counter() - t0
            idata = approx.sample(draws * chains, random_seed=seed)
        seconds["sample"] = time.perf_counter() - t0 - seconds["compile_and_optimise"]
    else:  # pragma: no cover - validated by the candidate
        raise ValueError(f"method={method!r}")
    post = idata["posterior"]
    intercept = _flat(post, "intercept").reshape(-1, 1)
    beta = np.column_stack([intercept, _flat(post, "beta")]) if data.terms else intercept
    sku = _flat(post, "sku_effect")
    S = beta.shape[0]
    if data.k == 2:
        chol = _flat(post, "sku_chol_cov").reshape(S, -1)
        L = np.zeros((S, 2, 2))
        L[:, 0, 0], L[:, 1, 0], L[:, 1, 1] = chol[:, 0], chol[:, 1], chol[:, 2]
    else:
        L = _flat(post, "sku_sd").reshape(S, 1, 1)
    diag = diagnostics(idata, method=method)
    return Posterior(
        beta=beta,
        sku_effects=sku,
        category_effects=_flat(post, "category_effect") if data.has_categories else None,
        sku_chol=L,
        category_sd=_flat(post, "category_sd") if data.has_categories else None,
        alpha=_flat(post, "alpha") if family == "negbin" else None,
        method=method,
        diagnostics=diag,
        idata=idata,
        seconds=seconds,
        parameterization=param,
        options=options,
    )
