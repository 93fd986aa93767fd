"""publish_run: versioned by run, idempotent per run, atomic per publish."""

from __future__ import annotations

from datetime import date

import duckdb
import polars as pl
import pytest

from poolcast.errors import InvalidParameterError
from poolcast.publish import forecast_quantiles_long, publish_run, read_table

AS_OF = date(2024, 6, 1)


def _forecast(scale: float = 1.0) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "sku": ["a", "a", "b", "b"],
            "origin": [AS_OF] * 4,
            "horizon": pl.Series([1, 2, 1, 2], dtype=pl.Int32),
            "month": [date(2024, 7, 1), date(2024, 8, 1)] * 2,
            "mean": [1.0 * scale, 2.0 * scale, 3.0 * scale, 4.0 * scale],
            "q_0.5": [1.0, 2.0, 3.0, 4.0],
            "q_0.9": [2.0, 3.0, 5.0, 6.0],
        }
    )


def _board() -> pl.DataFrame:
    return pl.DataFrame({"candidate": ["glm", "glmm"], "scaled_pinball": [0.3, 0.2]})


def test_quantiles_are_stored_long_with_the_wide_values():
    points, long = forecast_quantiles_long(_forecast())
    assert "q_0.5" not in points.columns and points.height == 4
    assert long.height == 8
    wide = _forecast()
    for level, col in ((0.5, "q_0.5"), (0.9, "q_0.9")):
        got = long.filter(pl.col("level") == level).sort("sku", "horizon").get_column("value")
        assert got.to_list() == wide.sort("sku", "horizon").get_column(col).to_list()


def test_publish_writes_every_table_keyed_by_run_and_as_of(tmp_path):
    db = tmp_path / "out" / "outputs.duckdb"
    result = publish_run(
        db,
        run_id="r1",
        as_of=AS_OF,
        tables={"forecasts": _forecast(), "leaderboard": _board()},
        champion="glmm",
    )
    assert result.rows == {"forecasts": 4, "leaderboard": 2, "forecast_quantiles": 8}
    forecasts = read_table(db, "forecasts")
    assert set(forecasts.get_column("run_id")) == {"r1"}
    assert set(forecasts.get_column("as_of")) == {AS_OF}
    runs = read_table(db, "runs")
    assert runs.select("run_id", "as_of", "champion").rows() == [("r1", AS_OF, "glmm")]


def test_publishing_the_same_run_twice_replaces_its_rows(tmp_path):
    db = tmp_path / "outputs.duckdb"
    publish_run(db, run_id="r1", as_of=AS_OF, tables={"forecasts": _forecast()})
    publish_run(db, run_id="r1", as_of=AS_OF, tables={"forecasts": _forecast(scale=10.0)})
    forecasts = read_table(db, "forecasts")
    assert forecasts.height == 4
    assert sorted(forecasts.get_column("mean").to_list()) == [10.0, 20.0, 30.0, 40.0]
    assert read_table(db, "forecast_quantiles").height == 8
    assert read_table(db, "runs").height == 1


def test_runs_are_versions_and_the_latest_view_shows_the_newest(tmp_path):
    db = tmp_path / "outputs.duckdb"
    publish_run(db, run_id="r1", as_of=AS_OF, tables={"forecasts": _forecast()})
    publish_run(db, run_id="r2", as_of=AS_OF, tables={"forecasts": _forecast(scale=2.0)})
    assert read_table(db, "forecasts").height == 8
    assert read_table(db, "forecasts", run_id="r1").get_column("mean").sum() == 10.0
    latest = read_table(db, "latest_forecasts")
    assert set(latest.get_column("run_id")) == {"r2"}
    assert latest.get_column("mean").sum() == 20.0


def test_a_failing_publish_leaves_the_database_as_it_was(tmp_path):
    db = tmp_path / "outputs.duckdb"
    publish_run(
        db, run_id="r1", as_of=AS_OF, tables={"forecasts": _forecast(), "leaderboard": _board()}
    )
    # forecasts go in first, then the leaderboard insert fails (text into a DOUBLE column)
    bad_board = pl.DataFrame({"candidate": ["x"], "scaled_pinball": ["not a number"]})
    with pytest.raises(duckdb.Error):
        publish_run(
            db,
            run_id="r2",
            as_of=AS_OF,
            tables={"forecasts": _forecast(), "leaderboard": bad_board},
        )
    assert set(read_table(db, "forecasts").get_column("run_id")) == {"r1"}
    assert read_table(db, "runs").get_column("run_id").to_list() == ["r1"]
    assert read_table(db, "leaderboard").height == 2


def test_new_columns_are_added_to_an_existing_table(tmp_path):
    db = tmp_path / "outputs.duckdb"
    publish_run(db, run_id="r1", as_of=AS_OF, tables={"leaderboard": _board()})
    publish_run(
        db,
        run_id="r2",
        as_of=AS_OF,
        tables={"leaderboard": _board().with_columns(pl.lit(1.5).alias("crps"))},
    )
    board = read_table(db, "leaderboard").sort("run_id")
    assert board.filter(pl.col("run_id") == "r1").get_column("crps").null_count() == 2
    assert board.filter(pl.col("run_id") == "r2").get_column("crps").to_list() == [1.5, 1.5]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"run_id": ""}, "run_id is empty"),
        ({"tables": {"runs": _board()}}, "not allowed"),
        ({"tables": {"bad name": _board()}}, "not allowed"),
        (
            {"tables": {"leaderboard": _board().with_columns(pl.lit("x").alias("run_id"))}},
            "key column",
        ),
    ],
)
def test_invalid_arguments_are_rejected(tmp_path, kwargs, match):
    args = {"run_id": "r1", "as_of": AS_OF, "tables": {"leaderboard": _board()}} | kwargs
    with pytest.raises(InvalidParameterError, match=match):
        publish_run(tmp_path / "o.duckdb", **args)
    assert not (tmp_path / "o.duckdb").exists()
