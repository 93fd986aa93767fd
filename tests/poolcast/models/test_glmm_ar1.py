"""The latent AR(1) GLMM candidate ``glmm_nb2_ar1``: fitted once on the panel, projected ahead."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest

from poolcast.backtest import backtest_candidate, forecast_at_origin, prepare_splits
from poolcast.config import FeatureConfig
from poolcast.errors import PoolcastError
from poolcast.models.glmm_ar1 import GlmmNegBinAr1
from poolcast.models.registry import OPT_IN, default_candidates, make_candidate

LEVELS = (0.1, 0.5, 0.9)


def _add_months(d: date, k: int) -> date:
    m = d.month - 1 + k
    return date(d.year + m // 12, m % 12 + 1, 1)


def ar1_panel(n_sku: int = 30, n_month: int = 36, *, seed: int = 0) -> pl.DataFrame:
    """Monthly NB2 panel with a stationary AR(1) SKU level (sd 0.6, rho 0.85), a few NULLs."""
    rng = np.random.default_rng(seed)
    sd, rho = 0.6, 0.85
    b = np.empty((n_sku, n_month))
    b[:, 0] = rng.normal(0, sd, n_sku)
    for t in range(1, n_month):
        b[:, t] = rho * b[:, t - 1] + sd * np.sqrt(1 - rho**2) * rng.normal(size=n_sku)
    mu = np.exp(2.0 + b)
    y = rng.poisson(rng.gamma(5.0, mu / 5.0))
    months = [_add_months(date(2021, 1, 1), i) for i in range(n_month)]
    rows = []
    for s in range(n_sku):
        for i in range(n_month):
            value = None if (s == 1 and i == 10) else int(y[s, i])
            rows.append((f"sku{s:02d}", months[i], value, int(rng.poisson(40)), 0))
    return pl.DataFrame(
        rows,
        schema={
            "sku": pl.String,
            "month": pl.Date,
            "sales": pl.Int64,
            "customer_count": pl.Int64,
            "promo": pl.Int64,
        },
        orient="row",
    )


@pytest.fixture(scope="module")
def split():
    panel = ar1_panel()
    return prepare_splits(panel, feature_config=FeatureConfig(horizons=3), n_origins=1)[0]


def test_runs_through_forecast_at_origin(split):
    model = GlmmNegBinAr1().fit(split.train, history=split.history)
    fc = forecast_at_origin(model, split, levels=LEVELS, n_samples=300, seed=1, inactive_months=0)
    frame = fc.frame
    assert frame.height == split.test.height
    assert np.all(np.isfinite(frame.get_column("mean").to_numpy()))
    q = frame.select([c for c in frame.columns if c.startswith("q_")]).to_numpy()
    assert np.all(np.diff(q, axis=1) >= 0)
    assert fc.samples is not None and fc.samples.shape == (frame.height, 300)
    report = model.describe()
    conv = report.convergence["h=1"]
    assert conv["converged"] and conv["fitted_once_on_panel"]
    assert 0.3 < conv["ar1_sd"] < 1.0 and 0.5 < conv["ar1_rho"] < 0.99
    assert report.random_effects is not None


def test_forecast_starts_at_the_current_level_and_decays_to_the_pool(split):
    model = GlmmNegBinAr1(seasonal=False).fit(split.train, history=split.history)
    res = model.results_
    a = res.ar1
    origin = split.origin
    rows = pl.DataFrame(
        {
            "sku": ["sku00"] * 3 + ["sku00", "brand_new"],
            "origin": [origin] * 5,
            "horizon": [1, 2, 3, 60, 1],
            "month": [_add_months(origin, h) for h in (1, 2, 3, 60, 1)],
        },
        schema={"sku": pl.String, "origin": pl.Date, "horizon": pl.Int32, "month": pl.Date},
    )
    fc = model.predict_distribution(
        rows, quantiles=LEVELS, n_samples=50, rng=np.random.default_rng(0)
    )
    b0 = res.fixef["(Intercept)"]
    m_t, v_t = a.modes[0, -1], a.cond_var[0, -1]
    h = np.array([1, 2, 3, 60])
    m = a.rho**h * m_t
    v = a.rho ** (2 * h) * v_t + a.sigma**2 * (1 - a.rho ** (2 * h))
    # the point forecast is the conditional-mode plug-in exp(b0 + rho^h b_T)
    np.testing.assert_allclose(fc.mean[:4], np.exp(b0 + m), rtol=1e-10)
    pooled = np.exp(b0)
    assert abs(fc.mean[3] - pooled) < abs(fc.mean[0] - pooled)
    assert fc.mean[3] == pytest.approx(pooled, rel=0.01)
    assert fc.mean[4] == pytest.approx(pooled, rel=1e-12)
    # the draws' spread follows the projected variance: wider far ahead than at h = 1
    draws = model.predict_distribution(
        rows[[0, 3]], quantiles=LEVELS, n_samples=4000, rng=np.random.default_rng(1)
    ).samples
    log_sd = np.log1p(draws).std(axis=1)
    assert v[3] > v[0] and log_sd[1] > log_sd[0]


def test_backtest_and_registry(split):
    assert "glmm_nb2_ar1" not in OPT_IN  # cheap enough for the default line-up
    assert "glmm_nb2_ar1" in default_candidates(has_customers=True, has_promo=True)
    factory = default_candidates(has_customers=True, has_promo=True, names=("glmm_nb2_ar1",))
    assert isinstance(factory["glmm_nb2_ar1"](), GlmmNegBinAr1)
    result = backtest_candidate(
        "glmm_nb2_ar1", factory["glmm_nb2_ar1"], [split], quantiles=LEVELS, n_samples=100, seed=0
    )
    assert result.predictions.height == split.test.height
    assert make_candidate("glmm_nb2_ar1", seasonal=False).seasonal is False


def test_all_zero_panel_is_refused(split):
    zeros = split.history.with_columns(pl.lit(0, dtype=pl.Int64).alias("sales"))
    with pytest.raises(PoolcastError, match="glmm_nb2_ar1"):
        GlmmNegBinAr1().fit(split.train, history=zeros)


def test_bundled_online_retail_first_origin_fits():
    """Regression: on the bundled Online Retail panel (origin 2011-02, 4,102 SKUs, Quantity up to
    74,215) an outer trial point drove PIRLS to the eta cap, the NB2 weights became nan and the
    fit ended with a nan log-likelihood; it now converges (sigma ~ 3, rho ~ 0.93)."""
    from pathlib import Path

    from poolcast.backtest import make_origin_split
    from poolcast.io import load_source
    from poolcast.validation import validate_panel

    source = Path(__file__).resolve().parents[3] / "data/example/online_retail_sku_monthly.csv.gz"
    panel = validate_panel(load_source(source, "online_retail"), as_of=date(2011, 11, 1)).panel
    split = make_origin_split(panel, date(2011, 2, 1), feature_config=FeatureConfig(horizons=3))
    model = GlmmNegBinAr1().fit(split.train, history=split.history)
    res = model.results_
    assert res.converged and np.isfinite(res.loglik)
    assert 2.0 < res.ar1.sigma < 4.0 and 0.85 < res.ar1.rho < 0.99
    fc = forecast_at_origin(model, split, levels=LEVELS, n_samples=50, seed=0, inactive_months=0)
    assert np.all(np.isfinite(fc.frame.get_column("mean").to_numpy()))


def test_promo_and_plan_columns_enter_the_fixed_part_and_come_from_the_plan_at_t():
    """A panel whose promo multiplies sales by e^0.5 and whose ``open_days`` plan column is
    pure noise: the candidate named through the registry with that plan column needs both
    columns, recovers the promo effect (truth 0.5), and a forecast row's promo at its target
    month scales its mean by exactly exp(beta_promo) (same SKU, month and latent path)."""
    rng = np.random.default_rng(11)
    panel = ar1_panel(n_sku=60, n_month=30, seed=5)
    promo = rng.binomial(1, 0.3, panel.height)
    # promo months sell e^0.5 times as much (thinned draws of the same NB2 month: binomial)
    extra = rng.poisson(
        np.nan_to_num(panel.get_column("sales").cast(pl.Float64).to_numpy()) * (np.e**0.5 - 1)
    )
    panel = panel.with_columns(
        (pl.col("sales") + pl.Series(np.where(promo == 1, extra, 0))).alias("sales"),
        pl.Series("promo", promo, dtype=pl.Int64),
        pl.Series("open_days", rng.integers(24, 28, panel.height), dtype=pl.Float64),
    )
    split = prepare_splits(panel, feature_config=FeatureConfig(horizons=2), n_origins=1)[0]
    factory = default_candidates(
        has_customers=False, has_promo=True, names=("glmm_nb2_ar1",), plan_columns=("open_days",)
    )["glmm_nb2_ar1"]
    model = factory()
    assert set(model.required_plan_columns) == {"promo", "open_days"}
    model.fit(split.train, history=split.history)
    assert "promo" in model.formula and "open_days" in model.formula
    beta = model.results_.fixef
    se = model.results_.fixef_se["promo"]
    assert 0.0 < se < 0.05 and abs(beta["promo"] - 0.5) < 4 * se  # truth within 4 SEs
    rows = split.test.filter(pl.col("horizon") == 1).head(1).drop("sales")
    both = pl.concat(
        [rows.with_columns(pl.lit(0).alias("promo")), rows.with_columns(pl.lit(1).alias("promo"))]
    )
    fc = model.predict_distribution(
        both, quantiles=(0.5,), n_samples=10, rng=np.random.default_rng(0)
    )
    assert fc.mean[1] / fc.mean[0] == pytest.approx(np.exp(beta["promo"]), rel=1e-9)
