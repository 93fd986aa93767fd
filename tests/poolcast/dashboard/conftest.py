"""A small published outputs database for the dashboard tests.

Two runs written by the real :func:`poolcast.publish.publish_run` (forecasts with quantiles,
leaderboard, data quality, history), then the STAND-IN tables and views of issue 9's publication
(``write_standin_publication`` in ``tests/conftest.py``; replace it by a real small run after
the merge with the "publish" branch). Every number is a constant of this file, so the tests'
expected values are written down by hand.
"""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from poolcast.publish import publish_run

LEVELS = (0.025, 0.1, 0.25, 0.5, 0.75, 0.9, 0.975)
SKUS = ("A", "B", "C")

#: run id -> (as_of, champion, registry version, {sku: [mean h1, mean h2]}, rows in, quarantine)
RUNS = {
    "run-may": (
        date(2024, 5, 1),
        "seasonal_naive",
        "1",
        {"A": [10.0, 11.0], "B": [20.0, 21.0], "C": [5.0, 5.0]},
        100,
        {"sales_negative": 2, "sku_null": 1},
    ),
    "run-june": (
        date(2024, 6, 1),
        "moving_average",
        "2",
        {"A": [12.0, 13.0], "B": [14.0, 15.0], "C": [5.0, 5.0]},
        110,
        {"sales_negative": 2},
    ),
}
BOARDS = {
    "run-may": [("seasonal_naive", "ok", 1.5, 0.9), ("moving_average", "ok", 1.7, 1.1)],
    "run-june": [("moving_average", "ok", 1.2, 0.8), ("seasonal_naive", "ok", 1.4, 0.95)],
}


def quantile(mean: float, level: float) -> float:
    """The fixture's quantile: mean * (0.5 + level) (monotone in the level)."""
    return mean * (0.5 + level)


def _add_month(d: date, k: int) -> date:
    m = d.month - 1 + k
    return date(d.year + m // 12, m % 12 + 1, 1)


def _tables(run_id: str) -> dict[str, pl.DataFrame]:
    as_of, _, _, means, rows_in, quarantine = RUNS[run_id]
    forecast_rows = []
    for sku, values in means.items():
        for h, mean in enumerate(values, start=1):
            row = {"sku": sku, "origin": as_of, "horizon": h, "month": _add_month(as_of, h)}
            row["mean"] = mean
            row |= {f"q_{lv}": quantile(mean, lv) for lv in LEVELS}
            forecast_rows.append(row)
    board = pl.DataFrame(
        BOARDS[run_id], schema=["candidate", "status", "scaled_pinball", "mase"], orient="row"
    ).with_columns(pl.lit(None, pl.String).alias("error"))
    n_bad = sum(quarantine.values())
    quality = pl.DataFrame(
        [
            {
                "rows_in": rows_in,
                "rows_accepted": rows_in - n_bad,
                "rows_quarantined": n_bad,
                "gap_months": 0,
                "skus": 3,
                "months": 6,
            }
        ]
    )
    history = pl.DataFrame(
        [
            {"sku": sku, "month": _add_month(as_of, -k), "sales": 10 * (i + 1) + k}
            for i, sku in enumerate(SKUS)
            for k in range(6)
        ]
    )
    return {
        "forecasts": pl.DataFrame(forecast_rows),
        "leaderboard": board,
        "data_quality": quality,
        "history": history,
    }


def publish_fixture(db, *, standin: bool, standin_publication=None) -> None:
    """Publish both runs (oldest first) with the real publish; add the stand-in when asked."""
    for run_id, (as_of, champion, version, _, _, quarantine) in RUNS.items():
        publish_run(
            db,
            run_id=run_id,
            as_of=as_of,
            tables=_tables(run_id),
            champion=champion,
            registry_version=version,
        )
        if standin:
            standin_publication(
                db,
                run_id,
                registry_version=version,
                quarantine=quarantine,
                categories={"A": "toys", "B": "food", "C": "toys"},
                service_levels={"A": 0.95, "B": 0.9, "C": 0.99},
            )


@pytest.fixture
def published(tmp_path, standin_publication):
    """Outputs database with both runs and the stand-in publication tables."""
    db = tmp_path / "outputs.duckdb"
    publish_fixture(db, standin=True, standin_publication=standin_publication)
    return db


@pytest.fixture
def published_today(tmp_path):
    """Outputs database as today's publish writes it (no inventory plan, no latest_* but forecasts)."""
    db = tmp_path / "outputs.duckdb"
    publish_fixture(db, standin=False)
    return db
