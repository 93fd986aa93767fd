"""Shared test fixtures: where the real data sets and GLMM reference fits live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    env = os.environ.get("POOLCAST_SHARED_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared"


SHARED_DIR = _shared_dir()


def _require(path: Path) -> Path:
    """Return path, or skip when the shared folder is absent (a user's clone).

    CI always has ../shared; there (CI=true) a missing folder is an error, not a skip.
    """
    if path.exists():
        return path
    if os.environ.get("CI"):
        pytest.fail(f"{path} is missing; CI must run with ../shared beside the clone")
    pytest.skip(f"{path} is absent (no ../shared beside this clone)")


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """../shared/data: the real data sets (Rossmann, Online Retail, car parts)."""
    return _require(SHARED_DIR / "data")


@pytest.fixture(scope="session")
def glmm_reference_dir() -> Path:
    """../shared/reference/glmm: lme4 / glmmTMB reference fits and their data."""
    return _require(SHARED_DIR / "reference" / "glmm")


@pytest.fixture(scope="session")
def example_data_path() -> Path:
    """The bundled example data (Online Retail monthly SKU panel)."""
    return REPO_ROOT / "data" / "example" / "online_retail_sku_monthly.csv.gz"


# --- Stand-in for the publication of issue 9 (dashboard tests) --------------------------------
# STAND-IN, to be replaced by a real small run after the merge with the "publish" branch: today's
# `poolcast.publish.publish_run` cannot yet write `inventory_plan`, `quarantine`,
# `quarantine_summary`, the `latest_*` views or `registry_version`. This writes them through
# DuckDB with the names and columns of the publication contract (README / HELPERS.md), derived
# from what the real publish already wrote for `run_id`, so the dashboard can be tested now.


def write_standin_publication(
    db,
    run_id: str,
    *,
    registry_version: str = "1",
    quarantine: dict[str, int] | None = None,
    categories: dict[str, str] | None = None,
    service_levels: dict[str, float] | None = None,
    on_hand: float = 5.0,
) -> None:
    """Add the not-yet-published tables and views for one published run (see the comment above).

    The plan is a crude function of the run's forecasts (lead time = the run's horizons, safety
    stock = sum of the 0.9 quantile minus the mean): its numbers only need to be *in the
    database*, the dashboard tests compare what is shown with direct queries.
    """
    import duckdb

    con = duckdb.connect(str(db))
    try:
        con.execute("BEGIN TRANSACTION")
        (as_of, champion) = con.execute(
            "SELECT as_of, champion FROM runs WHERE run_id = ?", [run_id]
        ).fetchone()
        plan = con.execute(
            "SELECT f.sku, SUM(f.mean) AS mean, COUNT(*) AS h, SUM(q.value) AS q90 "
            "FROM forecasts f LEFT JOIN forecast_quantiles q ON q.run_id = f.run_id AND "
            "q.sku = f.sku AND q.month = f.month AND q.level = 0.9 WHERE f.run_id = ? "
            "GROUP BY f.sku ORDER BY f.sku",
            [run_id],
        ).fetchall()
        con.execute(
            "CREATE TABLE IF NOT EXISTS inventory_plan (run_id VARCHAR, as_of DATE, sku VARCHAR, "
            "category VARCHAR, service_level DOUBLE, lead_time INTEGER, review_period INTEGER, "
            "lead_time_demand_mean DOUBLE, safety_stock DOUBLE, order_up_to DOUBLE, on_hand DOUBLE, "
            "order_quantity DOUBLE, expected_short DOUBLE, fill_rate DOUBLE, champion VARCHAR, "
            "registry_version VARCHAR)"
        )
        con.execute("DELETE FROM inventory_plan WHERE run_id = ?", [run_id])
        for i, (sku, mean, h, q90) in enumerate(plan):
            level = (service_levels or {}).get(sku, 0.95 if i % 2 == 0 else 0.9)
            safety = max(0.0, (q90 if q90 is not None else mean) - mean)
            order_up_to = mean + safety
            con.execute(
                "INSERT INTO inventory_plan VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    run_id,
                    as_of,
                    sku,
                    (categories or {}).get(sku, f"C{i % 3}"),
                    level,
                    h,
                    mean,
                    safety,
                    order_up_to,
                    on_hand,
                    max(0.0, order_up_to - on_hand),
                    0.05 * mean,
                    1 - 0.05 * mean / max(mean, 1e-9),
                    champion,
                    registry_version,
                ],
            )
        con.execute(
            "CREATE TABLE IF NOT EXISTS quarantine_summary (run_id VARCHAR, as_of DATE, "
            "rule VARCHAR, rows BIGINT, champion VARCHAR, registry_version VARCHAR)"
        )
        con.execute(
            "CREATE TABLE IF NOT EXISTS quarantine (run_id VARCHAR, as_of DATE, source_row BIGINT, "
            'rule VARCHAR, "column" VARCHAR, value VARCHAR, champion VARCHAR, registry_version VARCHAR)'
        )
        for table in ("quarantine_summary", "quarantine"):
            con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
        row = 0
        for rule, n in (quarantine or {}).items():
            con.execute(
                "INSERT INTO quarantine_summary VALUES (?, ?, ?, ?, ?, ?)",
                [run_id, as_of, rule, n, champion, registry_version],
            )
            for _ in range(n):
                row += 1
                con.execute(
                    "INSERT INTO quarantine VALUES (?, ?, ?, ?, 'sales', '-1', ?, ?)",
                    [run_id, as_of, row, rule, champion, registry_version],
                )
        # registry_version on the rows today's publish writes (runs keeps its shape: publish_run
        # inserts into it by position)
        for table in ("leaderboard", "data_quality", "forecasts"):
            con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS registry_version VARCHAR")
            con.execute(
                f"UPDATE {table} SET registry_version = ? WHERE run_id = ?",
                [registry_version, run_id],
            )
        latest = (
            "(SELECT run_id FROM runs WHERE as_of = (SELECT max(as_of) FROM runs) "
            "ORDER BY published_at DESC LIMIT 1)"
        )
        for name in ("inventory_plan", "leaderboard", "data_quality", "quarantine_summary"):
            con.execute(
                f"CREATE OR REPLACE VIEW latest_{name} AS SELECT * FROM {name} "
                f"WHERE run_id = {latest}"
            )
        con.execute("COMMIT")
    finally:
        con.close()


@pytest.fixture(scope="session")
def standin_publication():
    """:func:`write_standin_publication` (STAND-IN for the publish branch's tables and views)."""
    return write_standin_publication
