"""GLMM candidates on the engine: recovery of simulated truth, new SKUs, calibration."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from poolcast.errors import InvalidParameterError
from poolcast.models import (
    GlmmNegBinRandomIntercept,
    GlmmPoissonRandomIntercept,
    GlmmPoissonRandomInterceptAgq,
    GlmmPoissonRandomInterceptSlope,
)
from tests.poolcast.models._frames import simulate_feature_frame, split_last_month


@pytest.fixture(scope="module")
def ri_panel():
    sim = simulate_feature_frame(
        n_sku=120, n_months=26, horizons=(1,), sd_sku=0.6, promo_rate=0.3, seed=31
    )
    train, rows = split_last_month(sim.frame)
    return sim, train, rows


@pytest.fixture(scope="module")
def ri_fit(ri_panel):
    _, train, _ = ri_panel
    return GlmmPoissonRandomIntercept().fit(train)


def test_random_intercept_sd_and_fixed_effects_recovered(ri_fit):
    report = ri_fit.describe()
    conv = report.convergence["h=1"]
    assert conv["converged"]
    # truth: SD 0.6; the estimate's sampling SD with 120 SKUs is ~ 0.6 / sqrt(2 * 120) ~ 0.04
    assert conv["sd"]["sku"]["(Intercept)"] == pytest.approx(0.6, abs=0.12)
    coefs = dict(zip(report.coefficients["term"], report.coefficients["estimate"], strict=True))
    assert coefs["promo"] == pytest.approx(0.4, abs=0.05)
    assert coefs["fourier_s1"] == pytest.approx(0.3, abs=0.05)
    assert (
        report.formulas[1]
        == "sales ~ t + fourier_s1 + fourier_c1 + fourier_s2 + fourier_c2 + promo + (1 | sku)"
    )


def test_modes_track_true_sku_effects(ri_panel, ri_fit):
    sim, _, _ = ri_panel
    ranef = ri_fit.describe().random_effects.filter(pl.col("term") == "(Intercept)")
    modes = dict(zip(ranef["sku"], ranef["mode"], strict=True))
    est = np.array([modes[s] for s in sim.skus])
    assert np.corrcoef(est, sim.a)[0, 1] > 0.95


def test_new_sku_forecast_at_population_level(ri_panel, ri_fit):
    _, _, rows = ri_panel
    known = rows.head(3)
    new = known.with_columns(pl.Series("sku", ["NEW-1", "NEW-2", "NEW-3"]))
    fc_new = ri_fit.predict_distribution(
        new, quantiles=(0.5, 0.9), n_samples=4000, rng=np.random.default_rng(0)
    )
    fc_known = ri_fit.predict_distribution(
        known, quantiles=(0.5,), n_samples=10, rng=np.random.default_rng(0)
    )
    report = ri_fit.describe()
    beta = dict(zip(report.coefficients["term"], report.coefficients["estimate"], strict=True))
    spec = ri_fit.models_[1].spec
    x = {t: known[t].to_numpy() - c for t, c in zip(spec.terms, spec.centres, strict=True)}
    eta_pop = beta["(Intercept)"] + sum(beta[t] * x[t] for t in spec.terms)
    np.testing.assert_allclose(fc_new.mean, np.exp(eta_pop), rtol=1e-8)
    modes = dict(zip(report.random_effects["sku"], report.random_effects["mode"], strict=True))
    b = np.array([modes[s] for s in known["sku"]])
    np.testing.assert_allclose(fc_known.mean, np.exp(eta_pop + b), rtol=1e-8)
    # new-SKU draws include the random-effect spread: E[y] = exp(eta + sd^2 / 2)
    sd = report.convergence["h=1"]["sd"]["sku"]["(Intercept)"]
    np.testing.assert_allclose(fc_new.samples.mean(axis=1), np.exp(eta_pop + sd**2 / 2), rtol=0.08)


def test_nb2_random_intercept_recovers_sd_and_dispersion():
    sim = simulate_feature_frame(
        n_sku=100, n_months=26, horizons=(1,), sd_sku=0.5, alpha=0.3, promo_rate=0.3, seed=32
    )
    report = GlmmNegBinRandomIntercept().fit(sim.frame).describe()
    conv = report.convergence["h=1"]
    assert conv["sd"]["sku"]["(Intercept)"] == pytest.approx(0.5, abs=0.12)
    assert conv["nb2_alpha"] == pytest.approx(0.3, abs=0.08)
    assert conv["nb2_theta"] == pytest.approx(1 / conv["nb2_alpha"])


def test_agq_agrees_with_laplace_on_a_well_identified_model(ri_panel, ri_fit):
    _, train, _ = ri_panel
    agq = GlmmPoissonRandomInterceptAgq().fit(train).describe()
    lap = ri_fit.describe()
    assert agq.convergence["h=1"]["method"] == "agq" and agq.convergence["h=1"]["n_agq"] == 7
    assert agq.convergence["h=1"]["sd"]["sku"]["(Intercept)"] == pytest.approx(
        lap.convergence["h=1"]["sd"]["sku"]["(Intercept)"], rel=0.05
    )
    np.testing.assert_allclose(
        agq.coefficients["estimate"], lap.coefficients["estimate"], atol=0.02
    )


def test_slope_candidate_without_promo_falls_back_to_random_intercept():
    sim = simulate_feature_frame(
        n_sku=30, n_months=24, horizons=(1,), sd_sku=0.5, promo_rate=0.0, seed=33
    )
    report = GlmmPoissonRandomInterceptSlope().fit(sim.frame).describe()
    assert report.formulas[1].endswith("+ (1 | sku)")
    assert "promo" not in report.formulas[1].split("~")[1].split("(")[0]
    assert "constant" in report.convergence["h=1"]["random_slope_dropped"]


def test_laplace_candidate_rejects_n_agq(ri_panel):
    _, train, _ = ri_panel
    with pytest.raises(InvalidParameterError, match="n_agq"):
        GlmmPoissonRandomIntercept(n_agq=5).fit(train)
    with pytest.raises(InvalidParameterError, match="n_agq"):
        GlmmPoissonRandomInterceptAgq(n_agq=1).fit(train)


def test_glmm_interval_calibration_on_a_held_out_month(ri_panel, ri_fit):
    # correctly specified Poisson random-intercept model; 120 SKUs of one held-out month
    _, _, rows = ri_panel
    fc = ri_fit.predict_distribution(
        rows, quantiles=(0.1, 0.9), n_samples=2000, rng=np.random.default_rng(4)
    )
    y = rows.get_column("sales").to_numpy()
    lo, hi = fc.quantiles[0.1], fc.quantiles[0.9]
    tol = 0.08  # ~2 binomial SEs at n = 120
    assert np.mean(y < lo) <= 0.1 + tol and np.mean(y <= lo) >= 0.1 - tol
    assert np.mean(y < hi) <= 0.9 + tol and np.mean(y <= hi) >= 0.9 - tol
    assert 0.70 <= np.mean((y >= lo) & (y <= hi)) <= 0.95
