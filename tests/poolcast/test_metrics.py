"""Forecast metrics against hand-computed examples and closed forms."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest
from scipy import stats

from poolcast.errors import DataContractError, InvalidParameterError
from poolcast.metrics import (
    absolute_error,
    coverage,
    crps_from_quantiles,
    crps_from_samples,
    interval_levels,
    pinball_loss,
    seasonal_naive_scale,
    wape,
)


def _crps_normal(y: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Closed form (Gneiting & Raftery 2007, eq. 5): σ[z(2Φ(z)-1) + 2φ(z) - 1/√π]."""
    z = (y - mu) / sigma
    return sigma * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / np.sqrt(np.pi))


def test_pinball_hand_computed() -> None:
    y = np.array([10.0, 10.0, 10.0, 0.0])
    q_hat = np.array([8.0, 13.0, 10.0, 4.0])
    # q=0.9: under-forecast by 2 -> 0.9*2; over by 3 -> 0.1*3; exact -> 0; over by 4 -> 0.4
    np.testing.assert_allclose(pinball_loss(y, q_hat, 0.9), [1.8, 0.3, 0.0, 0.4])
    # q=0.5 is half the absolute error
    np.testing.assert_allclose(pinball_loss(y, q_hat, 0.5), [1.0, 1.5, 0.0, 2.0])
    with pytest.raises(InvalidParameterError, match="level"):
        pinball_loss(y, q_hat, 1.0)


def test_pinball_is_minimised_by_the_true_quantile() -> None:
    y = np.random.default_rng(0).exponential(2.0, size=50_000)
    level = 0.8
    grid = np.linspace(2.0, 4.5, 126)
    losses = [pinball_loss(y, np.full(y.size, g), level).mean() for g in grid]
    best = grid[int(np.argmin(losses))]
    assert abs(best - stats.expon(scale=2.0).ppf(level)) < 0.05


def test_absolute_error_wape_coverage_counted() -> None:
    y = np.array([1.0, 3.0, 0.0, 6.0])
    y_hat = np.array([2.0, 3.0, 1.0, 4.0])
    np.testing.assert_allclose(absolute_error(y, y_hat), [1.0, 0.0, 1.0, 2.0])
    assert wape(y, y_hat) == pytest.approx(4.0 / 10.0)
    assert np.isnan(wape(np.zeros(2), np.ones(2)))
    lower = np.array([0.0, 3.5, 0.0, 6.0])
    upper = np.array([1.0, 9.0, 0.0, 7.0])
    # inside: 1 in [0,1] yes; 3 in [3.5,9] no; 0 in [0,0] yes; 6 in [6,7] yes
    assert coverage(y, lower, upper) == pytest.approx(3 / 4)
    assert np.isnan(coverage(np.array([]), np.array([]), np.array([])))


def test_interval_levels() -> None:
    assert interval_levels(0.8) == (0.1, 0.9)
    assert interval_levels(0.95) == (0.025, 0.975)
    with pytest.raises(InvalidParameterError):
        interval_levels(1.2)


def test_crps_from_samples_matches_normal_closed_form() -> None:
    m = 4000
    mu = np.array([0.0, 5.0, -2.0, 10.0])
    sigma = np.array([1.0, 2.0, 0.5, 3.0])
    y = np.array([0.3, 1.0, -2.0, 20.0])
    # draws at the normal quantiles of a uniform grid: a low-noise sample of N(mu, sigma)
    u = (np.arange(1, m + 1) - 0.5) / m
    samples = mu[:, None] + sigma[:, None] * stats.norm.ppf(u)[None, :]
    rng = np.random.default_rng(3)
    samples = rng.permuted(samples, axis=1)  # order must not matter
    np.testing.assert_allclose(crps_from_samples(y, samples), _crps_normal(y, mu, sigma), rtol=2e-3)


def test_crps_from_samples_equals_brute_force_energy_form() -> None:
    rng = np.random.default_rng(4)
    samples = rng.poisson(3.0, size=(6, 37)).astype(float)
    y = rng.poisson(3.0, size=6).astype(float)
    brute = np.array(
        [
            np.abs(s - yi).mean() - 0.5 * np.abs(s[:, None] - s[None, :]).mean()
            for s, yi in zip(samples, y, strict=True)
        ]
    )
    np.testing.assert_allclose(crps_from_samples(y, samples), brute, rtol=1e-12, atol=1e-12)


def test_crps_point_mass_is_absolute_error() -> None:
    samples = np.full((3, 10), 4.0)
    np.testing.assert_allclose(
        crps_from_samples(np.array([4.0, 1.0, 7.5]), samples), [0, 3, 3.5], atol=1e-12
    )
    with pytest.raises(InvalidParameterError, match="shape"):
        crps_from_samples(np.zeros(2), samples)


def test_crps_from_dense_quantiles_matches_normal_closed_form() -> None:
    levels = (np.arange(1, 1000) - 0.5) / 999
    mu, sigma = np.array([1.0, 4.0]), np.array([2.0, 0.7])
    y = np.array([0.0, 6.0])
    quantiles = {float(q): mu + sigma * stats.norm.ppf(q) for q in levels}
    np.testing.assert_allclose(
        crps_from_quantiles(y, quantiles), _crps_normal(y, mu, sigma), rtol=2e-3
    )
    with pytest.raises(InvalidParameterError):
        crps_from_quantiles(y, {})


def _monthly(sku: str, start: date, values: list[float | None]) -> pl.DataFrame:
    months = pl.date_range(start, start.replace(year=start.year + 5), "1mo", eager=True)[
        : len(values)
    ]
    return pl.DataFrame(
        {"sku": sku, "month": months, "sales": pl.Series(values, dtype=pl.Float64).cast(pl.Int64)},
    )


def test_seasonal_naive_scale_hand_computed() -> None:
    long_values = [10.0 * v for v in [5, 7, 9, 4, 6, 8, 10, 3, 2, 6, 7, 9]] + [
        10.0 * v for v in [6, 7, 12, 4, 5, 8, 11, 3, 2, 9, 7, 10, 8]
    ]
    short_values = [2.0, 5.0, 4.0, 4.0, 10.0]
    gap_values: list[float | None] = [1.0, 3.0, None, 6.0, 2.0]
    panel = pl.concat(
        [
            _monthly("long", date(2020, 1, 1), long_values),
            _monthly("short", date(2021, 3, 1), short_values),
            _monthly("flat", date(2021, 1, 1), [3.0] * 15),
            _monthly("gappy", date(2021, 1, 1), gap_values),
            _monthly("single", date(2021, 1, 1), [4.0]),
        ]
    )
    scale = {r["sku"]: r for r in seasonal_naive_scale(panel).iter_rows(named=True)}
    # long: 25 months -> lag 12 pairs (t=12..24): |6-5|,|7-7|,|12-9|,|4-4|,|5-6|,|8-8|,|11-10|,
    # |3-3|,|2-2|,|9-6|,|7-7|,|10-9|,|8-6| = 1+0+3+0+1+0+1+0+0+3+0+1+2 = 12 over 13 pairs (x10)
    assert scale["long"]["scale_lag"] == 12
    assert scale["long"]["mase_scale"] == pytest.approx(120 / 13)
    # short: lag 1: |5-2|+|4-5|+|4-4|+|10-4| = 3+1+0+6 = 10 over 4 pairs
    assert scale["short"]["scale_lag"] == 1
    assert scale["short"]["mase_scale"] == pytest.approx(2.5)
    # gappy: pairs that touch the gap are skipped: |3-1|, |2-6| -> 3.0
    assert scale["gappy"]["mase_scale"] == pytest.approx(3.0)
    assert scale["gappy"]["n_observed"] == 4
    # constant history and a single month have no usable scale: the floor (1 unit)
    assert scale["flat"]["mase_scale"] == pytest.approx(1.0)
    assert scale["single"]["mase_scale"] == pytest.approx(1.0)


def test_seasonal_naive_scale_floor_and_errors() -> None:
    panel = _monthly("a", date(2021, 1, 1), [1.0, 1.0, 2.0, 2.0])  # lag-1 MAE = 1/3
    assert seasonal_naive_scale(panel, min_scale=0.1)["mase_scale"][0] == pytest.approx(1 / 3)
    assert seasonal_naive_scale(panel)["mase_scale"][0] == pytest.approx(1.0)
    with pytest.raises(InvalidParameterError, match="min_scale"):
        seasonal_naive_scale(panel, min_scale=0.0)
    with pytest.raises(DataContractError, match="sales"):
        seasonal_naive_scale(panel.drop("sales"))
