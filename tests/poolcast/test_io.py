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
    assert result.panel["promo_days"].to_list() == [10.0, 11.0, 12.0, 15.0]


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
