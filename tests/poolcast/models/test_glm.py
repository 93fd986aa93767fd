"""GLM candidates against statsmodels fitted directly and against simulation truth."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import statsmodels.api as sm
from scipy import stats

from poolcast.errors import PoolcastError
from poolcast.models import PooledNegBinGlm, PooledPoissonGlm, SkuFixedEffectsNegBinGlm
from tests.poolcast.models._frames import simulate_feature_frame, split_last_month

# 36 simulated months: the candidates use month-of-year indicators (January the baseline)
COVARIATES = ["t", *(f"moy_{k}" for k in range(2, 13)), "log_customers", "promo"]


def _raw_design(frame: pl.DataFrame, cols=COVARIATES) -> np.ndarray:
    """The reference path: raw (uncentred) columns, intercept first, built independently."""
    moy = frame.get_column("month_of_year").to_numpy()
    x = [
        (moy == int(c[4:])).astype(float) if c.startswith("moy_") else frame[c].to_numpy()
        for c in cols
    ]
    return sm.add_constant(np.column_stack(x).astype(float), has_constant="add")


def test_pooled_poisson_matches_statsmodels(poisson_panel, nb2_panel):
    train, rows = split_last_month(nb2_panel.frame)
    est = PooledPoissonGlm().fit(train)
    for h in (1, 2, 3):
        tr = train.filter(pl.col("horizon") == h)
        ref = sm.GLM(
            tr.get_column("sales").to_numpy(), _raw_design(tr), family=sm.families.Poisson()
        ).fit()
        coefs = est.describe().coefficients.filter(pl.col("horizon") == h)
        slopes = dict(zip(coefs["term"], coefs["estimate"], strict=True))
        ses = dict(zip(coefs["term"], coefs["std_error"], strict=True))
        for j, name in enumerate(COVARIATES, start=1):
            assert slopes[name] == pytest.approx(ref.params[j], rel=1e-6, abs=1e-8)
            assert ses[name] == pytest.approx(ref.bse[j], rel=1e-5)
        # the mean is invariant to centring: compare predictions on the forecast rows
        rh = rows.filter(pl.col("horizon") == h)
        fc = est.predict_distribution(
            rh, quantiles=(0.5,), n_samples=2, rng=np.random.default_rng(0)
        )
        np.testing.assert_allclose(fc.mean, ref.predict(_raw_design(rh)), rtol=1e-6)
    assert est.describe().formulas[1] == "sales ~ " + " + ".join(COVARIATES)


def test_nb2_alpha_recovers_truth_and_matches_statsmodels_mle():
    # pooled model correctly specified: no SKU effects, NB2 alpha = 0.5
    sim = simulate_feature_frame(
        n_sku=200, n_months=36, horizons=(1,), sd_sku=0.0, alpha=0.5, promo_rate=0.3, seed=4
    )
    train = sim.frame
    est = PooledNegBinGlm().fit(train)
    alpha = est.describe().convergence["h=1"]["nb2_alpha"]
    assert alpha == pytest.approx(0.5, abs=0.07)
    assert abs(alpha - 1.0) > 0.3  # not statsmodels' default alpha=1
    cols = ["t", "fourier_s1", "fourier_c1", "fourier_s2", "fourier_c2", "promo"]
    x = _raw_design(train, cols)
    ref = sm.NegativeBinomial(train.get_column("sales").to_numpy(), x, loglike_method="nb2").fit(
        disp=0, maxiter=200
    )
    assert alpha == pytest.approx(ref.params[-1], rel=2e-3)
    coefs = est.describe().coefficients
    promo = coefs.filter(pl.col("term") == "promo")["estimate"][0]
    assert promo == pytest.approx(ref.params[cols.index("promo") + 1], abs=2e-4)


def test_sku_fixed_effects_recover_simulated_intercepts():
    sim = simulate_feature_frame(
        n_sku=150, n_months=36, horizons=(1,), sd_sku=1.0, alpha=0.2, promo_rate=0.3, seed=5
    )
    est = SkuFixedEffectsNegBinGlm().fit(sim.frame)
    report = est.describe()
    fx = report.sku_effects.filter(pl.col("horizon") == 1)
    assert fx.get_column("sku").to_list() == sim.skus
    a_hat = fx.get_column("estimate").to_numpy()
    # identified up to a constant (the intercept absorbed by the SKU effects)
    dev_hat = a_hat - a_hat.mean()
    dev_true = sim.a - sim.a.mean()
    assert np.corrcoef(dev_hat, dev_true)[0, 1] > 0.97
    # sampling SD of a SKU's log level: sqrt((1/mu + alpha) / n) ~ sqrt((0.22 + 0.2) / 24) ~ 0.13
    assert np.sqrt(np.mean((dev_hat - dev_true) ** 2)) < 0.2
    assert report.convergence["h=1"]["nb2_alpha"] == pytest.approx(0.2, abs=0.05)
    promo = report.coefficients.filter(pl.col("term") == "promo")["estimate"][0]
    assert promo == pytest.approx(0.4, abs=0.08)


def test_sku_fixed_effects_match_statsmodels_dummy_glm_at_the_same_alpha():
    sim = simulate_feature_frame(
        n_sku=25, n_months=30, horizons=(1,), sd_sku=0.8, alpha=0.3, promo_rate=0.3, seed=6
    )
    train = sim.frame
    est = SkuFixedEffectsNegBinGlm().fit(train)
    report = est.describe()
    alpha = report.convergence["h=1"]["nb2_alpha"]
    cols = ["t", *(f"moy_{k}" for k in range(2, 13)), "promo"]  # 30 months: month indicators
    dummies = train.get_column("sku").to_dummies().to_numpy().astype(float)
    x = np.column_stack([dummies, _raw_design(train, cols)[:, 1:]])
    y = train.get_column("sales").to_numpy()
    ref = sm.GLM(y, x, family=sm.families.NegativeBinomial(alpha=alpha)).fit(tol=1e-12)
    coefs = report.coefficients
    for j, name in enumerate(cols):
        row = coefs.filter(pl.col("term") == name)
        assert row["estimate"][0] == pytest.approx(ref.params[25 + j], abs=1e-6)
        assert row["std_error"][0] == pytest.approx(ref.bse[25 + j], rel=1e-4)
    # ...and alpha is the profile MLE: the NB2 log-likelihood is flat in log(alpha) there
    mu = ref.mu

    def ll(a: float) -> float:
        return float(np.sum(stats.nbinom.logpmf(y, 1 / a, 1 / (1 + a * mu))))

    eps = 1e-3
    assert (
        ll(alpha) >= ll(alpha * np.exp(eps)) - 1e-6 and ll(alpha) >= ll(alpha * np.exp(-eps)) - 1e-6
    )


def test_sku_fixed_effects_new_and_all_zero_skus():
    sim = simulate_feature_frame(
        n_sku=30, n_months=30, horizons=(1,), sd_sku=0.5, alpha=0.2, seed=7
    )
    train, rows = split_last_month(sim.frame)
    train = train.with_columns(
        pl.when(pl.col("sku") == "S0000")
        .then(0)
        .otherwise(pl.col("sales"))
        .cast(pl.Int64)
        .alias("sales")
    )
    est = SkuFixedEffectsNegBinGlm().fit(train)
    report = est.describe()
    fx = report.sku_effects
    zero = fx.filter(pl.col("sku") == "S0000")
    assert zero["all_zero"][0] and np.isfinite(zero["estimate"][0])
    new_rows = rows.head(1).with_columns(pl.lit("NEW-SKU").alias("sku"))
    fc = est.predict_distribution(
        new_rows, quantiles=(0.5,), n_samples=10, rng=np.random.default_rng(0)
    )
    a = fx.filter(~pl.col("all_zero"))["estimate"].to_numpy()
    slopes = report.coefficients["estimate"].to_numpy()
    spec = est.models_[1].spec
    x = np.array(
        [new_rows[c][0] - centre for c, centre in zip(spec.terms, spec.centres, strict=True)]
    )
    expected = np.log(np.mean(np.exp(a))) + x @ slopes
    assert fc.mean[0] == pytest.approx(np.exp(expected), rel=1e-9)
    assert report.convergence["h=1"]["n_all_zero_sku"] == 1


def test_parameter_uncertainty_widens_the_interval():
    sim = simulate_feature_frame(n_sku=8, n_months=24, horizons=(1,), sd_sku=0.0, seed=8)
    train, rows = split_last_month(sim.frame)
    narrow = (
        PooledPoissonGlm()
        .fit(train)
        .predict_distribution(
            rows, quantiles=(0.05, 0.95), n_samples=4000, rng=np.random.default_rng(1)
        )
    )
    wide = (
        PooledPoissonGlm(parameter_uncertainty=True)
        .fit(train)
        .predict_distribution(
            rows, quantiles=(0.05, 0.95), n_samples=4000, rng=np.random.default_rng(1)
        )
    )
    np.testing.assert_allclose(narrow.mean, wide.mean)
    assert np.mean(wide.samples.var(axis=1)) > np.mean(narrow.samples.var(axis=1))


def test_degenerate_fit_raises_poolcast_error_naming_the_candidate():
    sim = simulate_feature_frame(n_sku=5, n_months=24, horizons=(1,), seed=9)
    zeros = sim.frame.with_columns(pl.lit(0, dtype=pl.Int64).alias("sales"))
    for cls in (PooledPoissonGlm, PooledNegBinGlm, SkuFixedEffectsNegBinGlm):
        with pytest.raises(PoolcastError, match=cls.name):
            cls().fit(zeros)


def test_nb2_pooled_interval_calibration_on_a_held_out_month():
    # correctly specified pooled NB2: the 80% central interval covers ~80% of a held-out month
    sim = simulate_feature_frame(
        n_sku=1500, n_months=26, horizons=(1,), sd_sku=0.0, alpha=0.4, promo_rate=0.3, seed=10
    )
    train, rows = split_last_month(sim.frame)
    fc = (
        PooledNegBinGlm()
        .fit(train)
        .predict_distribution(
            rows, quantiles=(0.1, 0.9), n_samples=2000, rng=np.random.default_rng(2)
        )
    )
    y = rows.get_column("sales").to_numpy()
    lo, hi = fc.quantiles[0.1], fc.quantiles[0.9]
    # discrete quantiles: P(y < q_tau) <= tau <= P(y <= q_tau), within sampling error (n=1500)
    tol = 0.03
    assert np.mean(y < lo) <= 0.1 + tol and np.mean(y <= lo) >= 0.1 - tol
    assert np.mean(y < hi) <= 0.9 + tol and np.mean(y <= hi) >= 0.9 - tol
    coverage = np.mean((y >= lo) & (y <= hi))
    assert 0.76 <= coverage <= 0.90
