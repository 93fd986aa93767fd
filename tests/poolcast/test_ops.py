"""Inventory totals and the largest changes against last month, on hand-made frames."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from poolcast.errors import InvalidParameterError
from poolcast.ops import inventory_totals, largest_changes, ops_markdown


def test_largest_changes_ranks_by_absolute_change_and_marks_new_and_dropped():
    now = pl.DataFrame({"sku": ["a", "b", "c", "e"], "order_quantity": [10.0, 5.0, 7.0, 3.0]})
    before = pl.DataFrame({"sku": ["a", "b", "c", "d"], "order_quantity": [4.0, 14.0, 7.0, 2.0]})
    out = largest_changes(now, before, "order_quantity", n=10)
    # b: 5-14 = -9, a: 10-4 = 6, e: new 3, d: dropped -2, c: unchanged (left out)
    assert out.rows() == [
        ("b", 14.0, 5.0, -9.0, "changed"),
        ("a", 4.0, 10.0, 6.0, "changed"),
        ("e", None, 3.0, 3.0, "new"),
        ("d", 2.0, None, -2.0, "dropped"),
    ]
    assert largest_changes(now, before, "order_quantity", n=2).get_column("sku").to_list() == [
        "b",
        "a",
    ]


def test_ties_are_broken_by_key():
    now = pl.DataFrame({"sku": ["z", "y"], "v": [1.0, -1.0]})
    before = pl.DataFrame({"sku": ["z", "y"], "v": [0.0, 0.0]})
    assert largest_changes(now, before, "v").get_column("sku").to_list() == ["y", "z"]


def test_largest_changes_names_a_missing_column_and_a_bad_n():
    frame = pl.DataFrame({"sku": ["a"], "v": [1.0]})
    with pytest.raises(InvalidParameterError, match=r"previous frame lacks column\(s\) \['w'\]"):
        largest_changes(frame.rename({"v": "w"}), frame, "w")
    with pytest.raises(InvalidParameterError, match="n=0"):
        largest_changes(frame, frame, "v", n=0)


def test_inventory_totals_sum_the_plan():
    plan = pl.DataFrame(
        {
            "sku": ["a", "b", "c"],
            "order_quantity": [0.0, 4.5, 10.0],
            "safety_stock": [1.0, 2.0, None],
            "on_hand": [3, 0, 1],
        }
    )
    assert inventory_totals(plan) == {
        "skus": 3,
        "skus_to_order": 2,
        "order_quantity": 14.5,
        "safety_stock": 3.0,
        "on_hand": 4.0,
    }


def test_ops_markdown_links_and_tables():
    changes = {
        "forecast_total": pl.DataFrame(
            {
                "sku": ["b"],
                "previous": [41.0],
                "current": [29.0],
                "change": [-12.0],
                "status": ["changed"],
            }
        )
    }
    text = ops_markdown(
        dashboard="http://127.0.0.1:8050/",
        mlflow_run_id="abc",
        mlflow_run_url="http://127.0.0.1:5000/#/experiments/1/runs/abc",
        totals={"skus": 3, "order_quantity": 1234.5},
        changes=changes,
        previous_as_of=date(2024, 5, 1),
        notes=["inventory plan: fine"],
    )
    assert "[http://127.0.0.1:8050/](http://127.0.0.1:8050/)" in text
    assert "[abc](http://127.0.0.1:5000/#/experiments/1/runs/abc)" in text
    assert "| 3 | 1,234.5 |" in text
    assert "### Largest changes in forecast_total vs as-of 2024-05-01" in text
    assert "| b | 41.0 | 29.0 | -12.0 | changed |" in text
    assert "- inventory plan: fine" in text
