"""Publish a run's outputs for BI tools: one transaction, atomic, idempotent per as-of, never
blocked by readers. DuckDB file by default; PostgreSQL (any SQLAlchemy URL) as well.

Tables (every row carries ``run_id``, ``as_of``, ``champion`` and ``registry_version``)
--------------------------------------------------------------------------------------
``runs``, ``forecasts``, ``forecast_quantiles (run_id, as_of, champion, registry_version,
sku, month, horizon, level, value)``, ``inventory_plan``, ``leaderboard``, ``data_quality``,
``quarantine`` and ``quarantine_summary``; views ``latest_run`` and ``latest_<table>`` for
forecasts (``mean`` and one ``q_<level>`` column per level, e.g. ``q_0_95``), inventory plan,
leaderboard, data quality and quarantine summary: the rows of the latest as-of's latest
run. Column names are snake_case without dots (``pinball_0.5`` is published as
``pinball_0_5``), and tables and columns carry ``COMMENT``s (see :data:`COMMENTS`).

Order, atomicity, idempotence
-----------------------------
Publishing an as-of **replaces** that as-of's publication: every table's rows of that
``as_of`` are deleted and the new ones inserted, inside one transaction. The latest
published as-of *before* this publish is returned (:attr:`PublishResult.previous_latest_as_of`),
so the caller can tell a backfill (an older as-of) from a new month.

Readers never block the job (design)
------------------------------------
DuckDB allows one writing process per file, and a reader that opened the file
read-write (or a writer) would make the publish fail. So a publish never writes the
live file: under an exclusive lock file ``<db>.lock`` it copies the current database to a
fresh file in the same folder, writes and commits there, checkpoints, fsyncs, and swaps it
in with :func:`os.replace` (atomic on POSIX). A reader holding the old file open keeps a
consistent snapshot of the previous publication; the next connection sees the new one.
Readers open with ``read_only=True`` (:func:`connect_outputs`). Two publishes at once
(e.g. two first runs into a fresh work dir) take turns on the lock; the schema is created
under it too. A failure before the swap deletes the scratch copy: the live file is as
before. PostgreSQL needs none of this (MVCC: readers never block writers); concurrent
publishers there are serialised by a transaction-level advisory lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl

from poolcast.errors import InvalidParameterError, PoolcastError, PublishError

__all__ = [
    "COMMENTS",
    "LATEST_VIEWS",
    "PublishResult",
    "connect_outputs",
    "file_lock",
    "forecast_quantiles_long",
    "is_url",
    "publish_run",
    "quantile_column_sql",
    "read_latest_leaderboard",
    "read_sql",
    "read_table",
    "snake_case",
]

KEY_COLUMNS = ("run_id", "as_of", "champion", "registry_version")
_RESERVED = {"runs", "latest_run"}
#: Tables with a ``latest_<name>`` view (forecasts' view also pivots the quantiles).
LATEST_VIEWS = ("forecasts", "inventory_plan", "leaderboard", "data_quality", "quarantine_summary")
_ADVISORY_KEY = 7_310_925_112  # pg_advisory_xact_lock key of poolcast publishes

#: Table and column comments written with ``COMMENT ON`` (DuckDB and PostgreSQL).
COMMENTS: dict[str, tuple[str, dict[str, str]]] = {
    "runs": (
        "One row per published as-of: the run that published it.",
        {
            "run_id": "MLflow parent run id of the retrain",
            "as_of": "Data cut-off month of the run (first day of the month)",
            "champion": "Candidate model that produced the forecasts",
            "registry_version": "MLflow model registry version of the champion",
            "published_at": "UTC time the publication committed",
        },
    ),
    "forecasts": (
        "Forecast mean per SKU and future month (quantiles in forecast_quantiles).",
        {
            "sku": "Stock keeping unit",
            "origin": "Forecast origin month (= as_of)",
            "horizon": "Months ahead of the origin (1 = next month)",
            "month": "Forecast month (first day)",
            "mean": "Predictive mean of units sold",
        },
    ),
    "forecast_quantiles": (
        "Predictive quantiles per SKU and month, long format.",
        {"level": "Quantile level in (0, 1)", "value": "Units at that quantile"},
    ),
    "inventory_plan": (
        "Order-up-to inventory policy per SKU at the as-of (poolcast.inventory).",
        {
            "service_level": "Cycle service level (probability of no stock-out)",
            "lead_time_months": "Months from order to arrival",
            "review_period_months": "Months between orders",
            "lead_time_demand_mean": "Mean demand over the lead time",
            "lead_time_demand_q": "Lead-time demand quantile at the service level",
            "protection_demand_mean": "Mean demand over lead time + review period",
            "safety_stock": "Order-up-to level minus mean protection demand (>= 0)",
            "order_up_to": "Target stock position (quantile of lead time + review demand)",
            "on_hand": "Stock on hand at the origin (NULL when unknown)",
            "order_quantity": "Units to order now: max(0, order_up_to - on_hand)",
            "expected_units_short": "Expected units short per cycle E[(D - S)+]",
            "fill_rate": "Expected share of demand served from stock",
        },
    ),
    "leaderboard": (
        "Backtest score of each candidate model; status ok / failed / ineligible.",
        {"candidate": "Candidate model", "status": "ok, failed or ineligible"},
    ),
    "data_quality": (
        "Input row counts of the run: accepted, quarantined, gaps.",
        {"rows_in": "Rows read from the source"},
    ),
    "quarantine": (
        "Input rows rejected by validation, one row per row and broken rule.",
        {
            "source_row": "Row number in the source",
            "rule": "Validation rule the row broke",
            "column_name": "Column the rule checks",
            "value": "Offending value as text",
        },
    ),
    "quarantine_summary": (
        "Quarantined input rows per rule.",
        {"rule": "Validation rule", "n_rows": "Rows that broke it"},
    ),
}
_KEY_COMMENTS = {
    "run_id": "MLflow parent run id of the retrain",
    "as_of": "Data cut-off month of the run",
    "champion": "Champion candidate of the run",
    "registry_version": "MLflow registry version of the champion",
}


@dataclass(frozen=True)
class PublishResult:
    """What one publish wrote.

    Fields
    ------
    path : Path or str
        The DuckDB file, or the database URL with its password hidden.
    run_id : str
        Run that published.
    as_of : date
        Data cut-off of the run.
    rows : dict of str to int
        Rows written per table.
    previous_latest_as_of : date or None
        Latest as-of published by *other* runs before this publish (None: first one).
    """

    path: Path | str
    run_id: str
    as_of: date
    rows: dict[str, int]
    previous_latest_as_of: date | None = None

    @property
    def is_backfill(self) -> bool:
        """True when an as-of older than the latest already published was published."""
        return self.previous_latest_as_of is not None and self.as_of < self.previous_latest_as_of


def is_url(target: str | Path) -> bool:
    """Whether an outputs target is a SQLAlchemy URL rather than a DuckDB file path."""
    return isinstance(target, str) and "://" in target


def snake_case(name: str) -> str:
    """A BI-friendly column name: lower case, every run of non-alphanumerics one ``_``.

    >>> snake_case("pinball_0.5"), snake_case("q_0.975")
    ('pinball_0_5', 'q_0_975')
    """
    return re.sub(r"[^0-9a-z]+", "_", str(name).lower()).strip("_") or "col"


def quantile_column_sql(level: float) -> str:
    """View column of a quantile level: ``0.025 -> q_0_025``."""
    return snake_case(f"q_{float(level):g}")


def forecast_quantiles_long(forecast: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split a forecast frame (keys, ``mean``, ``q_<level>``...) into a point table and a long
    quantile table ``sku, month, horizon, level, value``."""
    qcols = [c for c in forecast.columns if c.startswith("q_")]
    keys = [c for c in ("sku", "month", "horizon") if c in forecast.columns]
    points = forecast.drop(qcols)
    schema = {**{k: forecast.schema[k] for k in keys}, "level": pl.Float64, "value": pl.Float64}
    if not qcols:
        return points, pl.DataFrame(schema=schema)
    long = forecast.select([*keys, *qcols]).unpivot(
        index=keys, on=qcols, variable_name="level", value_name="value"
    )
    long = long.with_columns(
        pl.col("level").str.strip_prefix("q_").cast(pl.Float64).round(6),
        pl.col("value").cast(pl.Float64),
    )
    return points, long


# --------------------------------------------------------------------------- locks


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Exclusive advisory lock on `path` (created if absent) for the ``with`` block; waits."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# --------------------------------------------------------------------------- backends


def _sql_type(dtype: pl.DataType) -> str:
    if dtype == pl.String or dtype == pl.Null or dtype == pl.Categorical:
        return "TEXT"
    if dtype.is_integer():
        return "BIGINT"
    if dtype.is_float():
        return "DOUBLE PRECISION"
    if dtype == pl.Date:
        return "DATE"
    if dtype == pl.Datetime:
        return "TIMESTAMP"
    if dtype == pl.Boolean:
        return "BOOLEAN"
    return "TEXT"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class _Backend:
    """The few statements publish needs, on DuckDB or a SQLAlchemy connection."""

    supports_comments = True

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple]: ...

    def insert(self, name: str, frame: pl.DataFrame) -> None: ...

    def columns(self, name: str) -> list[str]:
        rows = self.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = :t "
            "AND table_schema = current_schema() ORDER BY ordinal_position",
            {"t": name},
        )
        return [r[0] for r in rows]

    def lock(self) -> None:
        """Serialise concurrent publishers (inside the transaction)."""


class _Duck(_Backend):
    def __init__(self, con: Any) -> None:
        self.con = con

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple]:
        sql = re.sub(r":([a-z_]+)", r"$\1", sql) if params else sql
        cur = self.con.execute(sql, dict(params) if params else None)
        try:
            return cur.fetchall()
        except Exception:  # statements without a result set
            return []

    def insert(self, name: str, frame: pl.DataFrame) -> None:
        self.con.register("_frame", frame)
        try:
            self.con.execute(f"INSERT INTO {_ident(name)} BY NAME SELECT * FROM _frame")
        finally:
            self.con.unregister("_frame")


class _Sql(_Backend):
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple]:
        from sqlalchemy import text

        result = self.conn.execute(text(sql), dict(params or {}))
        return [tuple(r) for r in result.fetchall()] if result.returns_rows else []

    def insert(self, name: str, frame: pl.DataFrame) -> None:
        from sqlalchemy import text

        if frame.is_empty():
            return
        cols = ", ".join(_ident(c) for c in frame.columns)
        marks = ", ".join(f":p{i}" for i in range(frame.width))
        rows = [{f"p{i}": v for i, v in enumerate(row)} for row in frame.iter_rows()]
        self.conn.execute(text(f"INSERT INTO {_ident(name)} ({cols}) VALUES ({marks})"), rows)

    def lock(self) -> None:
        if self.conn.dialect.name == "postgresql":
            self.execute("SELECT pg_advisory_xact_lock(:k)", {"k": _ADVISORY_KEY})


# --------------------------------------------------------------------------- writing


def _check_tables(tables: Mapping[str, pl.DataFrame]) -> None:
    for name, frame in tables.items():
        if snake_case(name) != name or name in _RESERVED or name.startswith("latest_"):
            raise InvalidParameterError(
                f"publish_run: table name {name!r} is not allowed; use snake_case other than "
                f"{sorted(_RESERVED)} and latest_*"
            )
        clash = [c for c in KEY_COLUMNS if c in frame.columns]
        if clash:
            raise InvalidParameterError(
                f"publish_run: table {name!r} already has key column(s) {clash}; drop them, "
                "publish adds them"
            )


def _prepare(frame: pl.DataFrame, keys: dict[str, Any]) -> pl.DataFrame:
    renamed = {c: snake_case(c) for c in frame.columns}
    if len(set(renamed.values())) < len(renamed):
        raise InvalidParameterError(
            f"publish_run: columns {frame.columns} collide once in snake_case; rename them"
        )
    frame = frame.rename(renamed)
    casts = [
        pl.col(c).cast(pl.String)
        for c, t in frame.schema.items()
        if _sql_type(t) == "TEXT" and t != pl.String
    ]
    if casts:
        frame = frame.with_columns(casts)
    lead = [
        pl.lit(keys["run_id"], pl.String).alias("run_id"),
        pl.lit(keys["as_of"], pl.Date).alias("as_of"),
        pl.lit(keys["champion"], pl.String).alias("champion"),
        pl.lit(keys["registry_version"], pl.String).alias("registry_version"),
    ]
    return frame.select([*lead, *frame.columns])


def _ensure_table(db: _Backend, name: str, frame: pl.DataFrame) -> None:
    existing = db.columns(name)
    if not existing:
        cols = ", ".join(f"{_ident(c)} {_sql_type(t)}" for c, t in frame.schema.items())
        db.execute(f"CREATE TABLE {_ident(name)} ({cols})")
        return
    for col, dtype in frame.schema.items():
        if col not in existing:
            db.execute(f"ALTER TABLE {_ident(name)} ADD COLUMN {_ident(col)} {_sql_type(dtype)}")


def _drop_views(db: _Backend) -> None:
    for name in ("latest_forecasts", *(f"latest_{t}" for t in LATEST_VIEWS[1:]), "latest_run"):
        db.execute(f"DROP VIEW IF EXISTS {name}")


def _create_views(db: _Backend) -> None:
    db.execute(
        "CREATE VIEW latest_run AS SELECT run_id, as_of, champion, registry_version, "
        "published_at FROM runs WHERE as_of = (SELECT max(as_of) FROM runs) "
        "ORDER BY published_at DESC LIMIT 1"
    )
    for table in LATEST_VIEWS:
        if not db.columns(table):
            continue
        if table == "forecasts" and db.columns("forecast_quantiles"):
            levels = sorted(
                r[0] for r in db.execute("SELECT DISTINCT level FROM forecast_quantiles")
            )
            pivot = ", ".join(
                f"max(CASE WHEN level = {float(q)!r} THEN value END) AS {quantile_column_sql(q)}"
                for q in levels
            )
            select_q = ", ".join(f"p.{quantile_column_sql(q)}" for q in levels)
            db.execute(
                "CREATE VIEW latest_forecasts AS SELECT f.*"
                + (f", {select_q}" if levels else "")
                + " FROM forecasts f "
                + (
                    f"LEFT JOIN (SELECT run_id, sku, month, horizon, {pivot} FROM "
                    "forecast_quantiles WHERE run_id = (SELECT run_id FROM latest_run) "
                    "GROUP BY run_id, sku, month, horizon) p ON p.run_id = f.run_id AND "
                    "p.sku = f.sku AND p.month = f.month AND p.horizon = f.horizon "
                    if levels
                    else ""
                )
                + "WHERE f.run_id = (SELECT run_id FROM latest_run)"
            )
            continue
        db.execute(
            f"CREATE VIEW latest_{table} AS SELECT * FROM {table} "
            "WHERE run_id = (SELECT run_id FROM latest_run)"
        )


def _comment(db: _Backend) -> None:
    if not db.supports_comments:
        return
    for table, (text, columns) in COMMENTS.items():
        present = db.columns(table)
        if not present:
            continue
        db.execute(f"COMMENT ON TABLE {table} IS {_literal(text)}")
        for col, note in {**_KEY_COMMENTS, **columns}.items():
            if col in present:
                db.execute(f"COMMENT ON COLUMN {table}.{col} IS {_literal(note)}")
    db.execute(
        "COMMENT ON VIEW latest_run IS "
        + _literal("The run of the latest as-of (latest published run for it)")
    )
    for table in LATEST_VIEWS:
        if db.columns(f"latest_{table}"):
            note = f"{table} of the latest as-of, latest run for it"
            if table == "forecasts":
                note += "; q_<level> columns pivot forecast_quantiles (q_0_95 = level 0.95)"
            db.execute(f"COMMENT ON VIEW latest_{table} IS {_literal(note)}")


def _write(
    db: _Backend,
    *,
    run_id: str,
    as_of: date,
    tables: Mapping[str, pl.DataFrame],
    champion: str | None,
    registry_version: str | None,
) -> tuple[dict[str, int], date | None]:
    """Every statement of one publish (the caller owns the transaction)."""
    db.lock()
    if not db.columns("runs"):
        db.execute(
            "CREATE TABLE runs (run_id TEXT PRIMARY KEY, as_of DATE, champion TEXT, "
            "registry_version TEXT, published_at TIMESTAMP)"
        )
    previous = db.execute("SELECT max(as_of) FROM runs WHERE run_id <> :r", {"r": run_id})[0][0]
    _drop_views(db)
    keys = {
        "run_id": run_id,
        "as_of": as_of,
        "champion": champion,
        "registry_version": registry_version,
    }
    existing_tables = [
        r[0]
        for r in db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
            "AND table_type = 'BASE TABLE'"
        )
    ]
    for name in existing_tables:  # re-publishing an as-of (or a run) replaces it everywhere
        if name != "runs" and {"as_of", "run_id"} <= set(db.columns(name)):
            db.execute(
                f"DELETE FROM {_ident(name)} WHERE as_of = :a OR run_id = :r",
                {"a": as_of, "r": run_id},
            )
    db.execute("DELETE FROM runs WHERE as_of = :a OR run_id = :r", {"a": as_of, "r": run_id})
    db.execute(
        "INSERT INTO runs (run_id, as_of, champion, registry_version, published_at) "
        "VALUES (:r, :a, :c, :v, :t)",
        {
            **{"r": run_id, "a": as_of, "c": champion, "v": registry_version},
            "t": datetime.now(UTC).replace(tzinfo=None),
        },
    )
    rows: dict[str, int] = {}
    for name, data in tables.items():
        frame = _prepare(data, keys)
        _ensure_table(db, name, frame)
        _insert(db, name, frame)
        rows[name] = frame.height
    _create_views(db)
    _comment(db)
    return rows, previous


def _insert(db: _Backend, name: str, frame: pl.DataFrame) -> None:
    """Insert one table's rows (a separate function so tests can inject a failure here)."""
    db.insert(name, frame)


def _expand(tables: Mapping[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    tables = dict(tables)
    _check_tables(tables)
    if "forecasts" in tables:
        tables["forecasts"], tables["forecast_quantiles"] = forecast_quantiles_long(
            tables["forecasts"]
        )
    return tables


def publish_run(
    target: str | Path,
    *,
    run_id: str,
    as_of: date,
    tables: Mapping[str, pl.DataFrame],
    champion: str | None = None,
    registry_version: str | None = None,
) -> PublishResult:
    """Publish a run's tables in one transaction, replacing that as-of's earlier publication.

    Parameters
    ----------
    target : str or Path
        DuckDB file (created with its folder when absent), or a SQLAlchemy URL such as
        ``postgresql+psycopg://user@host:5432/db``.
    run_id : str
        The MLflow parent run id.
    as_of : date
        The run's data cut-off.
    tables : mapping of str to pl.DataFrame
        Table name to rows. A ``forecasts`` frame with ``q_<level>`` columns is split into
        ``forecasts`` and ``forecast_quantiles``. Column names are made snake_case.
    champion, registry_version : str or None
        Stored on every row and in ``runs``.

    Raises
    ------
    PublishError
        The target cannot be written (not a database, a folder that is a file, a SQL
        error); nothing of this publish is visible then.
    """
    if not run_id:
        raise InvalidParameterError("publish_run: run_id is empty; pass the MLflow parent run id")
    tables = _expand(tables)
    kwargs = {
        "run_id": run_id,
        "as_of": as_of,
        "tables": tables,
        "champion": champion,
        "registry_version": registry_version,
    }
    if is_url(target):
        return _publish_sql(str(target), kwargs)
    return _publish_duckdb(Path(target), kwargs)


def _publish_sql(url: str, kwargs: dict[str, Any]) -> PublishResult:
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    shown = make_url(url).render_as_string(hide_password=True)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            db = _Sql(conn)
            db.supports_comments = conn.dialect.name == "postgresql"
            rows, previous = _write(db, **kwargs)
    except SQLAlchemyError as exc:
        raise PublishError(f"{shown}: publish failed: {str(exc).splitlines()[0]}") from exc
    finally:
        engine.dispose()
    return PublishResult(shown, kwargs["run_id"], kwargs["as_of"], rows, previous)


def _publish_duckdb(path: Path, kwargs: dict[str, Any]) -> PublishResult:
    import duckdb

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PublishError(
            f"{path}: cannot create the outputs folder {path.parent} ({exc.strerror}); "
            "point [tracking] outputs_db at a writable path"
        ) from exc
    scratch = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        with file_lock(path.parent / f"{path.name}.lock"):
            if path.exists():
                _check_duckdb_file(path)
                shutil.copyfile(path, scratch)
                wal = Path(f"{path}.wal")
                if wal.exists():  # a crashed writer's log: DuckDB replays it on open
                    shutil.copyfile(wal, f"{scratch}.wal")
            con = duckdb.connect(str(scratch))
            try:
                con.execute("BEGIN TRANSACTION")
                try:
                    rows, previous = _write(_Duck(con), **kwargs)
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                con.execute("CHECKPOINT")
            finally:
                con.close()
            with open(scratch, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(scratch, path)  # the swap: atomic, readers of the old file unaffected
            with contextlib.suppress(FileNotFoundError):
                Path(f"{path}.wal").unlink()  # replayed into the new file already
            _fsync_dir(path.parent)
    except duckdb.Error as exc:
        raise PublishError(f"{path}: publish failed: {str(exc).splitlines()[0]}") from exc
    except OSError as exc:
        raise PublishError(f"{path}: publish failed: {exc}") from exc
    finally:
        for leftover in (scratch, Path(f"{scratch}.wal")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
    return PublishResult(path, kwargs["run_id"], kwargs["as_of"], rows, previous)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_duckdb_file(path: Path) -> None:
    if not path.is_file():
        raise PublishError(f"{path}: is not a file; point [tracking] outputs_db at a DuckDB file")
    with open(path, "rb") as handle:
        head = handle.read(16)
    if len(head) < 12 or head[8:12] != b"DUCK":
        raise PublishError(
            f"{path}: is not a DuckDB database; move it away or point [tracking] outputs_db "
            "elsewhere"
        )


# --------------------------------------------------------------------------- reading


@contextlib.contextmanager
def connect_outputs(target: str | Path) -> Iterator[Any]:
    """A **read-only** connection to the outputs: DuckDB ``read_only=True`` or a SQLAlchemy
    connection. Yields an object with ``.sql(query) -> pl.DataFrame``-like use through
    :func:`read_sql`.

    Raises
    ------
    PoolcastError
        One line, when the file is missing or is not a DuckDB database, or the server
        cannot be reached.
    """
    if is_url(target):
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import SQLAlchemyError

        shown = make_url(str(target)).render_as_string(hide_password=True)
        engine = create_engine(str(target))
        try:
            with engine.connect() as conn:
                yield _Sql(conn)
        except SQLAlchemyError as exc:
            raise PoolcastError(f"{shown}: {str(exc).splitlines()[0]}") from None
        finally:
            engine.dispose()
        return
    import duckdb

    path = Path(target)
    if not path.is_file():
        raise PoolcastError(f"{path}: no outputs database; run `poolcast run` first")
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        first = str(exc).splitlines()[0]
        if "lock" in first.lower():
            raise PoolcastError(
                f"{path}: the outputs database is locked by another process (a read-write "
                f"connection; open it with read_only=True); retry when it is closed ({first})"
            ) from None
        raise PoolcastError(f"{path}: not a readable DuckDB database ({first})") from None
    try:
        yield _Duck(con)
    finally:
        con.close()


def read_sql(target: str | Path, sql: str, params: Mapping[str, Any] | None = None) -> pl.DataFrame:
    """Run a query on the outputs (read-only) and return a polars frame."""
    import duckdb

    with connect_outputs(target) as db:
        try:
            if isinstance(db, _Duck):
                query = re.sub(r":([a-z_]+)", r"$\1", sql) if params else sql
                return db.con.sql(query, params=dict(params) if params else None).pl()
            from sqlalchemy import text

            result = db.conn.execute(text(sql), dict(params or {}))
            names = list(result.keys())
            data = [list(r) for r in result.fetchall()]
            return pl.DataFrame(data, schema=names, orient="row", infer_schema_length=None)
        except duckdb.Error as exc:
            raise PoolcastError(f"{target}: {str(exc).splitlines()[0]}") from None


def read_table(target: str | Path, name: str, *, run_id: str | None = None) -> pl.DataFrame:
    """Read a published table or view (optionally one run's rows) as polars."""
    sql = f"SELECT * FROM {_ident(name)}"
    if run_id is None:
        return read_sql(target, sql)
    return read_sql(target, sql + " WHERE run_id = :r", {"r": run_id})


def read_latest_leaderboard(target: str | Path) -> tuple[dict[str, object], pl.DataFrame]:
    """The latest as-of's run (run_id, as_of, champion, registry_version, published_at) and its
    leaderboard.

    Raises
    ------
    PoolcastError
        When the database is missing, is not a database, or holds no published run.
    """
    with connect_outputs(target) as db:
        if not db.columns("runs") or not db.columns("leaderboard"):
            raise PoolcastError(f"{target}: no published run yet")
    runs = read_sql(target, "SELECT * FROM runs ORDER BY as_of DESC, published_at DESC LIMIT 1")
    if runs.is_empty():
        raise PoolcastError(f"{target}: no published run yet")
    latest = runs.row(0, named=True)
    return latest, read_table(target, "leaderboard", run_id=latest["run_id"])
