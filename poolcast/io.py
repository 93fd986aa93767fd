"""Loading a source (CSV, Parquet or a SQL database) into contract-named string columns.

Every column is read as a string first, so a bad value (``"abc"`` in a sales column) is
quarantined by :mod:`poolcast.validation` instead of crashing the reader. A source that
cannot be used at all (missing, empty, unreadable, a required column absent, the wrong
delimiter) raises one :class:`~poolcast.errors.SourceError` naming the file and column.

Source kinds, chosen from the source string:

- a URL with ``://`` (``sqlite:///path.db``, ``postgresql://...``): SQL via SQLAlchemy.
  Prefix ``adbc:`` (``adbc:sqlite:///path.db``) to read through ADBC instead. The table
  or query comes from the ``table``/``query`` arguments, else a ``#table`` fragment of the
  URL, else the mapping's ``[source]`` table or query.
- a path ending ``.parquet`` or ``.pq``: Parquet.
- any other path (``.csv``, ``.csv.gz``, ``.txt``): CSV with the mapping's separator.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from poolcast.errors import SourceError
from poolcast.mapping import Mapping, load_mapping

__all__ = ["ROW_COLUMN", "LoadedSource", "load_source", "source_kind"]

#: Name of the source row number column (1 = first data row, header excluded).
ROW_COLUMN = "_row"

_PARQUET_SUFFIXES = (".parquet", ".pq")
_OTHER_DELIMITERS = (";", "\t", "|", ",")
_SQL_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.")


@dataclass(frozen=True)
class LoadedSource:
    """A source read into the contract's column names, every column a string.

    Fields
    ------
    frame : pl.DataFrame
        Contract-named String columns (those the mapping supplies and the source has) plus
        ``_row`` (Int64, the source row number, 1 = first data row).
    source : str
        The path or URL (password hidden) it was read from.
    mapping : Mapping
        The mapping applied.
    """

    frame: pl.DataFrame
    source: str
    mapping: Mapping

    @property
    def has_customers(self) -> bool:
        """Whether the source supplies a customer_count column."""
        return "customer_count" in self.frame.columns

    @property
    def n_rows(self) -> int:
        """Rows read (= rows_in of validation)."""
        return self.frame.height


def source_kind(source: str | Path) -> str:
    """``"sql"``, ``"parquet"`` or ``"csv"`` for a source string or path."""
    text = str(source)
    if "://" in text:
        return "sql"
    if text.lower().endswith(_PARQUET_SUFFIXES):
        return "parquet"
    return "csv"


def load_source(
    source: str | Path,
    mapping: str | Path | Mapping = "contract",
    *,
    table: str | None = None,
    query: str | None = None,
) -> LoadedSource:
    """Read a source and rename its columns to the data contract's.

    Parameters
    ----------
    source : str or Path
        A CSV or Parquet path, or a SQLAlchemy URL (``adbc:`` prefix for ADBC).
    mapping : str, Path or Mapping
        A shipped mapping name, a TOML path or a :class:`~poolcast.mapping.Mapping`.
    table, query : str, optional
        For SQL sources: the table to read or the query to run (override the mapping's).

    Returns
    -------
    LoadedSource
        String columns named by the contract plus ``_row``. Columns in
        ``[binarise]`` are already 0/1 (unparseable values are kept as read, for the
        quarantine).

    Raises
    ------
    SourceError
        The source is missing, empty or unreadable, or a mapped column is absent (the
        message then says when the file looks like it has another delimiter).
    """
    mapping = load_mapping(mapping)
    kind = source_kind(source)
    if kind == "sql":
        raw, shown = _read_sql(str(source), mapping, table=table, query=query)
    elif kind == "parquet":
        shown = str(source)
        raw = _read_parquet(Path(source))
    else:
        shown = str(source)
        raw = _read_csv(Path(source), separator=mapping.separator)
    if raw.width == 0 or raw.height == 0:
        raise SourceError(
            f"{shown}: the source has no data rows (columns: {raw.columns or 'none'}); "
            f"point --source at a file or table with data",
            source=shown,
        )
    _check_columns(raw, mapping, shown, separator=mapping.separator if kind == "csv" else None)
    wanted = mapping.source_columns(raw.columns)
    frame = raw.select(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(ROW_COLUMN),
        *[_as_string(raw.schema[src], pl.col(src)).alias(dst) for dst, src in wanted.items()],
    )
    frame = frame.with_columns(
        _binarise(pl.col(col), threshold).alias(col)
        for col, threshold in mapping.binarise.items()
        if col in frame.columns
    )
    return LoadedSource(frame=frame, source=shown, mapping=mapping)


def _binarise(expr: pl.Expr, threshold: float) -> pl.Expr:
    """'1' where the value parses to a number >= threshold, '0' where below, raw otherwise."""
    num = expr.str.strip_chars().cast(pl.Float64, strict=False)
    return (
        pl.when(num.is_null() | num.is_nan())
        .then(expr)
        .when(num >= threshold)
        .then(pl.lit("1"))
        .otherwise(pl.lit("0"))
    )


def _as_string(dtype: pl.DataType, expr: pl.Expr) -> pl.Expr:
    """A column of any type as strings: dates ISO, midnight datetimes as dates, bools 0/1."""
    if dtype == pl.String:
        return expr
    if dtype == pl.Date:
        return expr.dt.strftime("%Y-%m-%d")
    if isinstance(dtype, pl.Datetime):
        midnight = expr.dt.truncate("1d") == expr
        return (
            pl.when(midnight)
            .then(expr.dt.strftime("%Y-%m-%d"))
            .otherwise(expr.dt.strftime("%Y-%m-%d %H:%M:%S"))
        )
    if dtype == pl.Boolean:
        return expr.cast(pl.Int8).cast(pl.String)
    if dtype == pl.Null:
        return expr.cast(pl.String)
    if dtype.is_numeric() or dtype == pl.Categorical or isinstance(dtype, pl.Enum):
        return expr.cast(pl.String)
    # nested or binary values cannot be contract values: keep a readable form for quarantine
    return expr.map_elements(str, return_dtype=pl.String)


def _read_csv(path: Path, *, separator: str) -> pl.DataFrame:
    if not path.is_file():
        raise SourceError(f"{path}: file not found; check --source", source=str(path))
    if path.stat().st_size == 0:
        raise SourceError(f"{path}: the file is empty (0 bytes)", source=str(path))
    try:
        frame = pl.read_csv(
            path,
            separator=separator,
            infer_schema=False,
            empty_string_is_null=False,
            raise_if_empty=False,
        )
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
        raise SourceError(
            f"{path}: cannot be read as a {separator!r}-separated UTF-8 CSV: "
            f"{str(exc).splitlines()[0]}",
            source=str(path),
        ) from exc
    return frame.rename({c: c.strip().lstrip("\ufeff") for c in frame.columns})


def _read_parquet(path: Path) -> pl.DataFrame:
    if not path.is_file():
        raise SourceError(f"{path}: file not found; check --source", source=str(path))
    if path.stat().st_size == 0:
        raise SourceError(f"{path}: the file is empty (0 bytes)", source=str(path))
    try:
        return pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise SourceError(
            f"{path}: cannot be read as Parquet: {str(exc).splitlines()[0]}", source=str(path)
        ) from exc


def _read_sql(
    url: str, mapping: Mapping, *, table: str | None, query: str | None
) -> tuple[pl.DataFrame, str]:
    import sqlalchemy as sa

    use_adbc = url.startswith("adbc:")
    url = url.removeprefix("adbc:")
    url, _, fragment = url.partition("#")
    try:
        shown = sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError as exc:
        raise SourceError(f"{url!r} is not a database URL: {exc}", source=url) from exc
    table = table or fragment or None
    if table is None and query is None:
        table, query = mapping.table, mapping.query
    if table is not None and query is not None:
        raise SourceError(f"{shown}: give a table or a query, not both", source=shown)
    if table is None and query is None:
        raise SourceError(
            f"{shown}: no table or query named; write the URL as '{shown}#table' or set "
            f'[source] table = "..." (or query) in mapping {mapping.name!r}',
            source=shown,
        )
    if table is not None:
        if not set(table) <= _SQL_NAME_CHARS:
            raise SourceError(
                f"{shown}: table name {table!r} may hold only letters, digits, '_' and '.'; "
                f"use [source] query for anything else",
                source=shown,
            )
        query = f"SELECT * FROM {table}"
        shown = f"{shown}#{table}"
    assert query is not None
    if url.startswith("sqlite:///"):
        db_path = Path(url.removeprefix("sqlite:///").partition("?")[0])
        if str(db_path) not in ("", ":memory:") and not db_path.is_file():
            raise SourceError(f"{shown}: database file {db_path} not found", source=shown)
    try:
        if use_adbc:
            frame = pl.read_database_uri(query, url, engine="adbc")
        else:
            engine = sa.create_engine(url)
            try:
                with engine.connect() as conn:
                    frame = pl.read_database(query, conn, infer_schema_length=None)
            finally:
                engine.dispose()
    except Exception as exc:  # driver errors have no common base class across SQLAlchemy/ADBC
        raise SourceError(
            f"{shown}: cannot run {query!r}: {str(exc).splitlines()[0]}", source=shown
        ) from exc
    return frame, shown


def _check_columns(
    raw: pl.DataFrame, mapping: Mapping, shown: str, *, separator: str | None
) -> None:
    missing = [(dst, src) for dst, src in mapping.columns.items() if src not in raw.columns]
    if not missing:
        return
    dst, src = missing[0]
    names = ", ".join(f"{s!r} ({d})" for d, s in missing)
    message = (
        f"{shown}: required column {src!r} (contract column {dst!r}) is absent; "
        f"missing: {names}; the source has columns {raw.columns[:20]}"
    )
    if separator is not None and raw.width == 1:
        header = raw.columns[0]
        others = [d for d in _OTHER_DELIMITERS if d != separator and d in header]
        if others:
            message = (
                f"{shown}: wrong delimiter: the header {header[:80]!r} was read as one column "
                f"with separator {separator!r}, so column {src!r} is absent; the file looks "
                f"{others[0]!r}-delimited: set [source] separator = {others[0]!r} in mapping "
                f"{mapping.name!r}"
            )
    else:
        message += f"; fix the source or the [columns] of mapping {mapping.name!r}"
    raise SourceError(message, source=shown, column=src)
