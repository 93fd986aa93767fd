"""Publish a run's outputs to an embedded DuckDB database: versioned, idempotent and atomic.

Every published table carries two key columns, ``run_id`` and ``as_of``. A run is one
*version*: publishing run R again deletes R's rows and inserts the new ones, so a retried
publish never duplicates rows (idempotent), and other runs' rows are never touched
(versioned). All tables of one publish are written in a single transaction: a reader sees
either the whole run or none of it (atomic). The ``runs`` table records each published run;
the view ``latest_forecasts`` selects, for every ``as_of``, the rows of its most recently
published run.

Quantile columns ``q_<level>`` of a forecast frame are stored long, in
``forecast_quantiles (sku, origin, horizon, month, level, value)``, so runs with other
service levels share one schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import polars as pl

from poolcast.errors import InvalidParameterError, PoolcastError

__all__ = [
    "PublishResult",
    "forecast_quantiles_long",
    "publish_run",
    "read_table",
]

KEY_COLUMNS = ("run_id", "as_of")
_RESERVED = {"runs"}


@dataclass(frozen=True)
class PublishResult:
    """What one publish wrote.

    Fields
    ------
    path : Path
        The DuckDB file.
    run_id : str
        Version key of the rows.
    as_of : date
        Data cut-off of the run.
    rows : dict of str to int
        Rows written per table.
    """

    path: Path
    run_id: str
    as_of: date
    rows: dict[str, int]


def forecast_quantiles_long(forecast: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split a forecast frame (keys, ``mean``, ``q_<level>``...) into a point table and a long quantile table.

    Returns
    -------
    points : pl.DataFrame
        Every column except the ``q_`` ones.
    quantiles : pl.DataFrame
        ``sku, origin, horizon, month, level (Float64), value (Float64)``, one row per
        forecast row and level.
    """
    qcols = [c for c in forecast.columns if c.startswith("q_")]
    keys = [c for c in ("sku", "origin", "horizon", "month") if c in forecast.columns]
    points = forecast.drop(qcols)
    if not qcols:
        return points, pl.DataFrame(
            schema={
                **{k: forecast.schema[k] for k in keys},
                "level": pl.Float64,
                "value": pl.Float64,
            }
        )
    long = forecast.select([*keys, *qcols]).unpivot(
        index=keys, on=qcols, variable_name="level", value_name="value"
    )
    long = long.with_columns(
        pl.col("level").str.strip_prefix("q_").cast(pl.Float64),
        pl.col("value").cast(pl.Float64),
    )
    return points, long


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _check_tables(tables: Mapping[str, pl.DataFrame]) -> None:
    for name, frame in tables.items():
        if not name.isidentifier() or name in _RESERVED:
            raise InvalidParameterError(
                f"publish_run: table name {name!r} is not allowed; use a Python identifier other than {sorted(_RESERVED)}"
            )
        clash = [c for c in KEY_COLUMNS if c in frame.columns]
        if clash:
            raise InvalidParameterError(
                f"publish_run: table {name!r} already has key column(s) {clash}; drop them, publish adds them"
            )


def _ensure_table(con, name: str, frame: pl.DataFrame) -> None:
    """Create ``name`` from the frame's schema if absent; add columns the frame has and the table lacks."""
    con.execute(f"CREATE TABLE IF NOT EXISTS {_ident(name)} AS SELECT * FROM frame LIMIT 0")
    existing = {row[0] for row in con.execute(f"DESCRIBE {_ident(name)}").fetchall()}
    described = {row[0]: row[1] for row in con.execute("DESCRIBE SELECT * FROM frame").fetchall()}
    for col, sql_type in described.items():
        if col not in existing:
            con.execute(f"ALTER TABLE {_ident(name)} ADD COLUMN {_ident(col)} {sql_type}")


def publish_run(
    path: str | Path,
    *,
    run_id: str,
    as_of: date,
    tables: Mapping[str, pl.DataFrame],
    champion: str | None = None,
) -> PublishResult:
    """Write a run's tables to DuckDB in one transaction, replacing that run's earlier rows.

    Parameters
    ----------
    path : str or Path
        DuckDB file; created (with its parent folder) when absent.
    run_id : str
        Version key (the MLflow parent run id).
    as_of : date
        The run's data cut-off, stored beside every row.
    tables : mapping of str to pl.DataFrame
        Table name to rows. A ``forecasts`` frame with ``q_<level>`` columns is split into
        ``forecasts`` and ``forecast_quantiles`` (see :func:`forecast_quantiles_long`).
    champion : str or None
        Champion candidate name, recorded in ``runs``.

    Returns
    -------
    PublishResult

    Notes
    -----
    Idempotent: ``DELETE WHERE run_id = ?`` then ``INSERT`` inside ``BEGIN ... COMMIT``; on
    any error the transaction is rolled back and the file is as before.
    """
    if not run_id:
        raise InvalidParameterError("publish_run: run_id is empty; pass the MLflow parent run id")
    tables = dict(tables)
    _check_tables(tables)
    if "forecasts" in tables:
        tables["forecasts"], tables["forecast_quantiles"] = forecast_quantiles_long(
            tables["forecasts"]
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows: dict[str, int] = {}
    con = duckdb.connect(str(path))
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(
                "CREATE TABLE IF NOT EXISTS runs (run_id VARCHAR PRIMARY KEY, as_of DATE, "
                "champion VARCHAR, published_at TIMESTAMP)"
            )
            con.execute("DELETE FROM runs WHERE run_id = ?", [run_id])
            con.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?)",
                [run_id, as_of, champion, datetime.now(UTC).replace(tzinfo=None)],
            )
            for name, data in tables.items():
                frame = data.with_columns(
                    pl.lit(run_id).alias("run_id"), pl.lit(as_of).cast(pl.Date).alias("as_of")
                ).select(["run_id", "as_of", *data.columns])
                _ensure_table(con, name, frame)
                con.execute(f"DELETE FROM {_ident(name)} WHERE run_id = ?", [run_id])
                con.execute(f"INSERT INTO {_ident(name)} BY NAME SELECT * FROM frame")
                rows[name] = frame.height
            if "forecasts" in tables:
                con.execute(
                    "CREATE OR REPLACE VIEW latest_forecasts AS SELECT f.* FROM forecasts f "
                    "JOIN (SELECT as_of, arg_max(run_id, published_at) AS run_id FROM runs "
                    "GROUP BY as_of) l USING (as_of, run_id)"
                )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.close()
    return PublishResult(path=path, run_id=run_id, as_of=as_of, rows=rows)


def read_table(path: str | Path, name: str, *, run_id: str | None = None) -> pl.DataFrame:
    """Read a published table (optionally one run's rows) back as polars."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        sql = f"SELECT * FROM {_ident(name)}"
        if run_id is None:
            return con.sql(sql).pl()
        return con.sql(sql + " WHERE run_id = ?", params=[run_id]).pl()
    finally:
        con.close()


def read_latest_leaderboard(path: str | Path) -> tuple[dict[str, object], pl.DataFrame]:
    """The most recently published run (run_id, as_of, champion, published_at) and its leaderboard.

    Raises
    ------
    PoolcastError
        When the database does not exist or holds no published run.
    """
    if not Path(path).is_file():
        raise PoolcastError(f"{path}: no outputs database; run `poolcast run` first")
    runs = read_table(path, "runs").sort("published_at", descending=True)
    if runs.is_empty():
        raise PoolcastError(f"{path}: no published run yet")
    latest = runs.row(0, named=True)
    return latest, read_table(path, "leaderboard", run_id=latest["run_id"])
