"""Results stage: turn the optimum into an immutable :class:`GlmmResults`.

Fixed-effect standard errors follow lme4 for nAGQ >= 1 (``vcov.merMod`` with ``use.hessian``):
the finite-difference Hessian of the deviance over all outer parameters
:math:`x = (\\theta, \\beta[, \\log\\theta_{NB}])`, inverted, times 2, beta block
(glmmTMB's ``sdreport`` does the same on its scale; the beta block does not depend on how the
variance parameters are parametrised). Conditional modes are :math:`b = \\Lambda\\hat u`; their
conditional covariance is :math:`\\Lambda H^{-1}\\Lambda^\\top` per level (lme4 ``condVar``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from scipy.stats import norm

from poolcast.errors import ConvergenceWarning, SingularFitWarning
from poolcast.glmm.families import Family
from poolcast.glmm.objective import Objective
from poolcast.glmm.optimize import OptSummary
from poolcast.glmm.terms import GlmmDesign

__all__ = ["GlmmResults", "GlmmSummary", "make_results"]


@dataclass(frozen=True)
class GlmmSummary:
    """Tables of a fitted GLMM; ``str()`` formats them like lme4's ``summary``.

    Attributes
    ----------
    header : dict
        Family, link, formula, method, nobs, group sizes.
    fit_stats : dict
        AIC, BIC, logLik, deviance, df.resid.
    random : pl.DataFrame
        group, name, variance, std_dev, corr (string).
    coefficients : pl.DataFrame
        term, estimate, std_error, z_value, p_value.
    messages : tuple[str, ...]
        Check and convergence messages.
    """

    header: dict
    fit_stats: dict
    random: pl.DataFrame
    coefficients: pl.DataFrame
    messages: tuple[str, ...]

    def __str__(self) -> str:
        h, s = self.header, self.fit_stats
        approx = (
            "Laplace Approximation"
            if h["n_agq"] == 1
            else f"Adaptive Gauss-Hermite Quadrature, nAGQ = {h['n_agq']}"
        )
        lines = [
            f"Generalized linear mixed model fit by maximum likelihood ({approx})",
            f" Family: {h['family']}  ( {h['link']} )",
            f"Formula: {h['formula']}",
            "",
            "      AIC       BIC    logLik  deviance  df.resid",
            f"{s['aic']:9.1f} {s['bic']:9.1f} {s['loglik']:9.1f} {s['deviance']:9.1f} {s['df_resid']:9d}",
            "",
            "Random effects:",
            f" {'Groups':<12} {'Name':<14} {'Std.Dev.':>9}  Corr",
        ]
        prev = None
        for r in self.random.iter_rows(named=True):
            grp = r["group"] if r["group"] != prev else ""
            prev = r["group"]
            lines.append(f" {grp:<12} {r['name']:<14} {r['std_dev']:9.4f}  {r['corr']}")
        groups = ", ".join(f"{k}, {v}" for k, v in h["groups"].items())
        lines.append(f"Number of obs: {h['nobs']}, groups:  {groups}")
        if h.get("nb_theta") is not None:
            label = h.get("dispersion_label") or "Dispersion"
            lines.append(f"{label}: {h['nb_theta']:.4g}")
        if h.get("disp_coef"):
            lines += [
                "",
                f"Dispersion model: {h['dispformula']}  (log NB2 size)",
                f"{'':<22} {'Estimate':>10} {'Std. Error':>10}",
            ]
            for term, est in h["disp_coef"].items():
                lines.append(f"{term:<22} {est:10.5f} {h['disp_coef_se'][term]:10.5f}")
        lines += [
            "",
            "Fixed effects:",
            f"{'':<22} {'Estimate':>10} {'Std. Error':>10} {'z value':>8} {'Pr(>|z|)':>10}",
        ]
        for r in self.coefficients.iter_rows(named=True):
            lines.append(
                f"{r['term']:<22} {r['estimate']:10.5f} {r['std_error']:10.5f} "
                f"{r['z_value']:8.3f} {r['p_value']:10.3g}"
            )
        if self.messages:
            lines += ["", *self.messages]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return "<pre>" + str(self).replace("&", "&amp;").replace("<", "&lt;") + "</pre>"


@dataclass(frozen=True)
class GlmmResults:
    """A fitted GLMM (never changes after it is built).

    Attributes
    ----------
    design : GlmmDesign
        The design (frozen formulaic specs for new data).
    family : Family
        Response family (``.name``, ``.linkinv``).
    opt_summary : OptSummary
        Optimiser record.
    method : str
        "laplace" or "agq"; ``n_agq`` the nodes.
    beta : np.ndarray
        (p,) fixed effects.
    theta_re : np.ndarray
        Relative covariance parameters (lme4's theta).
    fixef, fixef_se : dict[str, float]
        Fixed effects and standard errors, design order.
    vcov : np.ndarray
        (p, p) covariance of beta.
    sd : dict[str, dict[str, float]]
        Random-effect SDs per factor and term.
    corr : dict[str, list[float]]
        Lower-triangle correlations per factor.
    cov_re : dict[str, np.ndarray]
        Σ per factor, (k, k).
    loglik, aic, bic, deviance : float
        Approximate log-likelihood (all constants kept), AIC, BIC, -2 loglik.
    theta, nb_theta : float or None
        NB2 size (both names), None for other families.
    ranef : dict[str, pl.DataFrame]
        level, term, mode, cond_sd per factor.
    b_modes : dict[str, np.ndarray]
        (G, k) conditional modes b = Λu.
    b_cond_cov : dict[str, np.ndarray]
        (G, k, k) conditional covariance of b given y; for an ar1 term (G, T) conditional
        variances (its full conditional precision is tridiagonal, see ``ar1``).
    trials : np.ndarray or None
        Binomial trials of the fitted rows.
    converged : bool
        Optimiser stopped on its tolerance or a failed line search (L-BFGS-B codes 0 / 2, not
        the iteration limit), scaled gradient small, Hessian PD (unless singular).
    diagnostics : dict
        grad_norm, scaled_grad, hessian_pd, singular, optimizer return code, messages.
    messages : tuple[str, ...]
        Check and convergence messages.
    ar1 : poolcast.glmm.ar1.Ar1Fit or None
        The latent AR(1) term (sigma, rho, conditional modes and variances of the latent
        states) of a model with ``ar1(time + 0 | group)``; None otherwise.
    disp_coef, disp_coef_se : dict[str, float] or None
        With a ``dispformula``: the dispersion coefficients gamma (log NB2 size, glmmTMB's
        ``fixef(fit)$disp``; names as in the formula) and their standard errors (from the
        same Hessian as ``fixef_se``); ``nb_theta`` is None then (the size varies by row,
        see :meth:`nb_size`). None without a dispersion formula.
    """

    design: GlmmDesign
    family: Family
    opt_summary: OptSummary
    method: str
    n_agq: int
    beta: np.ndarray
    theta_re: np.ndarray
    fixef: dict[str, float]
    fixef_se: dict[str, float]
    vcov: np.ndarray
    sd: dict[str, dict[str, float]]
    corr: dict[str, list[float]]
    cov_re: dict[str, np.ndarray]
    loglik: float
    aic: float
    bic: float
    deviance: float
    nb_theta: float | None
    ranef: dict[str, pl.DataFrame]
    b_modes: dict[str, np.ndarray]
    b_cond_cov: dict[str, np.ndarray]
    trials: np.ndarray | None
    converged: bool
    diagnostics: dict = field(repr=False)
    messages: tuple[str, ...] = ()
    ar1: Any = None
    disp_coef: dict[str, float] | None = None
    disp_coef_se: dict[str, float] | None = None

    def nb_size(self, newdata: Any = None) -> Any:
        """The NB2 size of rows: the scalar ``nb_theta`` without a dispersion formula; with
        one, ``exp(X_disp @ gamma)`` (n,) of ``newdata`` (its ``dispformula`` columns), or
        of the fitted rows when ``newdata`` is None."""
        if self.disp_coef is None:
            return self.nb_theta
        gamma = np.array(list(self.disp_coef.values()))
        if newdata is None:
            X_disp = self.design.X_disp
        elif hasattr(newdata, "X_disp") and hasattr(newdata, "blocks"):  # a NewDesign
            X_disp = newdata.X_disp
        else:
            from poolcast.glmm.terms import design_for_newdata

            X_disp = design_for_newdata(self.design, newdata).X_disp
        return np.exp(X_disp @ gamma)

    def __repr__(self) -> str:
        groups = ", ".join(f"{b.factor}: {b.n_levels}" for b in self.design.blocks)
        return (
            f"GlmmResults(formula={self.design.formula!r}, family={self.family.name!r}, "
            f"method={self.method!r}, nobs={self.nobs}, groups=({groups}), "
            f"loglik={self.loglik:.4f}, converged={self.converged})"
        )

    @property
    def theta(self) -> float | None:
        """NB2 size parameter (variance mu + mu^2/theta), None for Poisson/binomial."""
        return self.nb_theta

    @property
    def nobs(self) -> int:
        """Number of observations."""
        return self.design.n_obs

    def summary(self) -> GlmmSummary:
        """lme4-style summary tables (print it for the text)."""
        rows = []
        for b in self.design.blocks:
            if self.ar1 is not None and b.factor == self.ar1.factor:
                rows.append(
                    {
                        "group": b.factor,
                        "name": f"ar1({self.ar1.time_var})",
                        "variance": self.ar1.sigma**2,
                        "std_dev": self.ar1.sigma,
                        "corr": f"{self.ar1.rho:5.3f} (ar1)",
                    }
                )
                continue
            S = self.cov_re[b.factor]
            sds = np.sqrt(np.diag(S))
            for i, t in enumerate(b.term_names):
                cor = [
                    S[i, j] / (sds[i] * sds[j]) if sds[i] * sds[j] > 0 else np.nan for j in range(i)
                ]
                rows.append(
                    {
                        "group": b.factor,
                        "name": t,
                        "variance": float(S[i, i]),
                        "std_dev": float(sds[i]),
                        "corr": " ".join(f"{c:5.2f}" for c in cor),
                    }
                )
        est = np.array(list(self.fixef.values()))
        se = np.array(list(self.fixef_se.values()))
        z = est / se
        coefs = pl.DataFrame(
            {
                "term": list(self.fixef),
                "estimate": est,
                "std_error": se,
                "z_value": z,
                "p_value": 2 * norm.sf(np.abs(z)),
            }
        )
        npar = len(self.opt_summary.x)
        return GlmmSummary(
            header={
                "family": self.family.name,
                "link": self.family.link,
                "formula": self.design.formula,
                "n_agq": self.n_agq,
                "nobs": self.nobs,
                "groups": {b.factor: b.n_levels for b in self.design.blocks},
                "nb_theta": self.nb_theta,
                "dispersion_label": self.family.dispersion_label,
                "dispformula": self.design.dispformula,
                "disp_coef": self.disp_coef,
                "disp_coef_se": self.disp_coef_se,
            },
            fit_stats={
                "aic": self.aic,
                "bic": self.bic,
                "loglik": self.loglik,
                "deviance": self.deviance,
                "df_resid": self.nobs - npar,
            },
            random=pl.DataFrame(rows),
            coefficients=coefs,
            messages=self.messages,
        )

    def predict(
        self, newdata: Any, level: str = "conditional", offset: Any = None, trials: Any = None
    ) -> np.ndarray:
        """Mean response for new data (delegates to :mod:`poolcast.glmm.predict`)."""
        from poolcast.glmm.predict import predict

        return predict(self, newdata, level=level, offset=offset, trials=trials)

    def simulate(
        self,
        newdata: Any,
        n: int,
        rng: np.random.Generator | None = None,
        include_fixef_uncertainty: bool = False,
        offset: Any = None,
        trials: Any = None,
    ) -> np.ndarray:
        """Predictive draws, shape (len(newdata), n) (delegates to :mod:`poolcast.glmm.simulate`,
        or :func:`poolcast.glmm.ar1.simulate_ar1` for a model with an ar1 term)."""
        from poolcast.glmm.simulate import simulate

        if self.ar1 is not None:
            from poolcast.glmm.ar1 import simulate_ar1

            return simulate_ar1(
                self,
                newdata,
                n,
                rng=rng,
                include_fixef_uncertainty=include_fixef_uncertainty,
                offset=offset,
                trials=trials,
            )

        return simulate(
            self,
            newdata,
            n,
            rng=rng,
            include_fixef_uncertainty=include_fixef_uncertainty,
            offset=offset,
            trials=trials,
        )

    def shrinkage(self, factor: str) -> pl.DataFrame:
        """Raw vs partially pooled group estimates (delegates to :mod:`poolcast.glmm.shrinkage`)."""
        from poolcast.glmm.shrinkage import shrinkage

        return shrinkage(self, factor)


def _vcov(hess: np.ndarray, nt: int, p: int) -> tuple[np.ndarray, bool]:
    try:
        np.linalg.cholesky(hess)
        pd_ = True
    except np.linalg.LinAlgError:
        pd_ = False
    if pd_:
        V = 2.0 * np.linalg.inv(hess)[nt : nt + p, nt : nt + p]
    else:
        V = 2.0 * np.linalg.pinv(hess[nt : nt + p, nt : nt + p])
    return 0.5 * (V + V.T), pd_


def make_results(design: GlmmDesign, objective: Objective, opt: OptSummary) -> GlmmResults:
    """Build the results of a fit and run the post-fit checks.

    Emits :class:`~poolcast.errors.SingularFitWarning` for a boundary fit and
    :class:`~poolcast.errors.ConvergenceWarning` when the optimiser did not converge (with its
    numbers); never raises for these.
    """
    control = objective.control
    nt, p = design.n_theta, design.X.shape[1]
    # an NB2 size heading to infinity is a boundary (the Poisson limit): leave log(nb_theta) out
    # of the Hessian checks and of the covariance, as a zero variance is for lme4
    nb_boundary = opt.nb_theta is not None and opt.nb_theta > 1e6
    keep = np.ones(len(opt.x), dtype=bool)
    if nb_boundary:
        keep[-1] = False
    # the same for each class size of a "~ 0 + class" dispersion model
    disp_boundary = np.zeros(0, dtype=bool)
    if opt.disp_beta is not None and design.disp_indicator:
        disp_boundary = np.asarray(opt.disp_beta) > np.log(1e6)
        keep[len(keep) - len(disp_boundary) :] = ~disp_boundary
    hessian = opt.hessian[np.ix_(keep, keep)]
    vcov, hess_pd = _vcov(hessian, nt, p)
    se = np.sqrt(np.maximum(np.diag(vcov), 0.0))
    pr = objective.mode(opt.theta, opt.beta, opt.dispersion)
    disp_coef = disp_coef_se = None
    if opt.disp_beta is not None:
        k_d = len(opt.disp_beta)
        k_kept = k_d - int(disp_boundary.sum())
        var_d = np.full(k_d, np.nan)  # NaN: a class size at the boundary (no SE)
        try:
            # the last outer parameters are gamma; same Hessian as the fixed effects
            inv = np.linalg.inv(hessian) if hess_pd else np.linalg.pinv(hessian)
            kept = ~disp_boundary if disp_boundary.size else np.ones(k_d, dtype=bool)
            if k_kept:
                var_d[kept] = 2.0 * np.diag(inv)[-k_kept:]
        except np.linalg.LinAlgError:
            pass
        disp_coef = dict(zip(design.disp_names, map(float, opt.disp_beta), strict=True))
        disp_coef_se = dict(
            zip(design.disp_names, map(float, np.sqrt(np.maximum(var_d, 0.0))), strict=True)
        )
    ar1_fit = None
    if design.ar1_block is not None:
        from poolcast.glmm.ar1 import ar1_results_tables, make_ar1_fit

        ar1_fit = make_ar1_fit(design, objective, pr, opt.theta)
        cond = []
    else:
        cond = pr.factor.cond_cov()
    if ar1_fit is not None:
        u_blocks, cond_blocks = [], []
    elif objective.system.single:
        cond_blocks = cond
        u_blocks = [pr.u.reshape(design.blocks[0].n_levels, design.blocks[0].k)]
    else:
        cond_blocks = cond
        u_blocks = []
        for start, G, k in objective.system.layout:
            u_blocks.append(pr.u[start : start + G * k].reshape(G, k))

    sd, corr, cov_re, ranef, b_modes, b_cond = {}, {}, {}, {}, {}, {}
    plain = [] if ar1_fit is not None else design.blocks
    for b, U, C in zip(plain, u_blocks, cond_blocks, strict=True):
        lam = b.lambda_block(opt.theta)
        S = lam @ lam.T
        sds = np.sqrt(np.diag(S))
        cov_re[b.factor] = S
        sd[b.factor] = dict(zip(b.term_names, map(float, sds), strict=True))
        corr[b.factor] = [
            float(S[i, j] / (sds[i] * sds[j])) if sds[i] * sds[j] > 0 else float("nan")
            for i in range(b.k)
            for j in range(i)
        ]
        B = U @ lam.T
        CB = np.einsum("ab,gbc,dc->gad", lam, C, lam)
        b_modes[b.factor] = B
        b_cond[b.factor] = CB
        csd = np.sqrt(np.maximum(np.diagonal(CB, axis1=1, axis2=2), 0.0))
        ranef[b.factor] = pl.DataFrame(
            {
                "level": np.repeat(np.array(b.levels, dtype=object), b.k).astype(str),
                "term": np.tile(np.array(b.term_names, dtype=object), b.n_levels).astype(str),
                "mode": B.ravel(),
                "cond_sd": csd.ravel(),
            }
        )
    if ar1_fit is not None:
        tables = ar1_results_tables(ar1_fit)
        f = ar1_fit.factor
        sd[f], corr[f], cov_re[f] = tables["sd"], tables["corr"], tables["cov_re"]
        ranef[f], b_modes[f], b_cond[f] = tables["ranef"], tables["b_modes"], tables["b_cond_cov"]

    diag_theta = np.isfinite(design.theta_lower)
    singular = bool(np.any(opt.theta[diag_theta] < control.singular_tol))
    g = opt.gradient[keep]
    grad_norm = float(np.max(np.abs(g))) if g.size else 0.0
    try:
        scaled = float(np.max(np.abs(np.linalg.solve(hessian, g))))
    except np.linalg.LinAlgError:
        scaled = grad_norm
    if not hess_pd:
        scaled = grad_norm
    messages = list(design.messages)
    # L-BFGS-B's code 2 is a failed line search: at an optimum (machine-precision deviance
    # differences) it is the usual way to stop, so the gradient check decides there; code 1
    # (iteration limit) stays a failure
    converged = opt.return_code in (0, 2) and scaled < control.grad_tol and (hess_pd or singular)
    if not converged:
        msg = (
            f"Model failed to converge: optimizer code {opt.return_code} ({opt.message}), "
            f"max|scaled gradient| = {scaled:.3g} (tol {control.grad_tol}), "
            f"Hessian positive definite = {hess_pd}. Rescale covariates, simplify the random part "
            "or raise GlmmControl.outer_max_iter."
        )
        if opt.nb_theta is not None and opt.nb_theta > 1e4:
            msg += (
                f" The NB2 size nb_theta = {opt.nb_theta:.3g} is heading to infinity: no "
                "overdispersion beyond the random effects, so fit family='poisson' instead."
            )
        messages.append(msg)
        if control.check_conv == "warn":
            warnings.warn(msg, ConvergenceWarning, stacklevel=3)
    if singular:
        msg = (
            "boundary (singular) fit: a random-effect variance is estimated as 0 "
            f"(theta = {np.round(opt.theta, 6).tolist()}); see the 'sd' of each factor and "
            "consider removing that term."
        )
        messages.append(msg)
        if control.check_singular == "warn":
            warnings.warn(msg, SingularFitWarning, stacklevel=3)

    if nb_boundary:
        msg = (
            f"boundary fit: the NB2 size nb_theta = {opt.nb_theta:.3g} is effectively infinite "
            "(no overdispersion beyond the random effects); family='poisson' gives the same fit."
        )
        messages.append(msg)
        if control.check_singular == "warn":
            warnings.warn(msg, SingularFitWarning, stacklevel=3)
    if disp_boundary.any():
        names = [n for n, b in zip(design.disp_names, disp_boundary, strict=True) if b]
        msg = (
            f"boundary fit: the NB2 size of dispersion class(es) {names} is effectively "
            "infinite (no overdispersion beyond the random effects in those rows); their "
            "coefficients have no standard error."
        )
        messages.append(msg)
        if control.check_singular == "warn":
            warnings.warn(msg, SingularFitWarning, stacklevel=3)
    dev = float(pr.pdev + pr.factor.logdet) if objective.n_agq == 1 else opt.deviance
    npar = len(opt.x)
    n = design.n_obs
    return GlmmResults(
        design=design,
        family=objective.family,
        opt_summary=opt,
        method=opt.method,
        n_agq=objective.n_agq,
        beta=opt.beta.copy(),
        theta_re=opt.theta.copy(),
        fixef=dict(zip(design.fixef_names, map(float, opt.beta), strict=True)),
        fixef_se=dict(zip(design.fixef_names, map(float, se), strict=True)),
        vcov=vcov,
        sd=sd,
        corr=corr,
        cov_re=cov_re,
        loglik=-0.5 * dev,
        aic=dev + 2 * npar,
        bic=dev + math.log(n) * npar,
        deviance=dev,
        nb_theta=opt.nb_theta,
        ranef=ranef,
        b_modes=b_modes,
        b_cond_cov=b_cond,
        trials=design.trials,
        converged=bool(converged),
        diagnostics={
            "grad_norm": grad_norm,
            "scaled_grad": scaled,
            "hessian_pd": hess_pd,
            "singular": singular,
            "return_code": opt.return_code,
            "pirls_converged": pr.converged,
            "n_evals": opt.n_evals,
        },
        messages=tuple(messages),
        ar1=ar1_fit,
        disp_coef=disp_coef,
        disp_coef_se=disp_coef_se,
    )
