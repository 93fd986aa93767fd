"""Tests of poolcast/glmm/optimize.py: the optimum has zero gradient, whatever the start path."""

from __future__ import annotations

import numpy as np
import pytest

from poolcast.glmm.control import GlmmControl
from poolcast.glmm.objective import make_objective
from poolcast.glmm.optimize import optimize
from poolcast.glmm.terms import build_design
from tests.poolcast.glmm._panels import simulate_panel


def _fd_gradient(ob, opt, h=1e-5):
    nt, p = len(opt.theta), len(opt.beta)

    def f(x):
        nb = float(np.exp(x[-1])) if opt.nb_theta is not None else None
        return ob.deviance(x[:nt], x[nt : nt + p], nb)

    g = np.empty_like(opt.x)
    for i in range(len(opt.x)):
        e = np.zeros_like(opt.x)
        e[i] = h
        g[i] = (f(opt.x + e) - f(opt.x - e)) / (2 * h)
    return g


@pytest.mark.parametrize(
    ("family", "formula"),
    [
        ("poisson", "y ~ x + (1 + x | g)"),
        ("negbin", "y ~ x + (1 | g)"),
        ("binomial", "y ~ x + (1 + x | g)"),
        ("poisson", "y ~ x + (1 | g) + (1 | h)"),  # sparse path, finite-difference gradient
    ],
)
def test_gradient_is_zero_at_the_optimum(family, formula):
    data = simulate_panel(family=family, rho=0.4, seed=4)
    data = data.with_columns(h=(data["row"] % 9).cast(str))
    d = build_design(formula, data, family=family, trials="m" if family == "binomial" else None)
    ob = make_objective(d)
    opt = optimize(ob)
    assert opt.return_code == 0
    g = _fd_gradient(ob, opt)
    free = np.ones_like(g, dtype=bool)
    free[: len(opt.theta)] = ~(np.isfinite(d.theta_lower) & (opt.theta < 1e-6))
    assert np.max(np.abs(g[free])) < 2e-3
    # and the Newton step from there (lme4's scaled gradient) is tiny
    assert np.max(np.abs(np.linalg.solve(opt.hessian[np.ix_(free, free)], g[free]))) < 1e-3


def test_stage1_does_not_change_the_optimum():
    data = simulate_panel(rho=0.5, seed=8)
    d = build_design("y ~ x + (1 + x | g)", data)
    a = optimize(make_objective(d, control=GlmmControl(stage1=True)))
    b = optimize(make_objective(d, control=GlmmControl(stage1=False)))
    assert a.stage1_deviance is not None and b.stage1_deviance is None
    assert a.deviance == pytest.approx(b.deviance, abs=1e-6)
    np.testing.assert_allclose(a.beta, b.beta, atol=1e-4)


def test_opt_summary_records_the_run():
    d = build_design("y ~ x + (1 | g)", simulate_panel(family="negbin"), family="negbin")
    opt = optimize(make_objective(d))
    assert opt.par_names == ("g.(Intercept)", "(Intercept)", "x", "log(nb_theta)")
    assert opt.hessian.shape == (4, 4)
    assert opt.n_evals > 0 and opt.n_iter > 0 and opt.log
    assert opt.nb_theta == pytest.approx(np.exp(opt.x[-1]))
    assert opt.tolerances["grad_tol"] == GlmmControl().grad_tol


def test_restart_leaves_a_boundary_saddle():
    """Started on the boundary theta_3 = 0 (a saddle for these data), the fit still finds the
    interior optimum that a start from lme4's default reaches."""
    data = simulate_panel(seed=8)
    d = build_design("y ~ x + (1 + x | g)", data)
    good = optimize(make_objective(d))
    assert good.theta[2] > 0.05
    bad = optimize(make_objective(d), start={"theta": np.array([0.5, 0.0, 0.0])})
    assert bad.deviance == pytest.approx(good.deviance, abs=1e-5)
    np.testing.assert_allclose(bad.theta, good.theta, atol=1e-3)


def test_control_outer_restarts_accepts_zero_and_refuses_negative() -> None:
    """0 switches the stall restarts off (a count, unlike the positive tolerances)."""
    from poolcast.errors import InvalidParameterError

    assert GlmmControl(outer_restarts=0).outer_restarts == 0
    with pytest.raises(InvalidParameterError, match="outer_restarts=-1"):
        GlmmControl(outer_restarts=-1)
    with pytest.raises(InvalidParameterError, match="outer_gtol"):
        GlmmControl(outer_gtol=0.0)
