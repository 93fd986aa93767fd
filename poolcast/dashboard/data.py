"""Every read the dashboard and the run summary make from the published outputs.

The one module that knows table, view and column names of the publication (the contract in
the README: tables ``runs``, ``forecasts``, ``forecast_quantiles``, ``inventory_plan``,
``leaderboard``, ``data_quality``, ``quarantine``, ``quarantine_summary``, ``history``; views
``latest_*``). Each function

- opens the DuckDB file **read-only** for the duration of one call and closes it (nothing is
  held open between requests, so a reader never keeps the monthly publish waiting longer than
  one query);
- returns a polars frame, or an :class:`Unavailable` saying why not (the file is missing, is not
  a database, is busy, or the table/view is not published yet), never raises for those.

Latest means: the greatest ``as_of``, and for it the most recently published run (the
``latest_*`` views when they exist, else the same rule applied to ``runs``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

__all__ = [
    "FAN_BANDS",
    "OUTPUTS_FILE",
    "Outputs",
    "Unavailable",
    "champion_history",
    "fan_data",
    "inventory_plan",
    "latest_leaderboard",
    "latest_run",
    "month_comparison",
    "outputs_path",
    "quantile_column",
    "quarantine_by_rule",
    "run_history",
    "sku_list",
]

OUTPUTS_FILE = "outputs.duckdb"

#: Quantile band pairs drawn on the fan chart, widest first.
FAN_BANDS: tuple[tuple[float, float], ...] = ((0.025, 0.975), (0.1, 0.9), (0.25, 0.75))


@dataclass(frozen=True)
class Unavailable:
    """Why a view of the dashboard has no data: shown to the user instead of a traceback.

    Fields
    ------
    message : str
        One line, e.g. ``"inventory_plan: not published yet"``.
    """

    message: str

    def __bool__(self) -> bool:  # so `if result:` reads "if there is data"
        return False


Result = pl.DataFrame | Unavailable


def outputs_path(work_dir: str | Path) -> Path:
    """The outputs database of a work dir (``<work_dir>/outputs.duckdb``)."""
    return Path(work_dir) / OUTPUTS_FILE


class Outputs:
    """Read-only access to one outputs database.

    Parameters
    ----------
    path : str or Path
        The DuckDB file the monthly run publishes to.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def check(self) -> Unavailable | None:
        """None when the file opens read-only as a database, else why not."""
        if not self.path.is_file():
            return Unavailable(f"{self.path}: no outputs database yet; run `poolcast run` first")
        try:
            con = duckdb.connect(str(self.path), read_only=True)
        except duckdb.Error as exc:
            return Unavailable(_why(self.path, exc))
        con.close()
        return None

    def relations(self) -> set[str] | Unavailable:
        """Names of the tables and views in the database."""
        return self._run(_relations)

    def query(
        self, sql: str, params: Sequence[Any] | None = None, *, needs: Sequence[str] = ()
    ) -> Result:
        """Run one query on a fresh read-only connection.

        Parameters
        ----------
        sql : str
            The query.
        params : sequence, optional
            Positional parameters (``?``).
        needs : sequence of str
            Tables/views the query reads; when one is missing the result is
            ``Unavailable("<name>: not published yet")`` instead of an error.
        """

        def run(con: duckdb.DuckDBPyConnection) -> Result:
            present = _relations(con)
            missing = [n for n in needs if n not in present]
            if missing:
                return Unavailable(f"{', '.join(missing)}: not published yet")
            return con.sql(sql, params=list(params or []) or None).pl()

        return self._run(run)

    def _run(self, fn: Callable[[duckdb.DuckDBPyConnection], Any]) -> Any:
        """``fn(connection)`` on a fresh read-only connection, closed afterwards; Unavailable
        when the file is missing, not a database, or locked."""
        if not self.path.is_file():
            return Unavailable(f"{self.path}: no outputs database yet; run `poolcast run` first")
        try:
            con = duckdb.connect(str(self.path), read_only=True)
        except duckdb.Error as exc:
            return Unavailable(_why(self.path, exc))
        try:
            return fn(con)
        finally:
            con.close()


def _why(path: Path, exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "lock" in text.lower():
        return f"{path}: busy (a publish is writing it); reload in a moment"
    return f"{path}: cannot be read as a DuckDB database ({text})"


def _relations(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
    ).fetchall()
    return {r[0] for r in rows}


def _columns(con: duckdb.DuckDBPyConnection, name: str) -> list[str]:
    return [r[0] for r in con.execute(f'DESCRIBE "{name}"').fetchall()]


# SQL picking the latest run: greatest as_of, then latest published_at.
_LATEST_RUN_ID = "SELECT run_id FROM runs ORDER BY as_of DESC, published_at DESC LIMIT 1"


def latest_run(outputs: Outputs) -> Result:
    """One row: the latest run's ``run_id, as_of, champion, published_at``."""
    return outputs.query(
        "SELECT * FROM runs ORDER BY as_of DESC, published_at DESC LIMIT 1", needs=["runs"]
    )


def _latest(outputs: Outputs, name: str, order: str = "") -> Result:
    """Rows of the latest run of table `name`: the view ``latest_<name>`` when published, else
    the table filtered to the latest run (so a database of an older publish still works)."""

    def run(con: duckdb.DuckDBPyConnection) -> Result:
        present = _relations(con)
        view = f"latest_{name}"
        if view in present:
            sql = f'SELECT * FROM "{view}" WHERE as_of = (SELECT max(as_of) FROM "{view}")'
        elif name in present and "runs" in present:
            sql = f'SELECT * FROM "{name}" WHERE run_id = ({_LATEST_RUN_ID})'
        else:
            return Unavailable(f"{name}: not published yet")
        return con.sql(sql + (f" ORDER BY {order}" if order else "")).pl()

    return outputs._run(run)


def run_history(outputs: Outputs) -> Result:
    """One row per published run, oldest first: ``run_id, as_of, champion, registry_version
    (when published), published_at, rows_in, rows_accepted, rows_quarantined, gap_months``."""

    def run(con: duckdb.DuckDBPyConnection) -> Result:
        present = _relations(con)
        if "runs" not in present:
            return Unavailable("runs: not published yet")
        run_cols = _columns(con, "runs")
        version = "r.registry_version" if "registry_version" in run_cols else "NULL"
        if "data_quality" in present:
            dq_cols = set(_columns(con, "data_quality"))
            pick = [
                f"d.{c}" if c in dq_cols else f"NULL AS {c}"
                for c in ("rows_in", "rows_accepted", "rows_quarantined", "gap_months")
            ]
            if version == "NULL" and "registry_version" in dq_cols:
                version = "d.registry_version"
            join = "LEFT JOIN data_quality d USING (run_id)"
        else:
            pick = [
                f"NULL AS {c}"
                for c in ("rows_in", "rows_accepted", "rows_quarantined", "gap_months")
            ]
            join = ""
        sql = (
            f"SELECT r.run_id, r.as_of, r.champion, CAST({version} AS VARCHAR) AS registry_version, "
            f"r.published_at, {', '.join(pick)} FROM runs r {join} "
            "ORDER BY r.as_of, r.published_at"
        )
        return con.sql(sql).pl()

    return outputs._run(run)


def quarantine_by_rule(outputs: Outputs) -> Result:
    """Quarantined rows per rule and run: ``run_id, as_of, rule, rows``, oldest run first.

    From ``quarantine_summary`` (its count column is ``rows``, or the first integer column
    other than the keys); else counted from the ``quarantine`` table.
    """

    def run(con: duckdb.DuckDBPyConnection) -> Result:
        present = _relations(con)
        if "quarantine_summary" in present:
            cols = con.execute("DESCRIBE quarantine_summary").fetchall()
            names = [c[0] for c in cols]
            count = next((c for c in ("n_rows", "rows") if c in names), None)
            if count is None:
                ints = [
                    c[0]
                    for c in cols
                    if c[1] in ("BIGINT", "INTEGER", "HUGEINT", "UBIGINT")
                    and c[0] not in ("run_id", "as_of", "registry_version")
                ]
                count = ints[0] if ints else None
            if count is not None and "rule" in names:
                return con.sql(
                    f'SELECT run_id, as_of, rule, CAST(SUM("{count}") AS BIGINT) AS rows '
                    "FROM quarantine_summary GROUP BY run_id, as_of, rule ORDER BY as_of, rule"
                ).pl()
        if "quarantine" in present and "rule" in _columns(con, "quarantine"):
            return con.sql(
                "SELECT run_id, as_of, rule, COUNT(*)::BIGINT AS rows FROM quarantine "
                "GROUP BY run_id, as_of, rule ORDER BY as_of, rule"
            ).pl()
        return Unavailable("quarantine_summary: not published yet")

    return outputs._run(run)


def latest_leaderboard(outputs: Outputs) -> Result:
    """The latest run's leaderboard, in its published order (best first)."""
    return _latest(outputs, "leaderboard")


def champion_history(outputs: Outputs, metric: str = "scaled_pinball") -> Result:
    """One row per run, oldest first: ``as_of, run_id, champion, registry_version, <metric>``
    (the champion's backtest score on that run's leaderboard; NULL when not published)."""

    def run(con: duckdb.DuckDBPyConnection) -> Result:
        present = _relations(con)
        if "runs" not in present:
            return Unavailable("runs: not published yet")
        score = "NULL"
        version = "NULL"
        join = ""
        if "leaderboard" in present:
            cols = set(_columns(con, "leaderboard"))
            join = "LEFT JOIN leaderboard l ON l.run_id = r.run_id AND l.candidate = r.champion"
            if metric in cols:
                score = f'l."{metric}"'
            if "registry_version" in cols:
                version = "l.registry_version"
        if "registry_version" in _columns(con, "runs"):
            version = "r.registry_version"
        return con.sql(
            f"SELECT r.as_of, r.run_id, r.champion, CAST({version} AS VARCHAR) AS registry_version, "
            f'{score} AS "{metric}" FROM runs r {join} ORDER BY r.as_of, r.published_at'
        ).pl()

    return outputs._run(run)


def sku_list(outputs: Outputs) -> Result:
    """SKUs of the latest run's forecast, sorted, as a one-column frame ``sku``."""
    forecasts = _latest(outputs, "forecasts")
    if isinstance(forecasts, Unavailable):
        return forecasts
    return forecasts.select("sku").unique().sort("sku")


def fan_data(outputs: Outputs, sku: str) -> tuple[Result, Result]:
    """History and forecast of one SKU for the fan chart.

    Returns
    -------
    history : pl.DataFrame or Unavailable
        ``month, sales`` of the latest run's published ``history`` table.
    forecast : pl.DataFrame or Unavailable
        ``month, horizon, mean`` and one column ``q_<level>`` per published quantile level
        (``q_0_025``, ``q_0_5``... as in ``latest_forecasts``), from the latest run's
        ``forecasts`` and ``forecast_quantiles``.
    """
    history = _latest(outputs, "history")
    if not isinstance(history, Unavailable):
        history = history.filter(pl.col("sku") == sku).select("month", "sales").sort("month")
    points = _latest(outputs, "forecasts")
    if isinstance(points, Unavailable):
        return history, points
    points = points.filter(pl.col("sku") == sku)
    run_ids = points.get_column("run_id").unique().to_list()
    quantiles = outputs.query(
        "SELECT month, level, value FROM forecast_quantiles WHERE sku = ? AND run_id = ?",
        [sku, run_ids[0] if run_ids else ""],
        needs=["forecast_quantiles"],
    )
    forecast = points.select("month", "horizon", "mean").sort("month")
    if not isinstance(quantiles, Unavailable) and quantiles.height:
        wide = (
            quantiles.with_columns(pl.col("level").map_elements(quantile_column, pl.String))
            .pivot(on="level", index="month", values="value")
            .sort("month")
        )
        ordered = sorted(wide.columns[1:], key=_level_of)
        forecast = forecast.join(wide.select("month", *ordered), on="month", how="left")
    return history, forecast


def quantile_column(level: float) -> str:
    """``q_0_025`` for 0.025: the snake_case column name of a quantile level."""
    return "q_" + f"{level:g}".replace(".", "_")


def _level_of(column: str) -> float:
    return float(column.removeprefix("q_").replace("_", ".", 1))


def inventory_plan(outputs: Outputs) -> Result:
    """The latest run's inventory plan, one row per SKU (sorted by SKU)."""
    return _latest(outputs, "inventory_plan", order="sku")


def month_comparison(
    outputs: Outputs, run_id: str
) -> tuple[dict[str, Any] | None, Result, Result, Result, Result]:
    """This run's and the previous published as-of's per-SKU forecast totals and order quantities.

    The previous publication is the latest run of the greatest ``as_of`` before this run's.

    Returns
    -------
    previous : dict or None
        ``run_id, as_of`` of the previous publication (None when there is none).
    forecast_now, forecast_before : pl.DataFrame or Unavailable
        ``sku, forecast_total``: the sum of the forecast mean over the run's horizons.
    plan_now, plan_before : pl.DataFrame or Unavailable
        The inventory plan rows (every column) of each run.
    """
    runs = outputs.query(
        "SELECT run_id, as_of FROM runs ORDER BY as_of DESC, published_at DESC", needs=["runs"]
    )
    if isinstance(runs, Unavailable):
        return None, runs, runs, runs, runs
    this = runs.filter(pl.col("run_id") == run_id)
    previous = None
    if this.height:
        earlier = runs.filter(pl.col("as_of") < this.item(0, "as_of"))
        if earlier.height:
            previous = earlier.row(0, named=True)

    def totals(rid: str | None) -> Result:
        if rid is None:
            return Unavailable("no previous published as-of")
        return outputs.query(
            "SELECT sku, SUM(mean) AS forecast_total FROM forecasts WHERE run_id = ? "
            "GROUP BY sku ORDER BY sku",
            [rid],
            needs=["forecasts"],
        )

    def plan(rid: str | None) -> Result:
        if rid is None:
            return Unavailable("no previous published as-of")
        return outputs.query(
            "SELECT * FROM inventory_plan WHERE run_id = ? ORDER BY sku",
            [rid],
            needs=["inventory_plan"],
        )

    prev_id = previous["run_id"] if previous else None
    return previous, totals(run_id), totals(prev_id), plan(run_id), plan(prev_id)
