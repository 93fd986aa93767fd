"""publish_run: one transaction, replace per as-of, snapshot swap (readers never block), BI-ready
names, latest views and comments; on DuckDB and on a real PostgreSQL server."""

from __future__ import annotations

import multiprocessing
import os
import re
import shutil
import socket
import subprocess
import tempfile
from datetime import date
from pathlib import Path

import duckdb
import polars as pl
import pytest

import poolcast.publish as publish_mod
from poolcast.errors import PoolcastError, PublishError
from poolcast.publish import (
    forecast_quantiles_long,
    publish_run,
    read_latest_leaderboard,
    read_sql,
    read_table,
)

AS_OF = date(2024, 6, 1)
LATER = date(2024, 7, 1)
README_QUERIES = Path(__file__).resolve().parents[2] / "README.md"


def _forecast(scale: float = 1.0, origin: date = AS_OF) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "sku": ["a", "a", "b", "b"],
            "origin": [origin] * 4,
            "horizon": pl.Series([1, 2, 1, 2], dtype=pl.Int32),
            "month": [date(2024, 7, 1), date(2024, 8, 1)] * 2,
            "mean": [1.0 * scale, 2.0 * scale, 3.0 * scale, 4.0 * scale],
            "q_0.5": [1.0, 2.0, 3.0, 4.0],
            "q_0.975": [2.0, 3.0, 5.0, 6.0],
        }
    )


def _board() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "candidate": ["glm", "glmm"],
            "status": ["ok", "ok"],
            "scaled_pinball": [0.3, 0.2],
            "pinball_0.5": [1.0, 0.5],
        }
    )


def _plan(order: float = 5.0) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "sku": ["a", "b"],
            "category": ["tools", "toys"],
            "service_level": [0.95, 0.9],
            "safety_stock": [2.0, 4.0],
            "order_up_to": [10.0, 20.0],
            "order_quantity": [order, 2 * order],
        }
    )


def _tables(scale: float = 1.0) -> dict[str, pl.DataFrame]:
    return {
        "forecasts": _forecast(scale),
        "inventory_plan": _plan(),
        "leaderboard": _board(),
        "data_quality": pl.DataFrame({"rows_in": [10], "rows_quarantined": [2]}),
        "quarantine": pl.DataFrame(
            {"source_row": [3, 7], "rule": ["sales_negative", "sku_missing"], "value": ["-4", ""]}
        ),
        "quarantine_summary": pl.DataFrame(
            {"rule": ["sales_negative", "sku_missing"], "n_rows": [1, 1]}
        ),
    }


def _publish(db, run_id="r1", as_of=AS_OF, version="1", **kw):
    return publish_run(
        db,
        run_id=run_id,
        as_of=as_of,
        tables=kw.pop("tables", None) or _tables(),
        champion="glmm",
        registry_version=version,
        **kw,
    )


def test_quantiles_are_stored_long_with_the_wide_values():
    points, long = forecast_quantiles_long(_forecast())
    assert "q_0.5" not in points.columns and points.height == 4
    assert long.height == 8
    wide = _forecast()
    for level, col in ((0.5, "q_0.5"), (0.975, "q_0.975")):
        got = long.filter(pl.col("level") == level).sort("sku", "horizon").get_column("value")
        assert got.to_list() == wide.sort("sku", "horizon").get_column(col).to_list()


def test_every_table_and_row_carries_run_as_of_champion_and_version(tmp_path):
    db = tmp_path / "out" / "outputs.duckdb"
    result = _publish(db)
    assert result.rows["forecasts"] == 4 and result.rows["forecast_quantiles"] == 8
    assert result.previous_latest_as_of is None and not result.is_backfill
    for table in (
        "forecasts",
        "forecast_quantiles",
        "inventory_plan",
        "leaderboard",
        "data_quality",
        "quarantine",
        "quarantine_summary",
    ):
        frame = read_table(db, table)
        assert frame.height > 0
        assert frame.select("run_id", "as_of", "champion", "registry_version").unique().rows() == [
            ("r1", AS_OF, "glmm", "1")
        ]
    runs = read_table(db, "runs")
    assert runs.select("run_id", "as_of", "champion", "registry_version").rows() == [
        ("r1", AS_OF, "glmm", "1")
    ]


def test_names_are_snake_case_and_the_latest_forecasts_view_pivots_quantiles(tmp_path):
    db = tmp_path / "outputs.duckdb"
    _publish(db)
    assert "pinball_0_5" in read_table(db, "leaderboard").columns
    with duckdb.connect(str(db), read_only=True) as con:
        names = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        names += [
            r[0]
            for r in con.execute(
                "SELECT view_name FROM duckdb_views() WHERE NOT internal"
            ).fetchall()
        ]
        cols = [
            r[0]
            for r in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE NOT internal"
            ).fetchall()
        ]
    assert {
        "latest_forecasts",
        "latest_inventory_plan",
        "latest_leaderboard",
        "latest_data_quality",
        "latest_quarantine_summary",
    } <= set(names)
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", n) for n in names + cols), names + cols
    latest = read_table(db, "latest_forecasts").sort("sku", "horizon")
    # the wide frame that went in, with dots turned into underscores
    expected = _forecast().sort("sku", "horizon")
    assert latest.get_column("mean").to_list() == expected.get_column("mean").to_list()
    assert latest.get_column("q_0_5").to_list() == expected.get_column("q_0.5").to_list()
    assert latest.get_column("q_0_975").to_list() == expected.get_column("q_0.975").to_list()


def test_tables_and_columns_have_comments(tmp_path):
    db = tmp_path / "outputs.duckdb"
    _publish(db)
    with duckdb.connect(str(db), read_only=True) as con:
        tables = dict(con.execute("SELECT table_name, comment FROM duckdb_tables()").fetchall())
        cols = dict(
            con.execute(
                "SELECT column_name, comment FROM duckdb_columns() WHERE table_name = 'inventory_plan'"
            ).fetchall()
        )
    assert "inventory" in tables["inventory_plan"].lower()
    assert all(tables[t] for t in tables)
    assert "max(0, order_up_to - on_hand)" in cols["order_quantity"]
    assert cols["run_id"] and cols["registry_version"]


def test_republishing_an_as_of_replaces_its_publication(tmp_path):
    db = tmp_path / "outputs.duckdb"
    _publish(db, run_id="r1")
    again = _publish(db, run_id="r2", tables=_tables(scale=10.0))
    assert again.previous_latest_as_of == AS_OF and not again.is_backfill
    forecasts = read_table(db, "forecasts")
    assert set(forecasts.get_column("run_id")) == {"r2"}
    assert sorted(forecasts.get_column("mean").to_list()) == [10.0, 20.0, 30.0, 40.0]
    assert read_table(db, "forecast_quantiles").height == 8
    assert read_table(db, "quarantine").height == 2
    assert read_table(db, "runs").get_column("run_id").to_list() == ["r2"]
    _publish(db, run_id="r2", tables=_tables(scale=10.0))  # idempotent
    assert read_table(db, "forecasts").height == 4


def test_latest_views_follow_the_latest_as_of_not_a_backfill(tmp_path):
    db = tmp_path / "outputs.duckdb"
    _publish(db, run_id="june", as_of=AS_OF)
    _publish(db, run_id="july", as_of=LATER, tables=_tables(scale=2.0), version="2")
    backfill = _publish(
        db, run_id="june-again", as_of=AS_OF, tables=_tables(scale=5.0), version="3"
    )
    assert backfill.is_backfill and backfill.previous_latest_as_of == LATER
    for view in (
        "latest_forecasts",
        "latest_inventory_plan",
        "latest_leaderboard",
        "latest_data_quality",
        "latest_quarantine_summary",
    ):
        assert set(read_table(db, view).get_column("run_id")) == {"july"}, view
    assert read_table(db, "latest_forecasts").get_column("mean").sum() == 20.0
    assert sorted(read_table(db, "runs").get_column("run_id")) == ["july", "june-again"]


def test_a_failure_inside_the_transaction_leaves_the_file_untouched(tmp_path, monkeypatch):
    db = tmp_path / "outputs.duckdb"
    _publish(db)
    before = db.read_bytes()
    calls = []
    real = publish_mod._insert

    def failing(backend, name, frame):
        calls.append(name)
        if name == "quarantine":  # forecasts, plan, leaderboard... already inserted
            raise RuntimeError("disk full (injected)")
        real(backend, name, frame)

    monkeypatch.setattr(publish_mod, "_insert", failing)
    with pytest.raises(RuntimeError, match="injected"):
        _publish(db, run_id="r2", as_of=LATER, tables=_tables(scale=3.0))
    assert calls[:2] == ["forecasts", "inventory_plan"]
    assert db.read_bytes() == before
    assert read_table(db, "runs").get_column("run_id").to_list() == ["r1"]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_bad_table_is_a_publish_error_and_nothing_changes(tmp_path):
    db = tmp_path / "outputs.duckdb"
    _publish(db)
    bad = _tables() | {"leaderboard": _board().with_columns(pl.lit("x").alias("scaled_pinball"))}
    with pytest.raises(PublishError, match="publish failed"):
        _publish(db, run_id="r2", as_of=LATER, tables=bad)
    assert read_table(db, "runs").get_column("run_id").to_list() == ["r1"]


def test_unusable_targets_fail_with_one_clear_line(tmp_path):
    not_db = tmp_path / "notes.duckdb"
    not_db.write_text("hello, I am not a database\n" * 10)
    with pytest.raises(PublishError, match="is not a DuckDB database"):
        _publish(not_db)
    assert not_db.read_text().startswith("hello")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PublishError, match="cannot create the outputs folder"):
        _publish(blocker / "sub" / "outputs.duckdb")
    with pytest.raises(PoolcastError, match="no outputs database"):
        read_table(tmp_path / "missing.duckdb", "runs")
    with pytest.raises(PoolcastError, match="not a readable DuckDB database"):
        read_latest_leaderboard(not_db)


def test_the_latest_leaderboard_reader(tmp_path):
    db = tmp_path / "outputs.duckdb"
    _publish(db, run_id="june")
    _publish(db, run_id="july", as_of=LATER, version="7")
    run, board = read_latest_leaderboard(db)
    assert (run["run_id"], run["as_of"], run["registry_version"]) == ("july", LATER, "7")
    assert sorted(board.get_column("candidate")) == ["glm", "glmm"]


def _hold_open(path: str, read_only: bool, ready, done) -> None:
    con = duckdb.connect(path, read_only=read_only)
    before = con.execute("SELECT count(*) FROM runs").fetchone()[0]
    ready.set()
    done.wait(60)
    # the reader still sees its snapshot: the run count it had when it opened the file
    after = con.execute("SELECT count(*) FROM runs").fetchone()[0]
    con.close()
    os._exit(0 if before == after == 1 else 3)


@pytest.mark.parametrize("read_only", [True, False], ids=["read_only", "read_write"])
def test_a_reader_holding_the_file_open_does_not_block_the_publish(tmp_path, read_only):
    db = tmp_path / "outputs.duckdb"
    _publish(db)
    ctx = multiprocessing.get_context("spawn")
    ready, done = ctx.Event(), ctx.Event()
    reader = ctx.Process(target=_hold_open, args=(str(db), read_only, ready, done))
    reader.start()
    try:
        assert ready.wait(60)
        result = _publish(db, run_id="r2", as_of=LATER, version="2")
        assert result.run_id == "r2"
        assert sorted(read_table(db, "runs").get_column("run_id")) == ["r1", "r2"]
    finally:
        done.set()
        reader.join(60)
    assert reader.exitcode == 0


def _publish_in_process(db: str, run_id: str, month: int) -> None:
    _publish(Path(db), run_id=run_id, as_of=date(2024, month, 1))


def test_two_first_publishes_at_once_into_a_fresh_folder_both_succeed(tmp_path):
    db = tmp_path / "fresh" / "outputs.duckdb"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_publish_in_process, args=(str(db), f"r{m}", m)) for m in (5, 6, 7)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert sorted(read_table(db, "runs").get_column("run_id")) == ["r5", "r6", "r7"]
    assert read_table(db, "forecasts").height == 12


def _readme_queries() -> dict[str, str]:
    """The ```sql blocks of the README's published-tables section, by their first comment line."""
    text = README_QUERIES.read_text()
    section = text[text.index("## Published tables") :]
    blocks = section.split("```sql")[1:]
    queries = {}
    for block in blocks:
        sql = block.split("```")[0].strip()
        queries[sql.splitlines()[0].lstrip("- ").strip()] = sql
    return queries


def test_the_readme_example_queries_run_on_a_published_database(tmp_path):
    db = tmp_path / "outputs.duckdb"
    for i, month in enumerate((4, 5, 6, 7), start=1):
        _publish(
            db,
            run_id=f"r{month}",
            as_of=date(2024, month, 1),
            version=str(i),
            tables=_tables() | {"inventory_plan": _plan(order=float(month))},
        )
    queries = _readme_queries()
    assert len(queries) == 3, list(queries)
    orders, quality, history = (read_sql(db, q) for q in queries.values())
    # this month's orders by category: the July plan, 7 units for tools and 14 for toys
    assert dict(orders.select(orders.columns[0], orders.columns[-1]).rows()) == {
        "tools": 7.0,
        "toys": 14.0,
    }
    assert quality.height == 4 and quality.get_column("as_of").to_list()[0] == date(2024, 7, 1)
    assert history.get_column("registry_version").to_list() == ["1", "2", "3", "4"]


# --------------------------------------------------------------------------- PostgreSQL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throw-away PostgreSQL server on loopback (Debian's ``postgresql`` package)."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not bins:
        pytest.skip("PostgreSQL is not installed (apt-get install -y postgresql)")
    bindir = bins[-1].parent
    root = Path(tempfile.mkdtemp(prefix="poolcast-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres user
        runuser = shutil.which("runuser")
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server")
        if runuser is None:
            pytest.skip("running as root and runuser is missing")
        as_user = [runuser, "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    port = _free_port()
    data = root / "data"
    try:
        subprocess.run(
            [*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(
            [
                *as_user,
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(root / "log"),
                "-w",
                "-o",
                f"-p {port} -k {root} -c listen_addresses=127.0.0.1",
                "start",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"cannot start PostgreSQL here: {exc}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(root, ignore_errors=True)


def test_publishing_to_postgresql_two_runs_and_reading_the_latest_views(postgres_url):
    first = _publish(postgres_url, run_id="june")
    assert first.previous_latest_as_of is None
    second = _publish(
        postgres_url, run_id="july", as_of=LATER, tables=_tables(scale=2.0), version="2"
    )
    assert second.previous_latest_as_of == AS_OF
    latest = read_table(postgres_url, "latest_forecasts").sort("sku", "horizon")
    assert set(latest.get_column("run_id")) == {"july"}
    assert latest.get_column("mean").to_list() == [2.0, 4.0, 6.0, 8.0]
    assert latest.get_column("q_0_975").to_list() == [2.0, 3.0, 5.0, 6.0]
    for view in (
        "latest_inventory_plan",
        "latest_leaderboard",
        "latest_data_quality",
        "latest_quarantine_summary",
    ):
        assert set(read_table(postgres_url, view).get_column("registry_version")) == {"2"}, view
    assert read_table(postgres_url, "runs").height == 2
    comment = read_sql(
        postgres_url,
        "SELECT col_description('inventory_plan'::regclass, ordinal_position) AS c "
        "FROM information_schema.columns WHERE table_name = 'inventory_plan' "
        "AND column_name = 'order_quantity'",
    )
    assert "on_hand" in comment.item()
    orders, _, history = (read_sql(postgres_url, q) for q in _readme_queries().values())
    assert orders.height == 2 and history.get_column("registry_version").to_list() == ["1", "2"]
    run, board = read_latest_leaderboard(postgres_url)
    assert run["run_id"] == "july" and board.height == 2
