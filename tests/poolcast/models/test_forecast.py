"""Forecast: the predictive-distribution container every candidate returns."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest

from poolcast.errors import InvalidParameterError
from poolcast.models.forecast import Forecast, quantile_column, quantiles_from_samples


def _keys(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "sku": [f"S{i}" for i in range(n)],
            "origin": [date(2024, 1, 1)] * n,
            "horizon": pl.Series([1] * n, dtype=pl.Int32),
            "month": [date(2024, 2, 1)] * n,
        }
    )


def test_to_frame_has_keys_mean_and_ascending_quantile_columns():
    fc = Forecast(
        keys=_keys(2),
        mean=np.array([1.0, 2.0]),
        quantiles={0.9: np.array([3.0, 4.0]), 0.5: np.array([1.0, 2.0])},
        samples=None,
    )
    frame = fc.to_frame()
    assert frame.columns == ["sku", "origin", "horizon", "month", "mean", "q_0.5", "q_0.9"]
    assert frame.get_column("q_0.9").to_list() == [3.0, 4.0]
    assert fc.levels == (0.5, 0.9)
    assert len(fc) == 2


def test_quantile_column_names():
    assert quantile_column(0.8) == "q_0.8"
    assert quantile_column(0.95) == "q_0.95"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mean": np.zeros(3)}, "mean has shape"),
        ({"quantiles": {0.5: np.zeros(3)}}, "quantile 0.5"),
        ({"quantiles": {1.5: np.zeros(2)}}, "not in"),
        ({"samples": np.zeros((3, 4))}, "samples has shape"),
    ],
)
def test_shape_mismatches_raise(kwargs, match):
    base = {"keys": _keys(2), "mean": np.zeros(2), "quantiles": {0.5: np.zeros(2)}, "samples": None}
    with pytest.raises(InvalidParameterError, match=match):
        Forecast(**(base | kwargs))


def test_missing_key_column_raises():
    with pytest.raises(InvalidParameterError, match="horizon"):
        Forecast(keys=_keys(1).drop("horizon"), mean=np.zeros(1), quantiles={})


def test_quantiles_from_samples_are_sample_values_and_monotone():
    rng = np.random.default_rng(0)
    samples = rng.poisson(5.0, size=(50, 400))
    qs = quantiles_from_samples(samples, [0.5, 0.8, 0.99])
    # inverted-CDF quantiles of integer draws are integers that occur in the draws
    assert all(np.all(q == np.rint(q)) for q in qs.values())
    assert np.all(qs[0.5] <= qs[0.8]) and np.all(qs[0.8] <= qs[0.99])
    # definition: the smallest x with empirical F(x) >= level
    row = samples[0]
    for level, q in qs.items():
        x = q[0]
        assert np.mean(row <= x) >= level
        assert np.mean(row <= x - 1) < level


@pytest.mark.parametrize("n_draws", [1, 2, 7, 500, 2000])
def test_quantiles_from_samples_equal_numpy_inverted_cdf(n_draws):
    rng = np.random.default_rng(n_draws)
    samples = rng.poisson(3.0, size=(100, n_draws))
    levels = [0.01, 0.1, 0.5, 0.8, 0.9, 0.95, 0.99]
    ours = quantiles_from_samples(samples, levels)
    ref = np.quantile(samples, levels, axis=1, method="inverted_cdf")
    for i, level in enumerate(levels):
        np.testing.assert_array_equal(ours[level], ref[i])
