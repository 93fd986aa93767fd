"""Run summary, data-quality and leaderboard rows, per-candidate tables and plots."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from matplotlib.figure import Figure

from poolcast.backtest import backtest_candidate, prepare_splits
from poolcast.config import FeatureConfig
from poolcast.models.base import CandidateReport
from poolcast.models.baselines import SeasonalNaive
from poolcast.reporting import (
    CandidateFailure,
    CandidateRun,
    RetrainSummary,
    candidate_figures,
    candidate_metrics,
    candidate_params,
    candidate_tables,
    data_quality_rows,
    describe_candidate,
    failures_of,
    leaderboard_rows,
    quality_counts,
    quality_table,
    split_outcomes,
    summary_markdown,
    summary_text,
)
from poolcast.simulate import simulate_panel

BOARD = pl.DataFrame(
    {
        "candidate": ["glmm", "glm", "boom"],
        "status": ["ok", "ok", "failed"],
        "error": [None, None, "RuntimeError: no"],
        "scaled_pinball": [0.123456789, 0.2, None],
        "mase": [0.9, math.nan, None],
    }
)


@pytest.fixture(scope="module")
def backtest():
    panel = simulate_panel(5, 30, seed=2).frame.with_columns(
        pl.lit(False).alias("is_gap"), pl.lit(None, pl.Int64).alias("on_hand")
    )
    splits = prepare_splits(panel, feature_config=FeatureConfig(horizons=2), n_origins=2)
    result = backtest_candidate(
        "seasonal_naive", SeasonalNaive, splits, quantiles=(0.5, 0.9), n_samples=30, seed=1
    )
    return panel, splits, result


def _summary(**kw) -> RetrainSummary:
    base = dict(
        as_of=date(2024, 6, 1),
        rows_in=10,
        rows_accepted=8,
        rows_quarantined=2,
        n_skus=3,
        leaderboard=BOARD,
        failures={"boom": "RuntimeError: no"},
        champion="glmm",
        champion_version="4",
        alias_moved=True,
        alias_reason="better",
        mlflow_run_id="abc",
        mlflow_run_url="http://x/#/runs/abc",
        outputs_db=Path("out.duckdb"),
        forecast_rows=6,
    )
    return RetrainSummary(**(base | kw))


def test_data_quality_rows_count_quarantine_lines_per_rule():
    quarantine = pl.DataFrame(
        {
            "row": [1, 2, 2, 5],
            "rule": ["sales_negative", "sku_null", "sales_negative", "exact_duplicate"],
        }
    )
    rows = data_quality_rows({"rows_in": 10, "rows_accepted": 7, "rows_quarantined": 3}, quarantine)
    assert rows[:3] == [
        {"check": "rows_in", "rows": 10},
        {"check": "rows_accepted", "rows": 7},
        {"check": "rows_quarantined", "rows": 3},
    ]
    assert rows[3] == {"check": "quarantined: sales_negative", "rows": 2}
    assert {r["check"] for r in rows[4:]} == {
        "quarantined: sku_null",
        "quarantined: exact_duplicate",
    }


def test_leaderboard_rows_round_and_blank_non_finite_values():
    rows = leaderboard_rows(
        BOARD, columns=["candidate", "scaled_pinball", "mase", "absent"], digits=3
    )
    assert rows[0] == {"candidate": "glmm", "scaled_pinball": 0.123, "mase": 0.9}
    assert rows[1]["mase"] is None and rows[2]["scaled_pinball"] is None


def test_failures_and_outcomes_are_split_by_kind(backtest):
    _, _, result = backtest
    assert failures_of(BOARD) == {"boom": "RuntimeError: no"}
    failure = CandidateFailure("boom", "RuntimeError", "no")
    results, failures = split_outcomes([CandidateRun(result), failure])
    assert results == [result] and failures == {"boom": "RuntimeError: no"}


def test_summary_markdown_and_text_show_counts_champion_and_failures():
    md = summary_markdown(_summary())
    assert "| 10 | 8 | 2 | 3 |" in md
    assert "**glmm**" in md and "moved" in md and "http://x/#/runs/abc" in md
    assert "`boom`: RuntimeError: no" in md
    text = summary_text(_summary())
    assert "rows in 10 = accepted 8 + quarantined 2" in text
    assert "leaderboard top: glmm, glm" in text  # failed candidates never top the board
    assert str(_summary()) == text


def test_candidate_metrics_flatten_overall_and_per_horizon(backtest):
    _, _, result = backtest
    metrics = candidate_metrics(result)
    assert metrics["scaled_pinball"] == result.metrics["scaled_pinball"]
    h2 = result.horizon_metrics.filter(pl.col("horizon") == 2).row(0, named=True)
    assert metrics["h2_mase"] == pytest.approx(h2["mase"])
    assert metrics["fit_seconds"] == result.fit_seconds


def test_candidate_figures_and_tables_for_a_baseline(backtest):
    panel, splits, result = backtest
    report = describe_candidate(SeasonalNaive, splits[-1])
    figures = candidate_figures(result, panel, report)
    assert {"fan_chart", "calibration"} <= set(figures)
    assert all(isinstance(f, Figure) for f in figures.values())
    tables = candidate_tables(result, report)
    assert tables["per_sku_metrics"].height == 5
    assert candidate_params(report) == {f"param.{k}": v for k, v in report.params.items()}


def test_glmm_reports_add_shrinkage_and_caterpillar_plots(backtest):
    panel, _, result = backtest
    skus = panel.get_column("sku").unique().sort().to_list()
    ranef = pl.DataFrame(
        {"sku": skus, "term": "(Intercept)", "mode": [0.1 * i for i in range(5)], "cond_sd": 0.05}
    ).with_columns(pl.lit(1, pl.Int32).alias("horizon"))
    shrink = pl.DataFrame(
        {"sku": skus, "n_obs": [10] * 5, "raw": [1.0, 2, 3, 4, 5], "pooled": [1.5, 2, 3, 4, 4.5]}
    ).with_columns(pl.lit(1, pl.Int32).alias("horizon"))
    report = CandidateReport(
        name="glmm",
        params={},
        formulas={1: "y ~ 1 + (1 | sku)"},
        coefficients=None,
        random_effects=ranef,
        shrinkage=shrink,
        sku_effects=None,
        convergence={},
    )
    figures = candidate_figures(result, panel, report)
    assert {"fan_chart", "calibration", "shrinkage", "caterpillar"} == set(figures)
    assert candidate_params(report)["formula.h1"] == "y ~ 1 + (1 | sku)"


def test_quality_counts_read_a_validation_result():
    from poolcast.validation import QualityCounts

    counts = QualityCounts(
        rows_in=10,
        rows_accepted=7,
        rows_quarantined=3,
        duplicates_collapsed=1,
        gaps=2,
        skus=2,
        months=5,
        first_month=date(2024, 1, 1),
        last_month=date(2024, 5, 1),
        by_rule={"sales_negative": 2, "sku_null": 1},
    )
    full = quality_counts(counts)
    assert full["rows_in"] == full["rows_accepted"] + full["rows_quarantined"]
    assert (
        full["gap_months"] == 2 and full["rule_sales_negative"] == 2 and full["rule_sku_null"] == 1
    )
    assert "rule_sku_null" not in quality_counts(counts, by_rule=False)
    table = quality_table(counts)
    assert table.height == 1 and table.schema["last_month"] == pl.Date
    assert table.row(0, named=True)["rows_quarantined"] == 3
