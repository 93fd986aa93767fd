"""The shared covariates: what the training frame supports, imputation, centring."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest

from poolcast.errors import DataContractError, InvalidParameterError
from poolcast.models import PooledPoissonGlm
from poolcast.models._design import (
    build_covariates,
    make_covariate_spec,
    plan_term,
    plan_term_column,
)
from tests.poolcast.models._frames import simulate_feature_frame, split_last_month


def test_constant_and_absent_covariates_are_dropped_with_a_reason():
    sim = simulate_feature_frame(n_sku=10, n_months=26, horizons=(1,), promo_rate=0.0, seed=51)
    spec = make_covariate_spec(sim.frame)
    assert spec.terms == ("t", "fourier_s1", "fourier_c1", "fourier_s2", "fourier_c2")
    assert "constant" in spec.dropped["promo"]
    assert "absent" in spec.dropped["log_customers"]
    assert spec.formula() == "sales ~ t + fourier_s1 + fourier_c1 + fourier_s2 + fourier_c2"


def test_spline_terms_in_numeric_order_and_customers_off():
    sim = simulate_feature_frame(
        n_sku=10, n_months=26, horizons=(1,), promo_rate=0.3, customers=True, seed=52
    )
    rng = np.random.default_rng(0)
    frame = sim.frame.with_columns(
        [pl.Series(f"cust_spline_{k}", rng.normal(size=sim.frame.height)) for k in (10, 2, 1)]
    )
    spec = make_covariate_spec(frame, customer_terms="spline")
    assert [t for t in spec.terms if t.startswith("cust")] == [
        "cust_spline_1",
        "cust_spline_2",
        "cust_spline_10",
    ]
    none = make_covariate_spec(frame, customer_terms="none", include_promo=False)
    assert "log_customers" not in none.terms and "promo" not in none.terms


def test_null_covariates_get_an_indicator_and_the_documented_mean_fill():
    # issue 7: a missing feature is explicit (indicator), never a silent training median
    sim = simulate_feature_frame(n_sku=10, n_months=26, horizons=(1,), customers=True, seed=53)
    frame = sim.frame.with_columns(
        pl.when(pl.col("sku") == "S0000")
        .then(None)
        .otherwise(pl.col("log_customers"))
        .alias("log_customers")
    )
    spec = make_covariate_spec(frame)
    j = spec.terms.index("log_customers")
    observed = frame.get_column("log_customers").drop_nulls().to_numpy()
    assert spec.fill_values[j] == pytest.approx(np.mean(observed))
    assert spec.indicators == ("log_customers",)
    x = build_covariates(spec, frame)
    # centred at the observed mean: a missing value sits at 0, the indicator carries it
    is_null = frame.get_column("log_customers").is_null().to_numpy()
    np.testing.assert_allclose(x[~is_null, j], observed - observed.mean())
    np.testing.assert_array_equal(x[is_null, j], 0.0)
    ind = spec.terms.index("log_customers_missing")
    np.testing.assert_array_equal(x[:, ind], is_null.astype(float))
    assert is_null.sum() > 0
    # Fourier terms are not centred
    k = spec.terms.index("fourier_s1")
    np.testing.assert_allclose(x[:, k], frame.get_column("fourier_s1").to_numpy())
    # and a candidate fits and forecasts rows with null customers
    train, rows = split_last_month(frame)
    fc = (
        PooledPoissonGlm()
        .fit(train)
        .predict_distribution(
            rows.with_columns(pl.lit(None, dtype=pl.Float64).alias("log_customers")),
            quantiles=(0.5,),
            n_samples=5,
            rng=np.random.default_rng(0),
        )
    )
    assert np.all(np.isfinite(fc.mean))


def test_forecast_rows_missing_a_fitted_covariate_raise_naming_it():
    sim = simulate_feature_frame(n_sku=10, n_months=26, horizons=(1,), promo_rate=0.3, seed=54)
    train, rows = split_last_month(sim.frame)
    est = PooledPoissonGlm().fit(train)
    with pytest.raises(DataContractError, match="promo"):
        est.predict_distribution(
            rows.drop("promo"), quantiles=(0.5,), n_samples=5, rng=np.random.default_rng(0)
        )
    with pytest.raises(DataContractError, match="sales"):
        PooledPoissonGlm().fit(train.drop("sales"))


def _monthly_frame(n_months: int) -> pl.DataFrame:
    months = [date(2012 + (k // 12), k % 12 + 1, 1) for k in range(n_months)]
    return pl.DataFrame(
        {
            "sku": ["a"] * n_months,
            "month": months,
            "month_of_year": [m.month for m in months],
            "t": np.arange(n_months) / 12.0,
            "fourier_s1": np.sin(2 * np.pi * np.arange(n_months) / 12),
            "fourier_c1": np.cos(2 * np.pi * np.arange(n_months) / 12),
            "fourier_s2": np.sin(4 * np.pi * np.arange(n_months) / 12),
            "fourier_c2": np.cos(4 * np.pi * np.arange(n_months) / 12),
            "sales": np.arange(n_months),
        }
    )


def test_month_of_year_indicators_from_18_training_months_fourier_before():
    short, long = _monthly_frame(17), _monthly_frame(30)
    spec_short = make_covariate_spec(short, customer_terms="none", include_promo=False)
    assert "fourier_s1" in spec_short.terms and "moy_12" not in spec_short.terms
    spec = make_covariate_spec(long, customer_terms="none", include_promo=False)
    assert "fourier_s1" not in spec.terms
    assert [t for t in spec.terms if t.startswith("moy_")] == [f"moy_{k}" for k in range(2, 13)]
    # the indicators are derived on any frame with month_of_year: one-hot, January baseline
    rows = long.drop("sales").tail(14)
    x = build_covariates(spec, rows)
    onehot = np.eye(13)[rows.get_column("month_of_year").to_numpy()][:, 2:]
    cols = [spec.terms.index(f"moy_{k}") for k in range(2, 13)]
    np.testing.assert_array_equal(x[:, cols], onehot)
    fixed = make_covariate_spec(
        long, customer_terms="none", include_promo=False, seasonality="fourier"
    )
    assert "fourier_s1" in fixed.terms and "moy_2" not in fixed.terms
    with pytest.raises(InvalidParameterError, match="seasonality"):
        make_covariate_spec(long, seasonality="weekly")


def test_a_log1p_plan_term_is_derived_from_its_plan_column_in_training_and_forecast_rows():
    # [plan_transforms] open_days = "log1p": the design enters log(1 + open_days), centred at
    # its training mean, while the frames keep open_days as it is
    sim = simulate_feature_frame(n_sku=10, n_months=26, horizons=(1,), seed=54)
    rng = np.random.default_rng(3)
    frame = sim.frame.with_columns(
        pl.Series("open_days", rng.integers(0, 32, sim.frame.height).astype(float))
    )
    train, test = split_last_month(frame)
    spec = make_covariate_spec(train, plan_terms=("log1p_open_days",))
    assert "log1p_open_days" in spec.terms and "open_days" not in spec.terms
    j = spec.terms.index("log1p_open_days")
    expected_centre = np.log1p(train.get_column("open_days").to_numpy()).mean()
    assert spec.centres[j] == pytest.approx(expected_centre)
    x = build_covariates(spec, test)
    np.testing.assert_allclose(
        x[:, j], np.log1p(test.get_column("open_days").to_numpy()) - expected_centre
    )
    assert "log1p_open_days" not in test.columns  # derived, not written into the frame


def test_plan_terms_map_back_to_their_plan_columns():
    assert plan_term("open_days", "log1p") == "log1p_open_days"
    assert plan_term("promo_days") == "promo_days"
    assert plan_term_column("log1p_open_days") == "open_days"
    assert plan_term_column("promo_days") == "promo_days"
    with pytest.raises(InvalidParameterError, match="'sqrt' of 'open_days'"):
        plan_term("open_days", "sqrt")
