"""Tests of poolcast/glmm/simulate.py: moments against closed forms, sharing, seeds, coverage.

Truths used here: the log-normal mixture moments of a Poisson / NB2 count whose log-mean is
Gaussian (closed forms written out in each test), independence and sharing of group effects
implied by the model, and the coverage of predictive intervals on data simulated from a known
truth and held out of the fit.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest
from scipy.special import expit

from poolcast.errors import InvalidParameterError
from poolcast.glmm import fit
from poolcast.glmm.simulate import simulate

N_DRAWS = 60_000


def _panel(
    n_groups: int, n_per: int, *, family: str, seed: int, theta: float = 3.0
) -> pl.DataFrame:
    """y ~ x + (1 | g) with intercept SD 0.5; rows carry their month index ``t``."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), n_per)
    t = np.tile(np.arange(n_per), n_groups)
    x = rng.normal(size=g.shape[0])
    eta = 0.8 + 0.3 * x + rng.normal(0.0, 0.5, n_groups)[g]
    if family == "binomial":
        y = rng.binomial(6, expit(eta - 0.8))
    elif family == "negbin":
        y = rng.poisson(rng.gamma(theta, np.exp(eta) / theta))
    else:
        y = rng.poisson(np.exp(eta))
    return pl.DataFrame(
        {"y": y, "x": x, "t": t, "m": np.full(g.shape[0], 6), "g": [f"g{i:03d}" for i in g]}
    )


@pytest.fixture(scope="module")
def poisson_fit():
    return fit("y ~ x + (1 | g)", _panel(40, 12, family="poisson", seed=21), family="poisson")


@pytest.fixture(scope="module")
def negbin_fit():
    return fit("y ~ x + (1 | g)", _panel(40, 12, family="negbin", seed=22), family="negbin")


def _eta_and_var(res, new: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of each row's linear predictor under the draw distribution.

    Seen groups: b ~ N(mode, cond_sd^2) from the public ranef table; new groups:
    b ~ N(0, sd^2) from the public sd table.
    """
    table = res.ranef["g"]
    mode = dict(zip(table["level"], table["mode"], strict=True))
    cond_sd = dict(zip(table["level"], table["cond_sd"], strict=True))
    sd = res.sd["g"]["(Intercept)"]
    eta = res.fixef["(Intercept)"] + res.fixef["x"] * new["x"].to_numpy()
    eta = eta + np.array([mode.get(g, 0.0) for g in new["g"]])
    var = np.array([cond_sd.get(g, sd) ** 2 for g in new["g"]])
    return eta, var


NEW = pl.DataFrame({"x": [0.0, 1.0, -1.0], "g": ["g000", "g007", "brand-new"]})


def test_poisson_draws_have_lognormal_poisson_moments(poisson_fit):
    draws = simulate(poisson_fit, NEW, N_DRAWS, rng=np.random.default_rng(1))
    eta, s2 = _eta_and_var(poisson_fit, NEW)
    mean = np.exp(eta + s2 / 2)  # E[mu], mu log-normal
    var = mean + mean**2 * np.expm1(s2)  # Var[y] = E[mu] (Poisson: var = mean given b) + Var[mu]
    assert np.all(np.abs(draws.mean(axis=1) - mean) < 4.0 * np.sqrt(var / N_DRAWS))
    np.testing.assert_allclose(draws.var(axis=1), var, rtol=0.06)


def test_negbin_draws_have_nb2_mixture_moments(negbin_fit):
    draws = simulate(negbin_fit, NEW, N_DRAWS, rng=np.random.default_rng(2))
    eta, s2 = _eta_and_var(negbin_fit, NEW)
    theta = negbin_fit.theta
    e_mu = np.exp(eta + s2 / 2)
    e_mu2 = np.exp(2 * eta + 2 * s2)
    # Var[y] = E[Var(y|b)] + Var(E[y|b]) = E[mu + mu^2/theta] + Var[mu]
    var = e_mu + e_mu2 / theta + (e_mu2 - e_mu**2)
    assert np.all(np.abs(draws.mean(axis=1) - e_mu) < 4.0 * np.sqrt(var / N_DRAWS))
    np.testing.assert_allclose(draws.var(axis=1), var, rtol=0.1)
    # over-dispersion given b: more than the Poisson-lognormal variance
    assert np.all(draws.var(axis=1) > e_mu + (e_mu2 - e_mu**2))


@pytest.mark.parametrize("family", ["poisson", "negbin"])
def test_given_b_the_noise_is_poisson_or_nb2(poisson_fit, negbin_fit, family):
    res = poisson_fit if family == "poisson" else negbin_fit
    # a copy whose seen groups have no conditional uncertainty: b is fixed at its mode
    fixed_b = dataclasses.replace(
        res, b_cond_cov={"g": np.zeros_like(np.asarray(res.b_cond_cov["g"]))}
    )
    seen = NEW.head(2)
    draws = simulate(fixed_b, seen, N_DRAWS, rng=np.random.default_rng(12))
    mu, _ = _eta_and_var(res, seen)
    mu = np.exp(mu)
    var = mu if family == "poisson" else mu + mu**2 / res.theta
    assert np.all(np.abs(draws.mean(axis=1) - mu) < 4.0 * np.sqrt(var / N_DRAWS))
    np.testing.assert_allclose(draws.var(axis=1), var, rtol=0.05)


def test_rows_of_one_group_share_its_effect_within_a_draw(poisson_fit):
    new = pl.DataFrame({"x": [0.0, 0.0, 0.0], "g": ["new-a", "new-a", "new-b"]})
    draws = simulate(poisson_fit, new, N_DRAWS, rng=np.random.default_rng(3))
    eta, s2 = _eta_and_var(poisson_fit, new)
    var_mu = np.exp(2 * eta[0] + s2[0]) * np.expm1(s2[0])  # Cov(y1, y2) = Var(mu) if b is shared
    cov = np.cov(draws)
    se = np.sqrt(cov[0, 0] * cov[1, 1] / N_DRAWS)
    assert abs(cov[0, 1] - var_mu) < 4.0 * se
    assert abs(cov[0, 2]) < 4.0 * np.sqrt(cov[0, 0] * cov[2, 2] / N_DRAWS)


def test_same_seed_same_draws_other_seed_other_draws(poisson_fit):
    a = simulate(poisson_fit, NEW, 50, rng=np.random.default_rng(7))
    b = simulate(poisson_fit, NEW, 50, rng=np.random.default_rng(7))
    c = simulate(poisson_fit, NEW, 50, rng=np.random.default_rng(8))
    assert a.shape == (3, 50)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.all(a >= 0) and np.all(a == np.round(a))


def test_fixef_uncertainty_adds_the_xvx_variance(poisson_fit):
    new = pl.DataFrame({"x": [4.0], "g": ["brand-new"]})
    eta, s2 = _eta_and_var(poisson_fit, new)
    xvec = np.array([1.0, 4.0])
    s2_beta = xvec @ np.asarray(poisson_fit.vcov)[:2, :2] @ xvec
    draws = simulate(
        poisson_fit, new, 200_000, rng=np.random.default_rng(4), include_fixef_uncertainty=True
    )
    total = s2 + s2_beta
    mean = np.exp(eta + total / 2)
    var = mean + mean**2 * np.expm1(total)
    assert abs(draws.mean() - mean[0]) < 4.0 * np.sqrt(var[0] / 200_000)
    np.testing.assert_allclose(draws.var(), var[0], rtol=0.06)


def test_binomial_draws_count_successes_out_of_trials():
    data = _panel(30, 10, family="binomial", seed=23)
    res = fit("y ~ x + (1 | g)", data, family="binomial", trials="m")
    new = data.head(4)
    draws = simulate(res, new, 20_000, rng=np.random.default_rng(6))
    assert np.all((draws >= 0) & (draws <= 6))
    expected = 6 * res.predict(new, level="conditional")
    # the conditional mean of a count is near m * expit(mode) (exact up to the cond. variance)
    np.testing.assert_allclose(draws.mean(axis=1), expected, rtol=0.05)
    ones = simulate(res, new, 2_000, rng=np.random.default_rng(6), trials=np.ones(4))
    assert set(np.unique(ones)) <= {0.0, 1.0}


def _coverage_and_nominal(draws: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Coverage of inclusive [q10, q90] draw intervals, and the rate the draws themselves claim.

    For counts the inclusive interval holds more than 80% of the predictive mass; the nominal
    rate is that mass (the share of each row's own draws inside its interval), averaged.
    """
    lo, hi = np.quantile(draws, [0.1, 0.9], axis=1)
    covered = (y >= lo) & (y <= hi)
    nominal = ((draws >= lo[:, None]) & (draws <= hi[:, None])).mean(axis=1)
    return float(covered.mean()), float(nominal.mean())


def test_predictive_intervals_cover_held_out_truth():
    data = _panel(80, 30, family="poisson", seed=24)
    res = fit("y ~ x + (1 | g)", data.filter(pl.col("t") < 24), family="poisson")
    test = data.filter(pl.col("t") >= 24)
    draws = simulate(res, test, 4_000, rng=np.random.default_rng(9))
    coverage, nominal = _coverage_and_nominal(draws, test["y"].to_numpy())
    # 480 independent held-out points: binomial SE of the coverage is about 1.2-1.8%
    assert abs(coverage - nominal) < 0.06
    assert 0.8 <= nominal < 0.97


def test_predictive_intervals_cover_new_groups():
    data = _panel(120, 12, family="poisson", seed=25)
    res = fit("y ~ x + (1 | g)", data.filter(pl.col("g") < "g080"), family="poisson")
    held = data.filter(pl.col("g") >= "g080")
    draws = simulate(res, held, 4_000, rng=np.random.default_rng(10))
    coverage, nominal = _coverage_and_nominal(draws, held["y"].to_numpy())
    # 40 new groups x 12 rows; rows of a group share one effect, so the SE is about 3%
    assert abs(coverage - nominal) < 0.1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0, "rng": np.random.default_rng(0)}, "n=0"),
        ({"n": 2.5, "rng": np.random.default_rng(0)}, "n=2.5"),
        ({"n": 10, "rng": 42}, "rng=42"),
    ],
)
def test_bad_arguments_raise(poisson_fit, kwargs, match):
    with pytest.raises(InvalidParameterError, match=match):
        simulate(poisson_fit, NEW, **kwargs)


@pytest.mark.parametrize("family", ["poisson", "negbin"])
def test_an_overflowing_linear_predictor_is_clipped_not_raised(family: str) -> None:
    # issue 7: numpy's Poisson sampler raises "lam value too large" above ~9.2e18 and
    # exp(eta) is inf for eta > 709; a draw must be clipped at MAX_POISSON_RATE instead
    from poolcast.glmm.simulate import MAX_POISSON_RATE

    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(20), 10)
    x = rng.normal(size=g.size)
    mu = np.exp(1.0 + 0.5 * x + rng.normal(0, 0.3, 20)[g])
    y = rng.poisson(mu) if family == "poisson" else rng.negative_binomial(5, 5 / (5 + mu))
    frame = pl.DataFrame({"y": y, "x": x, "g": g.astype(str)})
    res = fit("y ~ x + (1 | g)", frame, family=family)
    huge = pl.DataFrame({"x": [1e3, 1e5, 0.0], "g": ["0", "1", "2"]})  # eta ~ 500, 5e4, 1
    with np.errstate(over="ignore"):
        draws = res.simulate(huge, 50, rng=np.random.default_rng(1))
    assert np.all(np.isfinite(draws))
    # the Poisson rate is at most the documented bound: draws within 1e-6 of it from above
    assert draws[:2].max() <= MAX_POISSON_RATE * (1 + 1e-6)
    if family == "poisson":  # rate exactly the bound: Poisson(1e15) is 1e15 +- 3e7 x a few
        np.testing.assert_allclose(draws[:2], MAX_POISSON_RATE, rtol=1e-6)
    assert np.all(draws[2] < 1e4)  # an ordinary row is untouched


def test_nb2_draws_of_an_infinite_mean_are_clipped() -> None:
    from poolcast.models._negbin import sample_nb2

    with np.errstate(over="ignore"):
        mu = np.exp(np.array([1e4, 1.0]))  # inf, e
    draws = sample_nb2(mu, 0.5, 100, np.random.default_rng(0))
    assert draws[0].max() <= 1e15 * (1 + 1e-6) and draws[0].min() > 0
    assert draws[1].max() < 1e3
