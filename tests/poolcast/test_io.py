"""Loading sources: CSV, Parquet, SQL (SQLAlchemy and ADBC), and unusable sources."""

from __future__ import annotations

import sqlite3
from datetime import date, datetime
from pathlib import Path

import polars as pl
import pytest

from poolcast.errors import SourceError
from poolcast.io import load_source, source_kind
from poolcast.mapping import Mapping, load_mapping
from poolcast.validation import validate_panel

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

ROWS = [
    ("S1", "2024-01", 5, 40),
    ("S1", "2024-02", 7, 42),
    ("S2", "2024-01", 0, 12),
    ("S2", "2024-02", "oops", 13),  # a bad value inside an INTEGER column (SQLite allows it)
]


def test_source_kind() -> None:
    assert source_kind("sqlite:///x.db") == "sql"
    assert source_kind("data/x.parquet") == "parquet"
    assert source_kind("data/x.csv.gz") == "csv"


def test_csv_columns_are_strings_renamed_with_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "shop.csv"
    path.write_text("Item,Period,Units,Visitors,Extra\n001,2024-01,5,40,x\n002,2024-01,3.5,,y\n")
    mapping = Mapping(
        name="shop",
        columns={"sku": "Item", "month": "Period", "sales": "Units", "customer_count": "Visitors"},
    )
    loaded = load_source(path, mapping)
    assert loaded.frame.columns == ["_row", "sku", "month", "sales", "customer_count"]
    assert loaded.frame.schema["sku"] == pl.String and loaded.frame.schema["sales"] == pl.String
    assert loaded.frame["sku"].to_list() == ["001", "002"]  # leading zeros kept
    assert loaded.frame["_row"].to_list() == [1, 2]
    assert loaded.frame["sales"].to_list() == ["5", "3.5"]
    assert loaded.has_customers


def test_parquet_with_typed_columns(tmp_path: Path) -> None:
    path = tmp_path / "panel.parquet"
    pl.DataFrame(
        {
            "sku": ["A", "A", "B"],
            "month": [date(2024, 1, 1), date(2024, 2, 1), date(2024, 1, 1)],
            "sales": [1.0, 2.0, -1.0],  # floats, as a float32 export would give
            "customer_count": [10, 11, 12],
            "promo": [True, False, True],
        }
    ).write_parquet(path)
    loaded = load_source(path, "contract")
    assert loaded.frame["month"].to_list() == ["2024-01-01", "2024-02-01", "2024-01-01"]
    assert loaded.frame["promo"].to_list() == ["1", "0", "1"]
    result = validate_panel(loaded)
    assert result.panel["sales"].to_list() == [1, 2]
    assert result.panel["promo"].to_list() == [1, 0]
    assert result.quarantine.select("row", "rule", "value").rows() == [
        (3, "sales_negative", "-1.0")
    ]


def test_parquet_datetime_month_at_midnight_is_a_date(tmp_path: Path) -> None:
    path = tmp_path / "dt.parquet"
    pl.DataFrame(
        {
            "sku": ["A", "A"],
            "month": [datetime(2024, 1, 1), datetime(2024, 2, 1, 13, 30)],
            "sales": [1, 2],
        }
    ).write_parquet(path)
    result = validate_panel(load_source(path, "contract"))
    assert result.panel["month"].to_list() == [date(2024, 1, 1)]
    assert result.quarantine.select("rule", "value").rows() == [
        ("month_unparseable", "2024-02-01 13:30:00")
    ]


def _write_sqlite(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE sales (sku TEXT, month TEXT, sales INTEGER, customer_count INTEGER)")
    con.executemany("INSERT INTO sales VALUES (?, ?, ?, ?)", ROWS)
    con.commit()
    con.close()


@pytest.mark.parametrize("prefix", ["", "adbc:"])
def test_sqlite_table_from_url_fragment(tmp_path: Path, prefix: str) -> None:
    db = tmp_path / "shop.db"
    _write_sqlite(db)
    loaded = load_source(f"{prefix}sqlite:///{db}#sales", "contract")
    assert loaded.frame.height == 4
    assert loaded.source.endswith("#sales")
    result = validate_panel(loaded)
    assert result.counts.rows_accepted == 3
    assert result.quarantine.select("row", "rule", "value").rows() == [
        (4, "sales_not_integer", "oops")
    ]
    assert result.panel.filter(pl.col("sku") == "S1")["sales"].to_list() == [5, 7]


def test_sqlite_query_from_mapping(tmp_path: Path) -> None:
    db = tmp_path / "shop.db"
    _write_sqlite(db)
    mapping = Mapping(
        name="sqlshop",
        columns={"sku": "item", "month": "period", "sales": "units"},
        query="SELECT sku AS item, month AS period, sales AS units FROM sales WHERE sku = 'S1'",
    )
    loaded = load_source(f"sqlite:///{db}", mapping)
    assert loaded.frame["sku"].to_list() == ["S1", "S1"]
    assert loaded.frame["sales"].to_list() == ["5", "7"]


def test_sqlite_without_table_or_query_is_a_source_error(tmp_path: Path) -> None:
    db = tmp_path / "shop.db"
    _write_sqlite(db)
    with pytest.raises(SourceError, match="no table or query"):
        load_source(f"sqlite:///{db}", "contract")


def test_sqlite_missing_table_is_a_source_error(tmp_path: Path) -> None:
    db = tmp_path / "shop.db"
    _write_sqlite(db)
    with pytest.raises(SourceError, match="nosuchtable"):
        load_source(f"sqlite:///{db}#nosuchtable", "contract")


def test_rossmann_promo_days_are_binarised_at_12(tmp_path: Path) -> None:
    path = tmp_path / "ross.csv"
    path.write_text(
        "Store,Month,Sales,Customers,PromoDays\n"
        "1,2013-01,100,10,10\n1,2013-02,100,10,11\n1,2013-03,100,10,12\n"
        "1,2013-04,100,10,15\n1,2013-05,100,10,many\n"
    )
    loaded = load_source(path, "rossmann")
    assert loaded.frame["promo"].to_list() == ["0", "0", "1", "1", "many"]
    result = validate_panel(loaded)
    # PromoDays is also the plan column promo_days, checked as a number
    assert result.quarantine.select("row", "rule", "column", "value").rows() == [
        (5, "promo_invalid", "promo", "many"),
        (5, "plan_not_number", "promo_days", "many"),
    ]
    # 2013-05 (the as-of) is quarantined, so the store's grid ends with a gap month there:
    # a NULL plan value
    assert result.panel["promo_days"].to_list() == [10.0, 11.0, 12.0, 15.0, None]


# ------------------------------------------------------------------ unusable sources


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(SourceError, match=r"nope\.csv.*not found") as info:
        load_source(path, "contract")
    assert info.value.source == str(path)


@pytest.mark.parametrize("content", ["", "sku,month,sales\n"], ids=["zero-bytes", "header-only"])
def test_empty_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.csv"
    path.write_text(content)
    with pytest.raises(SourceError, match=r"empty\.csv.*(empty|no data rows)") as info:
        load_source(path, "contract")
    assert info.value.source == str(path)


def test_missing_required_column_names_file_and_column(tmp_path: Path) -> None:
    path = tmp_path / "nosales.csv"
    path.write_text("sku,month,units\nA,2024-01,3\n")
    with pytest.raises(SourceError, match=r"nosales\.csv.*'sales'") as info:
        load_source(path, "contract")
    assert info.value.column == "sales"
    assert info.value.source == str(path)


def test_mapped_customer_column_absent_is_a_source_error(tmp_path: Path) -> None:
    path = tmp_path / "ross.csv"
    path.write_text("Store,Month,Sales,PromoDays\n1,2013-01,100,10\n")
    with pytest.raises(SourceError, match="Customers") as info:
        load_source(path, "rossmann")
    assert info.value.column == "Customers"


def test_wrong_delimiter_is_detected() -> None:
    path = FIXTURES / "semicolon.csv"
    with pytest.raises(SourceError, match=r"semicolon\.csv: wrong delimiter.*';'") as info:
        load_source(path, "contract")
    assert info.value.column == "sku"


def test_semicolon_file_loads_with_the_separator_set() -> None:
    mapping = Mapping(name="semi", columns=dict(load_mapping("contract").columns), separator=";")
    loaded = load_source(FIXTURES / "semicolon.csv", mapping)
    assert loaded.frame["sales"].to_list() == ["3", "4"]


def test_unreadable_parquet(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    path.write_text("this is not parquet")
    with pytest.raises(SourceError, match=r"bad\.parquet.*Parquet"):
        load_source(path, "contract")


# ------------------------------------------------- malformed files: named file and place


@pytest.mark.parametrize(
    ("column", "values", "type_name"),
    [
        ("sku", [["A"], ["B"]], "List(String)"),
        ("sku", [b"A", b"B"], "Binary"),
        ("sku", [{"id": "A"}, {"id": "B"}], "Struct({'id': String})"),
        ("sales", [[1], [2]], "List(Int64)"),
        ("month", [["2024-01"], ["2024-02"]], "List(String)"),
    ],
)
def test_a_non_scalar_parquet_column_is_refused_naming_it_and_its_type(
    tmp_path: Path, column: str, values: list, type_name: str
) -> None:
    data = {"sku": ["A", "B"], "month": ["2024-01", "2024-02"], "sales": [1, 2]}
    data[column] = values
    path = tmp_path / "nested.parquet"
    pl.DataFrame(data).write_parquet(path)
    with pytest.raises(SourceError) as info:
        load_source(path, "contract")
    message = str(info.value)
    assert f"column '{column}'" in message
    assert f"type {type_name}" in message
    assert info.value.column == column


def test_an_unmapped_nested_column_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "extra.parquet"
    pl.DataFrame(
        {"sku": ["A"], "month": ["2024-01"], "sales": [1], "tags": [["x", "y"]]}
    ).write_parquet(path)
    assert load_source(path, "contract").frame["sku"].to_list() == ["A"]


@pytest.mark.parametrize(
    ("header", "column", "positions"),
    [
        ("sku,month,sales,sales", "sales", "columns 3 and 4"),
        ("sku,month, sales,sales ", "sales", "columns 3 and 4"),
        ("sku,sku,month,sales", "sku", "columns 1 and 2"),
    ],
)
def test_a_duplicate_header_is_refused_naming_the_column(
    tmp_path: Path, header: str, column: str, positions: str
) -> None:
    path = tmp_path / "dup.csv"
    path.write_text(f"{header}\nA,2024-01,1,2\n")
    with pytest.raises(SourceError) as info:
        load_source(path, "contract")
    assert f"duplicate column {column!r}" in str(info.value)
    assert positions in str(info.value)
    assert str(path) in str(info.value)
    assert info.value.column == column


@pytest.mark.parametrize("compress", [False, True], ids=["csv", "csv.gz"])
def test_an_invalid_utf8_byte_names_the_line(tmp_path: Path, compress: bool) -> None:
    import gzip

    data = b"sku,month,sales\nA,2024-01,1\nA,2024-02,2\nB\xff,2024-01,3\nB,2024-02,4\n"
    path = tmp_path / ("bad.csv.gz" if compress else "bad.csv")
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(SourceError) as info:
        load_source(path, "contract")
    message = str(info.value)
    assert message.startswith(str(path))
    assert "line 4: invalid UTF-8 byte 0xff at byte 2" in message


def test_an_invalid_utf8_byte_in_the_header_names_line_1(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(b"sku,m\xe9nth,sales\nA,2024-01,1\n")  # latin-1
    with pytest.raises(SourceError, match=r"line 1 .*invalid UTF-8 byte 0xe9"):
        load_source(path, "contract")


def test_a_ragged_row_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text('sku,month,sales\nA,2024-01,1\n"B, quoted",2024-01,2\nC,2024-01,3,9\n')
    with pytest.raises(SourceError) as info:
        load_source(path, "contract")
    assert str(path) in str(info.value)
    assert "line 4 has 4 fields but the header has 3" in str(info.value)


def test_a_short_row_reads_its_missing_fields_as_empty_and_is_quarantined(
    tmp_path: Path,
) -> None:
    path = tmp_path / "short.csv"
    path.write_text("sku,month,sales\nA,2024-01,1\nA,2024-02\n")
    result = validate_panel(load_source(path, "contract"), as_of=date(2024, 2, 1))
    assert result.quarantine.select("row", "rule").rows() == [(2, "sales_null")]


def test_a_gz_that_is_not_gzip_says_so(tmp_path: Path) -> None:
    path = tmp_path / "plain.csv.gz"
    path.write_text("sku,month,sales\nA,2024-01,1\n")
    with pytest.raises(SourceError, match=r"plain\.csv\.gz: is named \.gz but is not gzip"):
        load_source(path, "contract")


@pytest.mark.parametrize("name", ["folder", "folder.csv", "folder.parquet"])
def test_a_directory_says_it_is_a_directory(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.mkdir()
    (path / "a.csv").write_text("sku,month,sales\nA,2024-01,1\n")
    with pytest.raises(SourceError, match=rf"{name}: is a directory, not a file"):
        load_source(path, "contract")


@pytest.mark.parametrize(
    "tz", ["Europe/Berlin", "America/New_York", "Australia/Sydney", "+05:30", "-03:00", "UTC"]
)
def test_time_zone_aware_parquet_midnights_are_their_calendar_month(
    tmp_path: Path, tz: str
) -> None:
    import zoneinfo
    from datetime import UTC, timedelta, timezone

    import pyarrow as pa
    import pyarrow.parquet as pq

    if tz[0] in "+-":
        hours, minutes = int(tz[1:3]), int(tz[4:6])
        sign = 1 if tz[0] == "+" else -1
        zone: object = timezone(sign * timedelta(hours=hours, minutes=minutes))
    else:
        zone = zoneinfo.ZoneInfo(tz)
    months = [date(2024, m, 1) for m in range(1, 13)]
    # the UTC instants of local midnight on the 1st, stored with the column's own zone
    instants = [
        datetime(d.year, d.month, 1, tzinfo=zone).astimezone(UTC)  # type: ignore[arg-type]
        for d in months
    ]
    utc = pa.array(instants, type=pa.timestamp("us", tz="UTC"))
    table = pa.table(
        {"sku": ["A"] * 12, "month": utc.cast(pa.timestamp("us", tz=tz)), "sales": list(range(12))}
    )
    if tz != "UTC":  # in UTC these are not midnights: the zone matters
        assert all(t.hour != 0 or t.minute != 0 for t in instants)
    path = tmp_path / "tz.parquet"
    pq.write_table(table, path)
    result = validate_panel(load_source(path, "contract"), as_of=date(2024, 12, 1))
    assert result.counts.rows_quarantined == 0
    assert result.panel["month"].to_list() == months
