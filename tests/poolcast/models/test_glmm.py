"""GLMM candidates on the engine: recovery of simulated truth, new SKUs, calibration."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from poolcast.errors import DataContractError, InvalidParameterError
from poolcast.models import (
    GlmmNegBinDynamic,
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


@pytest.fixture(scope="module")
def dynamic_panel():
    # each SKU's log level is its own AR(1) (rho 0.9) plus its own annual cycle (random
    # amplitude and phase): a random intercept + global Fourier terms cannot track either,
    # while the SKU's recent mean and last year's same month carry the signal
    sim = simulate_feature_frame(
        n_sku=80,
        n_months=36,
        horizons=(1,),
        beta0=2.5,
        sd_sku=0.5,
        alpha=0.1,
        level_ar=0.9,
        sd_level=0.25,
        sd_sku_seasonal=0.5,
        seed=41,
    )
    cut = sim.months[-4]
    return sim.frame.filter(pl.col("month") < cut), sim.frame.filter(pl.col("month") >= cut)


def test_dynamic_candidate_uses_recent_history_and_beats_the_random_intercept(dynamic_panel):
    train, test = dynamic_panel
    rows = test.with_columns(sales=pl.lit(None, pl.Int64))
    y = test.get_column("sales").to_numpy()
    dyn = GlmmNegBinDynamic(include_promo=False).fit(train)
    ri = GlmmNegBinRandomIntercept(include_promo=False).fit(train)
    report = dyn.describe()
    assert report.formulas[1].endswith("+ log1p_sales_rm_3 + log1p_sales_lag_seasonal + (1 | sku)")
    coefs = report.coefficients
    est, se = coefs.filter(pl.col("term") == "log1p_sales_rm_3").row(0)[1:3]
    assert est > 3 * se > 0  # a persistent level: the recent mean predicts the next month
    rng = np.random.default_rng(5)
    mae = {
        m.name: np.mean(
            np.abs(m.predict_distribution(rows, quantiles=(0.5,), n_samples=10, rng=rng).mean - y)
        )
        for m in (dyn, ri)
    }
    assert mae["glmm_nb2_ri_dynamic"] < mae["glmm_nb2_ri"]


def test_dynamic_candidate_missing_seasonal_lag_indicator(dynamic_panel):
    # the indicator is constant (dropped) on the full panel; masking makes it vary
    train, test = dynamic_panel
    # a quarter of the SKUs lose their seasonal lag (too short a history)
    short = train.get_column("sku").unique().sort().to_list()[::4]
    masked = train.with_columns(
        pl.when(pl.col("sku").is_in(short))
        .then(None)
        .otherwise(pl.col("sales_lag_seasonal"))
        .alias("sales_lag_seasonal")
    )
    dyn = GlmmNegBinDynamic(include_promo=False, seasonal_fallback="indicator").fit(masked)
    spec = dyn.models_[1].spec
    assert spec.terms[-3:] == (
        "log1p_sales_rm_3",
        "log1p_sales_lag_seasonal",
        "seasonal_lag_missing",
    )
    frame = dyn._with_history(masked)
    missing = frame.get_column("seasonal_lag_missing").to_numpy()
    np.testing.assert_array_equal(missing, frame.get_column("sku").is_in(short).to_numpy())
    assert np.all(frame.get_column("log1p_sales_lag_seasonal").to_numpy()[missing == 1] == 0.0)
    fc = dyn.predict_distribution(
        test.with_columns(sales=pl.lit(None, pl.Int64)),
        quantiles=(0.5,),
        n_samples=5,
        rng=np.random.default_rng(0),
    )
    assert np.all(np.isfinite(fc.mean))


def test_dynamic_candidate_validates_history_terms_and_columns(dynamic_panel):
    train, _ = dynamic_panel
    for bad in ((), ("rm_3", "rm_3"), ("rm_6",)):
        with pytest.raises(InvalidParameterError, match="history_terms"):
            GlmmNegBinDynamic(history_terms=bad).fit(train)
    with pytest.raises(DataContractError, match="sales_rm_3"):
        GlmmNegBinDynamic().fit(train.drop("sales_rm_3"))


@pytest.mark.filterwarnings("ignore::poolcast.errors.SingularFitWarning")  # no promo slope in truth
def test_each_horizon_warm_starts_from_the_previous_and_reaches_the_cold_optimum():
    from poolcast.glmm import fit as glmm_fit
    from poolcast.models._design import build_covariate_frame

    sim = simulate_feature_frame(
        n_sku=60, n_months=24, horizons=(1, 2, 3), sd_sku=0.5, promo_rate=0.3, seed=5
    )
    train, _ = split_last_month(sim.frame)
    model = GlmmPoissonRandomInterceptSlope().fit(train)
    conv = model.describe().convergence
    assert conv["h=1"]["warm_start_from_horizon"] is None
    assert conv["h=2"]["warm_start_from_horizon"] == 1
    assert conv["h=3"]["warm_start_from_horizon"] == 2
    # the warm-started horizon-3 fit equals a cold engine fit of the same formula and rows
    m3 = model.models_[3]
    train_3 = train.filter(pl.col("horizon") == 3).sort("sku", "month")
    assert m3.formula.endswith("(1 + promo | sku)")
    cold = glmm_fit(m3.formula, build_covariate_frame(m3.spec, train_3), family="poisson")
    warm = m3.results
    assert warm.loglik == pytest.approx(cold.loglik, abs=1e-6)
    assert warm.fixef == pytest.approx(cold.fixef, abs=1e-4)
    for term, sd in cold.sd["sku"].items():
        assert warm.sd["sku"][term] == pytest.approx(sd, abs=1e-4)
    # a refit starts afresh (no warm start carried over from the previous fit)
    assert model.fit(train).describe().convergence["h=1"]["warm_start_from_horizon"] is None


def test_dynamic_candidate_recent_fallback_for_a_missing_seasonal_lag(dynamic_panel):
    train, _ = dynamic_panel
    masked = train.with_columns(
        pl.when(pl.col("month") < train.get_column("month").min() + pl.duration(days=200))
        .then(None)
        .otherwise(pl.col("sales_lag_seasonal"))
        .alias("sales_lag_seasonal")
    )
    dyn = GlmmNegBinDynamic(include_promo=False, seasonal_fallback="recent").fit(masked)
    assert "seasonal_lag_missing" not in dyn.models_[1].spec.terms
    frame = dyn._with_history(masked)
    lag = masked.get_column("sales_lag_seasonal").to_numpy().astype(float)
    want = np.log1p(np.where(np.isnan(lag), masked.get_column("sales_rm_3").to_numpy(), lag))
    np.testing.assert_allclose(frame.get_column("log1p_sales_lag_seasonal").to_numpy(), want)
    with pytest.raises(InvalidParameterError, match="seasonal_fallback"):
        GlmmNegBinDynamic(seasonal_fallback="zero").fit(train)


class _WarmStartEndsUnconverged(GlmmPoissonRandomIntercept):
    """The engine's answer to a warm start is marked unconverged, as seen on Rossmann."""

    def _fit_glmm(self, formula, data, *, n_agq, start, horizon):
        import dataclasses

        self.calls.append((horizon, start is not None))
        res = super()._fit_glmm(formula, data, n_agq=n_agq, start=start, horizon=horizon)
        return dataclasses.replace(res, converged=False) if start is not None else res


def test_an_unconverged_warm_start_is_refitted_from_the_default_start():
    sim = simulate_feature_frame(n_sku=60, n_months=24, horizons=(1, 2, 3), sd_sku=0.5, seed=5)
    train, _ = split_last_month(sim.frame)
    model = _WarmStartEndsUnconverged()
    model.calls = []
    model.fit(train)
    horizons = sorted(model.models_)
    expected = [(horizons[0], False)] + [c for h in horizons[1:] for c in ((h, True), (h, False))]
    assert model.calls == expected
    conv = model.describe().convergence
    assert all(conv[f"h={h}"]["warm_start_from_horizon"] is None for h in horizons)
    assert all(m.results.converged for m in model.models_.values())


def test_tweedie_candidate_profiles_the_power_once_and_forecasts_money():
    """Sales as money: compound Poisson-Gamma amounts around the simulated SKU means."""
    from poolcast.models.glmm import GlmmTweedieRandomIntercept
    from poolcast.models.registry import OPT_IN, default_candidates

    sim = simulate_feature_frame(
        n_sku=60, n_months=26, horizons=(1, 2), sd_sku=0.6, promo_rate=0.3, seed=5
    )
    rng = np.random.default_rng(9)
    # turn the counts into amounts: each unit sold at a Gamma(4, 2.5) price (exact zeros kept)
    counts = sim.frame.get_column("sales").to_numpy()
    amounts = np.array([rng.gamma(4.0, 2.5, size=int(c)).sum() for c in counts])
    frame = sim.frame.with_columns(pl.Series("sales", np.round(amounts, 2)))
    train, rows = split_last_month(frame)
    est = GlmmTweedieRandomIntercept().fit(train)
    powers = {h: r.family.power for h, r in est.results_.items()}
    assert len(set(powers.values())) == 1 and 1.0 < powers[1] < 2.0
    forecast = est.predict_distribution(
        rows, quantiles=(0.1, 0.5, 0.9), n_samples=400, rng=np.random.default_rng(1)
    )
    truth = rows.get_column("sales").to_numpy() if "sales" in rows.columns else None
    assert np.all(np.isfinite(forecast.mean)) and np.all(forecast.quantiles[0.1] >= 0)
    assert np.all(forecast.quantiles[0.1] <= forecast.quantiles[0.9])
    if truth is not None and np.all(np.isfinite(truth)):
        inside = (forecast.quantiles[0.1] <= truth) & (truth <= forecast.quantiles[0.9])
        assert 0.6 <= inside.mean() <= 0.98
    assert "glmm_tweedie_ri" in OPT_IN
    assert "glmm_tweedie_ri" not in default_candidates(has_customers=True, has_promo=True)
    assert "glmm_tweedie_ri" in default_candidates(
        has_customers=True, has_promo=True, names=("glmm_tweedie_ri",)
    )


def test_hurdle_candidate_matches_the_zero_share_and_the_positive_sizes():
    """Intermittent demand simulated from a hurdle truth: P(sell) and the truncated mean."""
    from poolcast.models.glmm import GlmmHurdleNegBin

    sim = simulate_feature_frame(
        n_sku=80, n_months=26, horizons=(1,), sd_sku=0.5, promo_rate=0.3, seed=12
    )
    rng = np.random.default_rng(4)
    skus = sim.frame.get_column("sku").to_numpy()
    index = {s: i for i, s in enumerate(sim.skus)}
    a = np.array([sim.a[index[s]] for s in skus])
    p_sell = 1.0 / (1.0 + np.exp(-(-0.8 + a)))  # true P(sale) per SKU
    counts = sim.frame.get_column("sales").to_numpy()
    sales = np.where(rng.random(counts.size) < p_sell, np.maximum(counts, 1), 0)
    frame = sim.frame.with_columns(pl.Series("sales", sales.astype(np.int64)))
    train, rows = split_last_month(frame)
    est = GlmmHurdleNegBin(customer_terms="none").fit(train)
    truth = rows.get_column("sales").to_numpy()
    forecast = est.predict_distribution(
        rows, quantiles=(0.1, 0.5, 0.9), n_samples=2000, rng=np.random.default_rng(2)
    )
    samples = np.asarray(forecast.samples)
    # the predictive share of zeros tracks the realised share over the forecast rows
    assert np.mean(samples == 0) == pytest.approx(np.mean(truth == 0), abs=0.08)
    # the analytic mean equals the mean of the draws (hurdle combination is consistent)
    np.testing.assert_allclose(forecast.mean, samples.mean(axis=1), rtol=0.15, atol=0.3)
    report = est.describe()
    assert any(t.startswith("zero:") for t in report.coefficients["term"])
    assert any(t.startswith("count:") for t in report.coefficients["term"])


def test_the_rossmann_nb2_fit_that_once_diverged_forecasts_finite_rates(shared_data_dir):
    """Rossmann cut at 2015-04, origin 2014-09, horizon 1 (with the calendar): the NB2 GLMM's
    PIRLS once ran random effects to 7e4 (a clamped mean in the NB2 log-likelihood) and the
    candidate forecast NaN rates ("lam value too large"). It must now fit (glmmTMB agrees:
    tests/poolcast/glmm/test_reference_rossmann_nb2.py) and forecast finite, sane rates."""
    from datetime import date

    from poolcast.backtest import make_origin_split
    from poolcast.config import FeatureConfig
    from poolcast.features import panel_plan_columns
    from poolcast.io import load_source
    from poolcast.models.registry import default_candidates
    from poolcast.validation import validate_panel

    path = shared_data_dir / "rossmann-store-sales" / "rossmann_store_monthly.csv"
    panel = validate_panel(load_source(path, "rossmann"), as_of=date(2015, 4, 1)).panel
    split = make_origin_split(panel, date(2014, 9, 1), feature_config=FeatureConfig())
    factory = default_candidates(
        has_customers=True,
        has_promo=True,
        names=("glmm_nb2_ri",),
        plan_columns=panel_plan_columns(panel),
    )["glmm_nb2_ri"]
    train = split.train.filter(pl.col("horizon") == 1)
    est = factory().fit(train)
    res = est.results_[1]
    assert np.isfinite(res.loglik)
    assert np.all(np.isfinite(res.ranef["sku"].get_column("cond_sd").to_numpy()))
    rows = split.test.filter(pl.col("horizon") == 1).with_columns(pl.lit(None).alias("sales"))
    fc = est.predict_distribution(
        rows, quantiles=[0.5, 0.95], n_samples=50, rng=np.random.default_rng(0)
    )
    assert np.all(np.isfinite(fc.samples)) and np.all(np.isfinite(fc.mean))
    assert fc.mean.max() < 1e7  # no store sells ten million euros a month
