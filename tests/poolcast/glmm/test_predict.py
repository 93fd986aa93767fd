"""Tests of poolcast/glmm/predict.py against hand computations and numerical integration.

Truths used here: the fitted fixed effects and conditional modes from the public tables
(``fixef``, ``ranef``, ``sd``, ``corr``) combined by hand; the log-normal mean in closed form;
brute-force 2-D quadrature (scipy) of the logistic-normal integral; and Monte Carlo means of
the model's own generative process for brand-new groups.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy import integrate
from scipy.special import expit

from poolcast.errors import InvalidParameterError
from poolcast.glmm import fit
from poolcast.glmm.predict import predict


def _panel(n_groups: int, n_per: int, *, family: str, seed: int) -> pl.DataFrame:
    """y ~ x + promo + (1 + promo | g) with known truth; binomial rows get m = 8 trials."""
    rng = np.random.default_rng(seed)
    n = n_groups * n_per
    g = np.repeat(np.arange(n_groups), n_per)
    x = rng.normal(size=n)
    promo = (rng.random(n) < 0.3).astype(np.int64)
    cov = np.array([[0.36, 0.09], [0.09, 0.25]])
    b = rng.multivariate_normal(np.zeros(2), cov, size=n_groups)
    eta = 0.4 + 0.3 * x + 0.5 * promo + b[g, 0] + b[g, 1] * promo
    m = np.full(n, 8)
    if family == "binomial":
        eta = eta - 0.8
        y = rng.binomial(m, expit(eta))
    else:
        y = rng.poisson(np.exp(eta))
    return pl.DataFrame({"y": y, "x": x, "promo": promo, "m": m, "g": [f"g{i:03d}" for i in g]})


@pytest.fixture(scope="module")
def poisson_fit():
    data = _panel(40, 15, family="poisson", seed=11)
    return data, fit("y ~ x + promo + (1 + promo | g)", data, family="poisson")


@pytest.fixture(scope="module")
def binomial_fit():
    data = _panel(60, 12, family="binomial", seed=12)
    return data, fit("y ~ x + promo + (1 + promo | g)", data, family="binomial", trials="m")


def _fixed_part(res, data: pl.DataFrame) -> np.ndarray:
    eta = np.full(data.height, res.fixef["(Intercept)"])
    for name, value in res.fixef.items():
        if name != "(Intercept)":
            eta = eta + value * data[name].to_numpy()
    return eta


def _modes_by_row(res, data: pl.DataFrame, factor: str, terms: list[str]) -> np.ndarray:
    """(n, k) conditional modes of each row's group, looked up in the public ranef table."""
    table = res.ranef[factor]
    lookup = {
        (level, term): mode
        for level, term, mode in zip(table["level"], table["term"], table["mode"], strict=True)
    }
    return np.array([[lookup[(g, t)] for t in terms] for g in data[factor]])


def _sigma(res, factor: str) -> np.ndarray:
    """Σ = D R D rebuilt from the public SD and correlation tables."""
    sd = np.array(list(res.sd[factor].values()))
    corr = np.atleast_1d(np.asarray(res.corr[factor], dtype=float))
    r = np.eye(sd.shape[0])
    r[1, 0] = r[0, 1] = corr[0]
    return np.outer(sd, sd) * r


def test_conditional_on_fitted_data_is_fixef_plus_ranef(poisson_fit):
    data, res = poisson_fit
    b = _modes_by_row(res, data, "g", ["(Intercept)", "promo"])
    eta = _fixed_part(res, data) + b[:, 0] + b[:, 1] * data["promo"].to_numpy()
    np.testing.assert_allclose(predict(res, data), np.exp(eta), rtol=1e-10)
    np.testing.assert_allclose(res.predict(data), np.exp(eta), rtol=1e-10)


def test_population_level_is_the_glm_style_fixed_part(poisson_fit):
    data, res = poisson_fit
    mu = predict(res, data, level="population")
    np.testing.assert_allclose(mu, np.exp(_fixed_part(res, data)), rtol=1e-10)


def test_new_level_is_predicted_at_the_population_level(poisson_fit):
    data, res = poisson_fit
    new = data.head(6).with_columns(
        pl.when(pl.int_range(pl.len()) % 2 == 0)
        .then(pl.lit("never-seen"))
        .otherwise(pl.col("g"))
        .alias("g")
    )
    cond = predict(res, new, level="conditional")
    pop = predict(res, new, level="population")
    np.testing.assert_allclose(cond[::2], pop[::2], rtol=1e-12)
    np.testing.assert_allclose(cond[1::2], predict(res, data.head(6))[1::2], rtol=1e-12)
    assert not np.allclose(cond[1::2], pop[1::2])


def test_marginal_log_link_is_the_lognormal_closed_form(poisson_fit):
    data, res = poisson_fit
    sigma = _sigma(res, "g")
    z = np.column_stack([np.ones(data.height), data["promo"].to_numpy()])
    v = np.einsum("ik,kl,il->i", z, sigma, z)
    expected = np.exp(_fixed_part(res, data) + 0.5 * v)
    np.testing.assert_allclose(predict(res, data, level="marginal"), expected, rtol=1e-8)


def test_marginal_log_link_equals_mean_of_draws_for_new_groups(poisson_fit):
    _, res = poisson_fit
    new = pl.DataFrame(
        {"x": [0.0, 1.0, -0.5, 0.3], "promo": [0, 1, 0, 1], "g": ["n1", "n2", "n3", "n4"]}
    )
    draws = res.simulate(new, 40_000, rng=np.random.default_rng(5))
    se = draws.std(axis=1) / np.sqrt(draws.shape[1])
    marginal = predict(res, new, level="marginal")
    assert np.all(np.abs(draws.mean(axis=1) - marginal) < 4.0 * se)


def test_binomial_marginal_matches_brute_force_integration(binomial_fit):
    _, res = binomial_fit
    new = pl.DataFrame(
        {"x": [-1.5, 0.0, 2.0], "promo": [1, 0, 1], "m": [8, 8, 8], "g": ["new"] * 3}
    )
    sigma = _sigma(res, "g")
    assert np.all(np.linalg.eigvalsh(sigma) > 1e-3)  # a genuinely 2-D random effect
    chol = np.linalg.cholesky(sigma)
    eta0 = _fixed_part(res, new)
    expected = []
    for e0, promo in zip(eta0, new["promo"].to_numpy(), strict=True):

        def integrand(s1, s0, e0=e0, promo=promo):
            b0, b1 = chol @ np.array([s0, s1])
            dens = np.exp(-0.5 * (s0 * s0 + s1 * s1)) / (2.0 * np.pi)
            return expit(e0 + b0 + b1 * promo) * dens

        val, _ = integrate.dblquad(integrand, -9, 9, -9, 9, epsabs=1e-11, epsrel=1e-10)
        expected.append(val)
    got = predict(res, new, level="marginal")
    np.testing.assert_allclose(got, expected, atol=1e-8)
    # averaging over b pulls the proportion towards 1/2 relative to the population curve
    pop = predict(res, new, level="population")
    assert np.all(np.abs(got - 0.5) < np.abs(pop - 0.5))


def test_binomial_trials_turn_proportions_into_counts(binomial_fit):
    data, res = binomial_fit
    rows = data.head(5)
    trials = np.array([1, 2, 5, 10, 20])
    for level in ("conditional", "population", "marginal"):
        prop = predict(res, rows, level=level)
        assert np.all((prop > 0) & (prop < 1))
        counts = predict(res, rows, level=level, trials=trials)
        np.testing.assert_allclose(counts, trials * prop, rtol=1e-12)
    b = _modes_by_row(res, rows, "g", ["(Intercept)", "promo"])
    eta = _fixed_part(res, rows) + b[:, 0] + b[:, 1] * rows["promo"].to_numpy()
    np.testing.assert_allclose(predict(res, rows), expit(eta), rtol=1e-10)


def test_unknown_level_argument_raises(poisson_fit):
    data, res = poisson_fit
    with pytest.raises(InvalidParameterError, match="level='group'"):
        predict(res, data, level="group")


def test_offset_enters_every_level_on_the_link_scale():
    rng = np.random.default_rng(13)
    g = np.repeat(np.arange(30), 10)
    exposure = rng.uniform(0.5, 3.0, g.shape[0])
    y = rng.poisson(exposure * np.exp(0.2 + rng.normal(0.0, 0.5, 30)[g]))
    data = pl.DataFrame({"y": y, "log_exposure": np.log(exposure), "g": [f"g{i:02d}" for i in g]})
    res = fit("y ~ 1 + (1 | g)", data, family="poisson", offset="log_exposure")
    new = pl.DataFrame({"log_exposure": [0.0, np.log(2.0)], "g": ["g01", "g01"]})
    for level in ("conditional", "population", "marginal"):
        mu = predict(res, new, level=level)
        assert mu[1] == pytest.approx(2.0 * mu[0], rel=1e-12)
    pop = predict(res, new, level="population")
    np.testing.assert_allclose(pop, np.exp(res.fixef["(Intercept)"]) * np.array([1.0, 2.0]))
    # an explicit offset array overrides the column
    mu = predict(res, new, level="population", offset=np.log([3.0, 3.0]))
    np.testing.assert_allclose(mu, 3.0 * np.exp(res.fixef["(Intercept)"]))
