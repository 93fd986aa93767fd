"""The SKU-seasonal NB2 GLMM candidate (issue 8, item 2) on simulated panels.

The panel of ``_frames.simulate_feature_frame(sd_sku_seasonal=s)`` adds to each SKU's log
mean a cycle :math:`A_i\\sin(2\\pi m/12 + \\phi_i)` with :math:`A_i\\sim|N(0, s^2)|`,
:math:`\\phi_i\\sim U(0, 2\\pi)`. Expanding,
:math:`A_i\\cos\\phi_i\\,\\sin(2\\pi m/12) + A_i\\sin\\phi_i\\,\\cos(2\\pi m/12)`: the SKU's
random Fourier slopes have mean 0 and variance :math:`E[A^2]E[\\cos^2\\phi] = s^2/2`, so the
theoretical SD of each is :math:`s/\\sqrt 2`, uncorrelated with each other and the intercept.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest

from poolcast.models.glmm import GlmmNegBinRandomIntercept, GlmmNegBinSeasonal
from tests.poolcast.models._frames import simulate_feature_frame

SD_SEASONAL = 0.8


@pytest.fixture(scope="module")
def seasonal_panel():
    sim = simulate_feature_frame(
        n_sku=120,
        n_months=48,
        horizons=(1,),
        sd_sku=0.6,
        alpha=0.1,
        sd_sku_seasonal=SD_SEASONAL,
        seed=21,
    )
    cutoff = date(2023, 1, 1)  # 36 target months 2021-01..2023-12: train 24, hold out 12
    train = sim.frame.filter(pl.col("month") < cutoff)
    held = sim.frame.filter(pl.col("month") >= cutoff)
    return train, held


@pytest.fixture(scope="module")
def seasonal_fit(seasonal_panel):
    train, _ = seasonal_panel
    return GlmmNegBinSeasonal(customer_terms="none", include_promo=False).fit(train)


def test_sku_seasonal_sds_recovered(seasonal_fit):
    conv = seasonal_fit.describe().convergence["h=1"]
    assert conv["converged"]
    assert conv["random_slope_dropped"] is None
    # the frame has 3 categories (no category effect in the truth), so the category level is
    # in the model too (tests/poolcast/models/test_glmm_category_seasonal.py); SKU SDs here
    assert conv["category_level_dropped"] is None
    sd = {
        term: v
        for group, sds in conv["sd"].items()
        if group.split(".")[0] == "sku"
        for term, v in sds.items()
    }
    # truth s / sqrt(2) = 0.566 per slope; 120 SKUs x 24 months, non-normal slopes: +-25%
    for term in ("fourier_s1", "fourier_c1"):
        assert sd[term] == pytest.approx(SD_SEASONAL / np.sqrt(2), rel=0.25), term
    assert sd["(Intercept)"] == pytest.approx(0.6, rel=0.25)
    assert "(0 + fourier_s1 + fourier_c1 || sku)" in seasonal_fit.describe().formulas[1]
    ranef = seasonal_fit.describe().random_effects
    assert set(ranef["term"]) == {"(Intercept)", "fourier_s1", "fourier_c1"}


def test_seasonal_forecasts_beat_the_random_intercept_on_held_out_months(
    seasonal_panel, seasonal_fit
):
    train, held = seasonal_panel
    ri = GlmmNegBinRandomIntercept(customer_terms="none", include_promo=False).fit(train)
    truth = held.get_column("sales").to_numpy().astype(float)
    scores = {}
    for name, est in (("seasonal", seasonal_fit), ("ri", ri)):
        fc = est.predict_distribution(
            held, quantiles=(0.1, 0.5, 0.9), n_samples=300, rng=np.random.default_rng(3)
        )
        mean = np.asarray(fc.mean)
        scores[name] = {
            "wape": np.abs(truth - mean).sum() / truth.sum(),
            "log_mse": np.mean((np.log1p(truth) - np.log1p(mean)) ** 2),
        }
        if name == "seasonal":
            lo, hi = np.asarray(fc.quantiles[0.1]), np.asarray(fc.quantiles[0.9])
            assert 0.7 <= np.mean((lo <= truth) & (truth <= hi)) <= 0.92
    # the SKU's own cycle explains a large share of the held-out variation
    assert scores["seasonal"]["wape"] < 0.9 * scores["ri"]["wape"], scores
    assert scores["seasonal"]["log_mse"] < 0.8 * scores["ri"]["log_mse"], scores


def test_correlated_form_recovers_the_same_sds_and_zero_correlations(seasonal_panel):
    """The simulated slopes A cos(phi), A sin(phi) and the intercept are independent."""
    train, _ = seasonal_panel
    est = GlmmNegBinSeasonal(customer_terms="none", include_promo=False, correlated=True)
    est.fit(train)
    report = est.describe()
    assert report.formulas[1].endswith("+ (1 + fourier_s1 + fourier_c1 | sku)")
    conv = report.convergence["h=1"]
    for term in ("fourier_s1", "fourier_c1"):
        assert conv["sd"]["sku"][term] == pytest.approx(SD_SEASONAL / np.sqrt(2), rel=0.25)
    assert np.all(np.abs(conv["corr"]["sku"]) < 0.3)
    assert set(report.random_effects["term"]) == {"(Intercept)", "fourier_s1", "fourier_c1"}


def test_short_history_falls_back_to_the_random_intercept_and_says_why():
    sim = simulate_feature_frame(
        n_sku=40, n_months=30, horizons=(1,), sd_sku_seasonal=0.5, alpha=0.1, seed=4
    )
    train = sim.frame.filter(pl.col("month") < pl.col("month").max())  # 17 target months
    est = GlmmNegBinSeasonal(customer_terms="none", include_promo=False).fit(train)
    report = est.describe()
    assert report.formulas[1].endswith("+ (1 | sku)")
    reason = report.convergence["h=1"]["random_slope_dropped"]
    assert "24" in reason and "17" in reason
    assert set(est.results_[1].sd) == {"sku"}


def test_seasonal_candidate_is_opt_in_and_validates_min_months():
    from poolcast.errors import InvalidParameterError
    from poolcast.models.registry import OPT_IN, default_candidates, make_candidate

    assert "glmm_nb2_seasonal" in OPT_IN
    assert "glmm_nb2_seasonal" not in default_candidates(has_customers=True, has_promo=True)
    assert "glmm_nb2_seasonal" in default_candidates(
        has_customers=True, has_promo=True, names=("glmm_nb2_seasonal",)
    )
    assert make_candidate("glmm_nb2_seasonal", min_months=36).min_months == 36
    sim = simulate_feature_frame(n_sku=5, n_months=14, horizons=(1,), seed=1)
    with pytest.raises(InvalidParameterError, match="min_months"):
        GlmmNegBinSeasonal(min_months=1).fit(sim.frame)
