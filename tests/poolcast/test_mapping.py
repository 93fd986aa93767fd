"""Column mappings: shipped TOMLs, loading by name or path, and invalid mappings."""

from __future__ import annotations

from pathlib import Path

import pytest

from poolcast.errors import InvalidParameterError
from poolcast.mapping import Mapping, load_mapping, shipped_mappings


def test_shipped_mappings() -> None:
    assert shipped_mappings() == ["carparts", "contract", "online_retail", "rossmann"]


def test_rossmann_mapping() -> None:
    m = load_mapping("rossmann")
    assert m.columns == {
        "sku": "Store",
        "month": "Month",
        "sales": "Sales",
        "customer_count": "Customers",
        "promo": "PromoDays",
    }
    assert m.binarise == {"promo": 12}
    assert m.gap_policy == "missing"
    assert m.plan_transforms == {"open_days": "log1p"}


def test_online_retail_mapping_uses_shop_customers_and_zero_gaps() -> None:
    m = load_mapping("online_retail")
    assert m.columns["sales"] == "Quantity"
    assert m.columns["customer_count"] == "ShopCustomers"
    assert m.gap_policy == "zero"


def test_carparts_mapping_has_no_customers() -> None:
    m = load_mapping("carparts")
    assert "customer_count" not in m.columns and "customer_count" not in m.optional_columns


def test_contract_mapping_is_identity_with_optional_columns() -> None:
    m = load_mapping("contract")
    assert all(k == v for k, v in {**m.columns, **m.optional_columns}.items())
    assert m.source_columns(["sku", "month", "sales", "promo"]) == {
        "sku": "sku",
        "month": "month",
        "sales": "sales",
        "promo": "promo",
    }


def test_load_by_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(
        'gap_policy = "zero"\n[columns]\nsku = "id"\nmonth = "m"\nsales = "q"\n'
        '[source]\nseparator = ";"\n'
    )
    m = load_mapping(path)
    assert m.name == "mine"
    assert m.columns == {"sku": "id", "month": "m", "sales": "q"}
    assert m.separator == ";" and m.gap_policy == "zero" and m.path == path
    assert load_mapping(str(path)) == m
    assert load_mapping(m) is m


def test_unknown_name() -> None:
    with pytest.raises(InvalidParameterError, match=r"nosuch.*shipped mapping"):
        load_mapping("nosuch")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match="does not exist"):
        load_mapping(tmp_path / "gone.toml")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('[columns]\nsku = "a"\nmonth = "b"\n', r"required contract column\(s\) \['sales'\]"),
        (
            '[columns]\nsku = "a"\nmonth = "b"\nsales = "c"\nprice = "d"\n',
            "unknown contract column",
        ),
        ('[columns]\nsku = "a"\nmonth = "a"\nsales = "c"\n', "more than one contract column"),
        ('gap_policy = "ffill"\n[columns]\nsku = "a"\nmonth = "b"\nsales = "c"\n', "gap_policy"),
        ('[columns]\nsku = "a"\nmonth = "b"\nsales = "c"\n[binarise]\nsales = 3\n', "binarise"),
        ('colums = 1\n[columns]\nsku = "a"\nmonth = "b"\nsales = "c"\n', "unknown key"),
        ("[columns\n", "not valid TOML"),
        (
            '[columns]\nsku = "a"\nmonth = "b"\nsales = "c"\n[plan_columns]\nopen_days = "d"\n'
            '[plan_transforms]\nopen_day = "log1p"\n',
            r"\[plan_transforms\] 'open_day' is not a \[plan_columns\] name",
        ),
        (
            '[columns]\nsku = "a"\nmonth = "b"\nsales = "c"\n[plan_columns]\nopen_days = "d"\n'
            '[plan_transforms]\nopen_days = "sqrt"\n',
            r"open_days = 'sqrt'; use one of \['identity', 'log1p'\]",
        ),
        (
            '[columns]\nsku = "a"\nmonth = "b"\nsales = "c"\n[plan_columns]\nlog1p_days = "d"\n',
            "must be a lower-case identifier",
        ),
    ],
)
def test_invalid_mappings(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(InvalidParameterError, match=match):
        load_mapping(path)


def test_table_and_query_are_exclusive() -> None:
    with pytest.raises(InvalidParameterError, match="not both"):
        Mapping(
            name="x",
            columns={"sku": "a", "month": "b", "sales": "c"},
            table="t",
            query="SELECT 1",
        )
