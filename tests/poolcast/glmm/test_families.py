"""Tests of poolcast/glmm/families.py against scipy.stats and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from poolcast.errors import InvalidParameterError
from poolcast.glmm.families import get_family

Y = np.array([0.0, 1.0, 3.0, 7.0, 12.0])
M = np.array([12.0, 12.0, 12.0, 15.0, 20.0])
ETA = np.array([-1.2, 0.1, 0.8, 1.9, 0.3])


def test_loglik_matches_scipy():
    mu = np.exp(ETA)
    np.testing.assert_allclose(
        get_family("poisson").loglik(ETA, Y, None), stats.poisson.logpmf(Y, mu)
    )
    th = 1.7
    np.testing.assert_allclose(
        get_family("negbin").loglik(ETA, Y, None, th), stats.nbinom.logpmf(Y, th, th / (th + mu))
    )
    p = 1 / (1 + np.exp(-ETA))
    np.testing.assert_allclose(
        get_family("binomial").loglik(ETA, Y, M), stats.binom.logpmf(Y, M, p)
    )


@pytest.mark.parametrize("name", ["poisson", "negbin", "binomial"])
def test_derivatives_match_finite_differences(name):
    fam = get_family(name)
    tr = M if name == "binomial" else None
    th = 1.7 if name == "negbin" else None
    e = 1e-5
    g, h, h3 = fam.derivs(ETA, Y, tr, th)
    ll = lambda x: fam.loglik(x, Y, tr, th)  # noqa: E731
    np.testing.assert_allclose(g, (ll(ETA + e) - ll(ETA - e)) / (2 * e), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(
        h, -(ll(ETA + e) - 2 * ll(ETA) + ll(ETA - e)) / e**2, rtol=1e-4, atol=1e-5
    )
    hh = lambda x: fam.derivs(x, Y, tr, th)[1]  # noqa: E731
    np.testing.assert_allclose(h3, (hh(ETA + e) - hh(ETA - e)) / (2 * e), rtol=1e-6, atol=1e-8)


def test_nb_log_theta_derivatives():
    fam = get_family("negbin")
    th, e = 1.7, 1e-6
    dl, dg, dh = fam.derivs_log_theta(ETA, Y, th)
    at = lambda p: (fam.loglik(ETA, Y, None, np.exp(p)), *fam.derivs(ETA, Y, None, np.exp(p))[:2])  # noqa: E731
    hi, lo = at(np.log(th) + e), at(np.log(th) - e)
    np.testing.assert_allclose(dl, (hi[0] - lo[0]) / (2 * e), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dg, (hi[1] - lo[1]) / (2 * e), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dh, (hi[2] - lo[2]) / (2 * e), rtol=1e-5, atol=1e-7)


def test_nb2_variance_and_linkinv():
    fam = get_family("negbin")
    assert fam.name == "negbin"
    np.testing.assert_allclose(fam.linkinv(np.log([2.0, 5.0])), [2.0, 5.0])
    np.testing.assert_allclose(get_family("binomial").linkinv(np.array([0.0])), [0.5])


def test_unknown_family():
    with pytest.raises(InvalidParameterError, match="family='inverse_gaussian'"):
        get_family("inverse_gaussian")


def test_nb2_derivatives_stay_finite_for_a_huge_mean():
    """Near and beyond the eta cap (a wild PIRLS step from a far outer trial point) the NB2
    weights are finite and the log-likelihood follows eta (it once gave h = inf/inf = nan, and
    y * eta outgrew the capped log(mu + theta), a huge positive log-likelihood)."""
    from poolcast.glmm.families import get_family

    fam = get_family("negbin")
    eta = np.array([2.0, 400.0, 699.0, 750.0, 1e4])
    y = np.full(5, 74215.0)
    ll, g, h, h3 = fam.evaluate(eta, y, None, 262.5)
    assert np.all(np.isfinite(g)) and np.all(np.isfinite(h)) and np.all(np.isfinite(h3))
    assert np.all(h >= 0)
    np.testing.assert_allclose(ll, fam.loglik_eta(eta, y, None, 262.5), rtol=1e-12)
    assert ll[-1] < ll[-2] < ll[-3]  # decreasing in eta far beyond the mode
    g2, h2, h32 = fam.derivs(eta, y, None, 262.5)
    np.testing.assert_allclose(np.c_[g2, h2, h32], np.c_[g, h, h3])
