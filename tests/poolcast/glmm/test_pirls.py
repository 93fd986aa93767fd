"""Tests of poolcast/glmm/pirls.py: the conditional mode and the joint (nAGQ=0) solve."""

from __future__ import annotations

import numpy as np
import statsmodels.api as sm

from poolcast.glmm.objective import make_objective
from poolcast.glmm.pirls import pirls
from poolcast.glmm.terms import build_design
from tests.poolcast.glmm._panels import simulate_panel


def test_mode_zeroes_the_penalised_gradient():
    d = build_design("y ~ x + (1 + x | g)", simulate_panel())
    ob = make_objective(d)
    theta, beta = np.array([0.6, 0.1, 0.3]), np.array([0.4, 0.3])
    pr = pirls(ob, theta, beta)
    assert pr.converged
    # gradient of -2 sum l + |u|^2 in u, by central differences on the penalised deviance
    sysm = ob.system

    def pdev(u):
        eta = d.X @ beta + sysm.re_eta(u)
        return -2 * ob.family.loglik(eta, d.y, None).sum() + u @ u

    for i in [0, 7, 33]:
        e = np.zeros(sysm.q)
        e[i] = 1e-5
        assert abs((pdev(pr.u + e) - pdev(pr.u - e)) / 2e-5) < 1e-4


def test_warm_start_gives_the_same_mode():
    d = build_design("y ~ x + (1 + x | g)", simulate_panel())
    ob = make_objective(d)
    theta, beta = np.array([0.6, 0.1, 0.3]), np.array([0.4, 0.3])
    cold = pirls(ob, theta, beta)
    warm = pirls(ob, theta, beta, u_start=cold.u + 0.3)
    np.testing.assert_allclose(warm.u, cold.u, atol=1e-7)
    assert warm.pdev == np.float64(cold.pdev) or abs(warm.pdev - cold.pdev) < 1e-8


def test_joint_solve_at_theta_zero_is_the_glm():
    data = simulate_panel()
    d = build_design("y ~ x + (1 | g)", data)
    ob = make_objective(d)
    pr = pirls(ob, np.array([0.0]), np.zeros(2), vary_beta=True)
    glm = sm.GLM(data["y"].to_numpy(), d.X, family=sm.families.Poisson()).fit()
    np.testing.assert_allclose(pr.beta, glm.params, atol=1e-7)
    np.testing.assert_allclose(pr.u, 0.0)
