"""Validation: quarantine rules on a hand-written fixture, gap policies, the real data sets."""

from __future__ import annotations

import csv
import gzip
from dataclasses import replace
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from poolcast.config import ValidationConfig
from poolcast.io import load_source
from poolcast.mapping import load_mapping
from poolcast.validation import (
    current_month,
    infer_as_of,
    resolve_gap_policy,
    validate_panel,
    write_quarantine,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

# Written by hand from tests/fixtures/bad_rows.csv (row = data row, 1 = first after the header),
# validated with as_of = 2024-06.
EXPECTED_QUARANTINE = [
    (3, "sku_null", "sku", ""),
    (4, "sku_null", "sku", "   "),
    (5, "month_unparseable", "month", "2024-13"),
    (6, "month_unparseable", "month", "Jan 2024"),
    (7, "month_not_first", "month", "2024-02-15"),
    (8, "sales_negative", "sales", "-3"),
    (9, "sales_not_integer", "sales", "2.5"),
    (10, "sales_null", "sales", ""),
    (11, "sales_not_integer", "sales", "abc"),
    (12, "sales_absurd", "sales", "99999999"),
    (13, "customer_count_negative", "customer_count", "-1"),
    (14, "customer_count_null", "customer_count", ""),
    (15, "promo_invalid", "promo", "2"),
    (16, "on_hand_negative", "on_hand", "-2"),
    (17, "duplicate_conflict", "sku,month", "D,2024-01"),
    (18, "duplicate_conflict", "sku,month", "D,2024-01"),
    (20, "exact_duplicate", "sku,month", "copy of row 19"),
    (21, "exact_duplicate", "sku,month", "copy of row 19"),
    (23, "month_after_as_of", "month", "2024-07"),
    (24, "sales_not_integer", "sales", "x"),
    (24, "customer_count_negative", "customer_count", "-4"),
    (27, "customer_count_not_integer", "customer_count", "1.5"),
    (28, "customer_count_absurd", "customer_count", "200000000"),
    (29, "promo_null", "promo", ""),
    (30, "on_hand_not_integer", "on_hand", "lots"),
]

# Every SKU is completed to the as-of (2024-06): A gets 2024-05 and 06, E 2024-03 .. 06 as
# trailing gap months (sales unknown under the default policy "missing").
EXPECTED_PANEL = pl.DataFrame(
    {
        "sku": ["A"] * 6 + ["C"] + ["E"] * 6,
        "month": [date(2024, m, 1) for m in range(1, 7)]
        + [date(2024, 6, 1)]
        + [date(2024, m, 1) for m in range(1, 7)],
        "sales": [10, 12, None, 9, None, None, 1, 3, 3, None, None, None, None],
        "customer_count": [100, 110, None, 120, None, None, 100, 40, 40, None, None, None, None],
        "promo": [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        "category": ["toys"] * 6 + ["games"] * 7,
        "on_hand": [5] + [None] * 12,
        "is_gap": [False, False, True, False, True, True, False, False, False] + [True] * 4,
    },
    schema_overrides={
        "promo": pl.Int8,
        "sales": pl.Int64,
        "customer_count": pl.Int64,
        "on_hand": pl.Int64,
    },
)


@pytest.fixture(scope="module")
def bad_rows_result():
    loaded = load_source(FIXTURES / "bad_rows.csv", "contract")
    return validate_panel(loaded, config=ValidationConfig(), as_of=date(2024, 6, 1))


def test_every_bad_row_is_quarantined_with_its_reason(bad_rows_result) -> None:
    q = bad_rows_result.quarantine
    got = list(zip(q["row"], q["rule"], q["column"], q["value"], strict=True))
    assert got == EXPECTED_QUARANTINE


def test_quarantine_keeps_sku_and_month_as_read(bad_rows_result) -> None:
    q = bad_rows_result.quarantine
    row6 = q.filter(pl.col("row") == 6).row(0, named=True)
    assert (row6["sku"], row6["month"]) == ("B", "Jan 2024")


def test_counts_add_up_and_count_each_row_once(bad_rows_result) -> None:
    c = bad_rows_result.counts
    assert c.rows_in == 30
    assert c.rows_quarantined == 24  # 25 quarantine lines: row 24 broke two rules
    assert c.rows_accepted == 6
    assert c.rows_in == c.rows_accepted + c.rows_quarantined
    assert c.duplicates_collapsed == 2
    assert c.by_rule["sales_not_integer"] == 3
    assert c.by_rule["exact_duplicate"] == 2
    assert sum(c.by_rule.values()) == len(EXPECTED_QUARANTINE)
    assert c.gaps == 7  # A: 2024-03 inside, 05-06 trailing; E: 03-06 trailing (to the as-of)
    assert (c.skus, c.months) == (3, 6)
    assert (c.first_month, c.last_month) == (date(2024, 1, 1), date(2024, 6, 1))


def test_panel_holds_exactly_the_accepted_rows_on_a_regular_grid(bad_rows_result) -> None:
    assert bad_rows_result.panel.equals(EXPECTED_PANEL)
    assert bad_rows_result.gaps.rows() == [
        ("A", date(2024, 3, 1)),
        ("A", date(2024, 5, 1)),
        ("A", date(2024, 6, 1)),
        *(("E", date(2024, m, 1)) for m in range(3, 7)),
    ]


def test_as_of_is_optional() -> None:
    loaded = load_source(FIXTURES / "bad_rows.csv", "contract")
    result = validate_panel(loaded)
    assert "month_after_as_of" not in result.counts.by_rule
    # F 2024-07 is now accepted (F 2024-05 is still bad)
    assert result.panel.filter(pl.col("sku") == "F")["month"].to_list() == [date(2024, 7, 1)]


def test_sales_cap_is_configurable() -> None:
    loaded = load_source(FIXTURES / "bad_rows.csv", "contract")
    result = validate_panel(loaded, config=ValidationConfig(sales_cap=9), as_of=date(2024, 6, 1))
    absurd = result.quarantine.filter(pl.col("rule") == "sales_absurd")["row"].to_list()
    assert absurd == [1, 2, 12]  # sales 10 and 12 exceed a cap of 9


@pytest.mark.parametrize(
    ("policy", "gap_sales"),
    [("missing", None), ("zero", 0)],
)
def test_gap_policies(policy: str, gap_sales: int | None) -> None:
    loaded = load_source(FIXTURES / "gaps.csv", "contract")
    result = validate_panel(loaded, config=ValidationConfig(gap_policy=policy))  # type: ignore[arg-type]
    panel = result.panel
    # A: 2024-01, 02, (03 gap), 04; B: 2024-02, 03, (04: trailing gap, to the panel's end)
    assert panel.select("sku", "month").rows() == [
        ("A", date(2024, 1, 1)),
        ("A", date(2024, 2, 1)),
        ("A", date(2024, 3, 1)),
        ("A", date(2024, 4, 1)),
        ("B", date(2024, 2, 1)),
        ("B", date(2024, 3, 1)),
        ("B", date(2024, 4, 1)),
    ]
    assert panel["is_gap"].to_list() == [False, False, True, False, False, False, True]
    assert panel["sales"].to_list() == [3, 4, gap_sales, 6, 1, 0, gap_sales]
    assert panel["customer_count"].to_list() == [10, 12, None, 15, 7, 8, None]
    assert result.gaps.rows() == [("A", date(2024, 3, 1)), ("B", date(2024, 4, 1))]
    assert result.counts.gaps == 2
    assert result.counts.gap_policy == policy
    assert result.counts.rows_accepted == 5


def test_gap_policy_comes_from_the_mapping_unless_the_config_overrides_it() -> None:
    retail = load_mapping("online_retail")
    assert resolve_gap_policy(ValidationConfig(), retail) == "zero"
    assert resolve_gap_policy(ValidationConfig(gap_policy="missing"), retail) == "missing"
    assert resolve_gap_policy(ValidationConfig(), load_mapping("contract")) == "missing"
    zero_mapping = replace(load_mapping("contract"), gap_policy="zero")
    loaded = load_source(FIXTURES / "gaps.csv", zero_mapping)
    assert validate_panel(loaded).panel["sales"].to_list()[2] == 0


def test_write_quarantine_csv_and_parquet(bad_rows_result, tmp_path: Path) -> None:
    csv_path = write_quarantine(bad_rows_result, tmp_path / "q" / "quarantine.csv")
    back = pl.read_csv(csv_path, infer_schema=False, empty_string_is_null=False)
    assert back.height == len(EXPECTED_QUARANTINE)
    assert back.columns == ["row", "sku", "month", "rule", "column", "value"]
    pq_path = write_quarantine(bad_rows_result, tmp_path / "quarantine.parquet")
    assert pl.read_parquet(pq_path).equals(bad_rows_result.quarantine)


def test_no_customer_column_gives_all_null_customer_count(tmp_path: Path) -> None:
    path = tmp_path / "nocust.csv"
    path.write_text("sku,month,sales\nA,2024-01,1\nA,2024-02,0\n")
    result = validate_panel(load_source(path, "contract"))
    assert result.has_customers is False
    assert result.panel["customer_count"].null_count() == 2
    assert result.panel["promo"].to_list() == [0, 0]


# --------------------------------------------------------------------- real data sets


def _validate_real(path: Path, mapping: str, as_of: date | None = None):
    result = validate_panel(load_source(path, mapping), as_of=as_of)
    c = result.counts
    print(f"{path.name}: {c.to_dict()}")
    assert c.rows_in == c.rows_accepted + c.rows_quarantined
    assert result.panel.filter(~pl.col("is_gap")).height == c.rows_accepted
    assert result.quarantine["row"].n_unique() == c.rows_quarantined
    return result


def test_rossmann_monthly(shared_data_dir: Path) -> None:
    result = _validate_real(
        shared_data_dir / "rossmann-store-sales" / "rossmann_store_monthly.csv", "rossmann"
    )
    c = result.counts
    assert c.rows_in == 33_485  # SOURCE.md
    assert c.rows_quarantined == 0
    assert c.skus == 1_115 and c.months == 31
    # SOURCE.md: 180 stores lack 2014-07 .. 2014-12 (refurbishment): 6 gap months each
    assert c.gaps == 180 * 6
    gap_months = result.gaps["month"].unique().sort().to_list()
    assert gap_months == [date(2014, m, 1) for m in range(7, 13)]
    assert result.panel.filter(pl.col("is_gap"))["sales"].null_count() == c.gaps
    assert set(result.panel["promo"].unique()) == {0, 1}


def test_online_retail_sku_monthly(shared_data_dir: Path) -> None:
    path = shared_data_dir / "online-retail" / "online_retail_sku_monthly.csv.gz"
    result = _validate_real(path, "online_retail", as_of=date(2011, 12, 1))  # the whole file
    c = result.counts
    assert c.rows_in == 65_796  # SOURCE.md
    assert c.rows_quarantined == 0
    assert c.skus == 4_707 and c.months == 25  # SOURCE.md
    assert c.gap_policy == "zero"
    # independent count of gaps: per SKU, months from its first to the file's last month
    # (every SKU is completed to the panel's end) minus months present (csv module)
    months: dict[str, set[int]] = {}
    with gzip.open(path, "rt", newline="") as fh:
        for rec in csv.DictReader(fh):
            y, m = rec["Month"].split("-")
            months.setdefault(rec["StockCode"], set()).add(int(y) * 12 + int(m))
    end = max(max(s) for s in months.values())
    expected_gaps = sum(end - min(s) + 1 - len(s) for s in months.values())
    assert c.gaps == expected_gaps
    assert result.panel.filter(pl.col("is_gap"))["sales"].to_list() == [0] * expected_gaps


def test_carparts(shared_data_dir: Path) -> None:
    result = _validate_real(
        shared_data_dir / "carparts" / "carparts_monthly_long.csv.gz", "carparts"
    )
    c = result.counts
    assert c.rows_in == 136_374  # SOURCE.md
    assert c.rows_quarantined == 6_122  # the NA sales
    assert c.by_rule == {"sales_null": 6_122}
    assert c.rows_accepted == 130_252  # SOURCE.md: non-missing values
    assert c.skus == 2_674
    assert result.has_customers is False
    assert result.panel["customer_count"].null_count() == result.panel.height
    # the NAs are trailing (parts discontinued): no gap inside any history, but completion
    # to the panel's end brings every quarantined NA month back as an unknown gap month
    assert c.gaps == 6_122
    assert result.panel.filter(pl.col("is_gap"))["sales"].null_count() == 6_122


def test_online_retail_as_of_excludes_the_partial_last_month(shared_data_dir: Path) -> None:
    path = shared_data_dir / "online-retail" / "online_retail_sku_monthly.csv.gz"
    with gzip.open(path, "rt", newline="") as fh:
        n_dec_2011 = sum(rec["Month"] == "2011-12" for rec in csv.DictReader(fh))
    result = validate_panel(load_source(path, "online_retail"), as_of=date(2011, 11, 1))
    assert result.counts.by_rule == {"month_after_as_of": n_dec_2011}
    assert result.counts.last_month == date(2011, 11, 1)
    assert result.counts.rows_accepted == 65_796 - n_dec_2011


def test_a_hand_built_frame_needs_the_loader_columns() -> None:
    from poolcast.errors import InvalidParameterError
    from poolcast.io import LoadedSource

    frame = pl.DataFrame(
        {"_row": [1, 1], "sku": ["A", "B"], "month": ["2024-01"] * 2, "sales": ["1", "2"]}
    )
    mapping = load_mapping("contract")
    with pytest.raises(InvalidParameterError, match="_row is not unique"):
        validate_panel(LoadedSource(frame=frame, source="memory", mapping=mapping))
    with pytest.raises(InvalidParameterError, match=r"lacks column\(s\) \['sales'\]"):
        validate_panel(LoadedSource(frame=frame.drop("sales"), source="memory", mapping=mapping))


# ------------------------------------------------------------ month range, non-finite


def _csv(tmp_path: Path, text: str, name: str = "x.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_implausible_months_are_quarantined_and_never_crash(tmp_path: Path) -> None:
    path = _csv(
        tmp_path,
        "sku,month,sales\n"
        "A,0000-01,1\n"
        "A,0000-01-01,1\n"
        "A,0001-01,1\n"
        "A,9999-12,1\n"
        "A,1989-12,1\n"
        "A,1990-01,1\n"
        "A,2024-05,1\n"
        "A,2024-06,1\n",
    )
    config = ValidationConfig(max_month=date(2024, 5, 1))
    result = validate_panel(load_source(path), config=config)
    q = result.quarantine.select("row", "rule", "value").rows()
    assert q == [
        (1, "month_out_of_range", "0000-01"),
        (2, "month_out_of_range", "0000-01-01"),
        (3, "month_out_of_range", "0001-01"),
        (4, "month_out_of_range", "9999-12"),
        (5, "month_out_of_range", "1989-12"),
        (8, "month_out_of_range", "2024-06"),
    ]
    assert (result.counts.first_month, result.counts.last_month) == (
        date(1990, 1, 1),
        date(2024, 5, 1),
    )


def test_the_default_range_ends_at_the_current_calendar_month(tmp_path: Path) -> None:
    this = current_month()
    following = date(this.year + this.month // 12, this.month % 12 + 1, 1)
    path = _csv(
        tmp_path,
        f"sku,month,sales\nA,{this:%Y-%m},1\nA,{following:%Y-%m},1\nA,2099-01,1\n",
    )
    result = validate_panel(load_source(path))
    assert result.quarantine.select("row", "rule").rows() == [
        (2, "month_out_of_range"),
        (3, "month_out_of_range"),
    ]
    assert result.counts.as_of == this
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    assert (this.year, this.month) == (now.year, now.month)


def test_non_finite_numbers_are_quarantined_never_accepted(tmp_path: Path) -> None:
    path = _csv(
        tmp_path,
        "sku,month,sales,customer_count,promo,on_hand\n"
        "A,2024-01,inf,1,0,\n"
        "A,2024-02,-inf,1,0,\n"
        "A,2024-03,nan,1,0,\n"
        "A,2024-04,1,Infinity,0,\n"
        "A,2024-05,1,1,inf,\n"
        "A,2024-06,1,1,NaN,\n"
        "A,2024-07,1,1,0,nan\n"
        "A,2024-08,1e400,1,0,\n"
        "A,2024-09,2,1,1,3\n",
    )
    result = validate_panel(load_source(path), as_of=date(2024, 9, 1))
    assert result.quarantine.select("row", "rule", "column").rows() == [
        (1, "sales_not_finite", "sales"),
        (2, "sales_not_finite", "sales"),
        (3, "sales_not_finite", "sales"),
        (4, "customer_count_not_finite", "customer_count"),
        (5, "promo_not_finite", "promo"),
        (6, "promo_not_finite", "promo"),
        (7, "on_hand_not_finite", "on_hand"),
        (8, "sales_not_finite", "sales"),  # 1e400 overflows a float64
    ]
    assert result.panel["month"].to_list() == [date(2024, 9, 1)]


def test_promo_days_inf_is_quarantined_not_binarised(tmp_path: Path) -> None:
    path = _csv(
        tmp_path,
        "Store,Month,Sales,Customers,PromoDays\n1,2015-01,10,5,inf\n1,2015-02,10,5,13\n"
        "1,2015-03,10,5,nan\n",
    )
    loaded = load_source(path, "rossmann")
    assert loaded.frame["promo"].to_list() == ["inf", "1", "nan"]
    result = validate_panel(loaded, as_of=date(2015, 3, 1))
    lines = set(result.quarantine.select("row", "rule", "value").rows())
    assert {(1, "promo_not_finite", "inf"), (3, "promo_not_finite", "nan")} <= lines
    # the same PromoDays also feeds the plan column promo_days, flagged in its own right
    assert {(1, "plan_not_finite", "inf"), (3, "plan_not_finite", "nan")} <= lines
    assert {r for r, *_ in lines} == {1, 3}


# --------------------------------------------------------------------- as-of inference


def _synthetic_panel(tmp_path: Path, last_month: dict[str, int], *, n_skus: int = 20) -> Path:
    """n_skus SKUs selling 10 a month in 2023-01 .. 2023-12, then the given last month."""
    lines = ["sku,month,sales"]
    for m in range(1, 13):
        lines += [f"S{i:02d},2023-{m:02d},10" for i in range(n_skus)]
    lines += [f"{sku},2024-01,{v}" for sku, v in last_month.items()]
    return _csv(tmp_path, "\n".join(lines) + "\n")


def test_a_last_month_with_a_third_of_the_sales_is_partial_and_excluded(tmp_path: Path) -> None:
    # every SKU present, each selling 3 instead of 10: total sales 30% of the usual 200
    path = _synthetic_panel(tmp_path, {f"S{i:02d}": 3 for i in range(20)})
    result = validate_panel(load_source(path))
    c = result.counts
    assert (c.as_of, c.partial_month, c.last_month) == (
        date(2023, 12, 1),
        date(2024, 1, 1),
        date(2023, 12, 1),
    )
    assert c.by_rule == {"month_partial": 20}
    assert c.rows_accepted == 240
    assert "2024-01 is partial" in result.as_of_note
    assert "total sales 60 are 30% of the median 200" in result.as_of_note


def test_a_last_month_with_few_active_skus_is_partial(tmp_path: Path) -> None:
    # 5 of 20 SKUs reported, each with a big month: total sales equal, SKUs 25%
    path = _synthetic_panel(tmp_path, {f"S{i:02d}": 40 for i in range(5)})
    result = validate_panel(load_source(path))
    assert result.counts.partial_month == date(2024, 1, 1)
    assert "active SKUs 5 are 25% of the median 20" in result.as_of_note


def test_a_normal_last_month_is_complete(tmp_path: Path) -> None:
    path = _synthetic_panel(tmp_path, {f"S{i:02d}": 8 for i in range(20)})  # 80%
    result = validate_panel(load_source(path))
    assert (result.counts.as_of, result.counts.partial_month) == (date(2024, 1, 1), None)
    assert result.counts.rows_quarantined == 0
    assert "complete (total sales 80% and active SKUs 100%" in result.as_of_note


def test_a_drop_the_history_has_shown_before_is_not_partial() -> None:
    # month 5 already fell to 40% of its window, so a last month at 50% is ordinary
    sales = [100, 100, 100, 100, 40, 100, 100, 100, 50]
    monthly = pl.DataFrame(
        {
            "month": [date(2023, m, 1) for m in range(1, 10)],
            "skus": [50] * 9,
            "sales": sales,
        }
    )
    assert infer_as_of(monthly).partial_month is None
    lower = monthly.with_columns(pl.Series("sales", [*sales[:-1], 30]))
    assert infer_as_of(lower).partial_month == date(2023, 9, 1)


def test_the_partial_check_is_configurable(tmp_path: Path) -> None:
    path = _synthetic_panel(tmp_path, {f"S{i:02d}": 3 for i in range(20)})
    off = validate_panel(load_source(path), config=ValidationConfig(partial_month_ratio=0))
    assert off.counts.partial_month is None and off.counts.rows_quarantined == 0
    strict = ValidationConfig(partial_month_ratio=0.2)  # 30% is above a 20% threshold
    assert validate_panel(load_source(path), config=strict).counts.partial_month is None
    few = ValidationConfig(partial_month_min_skus=21)  # 20 SKUs are too few to judge
    assert validate_panel(load_source(path), config=few).counts.partial_month is None


def test_a_given_as_of_is_not_second_guessed(tmp_path: Path) -> None:
    path = _synthetic_panel(tmp_path, {f"S{i:02d}": 3 for i in range(20)})
    result = validate_panel(load_source(path), as_of=date(2024, 1, 1))
    assert result.counts.rows_quarantined == 0
    assert result.as_of_note == "as-of 2024-01: given"


def test_bundled_online_retail_without_as_of_drops_its_partial_last_month() -> None:
    path = Path(__file__).resolve().parents[2] / "data/example/online_retail_sku_monthly.csv.gz"
    with gzip.open(path, "rt", newline="") as fh:
        records = list(csv.DictReader(fh))
    # independent figures with the csv module: 2011-12 (data ends 2011-12-09) vs Sep-Nov
    total = {
        m: sum(int(r["Quantity"]) for r in records if r["Month"] == m)
        for m in ("2011-09", "2011-10", "2011-11", "2011-12")
    }
    n_dec = sum(r["Month"] == "2011-12" for r in records)
    median = sorted([total["2011-09"], total["2011-10"], total["2011-11"]])[1]
    assert total["2011-12"] / median < 0.6
    result = validate_panel(load_source(path, "online_retail"))
    c = result.counts
    assert (c.as_of, c.partial_month, c.last_month) == (
        date(2011, 11, 1),
        date(2011, 12, 1),
        date(2011, 11, 1),
    )
    assert c.by_rule == {"month_partial": n_dec}
    assert f"total sales {total['2011-12']:,} are" in result.as_of_note


def test_real_complete_data_sets_keep_their_last_month(shared_data_dir: Path) -> None:
    rossmann = _validate_real(
        shared_data_dir / "rossmann-store-sales" / "rossmann_store_monthly.csv", "rossmann"
    )
    assert rossmann.counts.as_of == date(2015, 7, 1)  # SOURCE.md: data ends 2015-07-31
    assert rossmann.counts.partial_month is None
    carparts = _validate_real(
        shared_data_dir / "carparts" / "carparts_monthly_long.csv.gz", "carparts"
    )
    assert carparts.counts.partial_month is None
