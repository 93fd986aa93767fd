"""Compete tasks through ``.fn()``: a raising candidate becomes a recorded failure."""

from __future__ import annotations

from dataclasses import replace

import polars as pl
import pytest

from poolcast.backtest import prepare_splits
from poolcast.config import BacktestConfig, FeatureConfig, PipelineConfig
from poolcast.models.baselines import MovingAverage, SeasonalNaive
from poolcast.models.registry import AGQ_MAX_SKUS
from poolcast.reporting import CandidateFailure, CandidateRun
from poolcast.simulate import simulate_panel
from tasks import compete

CONFIG = PipelineConfig(
    features=FeatureConfig(horizons=2),
    backtest=BacktestConfig(n_origins=2, n_samples=30, quantiles=(0.5, 0.9)),
)


class Exploding(SeasonalNaive):
    def fit(self, train, *, history=None):
        raise ZeroDivisionError("the model blew up")


class FailsItsDiagnostics(SeasonalNaive):
    """Reports ineligibility after fitting, as the Bayesian candidate does when R-hat,
    bulk ESS or divergences fail (one origin only: one bad origin is enough)."""

    def fit(self, train, *, history=None):
        super().fit(train, history=history)
        first = str(train.get_column("month").max()) < "2022-02-01"  # origin 2022-01
        self.ineligible_reason_ = "rhat_max=1.2 > 1.01" if first else None
        return self


@pytest.fixture(scope="module")
def splits():
    panel = simulate_panel(4, 28, seed=6).frame.with_columns(
        pl.lit(False).alias("is_gap"), pl.lit(None, pl.Int64).alias("on_hand")
    )
    return prepare_splits(panel, feature_config=CONFIG.features, n_origins=2)


def test_a_raising_candidate_is_recorded_with_its_error_type_and_message(splits):
    outcome = compete.compete.fn("exploding", Exploding, splits, CONFIG)
    assert outcome == CandidateFailure("exploding", "ZeroDivisionError", "the model blew up")


def test_a_working_candidate_returns_its_backtest_and_description(splits):
    outcome = compete.compete.fn("seasonal_naive", SeasonalNaive, splits, CONFIG)
    assert isinstance(outcome, CandidateRun) and outcome.name == "seasonal_naive"
    assert outcome.report.name == SeasonalNaive().name
    assert set(outcome.result.predictions.get_column("origin")) == {s.origin for s in splits}


def test_leaderboard_puts_failures_last_and_select_skips_them(splits):
    outcomes = [
        compete.compete.fn("exploding", Exploding, splits, CONFIG),
        compete.compete.fn("moving_average", MovingAverage, splits, CONFIG),
        compete.compete.fn("seasonal_naive", SeasonalNaive, splits, CONFIG),
    ]
    board = compete.leaderboard.fn(outcomes, CONFIG)
    assert board.get_column("status").to_list() == ["ok", "ok", "failed"]
    assert board.row(2, named=True)["error"] == "ZeroDivisionError: the model blew up"
    assert compete.select.fn(board, CONFIG) == board.row(0, named=True)["candidate"]


def test_lineup_passes_what_the_data_has_and_the_configured_names():
    class Validated:
        panel = pl.DataFrame({"sku": ["a", "b"], "promo": pl.Series([0, 1], dtype=pl.Int8)})
        has_customers = False

    lineup = compete.candidate_lineup.fn(CONFIG, Validated())
    assert {"seasonal_naive", "glmm_poisson_ri_slope"} <= set(lineup)  # promo varies: slope GLMMs
    assert "glmm_poisson_ri_agq" in lineup  # 2 SKUs: AGQ is affordable
    Validated.panel = pl.DataFrame({"sku": ["a", "b"], "promo": pl.Series([0, 0], dtype=pl.Int8)})
    assert "glmm_poisson_ri_slope" not in compete.candidate_lineup.fn(CONFIG, Validated())
    only = replace(CONFIG, backtest=replace(CONFIG.backtest, candidates=("moving_average",)))
    assert list(compete.candidate_lineup.fn(only, Validated())) == ["moving_average"]


def test_lineup_drops_agq_above_agq_max_skus_unless_named():
    n = AGQ_MAX_SKUS + 1

    class Validated:
        panel = pl.DataFrame(
            {
                "sku": [f"s{i}" for i in range(n)],
                "promo": pl.Series([0, 1] * (n // 2) + [0] * (n % 2), dtype=pl.Int8),
            }
        )
        has_customers = True

    lineup = compete.candidate_lineup.fn(CONFIG, Validated())
    assert "glmm_poisson_ri_agq" not in lineup and "glmm_poisson_ri" in lineup
    named = replace(CONFIG, backtest=replace(CONFIG.backtest, candidates=("glmm_poisson_ri_agq",)))
    assert list(compete.candidate_lineup.fn(named, Validated())) == ["glmm_poisson_ri_agq"]


def test_eligibility_sets_aside_candidates_that_need_a_missing_plan():
    from datetime import date

    from poolcast.models.registry import default_candidates

    panel = pl.DataFrame(
        {
            "sku": ["a", "a", "b", "b"],
            "month": [date(2024, 1, 1), date(2024, 2, 1)] * 2,
            "promo": pl.Series([0, 1, 1, 0], dtype=pl.Int8),
            "open_days": [25.0, 24.0, 26.0, 25.0],
        }
    )
    factories = default_candidates(
        has_customers=False,
        has_promo=True,
        names=("seasonal_naive", "glm_poisson_pooled", "glmm_nb2_ri"),
        plan_columns=("promo", "open_days"),
    )
    assert factories["glmm_nb2_ri"]().required_plan_columns == ("promo", "open_days")
    assert factories["seasonal_naive"]().required_plan_columns == ()
    eligible, ineligible = compete.eligibility.fn(factories, panel, None, CONFIG)
    assert list(eligible) == ["seasonal_naive"]
    assert ineligible == dict.fromkeys(
        ("glm_poisson_pooled", "glmm_nb2_ri"),
        "needs plan column(s) ['open_days', 'promo'] for 2024-03..2024-04; run with --plan",
    )
    # without promotions in the data, promo is no plan column anyone needs
    flat = panel.with_columns(pl.lit(0, pl.Int8).alias("promo")).drop("open_days")
    lineup = default_candidates(has_customers=False, has_promo=False, names=("glm_poisson_pooled",))
    assert compete.eligibility.fn(lineup, flat, None, CONFIG) == (lineup, {})


def test_an_ineligible_candidate_keeps_its_metrics_and_cannot_be_champion(splits):
    bad = compete.compete.fn("diag", FailsItsDiagnostics, splits, CONFIG)
    assert isinstance(bad, CandidateRun) and bad.ineligible_reason == "rhat_max=1.2 > 1.01"
    good = compete.compete.fn("moving_average", MovingAverage, splits, CONFIG)
    assert good.ineligible_reason is None
    board = compete.leaderboard.fn([bad, good], CONFIG)
    row = board.filter(pl.col("candidate") == "diag").row(0, named=True)
    assert row["status"] == "ineligible" and row["error"] == "rhat_max=1.2 > 1.01"
    assert row["scaled_pinball"] == bad.result.metrics["scaled_pinball"]
    assert compete.select.fn(board, CONFIG) == "moving_average"
