"""Tests of poolcast/glmm/results.py: tables, conditional modes/variances, checks and warnings."""

from __future__ import annotations

import warnings

import numpy as np
import polars as pl
import pytest

from poolcast.errors import ConvergenceWarning, SingularFitWarning
from poolcast.glmm import fit
from poolcast.glmm.control import GlmmControl
from tests.poolcast.glmm._panels import simulate_panel


@pytest.fixture(scope="module")
def slope_fit():
    return fit("y ~ x + (1 + x | g)", simulate_panel(rho=0.5, seed=2), family="poisson")


@pytest.fixture(scope="module")
def intercept_fit():
    data = simulate_panel(seed=3)
    return data, fit("y ~ x + (1 | g)", data, family="poisson")


def test_summary_reads_like_lme4(slope_fit):
    text = str(slope_fit.summary())
    for piece in [
        "Generalized linear mixed model fit by maximum likelihood (Laplace Approximation)",
        "Family: poisson  ( log )",
        "Random effects:",
        "Number of obs: 400, groups:  g, 40",
        "Fixed effects:",
        "(Intercept)",
    ]:
        assert piece in text
    s = slope_fit.summary()
    assert s.coefficients["term"].to_list() == ["(Intercept)", "x"]
    assert s.fit_stats["df_resid"] == 400 - 5


def test_information_criteria(slope_fit):
    assert slope_fit.aic == pytest.approx(-2 * slope_fit.loglik + 2 * 5)
    assert slope_fit.bic == pytest.approx(-2 * slope_fit.loglik + np.log(400) * 5)


def test_covariance_tables_agree(slope_fit):
    S = slope_fit.cov_re["g"]
    sd = slope_fit.sd["g"]
    assert list(sd) == ["(Intercept)", "x"]
    assert sd["x"] == pytest.approx(np.sqrt(S[1, 1]))
    assert slope_fit.corr["g"][0] == pytest.approx(S[1, 0] / np.sqrt(S[0, 0] * S[1, 1]))
    np.testing.assert_allclose(slope_fit.vcov, slope_fit.vcov.T)
    np.testing.assert_allclose(np.sqrt(np.diag(slope_fit.vcov)), list(slope_fit.fixef_se.values()))


def test_ranef_frame_matches_arrays(slope_fit):
    rf = slope_fit.ranef["g"]
    assert rf.columns == ["level", "term", "mode", "cond_sd"]
    assert rf.height == 80
    B, C = slope_fit.b_modes["g"], slope_fit.b_cond_cov["g"]
    assert B.shape == (40, 2) and C.shape == (40, 2, 2)
    np.testing.assert_allclose(rf["mode"].to_numpy(), B.ravel())
    np.testing.assert_allclose(
        rf["cond_sd"].to_numpy(), np.sqrt(np.diagonal(C, axis1=1, axis2=2)).ravel()
    )
    assert np.all(np.linalg.eigvalsh(C) > 0)


def test_conditional_variance_closed_form(intercept_fit):
    # scalar term: Var(b_j | y) = 1 / (1/sigma^2 + sum_i mu_i) at the mode (Poisson)
    data, res = intercept_fit
    sigma = res.sd["g"]["(Intercept)"]
    g_idx = res.design.blocks[0].level_index
    b = res.b_modes["g"][:, 0]
    mu = np.exp(res.design.X @ res.beta + b[g_idx])
    expected = 1 / (1 / sigma**2 + np.bincount(g_idx, weights=mu))
    np.testing.assert_allclose(res.b_cond_cov["g"][:, 0, 0], expected, rtol=1e-6)
    # and the mode solves sum_i (y_i - mu_i) = b_j / sigma^2
    np.testing.assert_allclose(
        np.bincount(g_idx, weights=data["y"].to_numpy() - mu), b / sigma**2, atol=1e-6
    )


def test_singular_fit_warns_and_matches_the_glm():
    import statsmodels.api as sm

    rng = np.random.default_rng(0)
    n = 300
    data = pl.DataFrame(
        {"y": rng.poisson(2.0, n), "x": rng.normal(size=n), "g": (np.arange(n) % 10).astype(str)}
    )
    with pytest.warns(SingularFitWarning, match="boundary"):
        res = fit("y ~ x + (1 | g)", data)
    assert res.diagnostics["singular"]
    assert res.sd["g"]["(Intercept)"] < 1e-4
    glm = sm.GLM(data["y"].to_numpy(), res.design.X, family=sm.families.Poisson()).fit()
    np.testing.assert_allclose(res.beta, glm.params, atol=1e-4)
    assert res.loglik == pytest.approx(glm.llf, abs=1e-4)


def test_convergence_warning_does_not_raise():
    with pytest.warns(ConvergenceWarning, match="failed to converge"):
        res = fit(
            "y ~ x + (1 + x | g)",
            simulate_panel(),
            control=GlmmControl(outer_max_iter=1, stage1=False),
        )
    assert not res.converged
    assert any("failed to converge" in m for m in res.messages)


def test_converged_fit_is_quiet(slope_fit):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = fit("y ~ x + (1 + x | g)", simulate_panel(rho=0.5, seed=2))
    assert res.converged and res.diagnostics["hessian_pd"]
    assert res.fixef == pytest.approx(slope_fit.fixef)


def test_results_are_immutable(slope_fit):
    with pytest.raises(AttributeError):
        slope_fit.loglik = 0.0  # type: ignore[misc]


def test_negbin_on_poisson_data_tends_to_the_poisson_fit():
    data = simulate_panel(seed=5)
    with pytest.warns(SingularFitWarning, match="nb_theta"):
        nb = fit("y ~ x + (1 + x | g)", data, family="negbin")
    pois = fit("y ~ x + (1 + x | g)", data, family="poisson")
    assert nb.nb_theta > 1e6
    assert nb.converged  # the infinite size is a boundary, not a convergence failure
    assert nb.fixef == pytest.approx(pois.fixef, abs=1e-4)
    assert nb.loglik == pytest.approx(pois.loglik, abs=1e-3)
