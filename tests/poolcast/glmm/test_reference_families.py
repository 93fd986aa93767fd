"""The families added after the first reference set, reproduced against glmmTMB.

``tests/reference/glmm/reference_families.json`` is written by
``tests/reference/glmm/make_family_reference.R`` (glmmTMB 1.1.5, Debian's r-cran-glmmtmb) on a
subset of the Rossmann monthly file, read from ../shared (its terms forbid copying it here).
Tolerances as for the first reference set (issue 8): fixed effects 1e-3, SEs 2%, variance
parameters 2%, correlations 0.02, log-likelihood 0.02, the Gamma shape 2%.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from poolcast.glmm import fit
from poolcast.glmm.families import get_family

REFERENCE = Path(__file__).resolve().parents[2] / "reference" / "glmm" / "reference_families.json"
GAMMA_KEYS = ["rossmann_gamma_ri", "rossmann_gamma_rs"]
TWEEDIE_KEYS = ["simulated_tweedie_ri"]
HURDLE_KEYS = ["carparts_hurdle_zero", "online_retail_hurdle_count"]
KEYS = GAMMA_KEYS + TWEEDIE_KEYS + HURDLE_KEYS
EXAMPLE = (
    Path(__file__).resolve().parents[3] / "data" / "example" / "online_retail_sku_monthly.csv.gz"
)


def _carparts_subset(shared_data_dir: Path) -> pl.DataFrame:
    """The R script's car-parts subset: sales known, the first 300 parts in file order."""
    cp = pl.read_csv(
        shared_data_dir / "carparts" / "carparts_monthly_long.csv.gz",
        schema_overrides={"part": pl.String},
    ).filter(pl.col("sales").is_not_null())
    parts = cp.get_column("part").unique(maintain_order=True).head(300)
    cp = cp.filter(pl.col("part").is_in(parts.implode()))
    year = pl.col("month").str.slice(0, 4).cast(pl.Int32)
    month = pl.col("month").str.slice(5, 2).cast(pl.Int32)
    angle = 2 * np.pi * month / 12
    return cp.with_columns(
        t=(year - 1998) + (month - 1) / 12,
        fourier_s1=angle.sin(),
        fourier_c1=angle.cos(),
        sold=(pl.col("sales") > 0).cast(pl.Int32),
    )


def _online_retail_positive() -> pl.DataFrame:
    """The R script's Online Retail subset: first 200 StockCodes, Quantity > 0."""
    ol = pl.read_csv(EXAMPLE, schema_overrides={"StockCode": pl.String})
    codes = ol.get_column("StockCode").unique(maintain_order=True).head(200)
    ol = ol.filter(pl.col("StockCode").is_in(codes.implode()) & (pl.col("Quantity") > 0))
    year = pl.col("Month").str.slice(0, 4).cast(pl.Int32)
    month = pl.col("Month").str.slice(5, 2).cast(pl.Int32)
    angle = 2 * np.pi * month / 12
    return ol.with_columns(
        t=(year - 2009) + (month - 12) / 12,
        fourier_s1=angle.sin(),
        fourier_c1=angle.cos(),
        sku=pl.col("StockCode"),
    )


@pytest.fixture(scope="module")
def references() -> dict:
    return json.loads(REFERENCE.read_text())


@pytest.fixture(scope="module")
def rossmann_subset(shared_data_dir) -> pl.DataFrame:
    """The subset the R script fits (same filter and scaling)."""
    path = shared_data_dir / "rossmann-store-sales" / "rossmann_store_monthly.csv"
    return (
        pl.read_csv(path)
        .filter((pl.col("Store") <= 100) & (pl.col("OpenDays") > 0) & (pl.col("Sales") > 0))
        .with_columns(
            y=pl.col("Sales") / 1000,
            promo_days=pl.col("PromoDays") / 10,
            school_days=pl.col("SchoolHolidayDays") / 10,
            store=pl.col("Store").cast(pl.String),
        )
    )


@pytest.fixture(scope="module")
def fits(references, rossmann_subset, shared_data_dir) -> dict:
    out = {
        key: fit(references[key]["formula"], rossmann_subset, family="gamma") for key in GAMMA_KEYS
    }
    tweedie_data = pl.read_csv(REFERENCE.parent / "tweedie_sim.csv")
    for key in TWEEDIE_KEYS:
        out[key] = fit(references[key]["formula"], tweedie_data, family="tweedie")
    carparts = _carparts_subset(shared_data_dir)
    out["carparts_hurdle_zero"] = fit(
        references["carparts_hurdle_zero"]["formula"], carparts, family="binomial"
    )
    out["online_retail_hurdle_count"] = fit(
        references["online_retail_hurdle_count"]["formula"],
        _online_retail_positive(),
        family="truncated_nbinom2",
    )
    return out


def test_every_reference_entry_is_covered(references):
    from tests.poolcast.glmm.test_reference_seasonal import SEASONAL_KEYS

    assert sorted(references) == sorted(KEYS + SEASONAL_KEYS)


@pytest.mark.parametrize("key", KEYS)
def test_fixed_effects_and_ses(fits, references, key):
    ref, res = references[key], fits[key]
    assert list(res.fixef) == list(ref["fixef"])
    for name, value in ref["fixef"].items():
        assert res.fixef[name] == pytest.approx(value, abs=1e-3), name
    for name, value in ref["fixef_se"].items():
        assert res.fixef_se[name] == pytest.approx(value, rel=0.02), name


@pytest.mark.parametrize("key", KEYS)
def test_random_effects_and_shape(fits, references, key):
    ref, res = references[key], fits[key]
    for group, vc in ref["varcorr"].items():
        for name, sd in vc["sd"].items():
            assert res.sd[group][name] == pytest.approx(sd, rel=0.02, abs=2e-3), (group, name)
        corr = np.atleast_1d(np.asarray(vc["corr"], dtype=float))
        if corr.size:
            assert np.asarray(res.corr[group], dtype=float) == pytest.approx(corr, abs=0.02)
    if key in GAMMA_KEYS:
        assert res.nb_theta == pytest.approx(ref["gamma_shape"], rel=0.02)
    elif key in HURDLE_KEYS:
        if ref.get("nb_theta") is not None:
            assert res.nb_theta == pytest.approx(ref["nb_theta"], rel=0.02)
    else:  # the tolerances: Tweedie power 0.02, variance parameters 2%
        assert res.family.power == pytest.approx(ref["tweedie_power"], abs=0.02)
        assert 1.0 / res.nb_theta == pytest.approx(ref["tweedie_phi"], rel=0.02)
    assert res.loglik == pytest.approx(ref["logLik"], abs=0.02)


def test_gamma_loglik_is_scipy_density():
    """The family's log-likelihood with all constants equals scipy's Gamma log-density."""
    from scipy import stats

    rng = np.random.default_rng(3)
    y = rng.gamma(2.5, 4.0, size=50)
    eta = rng.normal(2.0, 0.3, size=50)
    nu = 2.7
    fam = get_family("gamma")
    got = fam.loglik(eta, y, np.ones_like(y), nu)
    want = stats.gamma.logpdf(y, a=nu, scale=np.exp(eta) / nu)
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_gamma_derivatives_match_finite_differences():
    rng = np.random.default_rng(4)
    y = rng.gamma(3.0, 2.0, size=20)
    eta = rng.normal(1.5, 0.4, size=20)
    nu, step = 3.3, 1e-6
    fam = get_family("gamma")
    ones = np.ones_like(y)
    g, h, h3 = fam.derivs(eta, y, ones, nu)
    ll = lambda e: fam.loglik(e, y, ones, nu)  # noqa: E731
    np.testing.assert_allclose(g, (ll(eta + step) - ll(eta - step)) / (2 * step), rtol=1e-5)
    g_of = lambda e: fam.derivs(e, y, ones, nu)[0]  # noqa: E731
    np.testing.assert_allclose(h, -(g_of(eta + step) - g_of(eta - step)) / (2 * step), rtol=1e-5)
    h_of = lambda e: fam.derivs(e, y, ones, nu)[1]  # noqa: E731
    np.testing.assert_allclose(h3, (h_of(eta + step) - h_of(eta - step)) / (2 * step), rtol=1e-5)
    dl, dg, dh = fam.derivs_log_theta(eta, y, nu)
    lp = lambda p: fam.loglik(eta, y, ones, np.exp(p))  # noqa: E731
    p0 = np.log(nu)
    np.testing.assert_allclose(dl, (lp(p0 + step) - lp(p0 - step)) / (2 * step), rtol=1e-5)
    gp = lambda p: fam.derivs(eta, y, ones, np.exp(p))[0]  # noqa: E731
    np.testing.assert_allclose(dg, (gp(p0 + step) - gp(p0 - step)) / (2 * step), rtol=1e-5)
    hp = lambda p: fam.derivs(eta, y, ones, np.exp(p))[1]  # noqa: E731
    np.testing.assert_allclose(dh, (hp(p0 + step) - hp(p0 - step)) / (2 * step), rtol=1e-5)


def test_gamma_refuses_non_positive_response():
    from poolcast.errors import InvalidParameterError

    frame = pl.DataFrame({"y": [1.0, 0.0, 2.0, 3.0], "g": ["a", "a", "b", "b"]})
    with pytest.raises(InvalidParameterError, match="strictly positive"):
        fit("y ~ 1 + (1 | g)", frame, family="gamma")


def test_gamma_recovers_simulated_truth():
    rng = np.random.default_rng(1)
    n_groups, per = 300, 24
    g = np.repeat(np.arange(n_groups), per)
    x = rng.normal(size=g.size)
    b = rng.normal(0, 0.5, n_groups)
    mu = np.exp(2.0 + 0.3 * x + b[g])
    y = rng.gamma(4.0, mu / 4.0)
    res = fit("y ~ x + (1 | g)", pl.DataFrame({"y": y, "x": x, "g": g.astype(str)}), family="gamma")
    assert abs(res.fixef["x"] - 0.3) < 3 * res.fixef_se["x"]
    assert res.sd["g"]["(Intercept)"] == pytest.approx(0.5, rel=0.15)
    assert res.nb_theta == pytest.approx(4.0, rel=0.1)
    sims = res.simulate(pl.DataFrame({"x": [0.0], "g": ["0"]}), 4000, rng=np.random.default_rng(2))
    assert np.all(np.asarray(sims) > 0)


def test_tweedie_loglik_matches_statsmodels_series():
    """Our series equals statsmodels' independent implementation (zeros included)."""
    from statsmodels.genmod.families import Tweedie as SmTweedie

    from poolcast.glmm.families import Tweedie

    y = np.array([0.0, 0.3, 1.0, 5.0, 40.0, 300.0, 2500.0])
    mu = np.array([1.0, 0.5, 2.0, 4.0, 30.0, 250.0, 2000.0])
    for power, phi in ((1.6, 2.5), (1.2, 0.7), (1.9, 10.0)):
        ours = Tweedie(power=power).loglik(np.log(mu), y, np.ones_like(y), 1.0 / phi)
        theirs = SmTweedie(var_power=power, eql=False).loglike_obs(y, mu, scale=phi)
        np.testing.assert_allclose(ours, theirs, rtol=1e-8, atol=1e-10)


def test_tweedie_density_is_a_distribution_with_mean_mu():
    """P(0) + integral of the density = 1 and its mean is mu (theory, by quadrature)."""
    from scipy import integrate

    from poolcast.glmm.families import Tweedie

    mu, phi, power = 3.0, 1.2, 1.4
    fam = Tweedie(power=power)
    p0 = np.exp(fam.loglik(np.array([np.log(mu)]), np.array([0.0]), np.ones(1), 1 / phi))[0]
    assert p0 == pytest.approx(np.exp(-(mu ** (2 - power)) / (phi * (2 - power))), rel=1e-12)
    grid = np.linspace(1e-7, 60.0, 200_001)
    dens = np.exp(fam.loglik(np.full_like(grid, np.log(mu)), grid, np.ones_like(grid), 1 / phi))
    assert p0 + integrate.trapezoid(dens, grid) == pytest.approx(1.0, abs=1e-5)
    assert integrate.trapezoid(grid * dens, grid) == pytest.approx(mu, rel=1e-5)


def test_tweedie_derivatives_match_finite_differences():
    from poolcast.glmm.families import Tweedie

    rng = np.random.default_rng(5)
    y = np.where(rng.random(30) < 0.3, 0.0, rng.gamma(2.0, 3.0, size=30))
    eta = rng.normal(1.0, 0.5, size=30)
    tau, step, fam, ones = 0.6, 1e-6, Tweedie(power=1.55), np.ones(30)
    g, h, h3 = fam.derivs(eta, y, ones, tau)
    ll = lambda e: fam.loglik(e, y, ones, tau)  # noqa: E731
    np.testing.assert_allclose(g, (ll(eta + step) - ll(eta - step)) / (2 * step), rtol=1e-5)
    g_of = lambda e: fam.derivs(e, y, ones, tau)[0]  # noqa: E731
    np.testing.assert_allclose(h, -(g_of(eta + step) - g_of(eta - step)) / (2 * step), rtol=1e-5)
    h_of = lambda e: fam.derivs(e, y, ones, tau)[1]  # noqa: E731
    np.testing.assert_allclose(h3, (h_of(eta + step) - h_of(eta - step)) / (2 * step), rtol=1e-5)
    dl = fam.derivs_log_theta(eta, y, tau)[0]
    lp = lambda p: fam.loglik(eta, y, ones, np.exp(p))  # noqa: E731
    p0 = np.log(tau)
    np.testing.assert_allclose(
        dl, (lp(p0 + step) - lp(p0 - step)) / (2 * step), rtol=1e-5, atol=1e-8
    )


def test_tweedie_simulation_has_the_family_moments(fits):
    """Noise draws of the fitted Tweedie around a mean: mean mu, variance phi mu^p, P(0)."""
    from poolcast.glmm.simulate import _draw_response

    res = fits["simulated_tweedie_ri"]
    mu = np.full((1, 200_000), 2.3)
    draws = _draw_response(res, mu, None, 1, np.random.default_rng(7))
    phi, power = 1.0 / res.nb_theta, res.family.power
    assert draws.mean() == pytest.approx(2.3, rel=0.01)
    assert draws.var() == pytest.approx(phi * 2.3**power, rel=0.03)
    p0 = np.exp(-(2.3 ** (2 - power)) / (phi * (2 - power)))
    assert np.mean(draws == 0) == pytest.approx(p0, abs=0.005)


def test_tweedie_refuses_negative_response_and_bad_power():
    from poolcast.errors import InvalidParameterError
    from poolcast.glmm.families import Tweedie

    frame = pl.DataFrame({"y": [1.0, -1.0, 2.0, 3.0], "g": ["a", "a", "b", "b"]})
    with pytest.raises(InvalidParameterError, match="non-negative"):
        fit("y ~ 1 + (1 | g)", frame, family="tweedie")
    with pytest.raises(InvalidParameterError, match=r"\(1, 2\)"):
        Tweedie(power=2.3)


def test_truncated_negbin_loglik_is_scipy_conditional_pmf():
    """log P(Y = y | Y > 0) of NB2, from scipy."""
    from scipy import stats

    rng = np.random.default_rng(1)
    y = rng.integers(1, 30, 40).astype(float)
    eta = rng.normal(1.5, 1.0, 40)
    theta, mu = 1.7, np.exp(eta)
    prob = theta / (theta + mu)
    want = stats.nbinom.logpmf(y, theta, prob) - np.log1p(-stats.nbinom.pmf(0, theta, prob))
    got = get_family("truncated_nbinom2").loglik(eta, y, np.ones_like(y), theta)
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_truncated_negbin_derivatives_match_finite_differences():
    rng = np.random.default_rng(2)
    y = rng.integers(1, 30, 40).astype(float)
    eta = rng.normal(1.0, 1.2, 40)
    theta, step, ones = 1.7, 1e-6, np.ones(40)
    fam = get_family("truncated_nbinom2")
    g, h, h3 = fam.derivs(eta, y, ones, theta)
    for got, fun, sign in (
        (g, lambda e: fam.loglik(e, y, ones, theta), 1.0),
        (h, lambda e: fam.derivs(e, y, ones, theta)[0], -1.0),
        (h3, lambda e: fam.derivs(e, y, ones, theta)[1], 1.0),
    ):
        fd = sign * (fun(eta + step) - fun(eta - step)) / (2 * step)
        np.testing.assert_allclose(got, fd, rtol=1e-5, atol=1e-8)
    p0 = np.log(theta)
    for got, fun in zip(
        fam.derivs_log_theta(eta, y, theta),
        (
            lambda p: fam.loglik(eta, y, ones, np.exp(p)),
            lambda p: fam.derivs(eta, y, ones, np.exp(p))[0],
            lambda p: fam.derivs(eta, y, ones, np.exp(p))[1],
        ),
        strict=True,
    ):
        np.testing.assert_allclose(
            got, (fun(p0 + step) - fun(p0 - step)) / (2 * step), rtol=1e-5, atol=1e-8
        )


def test_truncated_negbin_refuses_zeros_and_draws_positive(fits):
    from poolcast.errors import InvalidParameterError
    from poolcast.glmm.simulate import _draw_response

    frame = pl.DataFrame({"y": [1, 0, 2, 3], "g": ["a", "a", "b", "b"]})
    with pytest.raises(InvalidParameterError, match="positive integer counts"):
        fit("y ~ 1 + (1 | g)", frame, family="truncated_nbinom2")
    res = fits["online_retail_hurdle_count"]
    draws = _draw_response(res, np.full((1, 100_000), 0.8), None, 1, np.random.default_rng(3))
    assert draws.min() >= 1
    theta, mu = res.nb_theta, 0.8
    q = (theta / (theta + mu)) ** theta
    assert draws.mean() == pytest.approx(mu / (1 - q), rel=0.02)  # E[Y | Y > 0]
