"""Entry point: chain design -> objective -> optimise -> results."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Literal

from scipy.optimize import minimize_scalar

from poolcast.errors import InvalidParameterError
from poolcast.glmm.control import GlmmControl
from poolcast.glmm.families import Family, Tweedie, get_family
from poolcast.glmm.objective import make_objective
from poolcast.glmm.optimize import optimize
from poolcast.glmm.results import GlmmResults, make_results
from poolcast.glmm.terms import build_design

__all__ = ["fit"]


def fit(
    formula: str,
    data: Any,
    *,
    family: Literal["poisson", "negbin", "gamma", "tweedie", "binomial"] | Family = "poisson",
    method: Literal["laplace", "agq"] = "laplace",
    n_agq: int = 1,
    offset: Any = None,
    trials: Any = None,
    weights: Any = None,
    control: GlmmControl | None = None,
    start: dict[str, Any] | None = None,
    dispformula: str | None = None,
) -> GlmmResults:
    r"""Fit a GLMM by maximum likelihood (Laplace, or adaptive Gauss-Hermite quadrature).

    Parameters
    ----------
    formula : str
        lme4 syntax, e.g. ``"y ~ t + promo + (1 + promo | sku)"``; binomial may use
        ``cbind(successes, failures) ~ ...``.
    data : polars.DataFrame or pandas.DataFrame
    family : {"poisson", "negbin", "gamma", "tweedie", "binomial"} or Family
        ``"tweedie"`` estimates the power :math:`p \in (1, 2)` by maximising the profile
        log-likelihood over p (Brent, ``TWEEDIE_POWER_TOL``); ``Tweedie(power=p)`` fixes it.
        The fixed-effect SEs are then conditional on :math:`\hat p`.
    method : {"laplace", "agq"}
        "agq" needs ``n_agq`` > 1 and a single scalar random-effects term.
    n_agq : int
        Quadrature nodes (1 = Laplace).
    offset, trials, weights : str or array-like, optional
        Column name or array.
    control : GlmmControl, optional
    start : dict, optional
        Start values of the outer optimisation, e.g. the estimates of a fit of the same
        formula on similar data (a warm start): keys ``"theta"`` (relative covariance
        factor, ``results.opt_summary.theta``), ``"beta"`` (fixed effects, design order) and,
        for NB2, ``"nb_theta"`` (the size); any key left out gets the default start (lme4's
        theta, a GLM's beta, a moment estimate of the size). Only the path to the optimum
        changes, not the optimum; with ``"theta"`` given the stage-1 search is skipped.
        With a ``dispformula`` the key ``"disp"`` (the coefficients gamma, design order)
        replaces ``"nb_theta"``.
    dispformula : str, optional
        One-sided formula of the log NB2 size (glmmTMB's ``dispformula`` for ``nbinom2``):
        row i has size :math:`\theta_i = \exp(x_{d,i}^\top\gamma)`, variance
        :math:`\mu_i + \mu_i^2/\theta_i`, e.g. ``"~ disp_class"`` (treatment contrasts) or
        ``"~ 0 + disp_class"`` (one log size per class, each bounded to [1e-4, 1e8] like the
        one-size model's; a class beyond 1e6 is reported as a boundary).
        Fixed effects only (as glmmTMB 1.1.5), ``family="negbin"`` and the Laplace
        approximation only (also with an ``ar1()`` term); anything else raises
        :class:`~poolcast.errors.InvalidParameterError`. None (default): one size for all
        rows, the model without it. The coefficients and their SEs are in
        ``results.disp_coef`` / ``disp_coef_se``; ``predict`` / ``simulate`` use the sizes of the
        new rows (``results.nb_size(newdata)``).

    Returns
    -------
    GlmmResults
    """
    if method not in ("laplace", "agq"):
        raise InvalidParameterError(f"method={method!r}; use 'laplace' or 'agq'.")
    if method == "laplace" and n_agq != 1:
        raise InvalidParameterError(
            f"method='laplace' needs n_agq=1 (got {n_agq}); use method='agq'."
        )
    unknown = sorted(set(start or {}) - {"theta", "beta", "nb_theta", "disp"})
    if unknown:
        raise InvalidParameterError(
            f"start has unknown key(s) {unknown}; use 'theta', 'beta' and/or 'nb_theta' "
            "('disp' with a dispformula)."
        )
    control = control or GlmmControl()
    fam = get_family(family)
    if dispformula is not None:
        if fam.name != "negbin":
            raise InvalidParameterError(
                f"dispformula={dispformula!r} is supported for family='negbin' (NB2) only, "
                f"not {fam.name!r}; drop dispformula or fit family='negbin'."
            )
        if method != "laplace" or n_agq != 1:
            raise InvalidParameterError(
                f"dispformula={dispformula!r} needs method='laplace' (n_agq=1), got "
                f"method={method!r}, n_agq={n_agq}; adaptive quadrature with a dispersion "
                "model is not implemented."
            )
    profile = isinstance(fam, Tweedie) and fam.power is None
    design = build_design(
        formula,
        data,
        family=Tweedie(power=1.5) if profile else fam,
        offset=offset,
        trials=trials,
        weights=weights,
        control=control,
        dispformula=dispformula,
    )
    if profile:
        design = _profile_tweedie_power(design, n_agq=n_agq, control=control, start=start)
    objective = make_objective(design, n_agq=n_agq, control=control)
    return make_results(design, objective, optimize(objective, start=start, control=control))


#: Bounds and tolerance of the profile search over the Tweedie power.
TWEEDIE_POWER_BOUNDS = (1.01, 1.99)
TWEEDIE_POWER_TOL = 1e-4


def _profile_tweedie_power(design, *, n_agq: int, control: GlmmControl, start) -> Any:
    r"""The design with the Tweedie power that maximises the profile log-likelihood.

    For each p the whole fit (theta, beta, phi) runs at fixed p; Brent's bounded search over
    p finds :math:`\hat p = \arg\max_p \ell(\hat\theta_p, \hat\beta_p, \hat\phi_p; p)`,
    the joint maximum likelihood estimate (as glmm.nb in lme4 profiles the NB size).
    """

    warm: dict[str, Any] = dict(start or {})

    def negative_loglik(power: float) -> float:
        trial = dataclasses.replace(design, family_object=Tweedie(power=float(power)))
        objective = make_objective(trial, n_agq=n_agq, control=control)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt = optimize(objective, start=warm or None, control=control)
        # the next power starts where this one ended (a warm start changes the path only)
        warm.update(theta=opt.theta, beta=opt.beta, nb_theta=opt.nb_theta)
        return float(opt.deviance) / 2.0

    best = minimize_scalar(
        negative_loglik,
        bounds=TWEEDIE_POWER_BOUNDS,
        method="bounded",
        options={"xatol": TWEEDIE_POWER_TOL},
    )
    return dataclasses.replace(design, family_object=Tweedie(power=float(best.x)))
