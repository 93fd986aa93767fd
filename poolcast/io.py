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
- a path ending ``.parquet`` or ``.pq``: Parquet (read through pyarrow; time-zone-aware
  timestamps become their wall-clock time in their own zone, so midnight of the 1st in
  ``+05:30`` or ``Europe/Berlin`` is that month).
- any other path (``.csv``, ``.csv.gz``, ``.txt``): CSV with the mapping's separator, UTF-8.

Refused with one line naming the file (and the line or column): a directory, a ``.gz``
that is not gzip, a CSV with a duplicate header name, an invalid UTF-8 byte or a row with
more fields than the header (the line number is named; a row with fewer fields reads the
missing ones as empty, which the validation quarantines when the value is required), and a
mapped column whose type is not a scalar (list, struct, binary...).
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from poolcast.errors import SourceError
from poolcast.mapping import Mapping, load_mapping

__all__ = [
    "ROW_COLUMN",
    "LoadedSource",
    "check_source",
    "load_plan_source",
    "load_source",
    "source_kind",
]

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
    def plan_columns(self) -> tuple[str, ...]:
        """The mapping's plan columns this source supplies (see :mod:`poolcast.plan`)."""
        return tuple(c for c in self.mapping.plan_columns if c in self.frame.columns)

    @property
    def n_rows(self) -> int:
        """Rows read (= rows_in of validation)."""
        return self.frame.height


def check_source(source: str | Path) -> None:
    """Fail fast (before a run starts) when a file source cannot be a source at all.

    A path must be a non-empty regular file (not a directory), and a ``.gz`` must be
    gzip-compressed. SQL URLs are not contacted here. Raises :class:`SourceError`.
    """
    if source_kind(source) == "sql":
        return
    path = Path(source)
    _check_file(path)
    if path.name.lower().endswith(".gz"):
        _check_gzip(path)


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
    raw, shown, kind = _read_any(source, mapping, table=table, query=query)
    _check_columns(raw, mapping, shown, separator=mapping.separator if kind == "csv" else None)
    wanted = mapping.source_columns(raw.columns)
    wanted |= mapping.plan_source_columns(raw.columns)
    return LoadedSource(frame=_select(raw, wanted, mapping, shown), source=shown, mapping=mapping)


def load_plan_source(
    source: str | Path,
    mapping: str | Path | Mapping = "contract",
    *,
    table: str | None = None,
    query: str | None = None,
) -> LoadedSource:
    """Read a plan source (known-future covariates) through the same mapping as the sales.

    Only ``sku`` and ``month`` are required; ``promo`` (binarised as in the sales) and the
    mapping's ``[plan_columns]`` are read when present. Sales, customers and the other
    contract columns are not read (a plan has no actuals). Validation is
    :func:`poolcast.plan.validate_plan`.

    Raises
    ------
    SourceError
        The source is missing, empty or unreadable, or lacks the sku or month column.
    """
    mapping = load_mapping(mapping)
    raw, shown, kind = _read_any(source, mapping, table=table, query=query)
    keys = {c: mapping.columns[c] for c in ("sku", "month")}
    _check_columns(
        raw,
        mapping,
        shown,
        separator=mapping.separator if kind == "csv" else None,
        only=keys,
    )
    wanted = dict(keys)
    promo_src = mapping.columns.get("promo") or mapping.optional_columns.get("promo")
    if promo_src is not None and promo_src in raw.columns:
        wanted["promo"] = promo_src
    wanted |= mapping.plan_source_columns(raw.columns)
    return LoadedSource(frame=_select(raw, wanted, mapping, shown), source=shown, mapping=mapping)


def _select(
    raw: pl.DataFrame, wanted: dict[str, str], mapping: Mapping, shown: str
) -> pl.DataFrame:
    """Contract-named string columns (binarised where the mapping says) plus ``_row``."""
    _check_scalar_types(raw, wanted, shown)
    frame = raw.select(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(ROW_COLUMN),
        *[_as_string(raw.schema[src], pl.col(src)).alias(dst) for dst, src in wanted.items()],
    )
    return frame.with_columns(
        _binarise(pl.col(col), threshold).alias(col)
        for col, threshold in mapping.binarise.items()
        if col in frame.columns
    )


def _read_any(
    source: str | Path, mapping: Mapping, *, table: str | None, query: str | None
) -> tuple[pl.DataFrame, str, str]:
    """The raw frame, its shown name and kind; SourceError when it has no data rows."""
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
    return raw, shown, kind


def _binarise(expr: pl.Expr, threshold: float) -> pl.Expr:
    """'1' where the value parses to a finite number >= threshold, '0' where below, raw
    otherwise (``inf`` and ``nan`` are kept as read, for the quarantine)."""
    num = expr.str.strip_chars().cast(pl.Float64, strict=False)
    return (
        pl.when(num.is_null() | ~num.is_finite())
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
    return expr.cast(pl.String)  # not reached: _check_scalar_types refused other types


def _is_scalar(dtype: pl.DataType) -> bool:
    """Types whose values can be contract values (a string, number, date, time stamp, bool)."""
    return (
        dtype in (pl.String, pl.Date, pl.Boolean, pl.Null, pl.Categorical)
        or isinstance(dtype, (pl.Datetime, pl.Enum))
        or dtype.is_numeric()
    )


def _check_scalar_types(raw: pl.DataFrame, wanted: dict[str, str], shown: str) -> None:
    """Refuse a mapped column of list, array, struct, binary, object, time or duration type."""
    for dst, src in wanted.items():
        dtype = raw.schema[src]
        if not _is_scalar(dtype):
            raise SourceError(
                f"{shown}: column {src!r} (contract column {dst!r}) has type {dtype}, not a "
                f"scalar; {dst} must be a string, number or date column: flatten or convert "
                f"it in the source",
                source=shown,
                column=src,
            )


def _check_file(path: Path) -> None:
    """A readable, non-empty regular file (directories and missing files named as such)."""
    if path.is_dir():
        raise SourceError(
            f"{path}: is a directory, not a file; point --source at a CSV or Parquet file",
            source=str(path),
        )
    if not path.is_file():
        raise SourceError(f"{path}: file not found; check --source", source=str(path))
    if path.stat().st_size == 0:
        raise SourceError(f"{path}: the file is empty (0 bytes)", source=str(path))


_GZIP_MAGIC = b"\x1f\x8b"


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(2) == _GZIP_MAGIC


def _check_gzip(path: Path) -> None:
    if not _is_gzip(path):
        with path.open("rb") as fh:
            head = fh.read(8)
        raise SourceError(
            f"{path}: is named .gz but is not gzip-compressed (it starts with {head!r}, not "
            f"b'\\x1f\\x8b'); rename it without .gz if it is plain CSV, or compress it with gzip",
            source=str(path),
        )


def _open_bytes(path: Path) -> io.BufferedIOBase:
    """The file's (decompressed when gzip) bytes."""
    return gzip.open(path, "rb") if _is_gzip(path) else path.open("rb")  # type: ignore[return-value]


def _read_csv(path: Path, *, separator: str) -> pl.DataFrame:
    _check_file(path)
    if path.name.lower().endswith(".gz"):
        _check_gzip(path)
    _check_header(path, separator)
    try:
        frame = pl.read_csv(
            path,
            separator=separator,
            infer_schema=False,
            empty_string_is_null=False,
            raise_if_empty=False,
        )
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError, EOFError) as exc:
        where = _diagnose_csv(path, separator)
        raise SourceError(
            f"{path}: cannot be read as a {separator!r}-separated UTF-8 CSV: "
            + (where or str(exc).splitlines()[0]),
            source=str(path),
        ) from exc
    return frame.rename({c: c.strip().lstrip("\ufeff") for c in frame.columns})


def _first_line(path: Path) -> bytes:
    try:
        with _open_bytes(path) as fh:
            return fh.readline()
    except (OSError, EOFError) as exc:
        raise SourceError(
            f"{path}: cannot be read: {str(exc).splitlines()[0]}", source=str(path)
        ) from exc


def _check_header(path: Path, separator: str) -> None:
    """Refuse a header that names a column twice (after stripping blanks and a BOM)."""
    line = _first_line(path)
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"{path}: line 1 (the header): invalid UTF-8 byte {line[exc.start]:#04x} at "
            f"byte {exc.start + 1}; save the file as UTF-8",
            source=str(path),
        ) from exc
    names = next(csv.reader([text.rstrip("\r\n")], delimiter=separator), [])
    seen: dict[str, int] = {}
    for i, name in enumerate(names, start=1):
        key = name.strip().lstrip("\ufeff")
        if key in seen:
            raise SourceError(
                f"{path}: duplicate column {key!r} in the header (columns {seen[key]} and {i}); "
                f"each column name must appear once: rename or drop one",
                source=str(path),
                column=key,
            )
        seen[key] = i


def _lines(path: Path) -> Iterator[bytes]:
    with _open_bytes(path) as fh:
        yield from fh


def _diagnose_csv(path: Path, separator: str) -> str | None:
    """Where a CSV that polars refused is broken: the first invalid UTF-8 byte or ragged row.

    Line numbers are the file's (1 = the header). Runs only after a failed read.
    """
    try:
        for number, line in enumerate(_lines(path), start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return (
                    f"line {number}: invalid UTF-8 byte {line[exc.start]:#04x} at byte "
                    f"{exc.start + 1} of the line; save the file as UTF-8 or fix that byte"
                )
        with _open_bytes(path) as fh:
            text = io.TextIOWrapper(fh, encoding="utf-8", newline="")
            reader = csv.reader(text, delimiter=separator)
            header = next(reader, [])
            for row in reader:
                if len(row) > len(header):
                    return (
                        f"line {reader.line_num} has {len(row)} fields but the header has "
                        f"{len(header)} (separator {separator!r}); quote values that contain "
                        f"the separator, or fix that row"
                    )
    except (OSError, EOFError, csv.Error) as exc:
        return str(exc).splitlines()[0] if str(exc) else None
    return None


def _read_parquet(path: Path) -> pl.DataFrame:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    _check_file(path)
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for broken files
        raise SourceError(
            f"{path}: cannot be read as Parquet: {str(exc).splitlines()[0]}", source=str(path)
        ) from exc
    names = table.column_names
    dup = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if dup is not None:
        raise SourceError(
            f"{path}: duplicate column {dup!r}; each column name must appear once",
            source=str(path),
            column=dup,
        )
    for i, f in enumerate(table.schema):
        if pa.types.is_timestamp(f.type) and f.type.tz is not None:
            # the wall-clock time in the column's own zone: midnight of the 1st stays that month
            table = table.set_column(i, f.name, pc.local_timestamp(table.column(i)))
    try:
        return pl.from_arrow(table)  # type: ignore[return-value]
    except Exception as exc:
        raise SourceError(
            f"{path}: cannot convert the Parquet columns: {str(exc).splitlines()[0]}",
            source=str(path),
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
    raw: pl.DataFrame,
    mapping: Mapping,
    shown: str,
    *,
    separator: str | None,
    only: dict[str, str] | None = None,
) -> None:
    required = mapping.columns if only is None else only
    missing = [(dst, src) for dst, src in required.items() if src not in raw.columns]
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
