"""Tests of poolcast/glmm/laplace.py: the exact gradient against central differences, and the
Laplace deviance against a brute-force integral."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy import integrate, stats

from poolcast.glmm.objective import make_objective
from poolcast.glmm.terms import build_design


def _panel(family: str, seed: int = 3) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    G, T = 25, 8
    g = np.repeat(np.arange(G), T)
    x = rng.normal(size=G * T)
    b = rng.normal(0, [0.5, 0.3], size=(G, 2))
    eta = 0.3 + 0.4 * x + b[g, 0] + b[g, 1] * x
    if family == "binomial":
        y = rng.binomial(6, 1 / (1 + np.exp(-eta)))
    elif family == "negbin":
        mu = np.exp(eta)
        y = rng.negative_binomial(2.0, 2.0 / (2.0 + mu))
    else:
        y = rng.poisson(np.exp(eta))
    return pl.DataFrame({"y": y, "x": x, "g": [f"g{i}" for i in g], "m": np.full(G * T, 6)})


@pytest.mark.parametrize(
    ("family", "formula"),
    [
        ("poisson", "y ~ x + (1 + x | g)"),
        ("poisson", "y ~ x + (1 | g)"),
        ("negbin", "y ~ x + (1 + x | g)"),
        ("binomial", "y ~ x + (1 + x | g)"),
        ("poisson", "y ~ x + (1 + x | g) + (1 | h)"),
        ("negbin", "y ~ x + (1 | h/g)"),
    ],
)
def test_exact_gradient_matches_finite_differences(family, formula):
    data = _panel(family)
    data = data.with_columns(h=(pl.int_range(pl.len()) % 5).cast(pl.String))
    d = build_design(formula, data, family=family, trials="m" if family == "binomial" else None)
    ob = make_objective(d)
    ob.warm_start = False  # every evaluation from u = 0: a smooth function of (theta, beta)
    theta = np.array([0.6, -0.2, 0.35, 0.4])[: d.n_theta]
    assert ob.analytic_gradient
    beta = np.array([0.2, 0.5])
    nb = 1.8 if family == "negbin" else None
    _, gt, gb, gp = ob.deviance_and_gradient(theta, beta, nb)
    h = 1e-5
    for i in range(len(theta)):
        e = np.zeros_like(theta)
        e[i] = h
        fd = (ob.deviance(theta + e, beta, nb) - ob.deviance(theta - e, beta, nb)) / (2 * h)
        assert gt[i] == pytest.approx(fd, rel=1e-5, abs=1e-4)
    for i in range(len(beta)):
        e = np.zeros_like(beta)
        e[i] = h
        fd = (ob.deviance(theta, beta + e, nb) - ob.deviance(theta, beta - e, nb)) / (2 * h)
        assert gb[i] == pytest.approx(fd, rel=1e-5, abs=1e-4)
    if nb is not None:
        fd = (
            ob.deviance(theta, beta, nb * np.exp(h)) - ob.deviance(theta, beta, nb * np.exp(-h))
        ) / (2 * h)
        assert gp == pytest.approx(fd, rel=1e-5, abs=1e-4)


def test_laplace_is_close_to_the_exact_integral_for_one_group():
    # one group with many Poisson observations: the Laplace approximation is nearly exact
    rng = np.random.default_rng(0)
    y = rng.poisson(3.0, 40)
    data = pl.DataFrame({"y": np.r_[y, y], "g": ["a"] * 40 + ["b"] * 40})
    d = build_design("y ~ 1 + (1 | g)", data)
    ob = make_objective(d)
    sigma, beta0 = 0.7, 1.0
    dev = ob.deviance(np.array([sigma]), np.array([beta0]))

    def integrand(b):
        return np.exp(stats.poisson.logpmf(y, np.exp(beta0 + b)).sum() + 300) * stats.norm.pdf(
            b, 0, sigma
        )

    val, _ = integrate.quad(integrand, -3, 3, points=[np.log(y.mean()) - beta0], limit=200)
    exact = -2 * 2 * (np.log(val) - 300)
    assert dev == pytest.approx(exact, abs=0.01)
