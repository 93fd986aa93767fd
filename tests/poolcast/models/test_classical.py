"""The classical series candidates: Naive, AutoETS, Croston, TSB, ADIDA (poolcast.models.classical)."""

from __future__ import annotations

import itertools
from datetime import date

import numpy as np
import polars as pl
import pytest
from scipy.stats import norm

from poolcast.backtest import backtest_candidate, prepare_splits
from poolcast.config import FeatureConfig
from poolcast.errors import InvalidParameterError
from poolcast.models import default_candidates
from poolcast.models.classical import (
    Adida,
    AutoEts,
    Croston,
    Naive,
    Tsb,
    is_intermittent,
    prepare_series,
    zero_share,
)
from poolcast.simulate import simulate_panel

CLASSICAL = (Naive, AutoEts, Croston, Tsb, Adida)
LEVELS = (0.025, 0.1, 0.25, 0.5, 0.75, 0.9, 0.975)


def _months(n: int, start: date = date(2018, 1, 1)) -> list[date]:
    return [
        date(start.year + (start.month - 1 + k) // 12, (start.month - 1 + k) % 12 + 1, 1)
        for k in range(n)
    ]


def _panel(series: dict[str, list[float | None]], start: date = date(2018, 1, 1)) -> pl.DataFrame:
    """A monthly panel ending at the same month for every SKU (``None`` = unknown month)."""
    n = max(len(v) for v in series.values())
    months = _months(n, start)
    rows = []
    for sku, values in series.items():
        for m, v in zip(months[n - len(values) :], values, strict=True):
            rows.append((sku, m, v))
    return pl.DataFrame(
        rows, schema={"sku": pl.String, "month": pl.Date, "sales": pl.Int64}, orient="row"
    )


def _train(skus: list[str], horizons: int = 3) -> pl.DataFrame:
    """The only part of a training frame a series candidate reads: its horizons."""
    return pl.DataFrame(
        {
            "sku": [s for s in skus for _ in range(horizons)],
            "horizon": [h for _ in skus for h in range(1, horizons + 1)],
        },
        schema={"sku": pl.String, "horizon": pl.Int32},
    )


def _rows(skus: list[str], origin: date, horizons: int = 3) -> pl.DataFrame:
    months = _months(horizons + 1, origin)[1:]
    return pl.DataFrame(
        {
            "sku": [s for s in skus for _ in range(horizons)],
            "origin": [origin for _ in skus for _ in range(horizons)],
            "horizon": [h for _ in skus for h in range(1, horizons + 1)],
            "month": [months[h - 1] for _ in skus for h in range(1, horizons + 1)],
        },
        schema={"sku": pl.String, "origin": pl.Date, "horizon": pl.Int32, "month": pl.Date},
    )


def _forecast(est, panel: pl.DataFrame, horizons: int = 3, n_samples: int = 400, seed: int = 0):
    skus = sorted(panel.get_column("sku").unique().to_list())
    origin = panel.get_column("month").max()
    est.fit(_train(skus, horizons), history=panel)
    rows = _rows(skus, origin, horizons)
    return rows, est.predict_distribution(
        rows, quantiles=LEVELS, n_samples=n_samples, rng=np.random.default_rng(seed)
    )


# --------------------------------------------------------------------------- the series


def test_prepare_series_interpolates_interior_nulls_and_drops_leading_and_trailing_ones():
    panel = _panel({"a": [None, 2, None, None, 8, 3, None], "b": [0, 0, 5, 0, 0, 1, 0]})
    prep = prepare_series(panel)
    a = prep.frame.filter(pl.col("unique_id") == "a").get_column("y").to_list()
    # interior NULLs between 2 and 8 are interpolated linearly, never read as 0
    assert a == [2.0, 4.0, 6.0, 8.0, 3.0]
    b = prep.frame.filter(pl.col("unique_id") == "b").get_column("y").to_list()
    assert b == [0.0, 0.0, 5.0, 0.0, 0.0, 1.0, 0.0]
    info = {r["sku"]: r for r in prep.info.iter_rows(named=True)}
    assert info["a"]["n_interpolated"] == 2 and info["a"]["n_obs"] == 3
    # the last observation of "a" is one month before the origin (trailing NULL dropped)
    assert prep.origin_idx - info["a"]["last_idx"] == 1 and info["b"]["last_idx"] == prep.origin_idx
    # one-step naive MAE of b's zeros-included series: |0|+|5|+|5|+|0|+|1|+|1| over 6 = 2
    assert info["b"]["scale"] == pytest.approx(2.0)


def test_naive_forecasts_the_last_observed_value_not_a_trailing_unknown_month():
    panel = _panel({"a": [4, 7, 1, 9], "b": [3, 0, 5, None], "c": [2, 2, 6, 0]})
    rows, fc = _forecast(Naive(), panel)
    expected = {"a": 9.0, "b": 5.0, "c": 0.0}
    got = dict(zip(rows.get_column("sku").to_list(), fc.mean.tolist(), strict=True))
    assert got == {**got, **expected}
    for sku, value in expected.items():
        assert fc.mean[rows.get_column("sku").to_numpy() == sku].tolist() == [value] * 3


def test_short_series_fall_back_to_their_mean_and_are_recorded():
    panel = _panel({"a": [None, None, None, None, 4, 6], "b": [1, 2, 3, 4, 5, 6]})
    for cls in CLASSICAL:
        est = cls()
        rows, fc = _forecast(est, panel)
        a = fc.mean[rows.get_column("sku").to_numpy() == "a"]
        np.testing.assert_allclose(a, 5.0, err_msg=cls.name)
        report = est.describe().convergence["h=1"]
        assert report["n_short_series"] == 1 and report["n_modelled"] == 1, cls.name


# --------------------------------------------------------------------------- Croston


def _croston_textbook(y: list[float], alpha: float = 0.1) -> float:
    """Croston (1972): SES of the non-zero demands z_j and of the intervals p_j between them.

    p_1 counts the months from the series start to the first demand (inclusive); each level
    starts at its first value; forecast z / p.
    """
    positions = [i + 1 for i, v in enumerate(y) if v > 0]
    demands = [v for v in y if v > 0]
    intervals = [positions[0]] + [b - a for a, b in itertools.pairwise(positions)]
    z, p = demands[0], float(intervals[0])
    for d in demands[1:]:
        z += alpha * (d - z)
    for q in intervals[1:]:
        p += alpha * (q - p)
    return z / p


def test_croston_classic_equals_the_textbook_recursion():
    series = {
        "a": [0, 0, 3, 0, 0, 0, 5, 0, 2, 0, 0, 7, 0, 0, 0, 0, 4, 0],
        "b": [1, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 2, 0, 1, 0],
        "c": [5, 3, 4, 6, 2, 5, 7, 4],
    }
    rows, fc = _forecast(Croston(variant="classic"), _panel(series))
    skus = rows.get_column("sku").to_numpy()
    for sku, y in series.items():
        expected = _croston_textbook([float(v) for v in y])
        np.testing.assert_allclose(fc.mean[skus == sku], expected, rtol=1e-10, err_msg=sku)
    # SBA multiplies by (1 - alpha / 2)
    rows, sba = _forecast(Croston(variant="sba"), _panel(series))
    np.testing.assert_allclose(sba.mean, 0.95 * fc.mean, rtol=1e-10)


def test_tsb_decays_for_a_sku_that_stopped_selling():
    """TSB's demand probability falls every zero month; Croston's forecast does not move."""
    y = [4, 5, 3, 6, 4, 5] + [0] * 10
    _, tsb = _forecast(Tsb(alpha_d=0.2, alpha_p=0.2), _panel({"a": y}))
    _, croston = _forecast(Croston(variant="classic"), _panel({"a": y}))
    # probability: d_1 = 1 (first value), six ones keep it at 1, ten zeros: 0.8 ** 10
    z = 4.0
    for v in y[1:6]:
        z += 0.2 * (v - z)
    np.testing.assert_allclose(tsb.mean, z * 0.8**10, rtol=1e-8)
    assert croston.mean[0] > 5 * tsb.mean[0]


# --------------------------------------------------------------------------- AutoETS


def _seasonal_panel(n_skus: int, n_months: int, seed: int, sd: float = 5.0):
    rng = np.random.default_rng(seed)
    t = np.arange(n_months)
    pattern = 30.0 * np.sin(2 * np.pi * t / 12) + 15.0 * np.cos(4 * np.pi * t / 12)
    y = 200.0 + pattern + rng.normal(0.0, sd, size=(n_skus, n_months))
    skus = [f"S{i:03d}" for i in range(n_skus)]
    months = _months(n_months)
    frame = pl.DataFrame(
        {
            "sku": [s for s in skus for _ in range(n_months)],
            "month": [m for _ in skus for m in months],
            "sales": np.rint(y).astype(np.int64).ravel(),
        },
        schema={"sku": pl.String, "month": pl.Date, "sales": pl.Int64},
    )
    return (
        frame,
        lambda k: 200.0 + 30.0 * np.sin(2 * np.pi * k / 12) + 15.0 * np.cos(4 * np.pi * k / 12),
    )


def test_auto_ets_recovers_the_seasonal_pattern():
    panel, truth = _seasonal_panel(n_skus=20, n_months=60, seed=1)
    rows, fc = _forecast(AutoEts(), panel, horizons=6)
    true_mean = truth(59 + rows.get_column("horizon").to_numpy())
    # the seasonal swing is +-45 around 200; the forecast is within a few units of the truth
    assert np.mean(np.abs(fc.mean - true_mean)) < 4.0
    # and the season is not flattened: the forecast's profile follows the truth
    by_h = fc.to_frame().group_by("horizon").agg(pl.col("mean").mean()).sort("horizon")
    np.testing.assert_allclose(
        by_h.get_column("mean").to_numpy(), truth(59 + np.arange(1, 7)), atol=3.0
    )


def test_auto_ets_80_and_95_percent_intervals_cover_about_nominal():
    panel, truth = _seasonal_panel(n_skus=150, n_months=36, seed=2)
    rows, fc = _forecast(AutoEts(), panel, horizons=3)
    rng = np.random.default_rng(99)
    actual = np.rint(
        truth(35 + rows.get_column("horizon").to_numpy()) + rng.normal(0, 5.0, rows.height)
    )
    inside80 = (fc.quantiles[0.1] <= actual) & (actual <= fc.quantiles[0.9])
    inside95 = (fc.quantiles[0.025] <= actual) & (actual <= fc.quantiles[0.975])
    # 450 rows: the standard error of a coverage near 0.8 is 0.019
    assert 0.74 <= inside80.mean() <= 0.88
    assert 0.90 <= inside95.mean() <= 0.99
    # Gaussian quantiles: q = mean + sd * z_q, so the 80% and 95% widths are in ratio z ratio
    w80 = fc.quantiles[0.9] - fc.quantiles[0.1]
    w95 = fc.quantiles[0.975] - fc.quantiles[0.025]
    np.testing.assert_allclose(w95 / w80, norm.ppf(0.975) / norm.ppf(0.9), rtol=1e-9)


def test_auto_ets_seasonal_only_with_two_years():
    panel, _ = _seasonal_panel(n_skus=3, n_months=20, seed=3)
    est = AutoEts()
    _forecast(est, panel)
    assert est.describe().convergence["h=1"]["n_seasonal"] == 0
    with pytest.raises(InvalidParameterError, match="model"):
        AutoEts(model="QQQ").fit(_train(["S000"]), history=panel)


# --------------------------------------------------------------------------- every candidate


@pytest.fixture(scope="module")
def intermittent_panel() -> pl.DataFrame:
    panel = simulate_panel(40, 30, family="negbin", seed=5, intercept=-3.0).frame
    # a few unknown months (gap_policy "missing") and a SKU that starts late
    return panel.with_columns(
        pl.when(
            (pl.col("sku") == "SKU000003")
            & pl.col("month").is_between(date(2021, 2, 1), date(2021, 4, 1))
        )
        .then(None)
        .otherwise(pl.col("sales"))
        .alias("sales")
    ).filter(~((pl.col("sku") == "SKU000004") & (pl.col("month") < date(2022, 3, 1))))


@pytest.mark.parametrize("cls", CLASSICAL, ids=lambda c: c.name)
def test_quantiles_are_monotone_and_non_negative_and_draws_are_counts(cls, intermittent_panel):
    assert zero_share(intermittent_panel) > 0.3
    rows, fc = _forecast(cls(), intermittent_panel, n_samples=200)
    qs = np.stack([fc.quantiles[q] for q in LEVELS])
    assert np.all(qs >= 0) and np.all(np.diff(qs, axis=0) >= 0)
    assert np.all(np.isfinite(fc.mean)) and np.all(fc.mean >= 0)
    assert fc.samples.shape == (rows.height, 200) and fc.samples.min() >= 0
    assert np.issubdtype(fc.samples.dtype, np.integer)


@pytest.mark.parametrize("cls", CLASSICAL, ids=lambda c: c.name)
def test_backtest_candidate_runs_every_classical_candidate(cls, intermittent_panel):
    splits = prepare_splits(intermittent_panel, feature_config=FeatureConfig(), n_origins=2)
    result = backtest_candidate(
        cls.name, cls, splits, quantiles=(0.5, 0.9, 0.95), n_samples=100, seed=1
    )
    assert result.predictions.height == sum(s.test.height for s in splits)
    m = result.metrics
    assert np.isfinite(m["mase"]) and np.isfinite(m["scaled_pinball"])
    assert 0.0 <= m["coverage_80"] <= m["coverage_95"] <= 1.0


def test_series_candidates_use_only_history_up_to_the_origin(intermittent_panel):
    """Appending later months to the panel, then cutting at the origin, changes nothing."""
    origin = date(2022, 3, 1)
    cut = intermittent_panel.filter(pl.col("month") <= origin)
    skus = sorted(cut.get_column("sku").unique().to_list())
    rows = _rows(skus, origin)
    a = Croston().fit(_train(skus), history=cut)
    b = Croston().fit(_train(skus), history=intermittent_panel.filter(pl.col("month") <= origin))
    fa = a.predict_distribution(rows, quantiles=(0.5,), n_samples=50, rng=np.random.default_rng(0))
    fb = b.predict_distribution(rows, quantiles=(0.5,), n_samples=50, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(fa.samples, fb.samples)
    assert a.series_.origin_idx == origin.year * 12 + origin.month - 1


# --------------------------------------------------------------------------- line-up


def test_intermittent_means_at_least_30_percent_zero_months_nulls_ignored():
    assert is_intermittent(pl.DataFrame({"sales": [0] * 3 + [1] * 7}))
    assert not is_intermittent(pl.DataFrame({"sales": [0] * 29 + [1] * 71}))
    assert is_intermittent(pl.DataFrame({"sales": [0] * 3 + [1] * 7 + [None] * 50}))
    assert not is_intermittent(pl.DataFrame({"sales": [None, None]}, schema={"sales": pl.Int64}))


def test_default_lineup_has_naive_and_ets_always_and_croston_family_when_intermittent():
    family = {"croston", "tsb", "adida"}
    smooth = default_candidates(has_customers=True, has_promo=False, intermittent=False)
    sparse = default_candidates(has_customers=True, has_promo=False, intermittent=True)
    unknown = default_candidates(has_customers=True, has_promo=False)
    assert {"naive", "auto_ets"} <= set(smooth) and not family & set(smooth)
    assert family <= set(sparse) and family <= set(unknown)
    assert sparse["croston"]().variant == "sba"
