"""Tests of poolcast/glmm/quadrature.py: the Gauss-Hermite rule and the AGQ deviance."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy import integrate, stats

from poolcast.errors import InvalidParameterError
from poolcast.glmm import fit
from poolcast.glmm.laplace import laplace_deviance
from poolcast.glmm.objective import make_objective
from poolcast.glmm.quadrature import agq_deviance, gauss_hermite
from poolcast.glmm.terms import build_design
from tests.poolcast.glmm._panels import simulate_panel


@pytest.mark.parametrize("k", [1, 2, 5, 25])
def test_gauss_hermite_integrates_normal_moments(k):
    z, w = gauss_hermite(k)
    assert w.sum() == pytest.approx(1.0)
    for p in range(0, 2 * k):
        exact = 0.0 if p % 2 else float(np.prod(np.arange(p - 1, 0, -2, dtype=float))) if p else 1.0
        assert w @ z**p == pytest.approx(exact, rel=1e-9, abs=1e-12 * (w @ np.abs(z) ** p + 1))


def test_gauss_hermite_bounds():
    with pytest.raises(InvalidParameterError, match="n_agq=0"):
        gauss_hermite(0)
    with pytest.raises(InvalidParameterError, match="101"):
        gauss_hermite(101)


def test_one_node_is_laplace():
    d = build_design("y ~ x + (1 | g)", simulate_panel())
    ob = make_objective(d)
    theta, beta = np.array([0.7]), np.array([0.4, 0.35])
    pr = ob.mode(theta, beta)
    assert agq_deviance(ob, pr, beta, 1) == pytest.approx(laplace_deviance(pr), abs=1e-9)


def test_agq_matches_numerical_integration():
    # a few groups with few Bernoulli rows: Laplace is off, AGQ-25 equals scipy quadrature
    rng = np.random.default_rng(5)
    G, T = 6, 3
    y = rng.binomial(1, 0.4, G * T)
    data = pl.DataFrame({"y": y, "g": np.repeat(np.arange(G), T).astype(str)})
    d = build_design("y ~ 1 + (1 | g)", data, family="binomial")
    ob = make_objective(d, n_agq=25)
    sigma, beta0 = 1.3, -0.2
    dev = ob.deviance(np.array([sigma]), np.array([beta0]))
    exact = 0.0
    for j in range(G):
        yj = y[j * T : (j + 1) * T]

        def f(b, yj=yj):
            p = 1 / (1 + np.exp(-(beta0 + b)))
            return np.exp(stats.bernoulli.logpmf(yj, p).sum()) * stats.norm.pdf(b, 0, sigma)

        exact += -2 * np.log(integrate.quad(f, -12, 12, limit=200)[0])
    assert dev == pytest.approx(exact, abs=1e-6)
    laplace = make_objective(d).deviance(np.array([sigma]), np.array([beta0]))
    assert abs(laplace - exact) > 1e-3  # Laplace really is an approximation here


def test_agq_refuses_vector_and_several_terms():
    data = simulate_panel(n_groups=10, n_per=5)
    with pytest.raises(InvalidParameterError, match="single, scalar random-effects term"):
        fit("y ~ x + (1 + x | g)", data, method="agq", n_agq=10)
    with pytest.raises(InvalidParameterError, match="single, scalar"):
        fit("y ~ x + (1 | g) + (0 + x | g)", data, method="agq", n_agq=5)
