r"""Outer optimisation over (theta, beta[, log nb_theta]) in two stages, as lme4's ``glmer``.

* start: a GLM (theta = 0; joint PIRLS then is IRLS for beta), and for NB2 a moment estimate
  of the size, :math:`1/\hat\theta = \sum[(y-\mu)^2 - \mu]/\sum\mu^2`;
* stage 1 (lme4 nAGQ=0): beta inside PIRLS, L-BFGS-B over theta only;
* stage 2: L-BFGS-B over :math:`x = (\theta, \beta[, \log\theta_{NB}])` on the Laplace or AGQ
  deviance, with the exact gradient for one grouping factor under Laplace
  (:func:`poolcast.glmm.laplace.laplace_gradient`) and central differences otherwise
  (lme4 instead runs derivative-free Nelder-Mead, its bottleneck; notes §4);
* the Hessian over x by finite differences (of the exact gradient when there is one, else of
  the deviance; lme4's ``deriv12`` with step 1e-4), then one guarded Newton polish step.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize

from poolcast.glmm.control import GlmmControl
from poolcast.glmm.objective import Objective

__all__ = ["OptSummary", "optimize"]


@dataclass(frozen=True)
class OptSummary:
    """Record of the outer optimisation.

    Attributes
    ----------
    method : str
        "laplace" or "agq".
    n_agq : int
        Quadrature nodes.
    par_names : tuple[str, ...]
        Names of the entries of x (theta names, beta names, ["log(nb_theta)"]).
    x0 : np.ndarray
        Start of stage 2.
    x : np.ndarray
        Final parameters.
    theta, beta : np.ndarray
        Final theta and beta.
    nb_theta : float or None
        Final NB2 size.
    deviance : float
        Final approximate -2 log-likelihood.
    stage1_deviance : float or None
        nAGQ=0 deviance at the end of stage 1.
    gradient : np.ndarray
        Gradient of the deviance at x (projected on the bounds).
    hessian : np.ndarray
        Finite-difference Hessian of the deviance over x.
    n_evals : int
        Deviance evaluations in total.
    n_iter : int
        Iterations of the stage-2 optimiser.
    return_code : int
        scipy L-BFGS-B status (0 = converged).
    message : str
        Optimiser message.
    tolerances : dict
        The tolerances used.
    elapsed_seconds : float
        Wall time.
    log : list
        (theta, deviance) of each stage-2 evaluation.
    disp_beta : np.ndarray or None
        Final dispersion coefficients gamma (log NB2 size = ``X_disp @ gamma``) of a model
        with a dispersion formula; ``nb_theta`` is None then.
    """

    method: str
    n_agq: int
    par_names: tuple[str, ...]
    x0: np.ndarray
    x: np.ndarray
    theta: np.ndarray
    beta: np.ndarray
    nb_theta: float | None
    deviance: float
    stage1_deviance: float | None
    gradient: np.ndarray
    hessian: np.ndarray
    n_evals: int
    n_iter: int
    return_code: int
    message: str
    tolerances: dict
    elapsed_seconds: float
    log: list = field(default_factory=list, repr=False)
    disp_beta: np.ndarray | None = None

    @property
    def dispersion(self) -> Any:
        """The dispersion argument of the objective: gamma with a dispersion formula, else
        the NB2 size (None for families without one)."""
        return self.disp_beta if self.disp_beta is not None else self.nb_theta


class _Stage2:
    """Packs x = (theta, beta[, log nb]) for the stage-2 optimiser; keeps the evaluation log."""

    def __init__(self, objective: Objective) -> None:
        self.ob = objective
        self.nt = objective.design.n_theta
        self.p = objective.design.X.shape[1]
        self.nb = objective.family.has_dispersion
        self.vector = self.nb and objective.disp_X is not None
        self.log: list[tuple[np.ndarray, float]] = []

    def split(self, x: np.ndarray):
        th, be = x[: self.nt], x[self.nt : self.nt + self.p]
        if self.vector:
            return th, be, x[self.nt + self.p :].copy()
        nb = float(np.exp(x[-1])) if self.nb else None
        return th, be, nb

    def fun(self, x: np.ndarray) -> float:
        th, be, nb = self.split(x)
        try:
            f = self.ob.deviance(th, be, nb)
        except (np.linalg.LinAlgError, FloatingPointError, ValueError):
            f = np.inf
        self.log.append((th.copy(), f))
        return f

    def fun_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        if not self.ob.analytic_gradient:
            f = self.fun(x)
            return f, self.fd_grad(x, f)
        th, be, nb = self.split(x)
        try:
            f, gt, gb, gp = self.ob.deviance_and_gradient(th, be, nb)
        except (np.linalg.LinAlgError, FloatingPointError, ValueError):
            f = np.inf
        self.log.append((th.copy(), f))
        if not np.isfinite(f):
            return 1e300, np.zeros_like(x)
        g = np.concatenate([gt, gb, np.atleast_1d(gp) if self.nb else []])
        return f, g

    def fd_grad(self, x: np.ndarray, f0: float, step: float = 1e-5) -> np.ndarray:
        g = np.empty_like(x)
        for i in range(len(x)):
            h = step * max(1.0, abs(x[i]))
            xp, xm = x.copy(), x.copy()
            xp[i] += h
            xm[i] -= h
            g[i] = (self.fun(xp) - self.fun(xm)) / (2 * h)
        return g

    def grad(self, x: np.ndarray) -> np.ndarray:
        return self.fun_grad(x)[1]

    def hessian(self, x: np.ndarray, step: float) -> np.ndarray:
        m = len(x)
        Hs = np.empty((m, m))
        if self.ob.analytic_gradient:
            for i in range(m):
                xp, xm = x.copy(), x.copy()
                xp[i] += step
                xm[i] -= step
                Hs[:, i] = (self.grad(xp) - self.grad(xm)) / (2 * step)
        else:
            f0 = self.fun(x)
            fp = np.empty(m)
            fm = np.empty(m)
            for i in range(m):
                xp, xm = x.copy(), x.copy()
                xp[i] += step
                xm[i] -= step
                fp[i], fm[i] = self.fun(xp), self.fun(xm)
                Hs[i, i] = (fp[i] - 2 * f0 + fm[i]) / step**2
            for i in range(m):
                for j in range(i):
                    e_i, e_j = np.eye(m)[i] * step, np.eye(m)[j] * step
                    v = (
                        self.fun(x + e_i + e_j)
                        - self.fun(x + e_i - e_j)
                        - self.fun(x - e_i + e_j)
                        + self.fun(x - e_i - e_j)
                    ) / (4 * step**2)
                    Hs[i, j] = Hs[j, i] = v
        return 0.5 * (Hs + Hs.T)


def _glm_start(objective: Objective) -> tuple[np.ndarray, float | None]:
    d, fam = objective.design, objective.family
    eta0 = fam.start_eta(d.y, d.trials if d.trials is not None else np.ones_like(d.y))
    beta0 = np.linalg.lstsq(d.X, eta0 - d.offset, rcond=None)[0]
    theta0 = np.zeros(d.n_theta)
    nb = 1.0 if fam.has_dispersion else None
    objective.beta_warm = beta0
    pr = objective.mode(theta0, None, _as_dispersion(objective, nb))
    if fam.has_dispersion:
        nb = fam.start_dispersion(d.y, pr.mu, d.weights)
        pr = objective.mode(theta0, None, _as_dispersion(objective, nb))
    objective.u_warm = np.zeros_like(objective.u_warm)
    return pr.beta, _as_dispersion(objective, nb)


def _as_dispersion(objective: Objective, size: float | None) -> Any:
    """A scalar start size as the objective's dispersion argument: the size itself, or with a
    dispersion formula the gamma that gives every row that size (least squares on X_disp)."""
    if size is None or objective.disp_X is None:
        return size
    target = np.full(objective.disp_X.shape[0], np.log(size))
    return np.linalg.lstsq(objective.disp_X, target, rcond=None)[0]


def _lbfgsb(st: _Stage2, x0: np.ndarray, bounds: list, control: GlmmControl) -> Any:
    # with a finite-difference gradient, stop earlier (the Newton polish finishes the job)
    ftol = control.outer_ftol if st.ob.analytic_gradient else max(control.outer_ftol, 1e-10)
    return minimize(
        st.fun_grad,
        x0,
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={
            "maxiter": control.outer_max_iter,
            "gtol": control.outer_gtol,
            "ftol": ftol,
            "maxcor": 20,
        },
    )


def _projected_gradient(x: np.ndarray, g: np.ndarray, bounds: list) -> np.ndarray:
    """The gradient with the components that push against an active lower bound set to 0."""
    pg = np.asarray(g, dtype=float).copy()
    for i, (lo, _) in enumerate(bounds):
        if lo is not None and x[i] <= lo + 1e-8 and pg[i] > 0:
            pg[i] = 0.0
    return pg


def _free(x: np.ndarray, bounds: list) -> np.ndarray:
    """Mask of the parameters not on their lower bound."""
    return ~np.array([lo is not None and xi <= 1e-8 for (lo, _), xi in zip(bounds, x, strict=True)])


def _scaled_gradient(x: np.ndarray, g: np.ndarray, hess: np.ndarray, bounds: list) -> float:
    """max |H^-1 g| over the free parameters (the convergence check's scaled gradient); the
    largest projected-gradient component when H is singular or not positive definite."""
    free = _free(x, bounds)
    gf = _projected_gradient(x, g, bounds)[free]
    if not gf.size:
        return 0.0
    hf = hess[np.ix_(free, free)]
    try:
        np.linalg.cholesky(hf)
        return float(np.max(np.abs(np.linalg.solve(hf, gf))))
    except np.linalg.LinAlgError:
        return float(np.max(np.abs(gf)))


def _newton_polish(
    st: _Stage2, x: np.ndarray, f: float, bounds: list, control: GlmmControl
) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """The Hessian at x by finite differences, then one guarded Newton step on the free
    parameters (kept when it does not raise the deviance); returns (x, f, Hessian, gradient)."""
    x = np.asarray(x, dtype=float).copy()
    hess = st.hessian(x, control.hessian_step)
    g = st.grad(x)
    free = _free(x, bounds)
    try:
        step = np.zeros_like(x)
        step[free] = -np.linalg.solve(hess[np.ix_(free, free)], g[free])
        x_new = x + step
        for i, (lo, _) in enumerate(bounds):
            if lo is not None:
                x_new[i] = max(x_new[i], lo)
        f_new = st.fun(x_new)
        if np.isfinite(f_new) and f_new <= f + 1e-10:
            x, f = x_new, f_new
            g = st.grad(x)
    except np.linalg.LinAlgError:
        pass
    return x, f, hess, g


def _single_blas_thread() -> contextlib.AbstractContextManager:
    """One BLAS thread: the work is O(n k^2) vector code plus p x p algebra, where BLAS
    threads only add synchronisation (2x slower wall time measured on a busy 2-core box)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: present as a dependency of the scientific stack
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def optimize(
    objective: Objective, *, start: dict[str, Any] | None = None, control: GlmmControl | None = None
) -> OptSummary:
    """Fit theta, beta (and the NB2 size) by minimising the approximate deviance.

    Parameters
    ----------
    objective : Objective
        From :func:`poolcast.glmm.objective.make_objective`.
    start : dict, optional
        Keys "theta", "beta", "nb_theta" (or, with a dispersion formula, "disp": gamma)
        override the start values.
    control : GlmmControl, optional
        Tolerances (default: the objective's).

    Returns
    -------
    OptSummary
    """
    # overflow in a rejected line-search trial is expected and handled (deviance = inf)
    with _single_blas_thread(), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return _optimize(objective, start=start, control=control)


def _optimize(
    objective: Objective, *, start: dict[str, Any] | None = None, control: GlmmControl | None = None
) -> OptSummary:
    t0 = time.perf_counter()
    control = control or objective.control
    d = objective.design
    start = start or {}
    beta, nb = _glm_start(objective)
    beta_glm = beta.copy()
    beta = np.asarray(start.get("beta", beta), dtype=float)
    if objective.disp_X is None:
        nb = start.get("nb_theta", nb)
    elif start.get("disp") is not None:
        nb = np.asarray(start["disp"], dtype=float)
    theta = np.asarray(start.get("theta", d.theta_start()), dtype=float)
    bounds_theta = d.theta_bounds()

    stage1_dev = None
    if control.stage1 and "theta" not in start:
        objective.beta_warm = beta

        def f1(th: np.ndarray) -> float:
            return objective.deviance(th, None, nb)

        def fg1(th: np.ndarray) -> tuple[float, np.ndarray]:
            f = f1(th)
            g = np.empty_like(th)
            for i in range(len(th)):
                e = np.zeros_like(th)
                e[i] = 1e-5
                g[i] = (f1(th + e) - f1(th - e)) / 2e-5
            return f, g

        r1 = minimize(
            fg1, theta, jac=True, method="L-BFGS-B", bounds=bounds_theta,
            options={"maxiter": 50, "gtol": 1e-3, "ftol": 1e-9},
        )  # fmt: skip
        theta = r1.x
        objective.deviance(theta, None, nb)
        beta = objective.last.beta.copy()
        stage1_dev = float(r1.fun)

    st = _Stage2(objective)
    if objective.n_agq > 1:
        # start AGQ from the Laplace optimum (exact gradient there, few AGQ iterations after)
        n_agq, objective.n_agq = objective.n_agq, 1
        try:
            xl = np.concatenate([theta, beta, [np.log(nb)] if st.nb else []])
            bl = bounds_theta + [(None, None)] * (len(xl) - d.n_theta)
            if st.nb:
                bl[-1] = (np.log(1e-4), np.log(1e8))
            rl = _lbfgsb(st, xl, bl, control)
            theta, beta = rl.x[: d.n_theta], rl.x[d.n_theta : d.n_theta + len(beta)]
            nb = float(np.exp(rl.x[-1])) if st.nb else nb
        finally:
            objective.n_agq = n_agq
    nb_part = objective.dispersion_x(nb) if st.nb else []
    x0 = np.concatenate([theta, beta, nb_part])
    bounds = bounds_theta + [(None, None)] * (len(x0) - d.n_theta)
    # NB2 size in [1e-4, 1e8]: beyond 1e8 the model is Poisson to machine precision
    # (a dispformula's coefficients too when each is a class's log size, else unbounded)
    if st.nb and not st.vector:
        bounds[-1] = (np.log(1e-4), np.log(1e8))
    elif st.vector and d.disp_indicator:  # one log size per class: the same bounds each
        for i in range(len(x0) - d.X_disp.shape[1], len(x0)):
            bounds[i] = (np.log(1e-4), np.log(1e8))
    res = _lbfgsb(st, x0, bounds, control)
    diag = np.isfinite(d.theta_lower)
    if stage1_dev is not None and np.any(res.x[: d.n_theta][diag] < control.singular_tol):
        # stage 1 can end on a boundary saddle (nAGQ=0 is biased towards small variances):
        # also start stage 2 from lme4's default theta and the GLM beta; keep the better fit
        x0b = np.concatenate([d.theta_start(), beta_glm, nb_part])
        res_b = _lbfgsb(st, x0b, bounds, control)
        if res_b.fun < res.fun:
            res, x0 = res_b, x0b
    at_zero = diag & (res.x[: d.n_theta] < control.singular_tol)
    if np.any(at_zero):
        # a zero variance can be a boundary saddle of the Cholesky parametrisation (seen with
        # random slopes): restart those entries away from 0 and keep the better optimum
        xr = res.x.copy()
        xr[: d.n_theta][at_zero] = max(0.1, 0.5 * float(np.max(res.x[: d.n_theta][diag])))
        res_r = _lbfgsb(st, xr, bounds, control)
        if res_r.fun < res.fun - 1e-8:
            res = res_r
    x, f, hess, g = _newton_polish(st, res.x, float(res.fun), bounds, control)
    for _ in range(control.outer_restarts):
        # L-BFGS-B can stop on its relative-reduction test far from a stationary point (seen
        # on Rossmann's stores with a random promo slope: max|gradient| 1.3e4, the SDs at
        # twice their optimum); a fresh start from the same point (empty curvature memory)
        # then goes on. Kept only when it lowers the deviance.
        if _scaled_gradient(x, g, hess, bounds) <= control.grad_tol:
            break
        res_r = _lbfgsb(st, x, bounds, control)
        if not res_r.fun < f - 1e-8:
            break
        res = res_r
        x, f, hess, g = _newton_polish(st, res_r.x, float(res_r.fun), bounds, control)
    # re-run at the final point so the objective's last state is the optimum
    th, be, nbv = st.split(x)
    f = objective.deviance(th, be, nbv)
    grad_proj = _projected_gradient(x, g, bounds)
    if st.vector:
        disp_names = tuple(f"disp.{n}" for n in d.disp_names)
    else:
        disp_names = ("log(nb_theta)",) if st.nb else ()
    names = d.theta_names + d.fixef_names + disp_names
    return OptSummary(
        method="agq" if objective.n_agq > 1 else "laplace",
        n_agq=objective.n_agq,
        par_names=names,
        x0=x0,
        x=x,
        theta=th,
        beta=be,
        nb_theta=None if st.vector else nbv,
        deviance=float(f),
        stage1_deviance=stage1_dev,
        gradient=grad_proj,
        hessian=hess,
        n_evals=objective.n_evals,
        n_iter=int(res.nit),
        return_code=int(res.status),
        message=str(res.message),
        tolerances={
            "pirls_tol": control.pirls_tol,
            "outer_gtol": control.outer_gtol,
            "outer_ftol": control.outer_ftol,
            "grad_tol": control.grad_tol,
            "hessian_step": control.hessian_step,
        },
        elapsed_seconds=time.perf_counter() - t0,
        log=st.log,
        disp_beta=nbv if st.vector else None,
    )
