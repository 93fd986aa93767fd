"""The plan: mapping, validation and quarantine of plan rows, coverage, eligibility, cutting."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest

from poolcast.errors import InvalidParameterError, PoolcastError
from poolcast.features import panel_plan_columns
from poolcast.io import load_plan_source, load_source
from poolcast.mapping import Mapping, load_mapping
from poolcast.plan import cut_source, ineligibility_reason, plan_months, validate_plan
from poolcast.validation import validate_panel

ROSSMANN = Path("/work/shared/data/rossmann-store-sales/rossmann_store_monthly.csv")
if not ROSSMANN.exists():  # CI and a fresh clone reach the shared data from the worktree
    ROSSMANN = (
        Path(__file__).resolve().parents[3]
        / "shared/data/rossmann-store-sales/rossmann_store_monthly.csv"
    )

MAPPING = """
name = "planned"
[columns]
sku = "sku"
month = "month"
sales = "sales"
[optional_columns]
promo = "promo"
[plan_columns]
open_days = "OpenDays"
price = "price"
"""


@pytest.fixture
def mapping(tmp_path: Path) -> Path:
    path = tmp_path / "planned.toml"
    path.write_text(MAPPING)
    return path


def _write(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


# ------------------------------------------------------------------ mapping


def test_rossmann_maps_the_calendar_as_plan_columns() -> None:
    m = load_mapping("rossmann")
    assert m.plan_columns == {
        "open_days": "OpenDays",
        "promo_days": "PromoDays",
        "state_holiday_days": "StateHolidayDays",
        "school_holiday_days": "SchoolHolidayDays",
    }
    assert m.columns["promo"] == "PromoDays" and m.binarise == {"promo": 12}


@pytest.mark.parametrize("name", ["sales", "promo", "Open Days", "fourier_x", "t", "sales_x"])
def test_a_plan_column_may_not_take_a_contract_or_feature_name(name: str) -> None:
    with pytest.raises(InvalidParameterError, match=r"\[plan_columns\]"):
        Mapping(
            name="x",
            columns={"sku": "a", "month": "b", "sales": "c"},
            plan_columns={name: "d"},
        )


# ------------------------------------------------------------------ plan columns in the sales


def test_plan_values_in_the_history_are_validated_and_kept(tmp_path: Path, mapping: Path) -> None:
    src = _write(
        tmp_path / "s.csv",
        """
sku,month,sales,promo,OpenDays,price
a,2024-01,5,0,26,1.5
a,2024-02,6,1,,1.5
a,2024-03,7,0,abc,1.5
a,2024-04,8,0,inf,-2
a,2024-05,9,1,24,2.25
""",
    )
    result = validate_panel(load_source(src, mapping))
    lines = result.quarantine.select("row", "rule", "column", "value").rows()
    assert lines == [
        (2, "plan_null", "open_days", ""),  # the raw value as read
        (3, "plan_not_number", "open_days", "abc"),
        (4, "plan_not_finite", "open_days", "inf"),
        (4, "plan_negative", "price", "-2"),
    ]
    c = result.counts
    assert (c.rows_in, c.rows_accepted, c.rows_quarantined) == (5, 2, 3)
    assert c.by_rule == {
        "plan_null": 1,
        "plan_not_number": 1,
        "plan_not_finite": 1,
        "plan_negative": 1,
    }
    assert result.plan_columns == ("open_days", "price")
    panel = result.panel
    assert panel.schema["open_days"] == pl.Float64 and panel.schema["price"] == pl.Float64
    # accepted rows keep their values; the quarantined months are gaps with unknown plan values
    assert panel.select("month", "open_days", "price", "is_gap").rows() == [
        (date(2024, 1, 1), 26.0, 1.5, False),
        (date(2024, 2, 1), None, None, True),
        (date(2024, 3, 1), None, None, True),
        (date(2024, 4, 1), None, None, True),
        (date(2024, 5, 1), 24.0, 2.25, False),
    ]
    assert panel_plan_columns(panel) == ("promo", "open_days", "price")


# ------------------------------------------------------------------ the plan source


HISTORY_SKUS = ["a", "b", "c"]


def _plan(tmp_path: Path, mapping: Path, text: str, *, horizons: int = 2):
    src = _write(tmp_path / "plan.csv", text)
    return validate_plan(
        load_plan_source(src, mapping),
        as_of=date(2024, 6, 1),
        horizons=horizons,
        skus=HISTORY_SKUS,
        plan_columns=("promo", "open_days", "price"),
    )


def test_plan_rows_are_validated_and_quarantined_and_counts_add_up(
    tmp_path: Path, mapping: Path
) -> None:
    result = _plan(
        tmp_path,
        mapping,
        """
sku,month,promo,OpenDays,price
a,2024-05,1,25,1.0
a,2024-06,1,25,1.0
a,2024-07,0,26,1.0
a,2024-08,1,24,1.0
a,2024-09,1,24,1.0
b,2024-07,0,26,1.0
b,2024-08,2,26,1.0
b,2024-08,0,-1,1.0
,2024-07,0,26,1.0
c,2024-07,0,26,1.0
c,2024-08,0,26,1.0
c,2024-08,0,26,1.0
z,2024-07,0,26,1.0
""",
    )
    c = result.counts
    assert c.rows_in == 13 == c.rows_accepted + c.rows_quarantined
    # rows 7 and 8 (a conflicting pair; promo 2 and open days -1), 9 (no sku), 12 (a copy)
    assert c.rows_quarantined == 4
    assert c.by_rule == {
        "sku_null": 1,
        "promo_invalid": 1,
        "plan_negative": 1,
        "duplicate_conflict": 2,
        "exact_duplicate": 1,
    }
    # accepted but unused: two months at or before the as-of, one after the horizon, one SKU
    # the history does not have
    assert (c.rows_at_or_before_as_of, c.rows_after_horizon, c.rows_unknown_sku) == (2, 1, 1)
    assert c.rows_used == 5 == result.frame.height
    assert result.frame.select("sku", "month").rows() == [
        ("a", date(2024, 7, 1)),
        ("a", date(2024, 8, 1)),
        ("b", date(2024, 7, 1)),
        ("c", date(2024, 7, 1)),
        ("c", date(2024, 8, 1)),
    ]
    assert result.frame.schema["promo"] == pl.Int8
    # b's August was quarantined (both conflicting rows); c's copy was kept once
    assert result.missing.rows() == [("plan_missing_month", None, "b", date(2024, 8, 1))]


def test_missing_months_skus_and_columns_are_reported(tmp_path: Path, mapping: Path) -> None:
    result = _plan(
        tmp_path,
        mapping,
        """
sku,month,promo,OpenDays
a,2024-07,0,26
a,2024-08,1,24
b,2024-07,0,26
""",
    )
    assert result.columns == ("promo", "open_days")
    assert result.missing.rows() == [
        ("plan_missing_column", "price", None, None),
        ("plan_missing_sku", None, "c", None),
        ("plan_missing_month", None, "b", date(2024, 8, 1)),
    ]
    assert result.counts.missing == {
        "plan_missing_column": 1,
        "plan_missing_sku": 1,
        "plan_missing_month": 1,
    }


def test_a_plan_without_sku_or_month_is_unusable(tmp_path: Path, mapping: Path) -> None:
    src = _write(tmp_path / "p.csv", "sku,OpenDays\na,3")
    with pytest.raises(PoolcastError, match="'month'"):
        load_plan_source(src, mapping)


# ------------------------------------------------------------------ eligibility


def test_ineligibility_reasons(tmp_path: Path, mapping: Path) -> None:
    available = ("promo", "open_days", "price")
    kw = {"available": available, "as_of": date(2024, 6, 1), "horizons": 2}
    assert plan_months(date(2024, 11, 1), 3) == [
        date(2024, 12, 1),
        date(2025, 1, 1),
        date(2025, 2, 1),
    ]
    # a candidate that needs no plan, or only columns the data never had, is always eligible
    assert ineligibility_reason((), None, **kw) is None
    assert ineligibility_reason(("holiday_days",), None, **kw) is None
    assert ineligibility_reason(("open_days", "promo"), None, **kw) == (
        "needs plan column(s) ['open_days', 'promo'] for 2024-07..2024-08; run with --plan"
    )
    partial = _plan(tmp_path, mapping, "sku,month,promo,OpenDays\na,2024-07,0,26\na,2024-08,0,26")
    reason = ineligibility_reason(("price",), partial, **kw)
    assert reason is not None and "lacks column(s) ['price']" in reason
    reason = ineligibility_reason(("open_days",), partial, **kw)
    assert reason is not None and "no row for 2 SKU(s)" in reason and "sku b" in reason
    full = _plan(
        tmp_path,
        mapping,
        "sku,month,promo,OpenDays,price\n"
        + "\n".join(f"{s},2024-0{m},0,26,1.0" for s in HISTORY_SKUS for m in (7, 8)),
    )
    assert full.missing.height == 0
    assert ineligibility_reason(("open_days", "price", "promo"), full, **kw) is None


# ------------------------------------------------------------------ Rossmann: the plan template


@pytest.mark.skipif(not ROSSMANN.exists(), reason="needs the shared Rossmann data")
def test_rossmann_cut_gives_a_complete_plan_for_the_next_three_months(tmp_path: Path) -> None:
    sales_out, plan_out = tmp_path / "cut.csv", tmp_path / "plan.csv"
    n_sales, n_plan = cut_source(
        ROSSMANN,
        "rossmann",
        as_of=date(2015, 4, 1),
        months=3,
        sales_out=sales_out,
        plan_out=plan_out,
    )
    raw = pl.read_csv(ROSSMANN, infer_schema=False)
    assert n_sales == raw.filter(pl.col("Month") <= "2015-04").height
    assert n_plan == raw.filter(pl.col("Month").is_in(["2015-05", "2015-06", "2015-07"])).height
    plan_raw = pl.read_csv(plan_out, infer_schema=False)
    assert set(plan_raw.columns) == {
        "Store", "Month", "PromoDays", "OpenDays", "StateHolidayDays", "SchoolHolidayDays"
    }  # fmt: skip
    history = validate_panel(load_source(sales_out, "rossmann"))
    assert history.counts.last_month == date(2015, 4, 1)
    assert history.counts.rows_quarantined == 0
    # the panel keeps open days as they are; the covariate models enter log(1 + open days)
    assert history.plan_transforms == {"open_days": "log1p"}
    assert history.panel.get_column("open_days").max() == raw["OpenDays"].cast(pl.Float64).max()
    plan = validate_plan(
        load_plan_source(plan_out, "rossmann"),
        as_of=date(2015, 4, 1),
        horizons=3,
        skus=history.panel.get_column("sku").unique().to_list(),
        plan_columns=panel_plan_columns(history.panel),
    )
    assert plan.counts.rows_in == plan.counts.rows_used == n_plan
    assert plan.missing.height == 0
    # the plan's values are the monthly file's (store 1, June 2015: promo days -> promo)
    row = raw.filter((pl.col("Store") == "1") & (pl.col("Month") == "2015-06")).row(0, named=True)
    got = plan.frame.filter((pl.col("sku") == "1") & (pl.col("month") == date(2015, 6, 1)))
    assert got["open_days"][0] == float(row["OpenDays"])
    assert got["promo_days"][0] == float(row["PromoDays"])
    assert got["promo"][0] == int(int(row["PromoDays"]) >= 12)
