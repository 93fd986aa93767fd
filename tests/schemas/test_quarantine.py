"""The pandera model of the quarantine table."""

from __future__ import annotations

import pandera.errors as pa_errors
import polars as pl
import pytest

from schemas import QUARANTINE_COLUMNS, QUARANTINE_RULES, Quarantine


def _table(rule: str = "sales_null", row: int = 3) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "row": [row],
            "sku": ["A"],
            "month": ["2024-01"],
            "rule": [rule],
            "column": ["sales"],
            "value": [None],
        },
        schema=QUARANTINE_COLUMNS,
    )


def test_valid_table_passes() -> None:
    assert Quarantine.validate(_table()).height == 1


def test_empty_table_passes() -> None:
    assert Quarantine.validate(pl.DataFrame(schema=QUARANTINE_COLUMNS)).height == 0


def test_unknown_rule_fails() -> None:
    with pytest.raises(pa_errors.SchemaError, match="isin"):
        Quarantine.validate(_table(rule="made_up"))


def test_row_numbers_start_at_one() -> None:
    with pytest.raises(pa_errors.SchemaError):
        Quarantine.validate(_table(row=0))


def test_rules_are_unique_names() -> None:
    assert len(set(QUARANTINE_RULES)) == len(QUARANTINE_RULES)
    assert "exact_duplicate" in QUARANTINE_RULES and "duplicate_conflict" in QUARANTINE_RULES
