"""The pandera data-contract models: SalesInput and SalesPanel."""

from __future__ import annotations

from datetime import date

import pandera.errors as pa_errors
import polars as pl
import pytest

from schemas import SalesInput, SalesPanel


def _panel(**overrides) -> pl.DataFrame:
    data = {
        "sku": ["A", "A", "A", "B"],
        "month": [date(2024, 1, 1), date(2024, 2, 1), date(2024, 3, 1), date(2024, 2, 1)],
        "sales": [3, None, 5, 0],
        "customer_count": [10, None, 12, None],
        "promo": [0, 0, 1, 0],
        "category": ["x", "x", "x", None],
        "on_hand": [None, None, None, 4],
        "is_gap": [False, True, False, False],
    }
    data.update(overrides)
    return pl.DataFrame(
        data,
        schema={
            "sku": pl.String,
            "month": pl.Date,
            "sales": pl.Int64,
            "customer_count": pl.Int64,
            "promo": pl.Int8,
            "category": pl.String,
            "on_hand": pl.Int64,
            "is_gap": pl.Boolean,
        },
    )


def _failed_checks(model, frame: pl.DataFrame) -> set[str]:
    with pytest.raises(pa_errors.SchemaErrors) as info:
        model.validate(frame, lazy=True)
    return set(info.value.failure_cases["check"].to_list())


def test_valid_panel_passes() -> None:
    frame = _panel()
    assert SalesPanel.validate(frame).equals(frame)


def test_sales_input_without_optional_columns() -> None:
    frame = pl.DataFrame(
        {"sku": ["A"], "month": [date(2024, 1, 1)], "sales": [1]},
        schema={"sku": pl.String, "month": pl.Date, "sales": pl.Int64},
    )
    assert SalesInput.validate(frame).height == 1


def test_duplicate_key_fails() -> None:
    frame = _panel(
        month=[date(2024, 1, 1)] * 3 + [date(2024, 2, 1)], is_gap=[False] * 4, sales=[1, 2, 3, 4]
    )
    assert "multiple_fields_uniqueness" in _failed_checks(SalesInput, frame)


def test_month_not_first_fails() -> None:
    frame = _panel(month=[date(2024, 1, 1), date(2024, 2, 1), date(2024, 3, 2), date(2024, 2, 1)])
    assert "first_of_month" in _failed_checks(SalesPanel, frame)


def test_negative_sales_and_bad_promo_fail() -> None:
    frame = _panel(sales=[3, None, -5, 0], promo=[0, 0, 2, 0])
    failed = _failed_checks(SalesPanel, frame)
    assert "greater_than_or_equal_to(0)" in failed
    assert any(c.startswith("isin") for c in failed)


def test_null_sales_off_a_gap_fails() -> None:
    frame = _panel(is_gap=[False, False, False, False])
    assert "sales_null_only_on_gaps" in _failed_checks(SalesPanel, frame)


def test_hole_in_the_grid_fails() -> None:
    frame = _panel(month=[date(2024, 1, 1), date(2024, 2, 1), date(2024, 4, 1), date(2024, 2, 1)])
    assert "sorted_regular_monthly_grid" in _failed_checks(SalesPanel, frame)


def test_unsorted_panel_fails() -> None:
    frame = _panel().reverse()
    assert "sorted_regular_monthly_grid" in _failed_checks(SalesPanel, frame)


def test_empty_sku_fails() -> None:
    frame = _panel(sku=["A", "A", "A", ""])
    assert any(c.startswith("str_length") for c in _failed_checks(SalesInput, frame))


def test_panel_requires_is_gap() -> None:
    with pytest.raises(pa_errors.SchemaError, match="is_gap"):
        SalesPanel.validate(_panel().drop("is_gap"))
