"""Tests of poolcast/glmm/objective.py: the deviance against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm

from poolcast.glmm._resystem import SparseSystem
from poolcast.glmm.objective import make_objective
from poolcast.glmm.terms import build_design
from tests.poolcast.glmm._panels import simulate_panel


def test_theta_zero_deviance_is_the_glm_deviance():
    data = simulate_panel(family="negbin")
    d = build_design("y ~ x + (1 + x | g)", data, family="negbin")
    beta, nb = np.array([0.45, 0.38]), 2.5
    dev = make_objective(d).deviance(np.zeros(3), beta, nb)
    glm = sm.GLM(d.y, d.X, family=sm.families.NegativeBinomial(alpha=1 / nb))
    assert dev == pytest.approx(-2 * glm.loglike(beta, scale=1.0), rel=1e-10)


def test_sparse_path_equals_block_path():
    d = build_design("y ~ x + (1 + x | g)", simulate_panel())
    block = make_objective(d)
    sparse = make_objective(d)
    sparse.system = SparseSystem(d, dense_max=0)  # force the sparse LU
    theta, beta = np.array([0.5, -0.1, 0.25]), np.array([0.4, 0.3])
    assert sparse.deviance(theta, beta) == pytest.approx(block.deviance(theta, beta), rel=1e-10)
    assert sparse.deviance(theta) == pytest.approx(block.deviance(theta), rel=1e-9)


def test_second_factor_at_zero_variance_drops_out():
    data = simulate_panel().with_columns(h=(np.arange(400) % 7).astype(str))
    one = make_objective(build_design("y ~ x + (1 | g)", data))
    two = make_objective(build_design("y ~ x + (1 | g) + (1 | h)", data))
    beta = np.array([0.4, 0.3])
    assert two.deviance(np.array([0.6, 0.0]), beta) == pytest.approx(
        one.deviance(np.array([0.6]), beta), rel=1e-10
    )


def test_deviance_beta_none_profiles_beta():
    d = build_design("y ~ x + (1 | g)", simulate_panel())
    ob = make_objective(d)
    theta = np.array([0.6])
    dev0 = ob.deviance(theta)  # nAGQ=0: beta inside PIRLS
    beta_hat = ob.last.beta
    # the joint mode minimises the penalised deviance over beta as well
    pd_hat = ob.mode(theta, beta_hat).pdev
    assert pd_hat <= ob.mode(theta, beta_hat + np.array([0.01, 0.0])).pdev
    assert pd_hat <= ob.mode(theta, beta_hat - np.array([0.0, 0.01])).pdev
    assert np.isfinite(dev0)
