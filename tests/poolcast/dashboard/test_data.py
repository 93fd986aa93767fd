"""The dashboard's data access: real numbers from the published database, and a missing table,
view or file reported as ``Unavailable`` instead of raised. Expected values are the constants
of ``conftest.py`` worked out by hand."""

from __future__ import annotations

from datetime import date

import duckdb
import polars as pl
import pytest

from poolcast.dashboard import data
from poolcast.dashboard.data import Outputs, Unavailable
from poolcast.publish import publish_run


def test_a_missing_file_is_unavailable_not_an_error(tmp_path):
    outputs = Outputs(tmp_path / "nowhere.duckdb")
    for result in (
        outputs.check(),
        data.run_history(outputs),
        data.inventory_plan(outputs),
        data.latest_leaderboard(outputs),
    ):
        assert isinstance(result, Unavailable)
        assert "no outputs database yet" in result.message


def test_a_file_that_is_not_a_database_is_named(tmp_path):
    bogus = tmp_path / "outputs.duckdb"
    bogus.write_text("sku,month\n")
    result = data.run_history(Outputs(bogus))
    assert isinstance(result, Unavailable)
    assert str(bogus) in result.message and "cannot be read" in result.message


def test_run_history_has_the_counts_of_every_run(published):
    runs = data.run_history(Outputs(published))
    assert runs.select(
        "run_id",
        "as_of",
        "champion",
        "registry_version",
        "rows_in",
        "rows_accepted",
        "rows_quarantined",
    ).rows() == [
        ("run-may", date(2024, 5, 1), "seasonal_naive", "1", 100, 97, 3),
        ("run-june", date(2024, 6, 1), "moving_average", "2", 110, 108, 2),
    ]


def test_quarantine_by_rule_per_run(published):
    rules = data.quarantine_by_rule(Outputs(published))
    assert rules.select("run_id", "rule", "rows").rows() == [
        ("run-may", "sales_negative", 2),
        ("run-may", "sku_null", 1),
        ("run-june", "sales_negative", 2),
    ]


def test_quarantine_by_rule_is_counted_from_the_rows_without_a_summary(published):
    con = duckdb.connect(str(published))
    con.execute("DROP VIEW latest_quarantine_summary")
    con.execute("DROP TABLE quarantine_summary")
    con.close()
    rules = data.quarantine_by_rule(Outputs(published))
    assert rules.select("run_id", "rule", "rows").rows() == [
        ("run-may", "sales_negative", 2),
        ("run-may", "sku_null", 1),
        ("run-june", "sales_negative", 2),
    ]


def test_the_latest_leaderboard_and_the_champion_history(published):
    outputs = Outputs(published)
    board = data.latest_leaderboard(outputs)
    assert board.select("candidate", "scaled_pinball").rows() == [
        ("moving_average", 1.2),
        ("seasonal_naive", 1.4),
    ]
    history = data.champion_history(outputs)
    assert history.select("as_of", "champion", "registry_version", "scaled_pinball").rows() == [
        (date(2024, 5, 1), "seasonal_naive", "1", 1.5),
        (date(2024, 6, 1), "moving_average", "2", 1.2),
    ]


def test_a_backfill_of_an_older_as_of_does_not_become_latest(published):
    """Re-publishing May after June: latest stays June (greatest as-of, then latest run)."""
    publish_run(
        published,
        run_id="run-may-again",
        as_of=date(2024, 5, 1),
        tables={"leaderboard": pl.DataFrame({"candidate": ["x"], "scaled_pinball": [9.0]})},
        champion="x",
    )
    outputs = Outputs(published)
    assert data.latest_run(outputs).item(0, "run_id") == "run-june"
    assert data.latest_leaderboard(outputs).get_column("run_id").unique().to_list() == ["run-june"]


def test_fan_data_has_history_mean_and_every_quantile(published):
    history, forecast = data.fan_data(Outputs(published), "A")
    # history of A in June's run: 10 + k for k months back, k = 0..5
    assert history.rows() == [(date(2024, m, 1), 10 + 6 - m) for m in range(1, 7)]
    assert forecast.columns == [
        "month",
        "horizon",
        "mean",
        "q_0_025",
        "q_0_1",
        "q_0_25",
        "q_0_5",
        "q_0_75",
        "q_0_9",
        "q_0_975",
    ]
    first = forecast.row(0, named=True)
    assert first["month"] == date(2024, 7, 1) and first["mean"] == 12.0
    # the fixture's quantile is mean * (0.5 + level)
    assert first["q_0_025"] == pytest.approx(12.0 * 0.525)
    assert first["q_0_975"] == pytest.approx(12.0 * 1.475)
    assert forecast.get_column("mean").to_list() == [12.0, 13.0]


def test_the_inventory_plan_is_the_latest_runs(published):
    plan = data.inventory_plan(Outputs(published))
    assert plan.get_column("sku").to_list() == ["A", "B", "C"]
    assert set(plan.get_column("run_id")) == {"run-june"}
    assert plan.get_column("category").to_list() == ["toys", "food", "toys"]


def test_todays_publication_reports_what_is_not_published_yet(published_today):
    outputs = Outputs(published_today)
    plan = data.inventory_plan(outputs)
    assert isinstance(plan, Unavailable) and plan.message == "inventory_plan: not published yet"
    rules = data.quarantine_by_rule(outputs)
    assert isinstance(rules, Unavailable) and "not published yet" in rules.message
    # without latest_leaderboard the latest run's rows come from leaderboard + runs
    board = data.latest_leaderboard(outputs)
    assert board.get_column("candidate").to_list() == ["moving_average", "seasonal_naive"]
    runs = data.run_history(outputs)
    # the real publish records each run's registry version (RUNS: "1" in May, "2" in June)
    assert runs.get_column("registry_version").to_list() == ["1", "2"]
    assert runs.get_column("rows_in").to_list() == [100, 110]


def test_readers_do_not_hold_the_database_open(published):
    """After every read the file opens read-write at once (a publish is never kept waiting)."""
    outputs = Outputs(published)
    data.run_history(outputs)
    data.fan_data(outputs, "A")
    data.inventory_plan(outputs)
    con = duckdb.connect(str(published))  # raises if a reader still held a lock
    con.execute("CREATE TABLE probe AS SELECT 1 AS x")
    con.close()


def test_the_previous_as_of_is_compared(published):
    previous, f_now, f_before, p_now, p_before = data.month_comparison(
        Outputs(published), "run-june"
    )
    assert previous == {"run_id": "run-may", "as_of": date(2024, 5, 1)}
    # sum of the means over both horizons
    assert f_now.rows() == [("A", 25.0), ("B", 29.0), ("C", 10.0)]
    assert f_before.rows() == [("A", 21.0), ("B", 41.0), ("C", 10.0)]
    assert p_now.height == p_before.height == 3
    first, *_ = data.month_comparison(Outputs(published), "run-may")
    assert first is None
