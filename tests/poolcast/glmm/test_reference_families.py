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
KEYS = ["rossmann_gamma_ri", "rossmann_gamma_rs"]


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
def fits(references, rossmann_subset) -> dict:
    return {key: fit(references[key]["formula"], rossmann_subset, family="gamma") for key in KEYS}


def test_every_reference_entry_is_covered(references):
    assert sorted(references) == sorted(KEYS)


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
    assert res.nb_theta == pytest.approx(ref["gamma_shape"], rel=0.02)
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
