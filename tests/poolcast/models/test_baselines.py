"""Seasonal naive and moving-average baselines."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest

from poolcast.models import MovingAverage, SeasonalNaive
from tests.poolcast.models._frames import simulate_feature_frame, split_last_month


def _rows(**cols) -> pl.DataFrame:
    n = len(next(iter(cols.values())))
    base = {
        "sku": [f"S{i}" for i in range(n)],
        "origin": [date(2023, 12, 1)] * n,
        "horizon": pl.Series([1] * n, dtype=pl.Int32),
        "month": [date(2024, 1, 1)] * n,
        "sales": pl.Series([None] * n, dtype=pl.Int64),
    }
    return pl.DataFrame(base | cols)


def test_seasonal_naive_point_is_lag_seasonal_with_fallbacks():
    sim = simulate_feature_frame(n_sku=10, n_months=30, horizons=(1,), seed=41)
    train, _ = split_last_month(sim.frame)
    est = SeasonalNaive().fit(train)
    rows = _rows(
        sales_lag_seasonal=pl.Series([7, None, None, None], dtype=pl.Int64),
        sales_lag_0=pl.Series([1, 3, None, None], dtype=pl.Int64),
        sales_rm_12=[2.0, 2.0, 4.5, None],
    )
    fc = est.predict_distribution(
        rows, quantiles=(0.5,), n_samples=20, rng=np.random.default_rng(0)
    )
    np.testing.assert_array_equal(fc.mean, [7.0, 3.0, 4.5, 0.0])


@pytest.mark.parametrize("error_model", ["scaled", "log_ratio", "additive"])
def test_seasonal_naive_is_exact_on_an_exactly_seasonal_history(error_model):
    # y_T = y_{T-12} in every training row: every in-sample error is 0, so all draws equal the point
    train = pl.DataFrame(
        {
            "sku": ["A"] * 12,
            "origin": [date(2023, m, 1) for m in range(1, 13)],
            "horizon": pl.Series([1] * 12, dtype=pl.Int32),
            "month": [date(2023, m, 1) for m in range(1, 13)],
            "sales": pl.Series(list(range(12)), dtype=pl.Int64),
            "sales_lag_seasonal": pl.Series(list(range(12)), dtype=pl.Int64),
        }
    )
    est = SeasonalNaive(error_model=error_model).fit(train)
    rows = _rows(sales_lag_seasonal=pl.Series([5, 0], dtype=pl.Int64))
    fc = est.predict_distribution(
        rows, quantiles=(0.5, 0.99), n_samples=50, rng=np.random.default_rng(0)
    )
    assert np.all(fc.samples == np.array([[5], [0]]))


def test_seasonal_naive_quantiles_follow_the_error_distribution_and_clip_at_zero():
    # additive errors of -10 and +2 (equally often): draws are point - 10 (clipped to 0) or point + 2
    train = pl.DataFrame(
        {
            "sku": ["A"] * 4,
            "origin": [date(2023, m, 1) for m in range(1, 5)],
            "horizon": pl.Series([1] * 4, dtype=pl.Int32),
            "month": [date(2023, m, 1) for m in range(2, 6)],
            "sales": pl.Series([0, 12, 0, 12], dtype=pl.Int64),
            "sales_lag_seasonal": pl.Series([10, 10, 10, 10], dtype=pl.Int64),
        }
    )
    est = SeasonalNaive(error_model="additive").fit(train)
    fc = est.predict_distribution(
        _rows(sales_lag_seasonal=pl.Series([4], dtype=pl.Int64)),
        quantiles=(0.3, 0.9),
        n_samples=400,
        rng=np.random.default_rng(0),
    )
    assert set(np.unique(fc.samples)) == {0, 6}
    assert fc.quantiles[0.3][0] == 0 and fc.quantiles[0.9][0] == 6
    assert fc.mean[0] == 4.0


def test_scaled_errors_are_in_units_of_each_skus_own_mae():
    # SKU A: errors -10, +2 (MAE 6); SKU B: errors -1, +1 (MAE 1) at level 100.
    train = pl.DataFrame(
        {
            "sku": ["A"] * 4 + ["B"] * 4,
            "origin": [date(2023, m, 1) for m in range(1, 5)] * 2,
            "horizon": pl.Series([1] * 8, dtype=pl.Int32),
            "month": [date(2023, m, 1) for m in range(2, 6)] * 2,
            "sales": pl.Series([0, 12, 0, 12, 99, 101, 99, 101], dtype=pl.Int64),
            "sales_lag_seasonal": pl.Series([10] * 4 + [100] * 4, dtype=pl.Int64),
        }
    )
    est = SeasonalNaive().fit(train)
    # pooled scaled errors: -10/6, 2/6, -1, 1
    rows = _rows(sales_lag_seasonal=pl.Series([50, 50, 50], dtype=pl.Int64)).with_columns(
        pl.Series("sku", ["A", "B", "NEW"])
    )
    fc = est.predict_distribution(
        rows, quantiles=(0.5,), n_samples=2000, rng=np.random.default_rng(0)
    )
    assert set(np.unique(fc.samples[0])) == {40, 52, 44, 56}  # 50 + 6 * {-10/6, 2/6, -1, 1}
    assert set(np.unique(fc.samples[1])) == {48, 50, 49, 51}  # 50 + 1 * {...}, rounded
    # a new SKU: scale = point * median(MAE / level) = 50 * median(6/10, 1/100) = 50 * 0.305
    s = 50 * (0.6 + 0.01) / 2
    expected = {int(np.rint(50 + s * e)) for e in (-10 / 6, 2 / 6, -1, 1)}
    assert set(np.unique(fc.samples[2])) == expected


def test_moving_average_point_and_nb2_dispersion():
    est = MovingAverage(window=3)
    train = pl.DataFrame(
        {
            "sku": ["A"] * 4,
            "origin": [date(2023, m, 1) for m in range(1, 5)],
            "horizon": pl.Series([1] * 4, dtype=pl.Int32),
            "month": [date(2023, m, 1) for m in range(2, 6)],
            "sales": pl.Series([2, 18, 5, 15], dtype=pl.Int64),
            "sales_rm_3": [10.0, 10.0, 10.0, 10.0],
        }
    )
    est.fit(train)
    # moment estimate: sum((y - m)^2 - m) / sum(m^2) = (64 + 64 + 25 + 25 - 40) / 400
    assert est.describe().convergence["h=1"]["nb2_alpha"] == pytest.approx(138 / 400)
    rows = _rows(sales_rm_3=[4.0, None], sales_rm_12=[1.0, 6.0])
    fc = est.predict_distribution(
        rows, quantiles=(0.5,), n_samples=20_000, rng=np.random.default_rng(1)
    )
    np.testing.assert_array_equal(fc.mean, [4.0, 6.0])
    np.testing.assert_allclose(fc.samples.var(axis=1), fc.mean + 138 / 400 * fc.mean**2, rtol=0.06)


def test_moving_average_window_12():
    rows = _rows(sales_rm_3=[4.0], sales_rm_12=[9.0])
    sim = simulate_feature_frame(n_sku=5, n_months=26, horizons=(1,), seed=42)
    fc = (
        MovingAverage(window=12)
        .fit(sim.frame)
        .predict_distribution(rows, quantiles=(0.5,), n_samples=5, rng=np.random.default_rng(0))
    )
    assert fc.mean[0] == 9.0
