"""Rolling-origin backtest: origins, no data after the origin, scoring, leaderboard, champion."""

from __future__ import annotations

from datetime import date
from statistics import NormalDist
from typing import Self

import numpy as np
import polars as pl
import pytest

from poolcast.backtest import (
    CandidateBacktest,
    active_training_rows,
    all_levels,
    backtest_candidate,
    backtest_coverage,
    build_horizon_table,
    build_leaderboard,
    conformal_shifts,
    default_n_origins,
    forecast_at_origin,
    months_since_sale,
    pit_coverage,
    pit_recalibrate,
    prepare_splits,
    randomized_pit,
    residual_column,
    rolling_origins,
    score_predictions,
    select_champion,
    stated_coverage,
)
from poolcast.config import FeatureConfig
from poolcast.errors import InvalidParameterError, PoolcastError
from poolcast.features import build_forecast_frame, build_training_frame, make_feature_spec
from poolcast.metrics import pinball_loss, seasonal_naive_scale
from poolcast.models.forecast import Forecast, quantiles_from_samples

CONFIG = FeatureConfig()
QUANTILES = (0.5, 0.8, 0.9, 0.95, 0.99)


def _add_months(d: date, k: int) -> date:
    i = d.year * 12 + d.month - 1 + k
    return date(i // 12, i % 12 + 1, 1)


def make_panel(
    n_sku: int = 6, n_month: int = 30, *, seed: int = 0, season: float = 0.4
) -> pl.DataFrame:
    """Contract panel with staggered starts, gap rows (NULL sales) and customer counts."""
    rng = np.random.default_rng(seed)
    frames = []
    for s in range(n_sku):
        start = s % 3
        length = n_month - start
        months = [_add_months(date(2021, 1, 1), start + i) for i in range(length)]
        level = rng.gamma(3.0, 15.0)
        sales = rng.poisson(level * (1 + season * np.sin(2 * np.pi * np.arange(length) / 12)))
        gap = np.zeros(length, dtype=bool)
        gap[rng.choice(np.arange(2, length - 1), size=2, replace=False)] = True
        frames.append(
            pl.DataFrame(
                {
                    "sku": f"sku{s}",
                    "month": months,
                    "sales": [None if g else int(v) for g, v in zip(gap, sales, strict=True)],
                    "customer_count": rng.poisson(level * 4, size=length),
                    "promo": rng.integers(0, 2, size=length),
                    "category": "A",
                    "on_hand": [None] * length,
                    "is_gap": gap,
                },
                schema={
                    "sku": pl.String,
                    "month": pl.Date,
                    "sales": pl.Int64,
                    "customer_count": pl.Int64,
                    "promo": pl.Int8,
                    "category": pl.String,
                    "on_hand": pl.Int64,
                    "is_gap": pl.Boolean,
                },
            )
        )
    return pl.concat(frames)


class RecordingMovingAverage:
    """Test-only candidate: mean = ratio_h x sales_rm_3, ratio_h learned in fit; Poisson draws.

    Records the latest month and origin of every frame it is given, and the sales column
    of the forecast rows, so the tests can check what it saw.
    """

    name = "recording_ma"
    log: list[dict[str, object]] = []  # noqa: RUF012 - shared on purpose, reset per test

    def fit(self, train: pl.DataFrame, *, history: pl.DataFrame | None = None) -> Self:
        ratios = {}
        for h in train["horizon"].unique().to_list():
            part = train.filter((pl.col("horizon") == h) & pl.col("sales_rm_3").is_not_null())
            ratios[h] = float(part["sales"].sum()) / max(float(part["sales_rm_3"].sum()), 1e-9)
        self.ratio_ = ratios
        self.log.append(
            {
                "stage": "fit",
                "max_month": train["month"].max(),
                "max_origin": train["origin"].max(),
            }
        )
        return self

    def predict_distribution(
        self, rows: pl.DataFrame, *, quantiles, n_samples: int, rng: np.random.Generator
    ) -> Forecast:  # type: ignore[no-untyped-def]
        self.log.append(
            {
                "stage": "predict",
                "max_origin": rows["origin"].max(),
                "sales_nulls": rows["sales"].null_count() == rows.height,
            }
        )
        ratio = rows["horizon"].replace_strict(self.ratio_, return_dtype=pl.Float64).to_numpy()
        mean = ratio * rows["sales_rm_3"].fill_null(0.0).to_numpy()
        samples = rng.poisson(np.maximum(mean, 0.0)[:, None], size=(rows.height, n_samples))
        keys = rows.select("sku", "origin", "horizon", "month")
        return Forecast(keys, mean, quantiles_from_samples(samples, quantiles), samples)


def test_rolling_origins_are_the_last_k_with_a_full_horizon() -> None:
    panel = make_panel(n_month=36)  # 2021-01 .. 2023-12
    origins = rolling_origins(panel, n_origins=6, horizons=3)
    assert origins == [_add_months(date(2023, 4, 1), k) for k in range(6)]  # 2023-04..2023-09
    assert rolling_origins(panel, n_origins=1, horizons=1) == [date(2023, 11, 1)]
    with pytest.raises(InvalidParameterError, match="needs at least"):
        rolling_origins(panel, n_origins=31, horizons=3)
    with pytest.raises(InvalidParameterError, match="n_origins"):
        rolling_origins(panel, n_origins=0, horizons=3)


def test_splits_are_rebuilt_from_data_up_to_each_origin() -> None:
    panel = make_panel()
    splits = prepare_splits(panel, feature_config=CONFIG, n_origins=4)
    assert [s.origin for s in splits] == rolling_origins(panel, n_origins=4, horizons=3)
    for split in splits:
        history = panel.filter(pl.col("month") <= split.origin)
        assert split.train["month"].max() <= split.origin
        assert split.train["origin"].max() < split.origin  # its targets are <= origin too
        assert split.spec == make_feature_spec(history, CONFIG)
        assert split.train.equals(build_training_frame(history, split.spec))
        assert split.scale.equals(seasonal_naive_scale(history))
        # test rows: from the origin, horizons 1..3, every SKU present at the origin (issue
        # 7: unknown targets are kept, with sales NULL, and counted instead of dropped)
        assert (split.test["origin"] == split.origin).all()
        assert split.test["month"].min() > split.origin
        assert split.test["month"].max() <= _add_months(split.origin, 3)
        at_origin = history["sku"].unique().sort().to_list()
        assert split.test.group_by("sku").len().sort("sku").rows() == [(s, 3) for s in at_origin]
        truth = panel.select("sku", "month", pl.col("sales").alias("truth"), "promo")
        checked = split.test.join(truth, on=["sku", "month"], how="left")
        assert checked["sales"].eq_missing(checked["truth"]).all()
        assert (checked["promo"] == checked["promo_right"]).all()  # planned promo at T
        features = build_forecast_frame(history, split.spec, origin=split.origin)
        assert split.test.drop("sales", "promo").equals(
            features.drop("sales", "promo").sort("horizon", "sku")
        )


def test_backtest_never_sees_data_after_its_origin() -> None:
    panel = make_panel(n_sku=8, n_month=30, seed=3)
    splits = prepare_splits(panel, feature_config=CONFIG, n_origins=5)
    pivot = splits[2].origin
    rng = np.random.default_rng(99)
    later = pl.col("month") > pivot
    perturbed = panel.with_columns(
        sales=pl.when(later & pl.col("sales").is_not_null())
        .then(pl.Series(rng.integers(10_000, 1_000_000, panel.height)))
        .otherwise(pl.col("sales")),
        customer_count=pl.when(later)
        .then(pl.Series(rng.integers(10_000, 1_000_000, panel.height)))
        .otherwise(pl.col("customer_count")),
    )
    RecordingMovingAverage.log = []
    base = backtest_candidate(
        "ma", RecordingMovingAverage, splits, quantiles=QUANTILES, n_samples=50, seed=7
    )
    log = list(RecordingMovingAverage.log)
    fits = [e for e in log if e["stage"] == "fit"]
    predicts = [e for e in log if e["stage"] == "predict"]
    assert len(fits) == len(predicts) == len(splits)
    for split, fit, pred in zip(splits, fits, predicts, strict=True):
        assert fit["max_month"] <= split.origin  # no training target after the origin
        assert fit["max_origin"] < split.origin
        assert pred["max_origin"] == split.origin
        assert pred["sales_nulls"]  # the candidate never gets the truth of the rows it forecasts

    other = backtest_candidate(
        "ma",
        RecordingMovingAverage,
        prepare_splits(perturbed, feature_config=CONFIG, n_origins=5),
        quantiles=QUANTILES,
        n_samples=50,
        seed=7,
    )
    forecast_cols = ["sku", "origin", "horizon", "month", "mean"] + [
        c for c in base.predictions.columns if c.startswith("q_")
    ]
    up_to = pl.col("origin") <= pivot
    assert (
        base.predictions.filter(up_to)
        .select(forecast_cols)
        .equals(other.predictions.filter(up_to).select(forecast_cols))
    )
    # ...while the later origins, which may see the perturbed months, do change
    after = pl.col("origin") > pivot
    assert not base.predictions.filter(after)["mean"].equals(
        other.predictions.filter(after)["mean"]
    )


class _Oracle:
    """Returns the truth as a point mass, rows in reverse order (alignment must not matter)."""

    truth: dict[tuple[str, date], float] = {}  # noqa: RUF012

    def fit(self, train: pl.DataFrame, *, history: pl.DataFrame | None = None) -> Self:
        return self

    def predict_distribution(self, rows, *, quantiles, n_samples, rng) -> Forecast:  # type: ignore[no-untyped-def]
        rows = rows.reverse()
        y = np.array(
            [self.truth.get((s, m), 0.0) for s, m in rows.select("sku", "month").iter_rows()]
        )
        keys = rows.select("sku", "origin", "horizon", "month")
        return Forecast(keys, y, {float(q): y for q in quantiles}, None)


def test_scoring_aligns_forecasts_with_truth() -> None:
    panel = make_panel()
    _Oracle.truth = {
        (s, m): float(v)
        for s, m, v in panel.select("sku", "month", "sales").iter_rows()
        if v is not None
    }
    splits = prepare_splits(panel, feature_config=CONFIG, n_origins=3)
    result = backtest_candidate("oracle", _Oracle, splits, quantiles=QUANTILES, n_samples=1, seed=0)
    m = result.metrics
    assert m["mae"] == 0 and m["rmse"] == 0 and m["mase"] == 0 and m["bias"] == 0
    assert m["crps"] == 0 and m["scaled_pinball"] == 0
    assert m["coverage_80"] == 1 and m["coverage_95"] == 1
    # every row with a known truth is scored; the unknown ones are counted per origin
    assert m["n"] == sum(s.test["sales"].is_not_null().sum() for s in splits)
    assert result.coverage["rows_scored"].to_list() == [
        s.test["sales"].is_not_null().sum() for s in splits
    ]
    assert result.coverage["rows_unknown_target"].to_list() == [
        s.test["sales"].null_count() for s in splits
    ]
    assert sum(result.coverage["rows_unknown_target"]) > 0  # the panel has gap months


def test_metrics_by_horizon_and_sku_match_direct_computation() -> None:
    panel = make_panel(seed=4)
    splits = prepare_splits(panel, feature_config=CONFIG, n_origins=3)
    result = backtest_candidate(
        "ma", RecordingMovingAverage, splits, quantiles=QUANTILES, n_samples=200, seed=1
    )
    pred = result.predictions
    scale = {
        (s.origin, sku): v
        for s in splits
        for sku, v in s.scale.select("sku", "mase_scale").iter_rows()
    }
    for h in (1, 2, 3):
        part = pred.filter(pl.col("horizon") == h)
        y, mu = part["y"].to_numpy(), part["mean"].to_numpy()
        sc = np.array([scale[(o, s)] for s, o in part.select("sku", "origin").iter_rows()])
        row = result.horizon_metrics.filter(pl.col("horizon") == h).row(0, named=True)
        assert row["n"] == part.height
        assert row["mae"] == pytest.approx(np.mean(np.abs(y - mu)))
        assert row["rmse"] == pytest.approx(np.sqrt(np.mean((y - mu) ** 2)))
        assert row["mase"] == pytest.approx(np.mean(np.abs(y - mu) / sc))
        assert row["wape"] == pytest.approx(np.abs(y - mu).sum() / np.abs(y).sum())
        assert row["bias"] == pytest.approx(np.mean(mu - y))
        q9 = part["q_0.9"].to_numpy()
        assert row["pinball_0.9"] == pytest.approx(np.mean(pinball_loss(y, q9, 0.9)))
        spin = np.mean([pinball_loss(y, part[f"q_{q:g}"].to_numpy(), q) for q in QUANTILES], axis=0)
        assert row["scaled_pinball"] == pytest.approx(np.mean(spin / sc))
        inside = (part["q_0.1"].to_numpy() <= y) & (y <= part["q_0.9"].to_numpy())
        assert row["coverage_80"] == pytest.approx(inside.mean())
    # per-SKU table covers every SKU once and its row counts add up
    assert result.per_sku_metrics["sku"].to_list() == sorted(pred["sku"].unique().to_list())
    assert result.per_sku_metrics["n"].sum() == pred.height
    # the overall row equals scoring everything at once
    overall = score_predictions(pred, quantiles=QUANTILES).row(0, named=True)
    assert {k: result.metrics[k] for k in overall} == pytest.approx(overall)
    assert result.fit_seconds >= 0 and result.predict_seconds >= 0


class _Diverging(RecordingMovingAverage):
    def predict_distribution(self, rows, **kwargs) -> Forecast:  # type: ignore[no-untyped-def]
        fc = super().predict_distribution(rows, **kwargs)
        mean = fc.mean.copy()
        mean[0] = np.nan
        return Forecast(fc.keys, mean, fc.quantiles, fc.samples)


class _DropsRows(RecordingMovingAverage):
    def predict_distribution(self, rows, **kwargs) -> Forecast:  # type: ignore[no-untyped-def]
        return super().predict_distribution(rows.head(rows.height - 1), **kwargs)


class _Raises(RecordingMovingAverage):
    def fit(self, train: pl.DataFrame, *, history: pl.DataFrame | None = None) -> Self:
        raise np.linalg.LinAlgError("singular matrix")


def test_a_failing_candidate_raises() -> None:
    splits = prepare_splits(make_panel(), feature_config=CONFIG, n_origins=2)
    kwargs = {"quantiles": QUANTILES, "n_samples": 10, "seed": 0}
    with pytest.raises(PoolcastError, match="diverged"):
        backtest_candidate("nan", _Diverging, splits, **kwargs)
    with pytest.raises(PoolcastError, match="do not match"):
        backtest_candidate("short", _DropsRows, splits, **kwargs)
    with pytest.raises(np.linalg.LinAlgError):
        backtest_candidate("raises", _Raises, splits, **kwargs)
    with pytest.raises(InvalidParameterError, match="splits"):
        backtest_candidate("none", _Raises, [], **kwargs)


def _fake_result(name: str, scaled_pinball: float, mase: float) -> CandidateBacktest:
    metrics = {"n": 10.0, "mae": 1.0, "mase": mase, "scaled_pinball": scaled_pinball}
    horizon = pl.DataFrame(
        {"horizon": [1, 2], "n": [5, 5], "mae": [1.0, 1.0], "mase": [mase, mase]},
        schema_overrides={"horizon": pl.Int32},
    )
    return CandidateBacktest(
        name=name,
        predictions=pl.DataFrame(),
        metrics=metrics,
        horizon_metrics=horizon,
        per_sku_metrics=pl.DataFrame(),
        fit_seconds=1.5,
        predict_seconds=0.5,
        quantiles=QUANTILES,
    )


def test_leaderboard_and_champion_selection() -> None:
    results = [
        _fake_result("glm", 0.40, 1.2),
        _fake_result("glmm", 0.30, 1.1),
        _fake_result("gee", 0.30, 0.9),  # ties glmm on the score, wins on MASE
    ]
    board = build_leaderboard(results, {"bayes": "ConvergenceError: r_hat 1.3"})
    assert board["candidate"].to_list() == ["gee", "glmm", "glm", "bayes"]
    failed = board.filter(pl.col("status") == "failed").row(0, named=True)
    assert failed["error"] == "ConvergenceError: r_hat 1.3"
    assert failed["scaled_pinball"] is None and failed["fit_seconds"] is None
    assert board.filter(pl.col("status") == "ok")["fit_seconds"].to_list() == [1.5] * 3
    assert select_champion(board) == "gee"
    assert select_champion(board, metric="mae") == "gee"  # all tie on mae -> MASE decides
    # a failed candidate never wins, even with the best number
    hacked = board.with_columns(
        scaled_pinball=pl.when(pl.col("candidate") == "bayes")
        .then(0.0)
        .otherwise(pl.col("scaled_pinball"))
    )
    assert select_champion(hacked) == "gee"
    with pytest.raises(InvalidParameterError, match="not on the leaderboard"):
        select_champion(board, metric="accuracy")
    all_failed = build_leaderboard([], {"a": "boom", "b": "bang"})
    with pytest.raises(PoolcastError, match=r"every candidate failed.*a: boom"):
        select_champion(all_failed)
    long = build_horizon_table(results)
    assert long.columns == ["candidate", "horizon", "metric", "value"]
    assert long.filter((pl.col("candidate") == "gee") & (pl.col("metric") == "mase"))[
        "value"
    ].to_list() == [
        0.9,
        0.9,
    ]


def test_ineligible_candidates_are_listed_with_their_reason_and_never_win() -> None:
    results = [_fake_result("seasonal_naive", 0.40, 1.2)]
    reason = "needs plan column(s) ['open_days'] for 2015-05..2015-07; run with --plan"
    board = build_leaderboard(
        results, {"gee": "LinAlgError: singular"}, ineligible={"glmm_nb2_ri": reason}
    )
    assert board.select("candidate", "status").rows() == [
        ("seasonal_naive", "ok"),
        ("glmm_nb2_ri", "ineligible"),
        ("gee", "failed"),
    ]
    row = board.filter(pl.col("candidate") == "glmm_nb2_ri").row(0, named=True)
    assert row["error"] == reason
    assert row["scaled_pinball"] is None and row["mase"] is None and row["fit_seconds"] is None
    # even with the best number an ineligible row is not champion; alone, nothing is
    hacked = board.with_columns(
        scaled_pinball=pl.when(pl.col("status") == "ineligible")
        .then(0.0)
        .otherwise(pl.col("scaled_pinball"))
    )
    assert select_champion(hacked) == "seasonal_naive"
    only = build_leaderboard([], {}, ineligible={"glmm_nb2_ri": reason})
    with pytest.raises(PoolcastError, match=r"no candidate can be champion.*run with --plan"):
        select_champion(only)
    with pytest.raises(InvalidParameterError, match="both in failures and ineligible"):
        build_leaderboard(results, {"gee": "x"}, ineligible={"gee": reason})


# --- issue 7: every SKU accounted for, inactive SKUs, quantiles, origins, recalibration ---


def test_months_since_sale_and_the_inactive_rule() -> None:
    panel = make_panel(n_sku=6, n_month=30, seed=5)
    months = sorted(panel["month"].unique().to_list())
    # sku0 sells nothing (0 or unknown) after its 14th month; sku1 sells last at month 20
    panel = panel.with_columns(
        sales=pl.when((pl.col("sku") == "sku0") & (pl.col("month") > months[13]))
        .then(pl.when(pl.col("is_gap")).then(None).otherwise(0))
        .when((pl.col("sku") == "sku1") & (pl.col("month") > months[19]))
        .then(0)
        .otherwise(pl.col("sales"))
    )
    origin = months[26]
    ms = dict(months_since_sale(panel, origin).iter_rows())
    assert ms["sku0"] == 26 - 13 and ms["sku1"] == 26 - 19  # counted by hand
    splits = prepare_splits(panel, feature_config=CONFIG, n_origins=1)
    assert splits[0].origin == origin
    RecordingMovingAverage.log = []
    kwargs = {"quantiles": QUANTILES, "n_samples": 20, "seed": 0}
    result = backtest_candidate("ma", RecordingMovingAverage, splits, inactive_months=12, **kwargs)
    # sku0 (13 months without a sale) is inactive: forecast 0, reported apart, never dropped
    assert result.inactive["sku"].unique().to_list() == ["sku0"]
    assert result.inactive.height == 3
    assert result.inactive["reason"].unique().to_list() == ["inactive_12_months"]
    qcols = [c for c in result.inactive.columns if c.startswith("q_")]
    assert (result.inactive.select(["mean", *qcols]).to_numpy() == 0).all()
    assert "sku0" not in result.predictions["sku"].to_list()
    assert "sku1" in result.predictions["sku"].to_list()  # 7 months: still active
    cov = result.coverage.row(0, named=True)
    assert (cov["skus"], cov["skus_inactive"], cov["rows_inactive"]) == (6, 1, 3)
    assert cov["rows_scored"] + cov["rows_unknown_target"] + cov["rows_inactive"] == 6 * 3
    assert result.coverage.equals(backtest_coverage(splits, inactive_months=12))
    # the model never saw the inactive SKU's rows
    assert RecordingMovingAverage.log[-1]["stage"] == "predict"
    # rule N = 0 disables it; N = 8 also catches sku1 (7 months) -> no, 7 < 8: still active
    off = backtest_candidate("ma", RecordingMovingAverage, splits, inactive_months=0, **kwargs)
    assert off.inactive.height == 0 and "sku0" in off.predictions["sku"].to_list()
    seven = backtest_candidate("ma", RecordingMovingAverage, splits, inactive_months=7, **kwargs)
    assert sorted(seven.inactive["sku"].unique().to_list()) == ["sku0", "sku1"]


class _CrossingQuantiles(RecordingMovingAverage):
    """Returns quantiles that decrease in the level and go negative (an invalid distribution)."""

    def predict_distribution(self, rows, *, quantiles, n_samples, rng) -> Forecast:  # type: ignore[no-untyped-def]
        keys = rows.select("sku", "origin", "horizon", "month")
        levels = sorted(float(q) for q in quantiles)
        base = np.arange(rows.height, dtype=float)
        q = {lv: base * (1.0 - lv) - 2.0 for lv in levels}  # decreasing in lv; some < 0
        return Forecast(keys, base, q, None)


def test_published_quantiles_are_non_negative_and_monotone_in_the_level() -> None:
    splits = prepare_splits(make_panel(), feature_config=CONFIG, n_origins=1)
    levels = all_levels(QUANTILES, (0.025, 0.05, 0.25, 0.75))
    fc = forecast_at_origin(
        _CrossingQuantiles(), splits[0], levels=levels, n_samples=5, seed=0, inactive_months=0
    )
    q = fc.frame.select([f"q_{lv:g}" for lv in levels]).to_numpy()
    assert (q >= 0).all()
    assert (np.diff(q, axis=1) >= 0).all()
    # the fix is the running maximum of the clipped raw values (here: all equal to the lowest
    # level's value, the largest raw one), computed by hand
    base = np.arange(q.shape[0], dtype=float)
    expected_first = np.clip(base * (1.0 - levels[0]) - 2.0, 0.0, None)
    np.testing.assert_allclose(q[:, -1], expected_first)


def test_default_origins_see_the_forecast_months_one_year_earlier() -> None:
    panel = make_panel(n_sku=2, n_month=60)
    last = panel["month"].max()
    for h in range(1, 13):
        k = default_n_origins(h)
        assert 6 <= k <= 12
        origins = rolling_origins(panel, n_origins=k, horizons=h)
        targets = {_add_months(o, j) for o in origins for j in range(1, h + 1)}
        next_months = [_add_months(last, j) for j in range(1, h + 1)]
        year_earlier = {_add_months(m, -12) for m in next_months}
        assert year_earlier <= targets, h
        if k > 6:  # and it is the smallest K that does (unless the floor of 6 applies)
            fewer = rolling_origins(panel, n_origins=k - 1, horizons=h)
            fewer_targets = {_add_months(o, j) for o in fewer for j in range(1, h + 1)}
            assert not year_earlier <= fewer_targets
    assert default_n_origins(3) == 10
    splits = prepare_splits(panel, feature_config=CONFIG)
    assert len(splits) == 10
    # a short panel lowers the default so the earliest origin keeps 12 + H months of history
    for n_month, expected in ((24, 7), (19, 2)):
        short = prepare_splits(make_panel(n_sku=2, n_month=n_month), feature_config=CONFIG)
        assert len(short) == expected
        assert short[0].origin == _add_months(date(2021, 1, 1), 14)  # 15 months: 2021-01..2022-03
    # ...or, shorter still, to what rolling_origins accepts (span - 2H)
    tiny = make_panel(n_sku=2, n_month=12)
    assert len(prepare_splits(tiny, feature_config=CONFIG)) == 12 - 2 * 3
    with pytest.raises(InvalidParameterError, match=r"1\.\.12"):
        prepare_splits(panel, feature_config=CONFIG, n_origins=13)


def test_pit_recalibration_uses_only_earlier_targets_and_fixes_coverage() -> None:
    origin = date(2023, 6, 1)
    rng = np.random.default_rng(0)
    # PITs of a forecast that is too narrow: mass piles up near 0 and 1
    narrow = np.clip(rng.beta(0.4, 0.4, 2000), 0, 1)
    before = pl.DataFrame({"month": [date(2023, 5, 1)] * 2000, "pit": narrow})
    uniform = pl.DataFrame({"month": [date(2023, 5, 1)] * 2000, "pit": rng.uniform(size=2000)})
    later = pl.DataFrame({"month": [date(2023, 7, 1)] * 2000, "pit": rng.uniform(size=2000)})
    levels = (0.025, 0.1, 0.5, 0.9, 0.975)
    remap = pit_recalibrate(levels, pl.concat([before, later]), origin=origin, mode="pit")
    # the level asked is the empirical quantile of the earlier PITs only (theory: G^-1(tau))
    np.testing.assert_allclose([remap[q] for q in levels], np.quantile(narrow, levels))
    assert remap[0.1] < 0.1 and remap[0.9] > 0.9  # the interval widens
    assert pit_recalibrate(levels, uniform, origin=origin, mode="pit") != {}
    assert pit_recalibrate(levels, before, origin=origin, mode="none") == {}
    assert pit_recalibrate(levels, later, origin=origin, mode="pit") == {}  # all after origin
    assert pit_recalibrate(levels, before, origin=origin, mode="conformal") == {}
    with pytest.raises(InvalidParameterError, match="calibration"):
        pit_recalibrate(levels, before, origin=origin, mode="isotonic")


class _TooNarrow(RecordingMovingAverage):
    """Point-mass-like forecasts: draws within +-1 of the mean (intervals far too narrow)."""

    def predict_distribution(self, rows, *, quantiles, n_samples, rng) -> Forecast:  # type: ignore[no-untyped-def]
        fc = super().predict_distribution(rows, quantiles=quantiles, n_samples=n_samples, rng=rng)
        draws = np.rint(fc.mean)[:, None] + rng.integers(-1, 2, size=(rows.height, n_samples))
        draws = np.clip(draws, 0, None)
        return Forecast(fc.keys, fc.mean, quantiles_from_samples(draws, quantiles), draws)


def test_recalibration_brings_backtest_coverage_towards_nominal() -> None:
    # stationary demand: the errors of earlier origins are exchangeable with later ones (the
    # assumption of split conformal), so the correction must reach nominal coverage
    panel = make_panel(n_sku=40, n_month=36, seed=8, season=0.0)
    splits = prepare_splits(panel, feature_config=CONFIG, n_origins=10)
    kwargs = {"quantiles": QUANTILES, "n_samples": 200, "seed": 2, "inactive_months": 0}
    raw = backtest_candidate("narrow", _TooNarrow, splits, calibration="none", **kwargs)
    fixed = backtest_candidate("narrow", _TooNarrow, splits, calibration="conformal", **kwargs)
    auto = backtest_candidate("narrow", _TooNarrow, splits, calibration="auto", **kwargs)
    # "auto" sees the raw coverage is far below nominal at the same origins
    assert auto.metrics["recalibrated_origins"] == fixed.metrics["recalibrated_origins"]
    assert raw.metrics["coverage_80"] < 0.5  # badly under-covered, as built
    assert fixed.metrics["recalibrated_origins"] >= 5
    # only origins with earlier PITs can be recalibrated: compare on those
    first = splits[0].origin
    late = pl.col("origin") > _add_months(first, 2)

    def cov(result: CandidateBacktest) -> float:
        p = result.predictions.filter(late)
        return float(((p["q_0.1"] <= p["y"]) & (p["y"] <= p["q_0.9"])).mean())

    assert abs(cov(fixed) - 0.8) < abs(cov(raw) - 0.8)
    assert abs(cov(fixed) - 0.8) < 0.1
    assert abs(cov(auto) - 0.8) < 0.1  # widening only is enough here
    # the raw coverage (before recalibration) is the uncalibrated run's coverage
    assert fixed.metrics["raw_coverage_80"] == pytest.approx(raw.metrics["coverage_80"])
    assert raw.metrics["recalibrated_origins"] == 0


def test_conformal_shifts_are_the_level_quantiles_of_earlier_scaled_residuals() -> None:
    origin = date(2023, 6, 1)
    rng = np.random.default_rng(1)
    levels = (0.025, 0.1, 0.5, 0.9, 0.975)
    # residuals of an unbiased forecast whose intervals are half as wide as they should be
    r = {residual_column(q): rng.normal(0, 1, 500) for q in levels}
    hist = pl.DataFrame({"month": [date(2023, 5, 1)] * 500, **r})
    later = pl.DataFrame({"month": [date(2023, 7, 1)] * 500, **{k: v + 100 for k, v in r.items()}})
    shifts = conformal_shifts(levels, pl.concat([hist, later]), origin=origin, mode="conformal")
    for q in levels:  # theory: c_tau is the tau-quantile of the residuals up to the origin only
        assert shifts[q] == pytest.approx(np.quantile(r[residual_column(q)], q))
    assert conformal_shifts(levels, hist.head(50), origin=origin, mode="conformal") == {}
    assert conformal_shifts(levels, hist, origin=origin, mode="none") == {}
    # "auto" leaves a calibrated forecast alone: residuals at level tau have P(r <= 0) = tau
    calibrated = pl.DataFrame(
        {"month": [date(2023, 5, 1)] * 4000}
        | {residual_column(q): rng.normal(0, 1, 4000) - NormalDist().inv_cdf(q) for q in levels}
    )
    assert conformal_shifts(levels, calibrated, origin=origin, mode="auto") == {}
    # ...and an over-covering one (intervals too wide), which it never narrows
    wide = pl.DataFrame(
        {"month": [date(2023, 5, 1)] * 4000}
        | {residual_column(q): rng.normal(0, 0.3, 4000) - NormalDist().inv_cdf(q) for q in levels}
    )
    assert conformal_shifts(levels, wide, origin=origin, mode="auto") == {}
    assert conformal_shifts(levels, wide, origin=origin, mode="conformal") != {}
    # an under-covering one is widened: lower levels down, upper up, the median kept
    auto = conformal_shifts(levels, hist, origin=origin, mode="auto")
    assert auto[0.025] <= 0 and auto[0.1] <= 0 and auto[0.5] == 0
    assert auto[0.9] >= 0 and auto[0.975] >= 0
    assert auto[0.975] == pytest.approx(max(shifts[0.975], 0.0))


def test_training_rows_of_a_sku_inactive_at_their_origin_are_left_out() -> None:
    panel = make_panel(n_sku=4, n_month=30, seed=6)
    months = sorted(panel["month"].unique().to_list())
    # sku0 sells nothing after months[5]: inactive (N = 12) from months[17] on
    panel = panel.with_columns(
        sales=pl.when((pl.col("sku") == "sku0") & (pl.col("month") > months[5]))
        .then(0)
        .otherwise(pl.col("sales"))
    )
    split = prepare_splits(panel, feature_config=CONFIG, n_origins=1)[0]
    kept = active_training_rows(split, 12)
    dropped = split.train.join(kept, on=["sku", "origin", "horizon"], how="anti")
    # exactly sku0's rows with origin >= months[17] (12 months after its last sale), by hand
    expected = split.train.filter((pl.col("sku") == "sku0") & (pl.col("origin") >= months[17]))
    assert dropped.sort("horizon", "origin").equals(expected.sort("horizon", "origin"))
    assert expected.height > 0
    assert active_training_rows(split, 0).equals(split.train)


def test_pit_coverage_is_nominal_for_a_true_count_forecast_where_intervals_over_cover() -> None:
    """y ~ Poisson(0.3) forecast by its own distribution: the 80% interval [q0.1, q0.9] is
    [0, 1] and covers P(y <= 1) = e^-0.3 * 1.3 = 0.963 (closed form), while the randomised
    PIT of the same draws is uniform, so its central 80% holds 80% of the rows."""
    from scipy.stats import poisson

    rng = np.random.default_rng(3)
    n, lam = 20_000, 0.3
    y = rng.poisson(lam, n).astype(float)
    draws = rng.poisson(lam, (n, 400)).astype(float)
    lo, hi = np.quantile(draws, 0.1, axis=1), np.quantile(draws, 0.9, axis=1)
    interval = float(((lo <= y) & (y <= hi)).mean())
    assert interval == pytest.approx(poisson.cdf(1, lam), abs=0.01)
    pit = randomized_pit(y, draws, np.random.default_rng(4))
    assert pit_coverage(pit, 0.8) == pytest.approx(0.8, abs=0.015)
    assert pit_coverage(pit, 0.95) == pytest.approx(0.95, abs=0.01)
    assert np.isnan(pit_coverage(np.array([np.nan]), 0.8))


def test_calibration_origins_calibrate_the_first_scored_origin_and_are_never_scored() -> None:
    panel = make_panel(n_sku=40, n_month=36, seed=8, season=0.0)
    plain = prepare_splits(panel, feature_config=CONFIG, n_origins=4)
    warm = prepare_splits(panel, feature_config=CONFIG, n_origins=4, calibration_origins=None)
    h = CONFIG.horizons
    # None: H further origins, contiguous and before the same scored ones
    assert [s.origin for s in warm if s.scored] == [s.origin for s in plain]
    assert [s.origin for s in warm if not s.scored] == [
        _add_months(plain[0].origin, k) for k in range(-h, 0)
    ]
    assert all(s.scored for s in plain)
    kwargs = {"quantiles": QUANTILES, "n_samples": 200, "seed": 2, "inactive_months": 0}
    before = backtest_candidate("narrow", _TooNarrow, plain, calibration="auto", **kwargs)
    after = backtest_candidate("narrow", _TooNarrow, warm, calibration="auto", **kwargs)
    # the calibration origins are in neither the predictions nor the coverage report
    assert after.predictions.get_column("origin").unique().sort().to_list() == [
        s.origin for s in plain
    ]
    assert after.coverage.equals(before.coverage)
    assert after.coverage.equals(backtest_coverage(warm, inactive_months=0))
    # same fits and draws at the scored origins: only the recalibration differs
    assert after.predictions.get_column("mean").equals(before.predictions.get_column("mean"))
    assert after.metrics["calibration_origins"] == h and before.metrics["calibration_origins"] == 0
    # every scored origin is recalibrated now, the first one included
    assert after.metrics["recalibrated_origins"] == 4
    assert before.metrics["recalibrated_origins"] < 4

    def first_origin_cov(result: CandidateBacktest) -> float:
        p = result.predictions.filter(pl.col("origin") == plain[0].origin)
        return float(((p["q_0.1"] <= p["y"]) & (p["y"] <= p["q_0.9"])).mean())

    assert first_origin_cov(before) < 0.5  # as built: far too narrow, nothing to learn from
    assert abs(first_origin_cov(after) - 0.8) < 0.1
    # the recalibration set (what the published forecast calibrates on) holds every origin
    hist = after.calibration_history
    known = sum(s.test.get_column("sales").is_not_null().sum() for s in warm if not s.scored)
    assert known > 0 and hist.height == known + after.predictions.height
    assert hist.get_column("month").min() == _add_months(warm[0].origin, 1)


def test_calibration_origins_are_lowered_when_implicit_and_refused_when_they_do_not_fit() -> None:
    # 30 months, H = 3, K = 12: the span leaves room for 30 - 6 - 12 = 12 more origins, but
    # only one more has a year of training targets per horizon (12 + H months of history)
    panel = make_panel(n_sku=5, n_month=30, seed=1)
    first = panel["month"].min()
    splits = prepare_splits(panel, feature_config=CONFIG, n_origins=12, calibration_origins=None)
    (calib,) = [s for s in splits if not s.scored]
    assert calib.origin == _add_months(first, 12 + CONFIG.horizons - 1)  # 15 months up to it
    # with fewer scored origins there is room for all H
    splits = prepare_splits(panel, feature_config=CONFIG, n_origins=6, calibration_origins=None)
    assert sum(not s.scored for s in splits) == CONFIG.horizons
    # 14 months: no origin has that history, so none implicitly; an explicit C needs the span
    short = make_panel(n_sku=5, n_month=14, seed=1)
    splits = prepare_splits(short, feature_config=CONFIG, n_origins=6, calibration_origins=None)
    assert all(s.scored for s in splits)
    splits = prepare_splits(short, feature_config=CONFIG, n_origins=6, calibration_origins=2)
    assert sum(not s.scored for s in splits) == 2
    with pytest.raises(InvalidParameterError, match="calibration_origins=3: the panel spans 14"):
        prepare_splits(short, feature_config=CONFIG, n_origins=6, calibration_origins=3)
    with pytest.raises(InvalidParameterError, match="calibration_origins=-1"):
        prepare_splits(short, feature_config=CONFIG, n_origins=6, calibration_origins=-1)


def test_stated_coverage_is_the_probability_the_forecast_gives_its_own_interval() -> None:
    from scipy.stats import poisson

    rng = np.random.default_rng(5)
    n, lam = 400, 0.3
    draws = rng.poisson(lam, (n, 4000)).astype(float)
    frame = pl.DataFrame(
        {f"q_{b:g}": np.quantile(draws, b, axis=1) for b in (0.025, 0.1, 0.9, 0.975)}
    )
    # the 80% interval of Poisson(0.3) is [0, 1]: it holds P(y <= 1) (closed form), not 0.8
    assert frame["q_0.1"].max() == 0 and frame["q_0.9"].min() == 1
    got = stated_coverage(frame["q_0.1"].to_numpy(), frame["q_0.9"].to_numpy(), draws)
    assert got.mean() == pytest.approx(poisson.cdf(1, lam), abs=0.005)
    # a continuous forecast states the nominal level
    normal = rng.normal(10, 2, (n, 4000))
    frame = pl.DataFrame(
        {f"q_{b:g}": np.quantile(normal, b, axis=1) for b in (0.025, 0.1, 0.9, 0.975)}
    )
    for lo, hi, nominal in (("q_0.1", "q_0.9", 0.8), ("q_0.025", "q_0.975", 0.95)):
        got = stated_coverage(frame[lo].to_numpy(), frame[hi].to_numpy(), normal)
        assert got.mean() == pytest.approx(nominal, abs=0.002)


def test_the_backtest_reports_the_stated_coverage_of_the_scored_intervals() -> None:
    panel = make_panel(n_sku=30, n_month=30, seed=4)
    splits = prepare_splits(panel, feature_config=CONFIG, n_origins=2)
    result = backtest_candidate(
        "narrow", _TooNarrow, splits, quantiles=QUANTILES, n_samples=100, seed=1
    )
    p = result.predictions
    # recomputed from the draws' law, not from the draws: rint(mean) + {-1, 0, 1}, each with
    # probability 1/3, clipped at 0; the interval [lo, hi] holds the mass of those values in it
    centre = np.rint(p["mean"].to_numpy())
    for nominal, (lo_col, hi_col) in ((0.8, ("q_0.1", "q_0.9")), (0.95, ("q_0.025", "q_0.975"))):
        lo, hi = p[lo_col].to_numpy(), p[hi_col].to_numpy()
        exact = sum(
            ((lo <= np.clip(centre + d, 0, None)) & (np.clip(centre + d, 0, None) <= hi)) / 3
            for d in (-1, 0, 1)
        )
        column = f"stated_{round(nominal * 100)}"
        assert p[column].is_not_null().all()
        assert result.metrics[f"stated_coverage_{round(nominal * 100)}"] == pytest.approx(
            float(exact.mean()), abs=0.02
        )


class _NeedsLongHistory(RecordingMovingAverage):
    """Refuses to fit on training rows whose last origin is before a given month."""

    first_origin: date = date(1900, 1, 1)

    def fit(self, train: pl.DataFrame, *, history: pl.DataFrame | None = None) -> Self:
        if train["origin"].max() < self.first_origin:
            raise PoolcastError("history too short for this candidate")
        return super().fit(train, history=history)


def test_a_failing_calibration_origin_is_skipped_and_recorded_but_a_scored_one_fails() -> None:
    panel = make_panel(n_sku=10, n_month=36, seed=3)
    splits = prepare_splits(panel, feature_config=CONFIG, n_origins=3, calibration_origins=3)
    kwargs = {"quantiles": QUANTILES, "n_samples": 50, "seed": 2, "calibration": "auto"}
    # the training rows of origin T end at origin T - 1 (their target month is T)
    _NeedsLongHistory.first_origin = _add_months(splits[1].origin, -1)
    result = backtest_candidate("long", _NeedsLongHistory, splits, **kwargs)
    (skipped,) = result.calibration_skipped
    assert skipped.startswith(f"{splits[0].origin}: PoolcastError: history too short")
    assert result.metrics["calibration_origins"] == 2
    assert result.calibration_history.get_column("month").min() == _add_months(splits[1].origin, 1)
    _NeedsLongHistory.first_origin = splits[3].origin  # the first scored origin fails
    with pytest.raises(PoolcastError, match="history too short"):
        backtest_candidate("long", _NeedsLongHistory, splits, **kwargs)


def test_auto_widens_only_the_levels_hit_at_the_wrong_rate() -> None:
    origin = date(2023, 6, 1)
    rng = np.random.default_rng(7)
    n = 4000
    levels = (0.025, 0.1, 0.5, 0.9, 0.975)
    # residuals r = (y - q_tau) / w: a level is hit when r <= 0, so N(0, 1) - z_tau is a level
    # hit at rate tau; the 0.975 level here is hit only at rate 0.90 (z_0.90 instead)
    z = NormalDist().inv_cdf
    cols = {residual_column(q): rng.normal(0, 1, n) - z(q) for q in levels}
    cols[residual_column(0.975)] = rng.normal(0, 1, n) - z(0.90)
    hist = pl.DataFrame({"month": [date(2023, 5, 1)] * n} | cols)
    auto = conformal_shifts(levels, hist, origin=origin, mode="auto")
    assert auto[0.025] == auto[0.1] == auto[0.5] == auto[0.9] == 0.0
    # the widening is the 0.975-quantile of that level's residuals: z_0.975 - z_0.90 in theory
    assert auto[0.975] == pytest.approx(z(0.975) - z(0.90), abs=0.08)
    # a level hit within the tolerance (0.96 for 0.975) is left alone
    cols[residual_column(0.975)] = rng.normal(0, 1, n) - z(0.96)
    near = pl.DataFrame({"month": [date(2023, 5, 1)] * n} | cols)
    assert conformal_shifts(levels, near, origin=origin, mode="auto") == {}
