"""The data contract as pandera (polars backend) models.

Two tables:

- :class:`SalesInput`: the contract rows accepted from a source, one row per (sku, month).
  Required columns ``sku``, ``month``, ``sales``; ``customer_count``, ``category``,
  ``promo`` and ``on_hand`` are optional. A source without ``customer_count`` (car parts)
  is valid: features then omit every customer feature.
- :class:`SalesPanel`: the validated panel that ``poolcast.validation.validate_panel``
  returns and ``poolcast.features`` consumes: every column present, sorted by
  (sku, month), on a regular monthly grid from each SKU's first to last observed month,
  with ``is_gap`` marking filled months. ``sales`` is NULL only on gap rows (gap_policy
  "missing"); ``customer_count`` is all NULL when the source has no customer column.

Validate polars DataFrames (not LazyFrames): pandera runs value checks on LazyFrames only
with ``validation_depth=SCHEMA_AND_DATA``.
"""

from __future__ import annotations

from typing import Optional

import pandera.polars as pa
import polars as pl

__all__ = ["PANEL_COLUMNS", "SalesInput", "SalesPanel"]

PANEL_COLUMNS: tuple[str, ...] = (
    "sku",
    "month",
    "sales",
    "customer_count",
    "promo",
    "category",
    "on_hand",
    "is_gap",
)


class SalesInput(pa.DataFrameModel):
    """Accepted contract rows: (sku, month) unique, month the first of a month, counts >= 0."""

    sku: pl.String = pa.Field(nullable=False, str_length={"min_value": 1})
    month: pl.Date = pa.Field(nullable=False)
    sales: pl.Int64 = pa.Field(nullable=False, ge=0)
    customer_count: Optional[pl.Int64] = pa.Field(nullable=True, ge=0)  # noqa: UP045 (pandera reads Optional)
    category: Optional[pl.String] = pa.Field(nullable=True)  # noqa: UP045
    promo: Optional[pl.Int8] = pa.Field(nullable=False, isin=[0, 1])  # noqa: UP045
    on_hand: Optional[pl.Int64] = pa.Field(nullable=True, ge=0)  # noqa: UP045

    class Config:
        strict = False
        unique = ("sku", "month")

    @pa.check("month", name="first_of_month")
    def _first_of_month(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col(data.key).dt.day() == 1)


class SalesPanel(SalesInput):
    """The regular-grid panel: every contract column present, plus ``is_gap``.

    Row checks: ``sales`` is NULL only where ``is_gap``; rows are sorted by (sku, month)
    and each SKU's months are consecutive (no hole left in the grid).
    """

    sales: pl.Int64 = pa.Field(nullable=True, ge=0)
    customer_count: pl.Int64 = pa.Field(nullable=True, ge=0)
    category: pl.String = pa.Field(nullable=True)
    promo: pl.Int8 = pa.Field(nullable=False, isin=[0, 1])
    on_hand: pl.Int64 = pa.Field(nullable=True, ge=0)
    is_gap: pl.Boolean = pa.Field(nullable=False)

    class Config:
        strict = True
        unique = ("sku", "month")

    @pa.dataframe_check(name="sales_null_only_on_gaps")
    def _sales_null_only_on_gaps(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("sales").is_not_null() | pl.col("is_gap"))

    @pa.dataframe_check(name="sorted_regular_monthly_grid")
    def _regular_grid(cls, data: pa.PolarsData) -> pl.LazyFrame:
        prev_sku = pl.col("sku").shift(1)
        prev_month = pl.col("month").shift(1)
        new_sku = prev_sku.is_null() | (pl.col("sku") != prev_sku)
        return data.lazyframe.select(
            pl.when(new_sku)
            .then(prev_sku.is_null() | (pl.col("sku") > prev_sku))
            .otherwise(pl.col("month") == prev_month.dt.offset_by("1mo"))
            .alias("check")
        )
