"""The quarantine table: one line per (bad input row, rule it broke).

A row that breaks several rules has one line per rule (it counts once in
``QualityCounts.rows_quarantined``). Columns: ``row`` (the source row number: 1 = first
data row), ``sku`` and ``month`` as read (strings, possibly null), ``rule`` (one of
:data:`QUARANTINE_RULES`), ``column`` (the contract column at fault; ``"sku,month"`` for
duplicate rules; the plan column for the ``plan_*`` rules, which may hit several columns
of one row) and ``value`` (the raw value as read, or for ``exact_duplicate`` which row
was kept).
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

__all__ = ["QUARANTINE_COLUMNS", "QUARANTINE_RULES", "Quarantine"]

#: Every rule a row can break, in the order they are checked.
QUARANTINE_RULES: tuple[str, ...] = (
    "sku_null",
    "month_unparseable",
    "month_not_first",
    "month_out_of_range",
    "month_after_as_of",
    "month_partial",
    "sales_null",
    "sales_not_finite",
    "sales_not_integer",
    "sales_negative",
    "sales_absurd",
    "customer_count_null",
    "customer_count_not_finite",
    "customer_count_not_integer",
    "customer_count_negative",
    "customer_count_absurd",
    "promo_null",
    "promo_not_finite",
    "promo_invalid",
    "on_hand_not_finite",
    "on_hand_not_integer",
    "on_hand_negative",
    "plan_null",
    "plan_not_number",
    "plan_not_finite",
    "plan_negative",
    "duplicate_conflict",
    "exact_duplicate",
)

QUARANTINE_COLUMNS: dict[str, pl.DataType] = {
    "row": pl.Int64(),
    "sku": pl.String(),
    "month": pl.String(),
    "rule": pl.String(),
    "column": pl.String(),
    "value": pl.String(),
}


class Quarantine(pa.DataFrameModel):
    """Quarantined input rows with the rule each broke, the column and the raw value."""

    row: pl.Int64 = pa.Field(nullable=False, ge=1)
    sku: pl.String = pa.Field(nullable=True)
    month: pl.String = pa.Field(nullable=True)
    rule: pl.String = pa.Field(nullable=False, isin=list(QUARANTINE_RULES))
    column: pl.String = pa.Field(nullable=False)
    value: pl.String = pa.Field(nullable=True)

    class Config:
        strict = True
        unique = ("row", "rule", "column")
