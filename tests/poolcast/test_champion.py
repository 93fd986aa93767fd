"""Champion forecaster, backtest fingerprint and the alias rule."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from poolcast.backtest import backtest_candidate, build_leaderboard, prepare_splits
from poolcast.champion import (
    TAG_CANDIDATE,
    TAG_FINGERPRINT,
    TAG_SCORE,
    ChampionRecord,
    backtest_fingerprint,
    decide_alias,
    fit_champion,
    leaderboard_score,
    make_rescorer,
)
from poolcast.config import FeatureConfig
from poolcast.features import build_forecast_frame
from poolcast.models.baselines import MovingAverage, SeasonalNaive
from poolcast.simulate import simulate_panel

FEATURES = FeatureConfig(horizons=2)
QUANTILES = (0.5, 0.9)


@pytest.fixture(scope="module")
def panel() -> pl.DataFrame:
    frame = simulate_panel(6, 30, seed=3).frame
    return frame.with_columns(
        pl.lit(False).alias("is_gap"), pl.lit(None, pl.Int64).alias("on_hand")
    )


@pytest.fixture(scope="module")
def splits(panel):
    return prepare_splits(panel, feature_config=FEATURES, n_origins=2)


def _never(name: str) -> float | None:
    raise AssertionError(f"rescore({name!r}) must not be called")


def _current(score: float, fingerprint: str = "fp") -> ChampionRecord:
    return ChampionRecord(version="3", candidate="glm", score=score, fingerprint=fingerprint)


# --- alias rule ---------------------------------------------------------------------------


def test_alias_moves_when_there_is_no_champion():
    decision = decide_alias(new_score=1.0, fingerprint="fp", current=None, rescore=_never)
    assert decision.move and decision.current_version is None


def test_alias_moves_when_better_on_the_same_backtest():
    decision = decide_alias(new_score=0.5, fingerprint="fp", current=_current(0.6), rescore=_never)
    assert decision.move and decision.current_score == 0.6 and decision.reason.startswith("better")


def test_alias_stays_when_worse_on_the_same_backtest():
    decision = decide_alias(new_score=0.7, fingerprint="fp", current=_current(0.6), rescore=_never)
    assert not decision.move and decision.current_version == "3"


def test_alias_stays_on_a_tie_on_the_same_backtest():
    decision = decide_alias(new_score=0.6, fingerprint="fp", current=_current(0.6), rescore=_never)
    assert not decision.move


def test_new_backtest_rescores_the_current_champion_by_candidate_name():
    asked = []

    def rescore(name):
        asked.append(name)
        return 0.4

    worse = decide_alias(
        new_score=0.5, fingerprint="new", current=_current(0.1, "old"), rescore=rescore
    )
    assert asked == ["glm"] and not worse.move and worse.current_score == 0.4
    better = decide_alias(
        new_score=0.3, fingerprint="new", current=_current(9.9, "old"), rescore=rescore
    )
    assert better.move
    tie = decide_alias(
        new_score=0.4, fingerprint="new", current=_current(9.9, "old"), rescore=rescore
    )
    assert tie.move and tie.reason.startswith("tie on a new backtest")


def test_alias_moves_when_the_current_champion_cannot_be_rescored():
    decision = decide_alias(
        new_score=0.5, fingerprint="new", current=_current(0.1, "old"), rescore=lambda _: None
    )
    assert decision.move and "cannot be scored" in decision.reason


def test_alias_stays_when_the_new_score_is_not_finite():
    decision = decide_alias(
        new_score=math.nan, fingerprint="fp", current=_current(0.6), rescore=_never
    )
    assert not decision.move


def test_record_from_tags_reads_the_version_tags():
    record = ChampionRecord.from_tags(
        "7", {TAG_CANDIDATE: "glmm", TAG_SCORE: "0.25", TAG_FINGERPRINT: "abc"}
    )
    assert record == ChampionRecord("7", "glmm", 0.25, "abc")
    assert math.isnan(ChampionRecord.from_tags("1", {}).score)


# --- fingerprint --------------------------------------------------------------------------


def test_fingerprint_ignores_row_order_and_sees_data_origins_and_metric(panel, splits):
    origins = [s.origin for s in splits]
    base = backtest_fingerprint(panel, origins=origins, horizons=2, metric="scaled_pinball")
    shuffled = panel.sample(fraction=1.0, shuffle=True, seed=1)
    assert (
        backtest_fingerprint(shuffled, origins=origins, horizons=2, metric="scaled_pinball") == base
    )
    changed = panel.with_columns(
        pl.when(pl.int_range(pl.len()) == 0)
        .then(pl.col("sales") + 1)
        .otherwise(pl.col("sales"))
        .alias("sales")
    )
    assert (
        backtest_fingerprint(changed, origins=origins, horizons=2, metric="scaled_pinball") != base
    )
    assert (
        backtest_fingerprint(panel, origins=origins[:1], horizons=2, metric="scaled_pinball")
        != base
    )
    assert backtest_fingerprint(panel, origins=origins, horizons=3, metric="scaled_pinball") != base
    assert backtest_fingerprint(panel, origins=origins, horizons=2, metric="mase") != base


# --- forecaster and re-scoring ------------------------------------------------------------


def test_champion_forecaster_predicts_the_same_from_pandas_and_polars(panel):
    forecaster = fit_champion(
        "seasonal_naive", SeasonalNaive, panel, FEATURES, quantiles=QUANTILES, n_samples=50, seed=1
    )
    rows = build_forecast_frame(panel, forecaster.spec)
    direct = forecaster.predict_frame(rows)
    via_pandas = pl.from_pandas(forecaster.predict(None, rows.to_pandas()))
    assert direct.height == 6 * 2
    assert set(direct.columns) >= {"sku", "origin", "horizon", "month", "mean", "q_0.5", "q_0.9"}
    np.testing.assert_allclose(
        via_pandas.get_column("mean").to_numpy(), direct.get_column("mean").to_numpy()
    )
    np.testing.assert_allclose(
        via_pandas.get_column("q_0.9").to_numpy(), direct.get_column("q_0.9").to_numpy()
    )
    # the forecast starts after the panel's last month
    assert direct.get_column("month").min() > panel.get_column("month").max()
    assert forecaster.forecast(panel).equals(direct)


def test_leaderboard_score_reads_ok_rows_only():
    board = pl.DataFrame(
        {"candidate": ["a", "b"], "status": ["ok", "failed"], "scaled_pinball": [0.3, None]}
    )
    assert leaderboard_score(board, "a", metric="scaled_pinball") == 0.3
    assert leaderboard_score(board, "b", metric="scaled_pinball") is None
    assert leaderboard_score(board, "zzz", metric="scaled_pinball") is None
    assert leaderboard_score(board, "a", metric="not_a_metric") is None


def test_rescorer_reuses_the_leaderboard_and_refits_a_class_that_did_not_compete(splits):
    kw = {"quantiles": QUANTILES, "n_samples": 50, "seed": 5}
    ma = backtest_candidate("moving_average", MovingAverage, splits, **kw)
    board = build_leaderboard([ma], {})

    def exploding_factory():
        raise AssertionError("the leaderboard score must be reused, not refitted")

    rescore = make_rescorer(
        board,
        {"moving_average": exploding_factory, "seasonal_naive": SeasonalNaive},
        splits,
        metric="scaled_pinball",
        **kw,
    )
    assert rescore("moving_average") == pytest.approx(ma.metrics["scaled_pinball"])
    independent = backtest_candidate("seasonal_naive", SeasonalNaive, splits, **kw)
    assert rescore("seasonal_naive") == pytest.approx(independent.metrics["scaled_pinball"])
    assert rescore("retired_candidate") is None


# --- one path (issue 7) -------------------------------------------------------------------


def _one_path_panel() -> pl.DataFrame:
    """A simulated NB2 panel; sku S0000 stops selling 14 months before the cut (inactive)."""
    frame = simulate_panel(40, 36, family="negbin", seed=11).frame
    skus = sorted(frame.get_column("sku").unique().to_list())
    dead = pl.col("sku") == skus[0]
    frame = frame.with_columns(
        sales=pl.when(dead & (pl.col("month") > pl.date(2021, 5, 1)))
        .then(0)
        .otherwise(pl.col("sales"))
    )
    return frame.with_columns(
        pl.lit(False).alias("is_gap"), pl.lit(None, pl.Int64).alias("on_hand")
    )


@pytest.mark.parametrize("calibration", ["none", "pit", "conformal"])
def test_published_forecast_equals_the_backtest_forecast_at_that_origin(calibration):
    from poolcast.models.glmm import GlmmNegBinRandomIntercept

    panel = _one_path_panel()
    features = FeatureConfig(horizons=3)
    splits = prepare_splits(panel, feature_config=features, n_origins=8)
    cut = splits[-2].origin  # an origin with three months of truth after it
    options = {
        "quantiles": (0.5, 0.8, 0.9),
        "n_samples": 200,
        "seed": 5,
    }
    publish = (0.025, 0.05, 0.25, 0.75, 0.975, 0.99)
    bt = backtest_candidate(
        "glmm_nb2_ri",
        GlmmNegBinRandomIntercept,
        splits,
        publish_quantiles=publish,
        inactive_months=12,
        calibration=calibration,
        **options,
    )
    history = panel.filter(pl.col("month") <= cut)
    plan = panel.filter(pl.col("month") > cut).select("sku", "month", "promo")
    forecaster = fit_champion(
        "glmm_nb2_ri",
        GlmmNegBinRandomIntercept,
        history,
        features,
        publish_quantiles=publish,
        inactive_months=12,
        calibration=calibration,
        calibration_history=bt.predictions,
        **options,
    )
    published = forecaster.forecast(history, future=plan).sort("horizon", "sku")
    at_cut = pl.concat(
        [
            bt.predictions.filter(pl.col("origin") == cut).with_columns(
                reason=pl.lit(None, pl.String)
            ),
            bt.inactive.filter(pl.col("origin") == cut),
        ],
        how="diagonal",
    ).sort("horizon", "sku")
    qcols = [c for c in published.columns if c.startswith("q_")]
    assert len(qcols) == 10  # service (3) + published (6) + the interval bound 0.1
    assert published.height == at_cut.height == 40 * 3
    assert published.select("sku", "horizon", "month").equals(
        at_cut.select("sku", "horizon", "month")
    )
    for col in ["mean", *qcols]:
        np.testing.assert_array_equal(published[col].to_numpy(), at_cut[col].to_numpy())
    assert published["reason"].equals(at_cut["reason"])
    # the inactive SKU is forecast exactly zero, with its reason, in both
    dead = published.filter(pl.col("reason").is_not_null())
    assert dead["sku"].unique().to_list() == [sorted(panel["sku"].unique().to_list())[0]]
    assert dead.height == 3 and dead["reason"].unique().to_list() == ["inactive_12_months"]
    assert (dead.select(["mean", *qcols]).to_numpy() == 0).all()
    if calibration != "none":
        assert bt.metrics["recalibrated_origins"] > 0
