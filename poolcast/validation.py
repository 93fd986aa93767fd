"""Validation: accepted rows become the regular-grid panel, bad rows go to quarantine.

Nothing is lost: every input row is either accepted into the panel or written to the
quarantine table with the rule it broke, the column and the raw value, and
``rows_in == rows_accepted + rows_quarantined`` always holds (asserted).

Rules (vectorised polars expressions, no row loops), in :data:`schemas.QUARANTINE_RULES`:

==========================  ============================================================
``sku_null``                sku null, empty or blank
``month_unparseable``       month not ``YYYY-MM`` nor a valid ``YYYY-MM-DD`` (an optional
                            ``00:00[:00]`` time is allowed)
``month_not_first``         a valid date that is not the first of its month
``month_after_as_of``       a month after the as-of month
``sales_null``              sales null or empty
``sales_not_integer``       sales not a number, or not a whole number (``"3.0"`` is 3)
``sales_negative``          sales < 0
``sales_absurd``            sales > ``ValidationConfig.sales_cap``
``customer_count_*``        the same four rules for customer_count (only when the source
                            has the column), cap ``ValidationConfig.customer_cap``
``promo_null``              promo column present but the value null
``promo_invalid``           promo not 0 or 1
``on_hand_not_integer``     on_hand present and not a whole number (null is allowed)
``on_hand_negative``        on_hand < 0
``duplicate_conflict``      two or more rows with the same (sku, month) that differ in
                            any other column: ALL of them are quarantined
``exact_duplicate``         an identical copy of an earlier row: the first copy (lowest
                            source row) is kept, the surplus copies are quarantined and
                            counted in ``duplicates_collapsed``
==========================  ============================================================

Within one column the rules are exclusive (the first that applies, in the order above);
across columns every broken rule is recorded: a row breaking several rules has one
quarantine line per rule but counts once in ``rows_quarantined``. Duplicates are looked
for among rows whose key is usable (sku present, month a valid first-of-month), whatever
their other values; rows are identical when their key and the stripped raw values of
every other column are equal.

Gaps: a month missing inside a SKU's accepted history (between its first accepted month
and the panel's end) is added to the panel with ``is_gap = True`` and reported in the gaps
table. The panel's end is the as-of month when one is given, else the last accepted month
of any SKU: **every SKU is completed to that end**, so a SKU whose last row is older than
the as-of gets trailing gap months (a forecast origin then sees them, instead of the SKU's
last recorded month). Under gap_policy ``"missing"`` a gap's sales are NULL (unknown);
under ``"zero"`` 0 (the source omits months without sales). On gap rows customer_count and
on_hand are NULL, promo is 0 and category is the SKU's category.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

import pandera.errors as pa_errors
import polars as pl

from poolcast.config import ValidationConfig
from poolcast.errors import DataContractError, InvalidParameterError
from poolcast.io import ROW_COLUMN, LoadedSource
from poolcast.mapping import Mapping
from schemas.quarantine import QUARANTINE_COLUMNS, QUARANTINE_RULES, Quarantine
from schemas.sales_input import PANEL_COLUMNS, SalesPanel

__all__ = [
    "QualityCounts",
    "ValidationResult",
    "resolve_gap_policy",
    "validate_panel",
    "write_quarantine",
]

_KEY_COLUMN = "sku,month"
_MAX_EXACT_FLOAT = 2.0**53
_MONTH_RE = r"^\d{4}-\d{2}$"
_DATE_RE = r"^\d{4}-\d{2}-\d{2}(?:[ T]00:00(?::00(?:\.0+)?)?)?$"


@dataclass(frozen=True)
class QualityCounts:
    """Data-quality counts of one validation.

    Fields
    ------
    rows_in : int
        Rows read from the source.
    rows_accepted : int
        Rows in the panel that came from the source (gap rows excluded).
    rows_quarantined : int
        Distinct source rows quarantined (a row breaking several rules counts once).
        ``rows_in == rows_accepted + rows_quarantined``.
    duplicates_collapsed : int
        Surplus exact copies quarantined with rule ``exact_duplicate``.
    gaps : int
        Gap rows added to the panel (months missing inside a SKU's history).
    skus, months : int
        Distinct SKUs and distinct months in the panel.
    first_month, last_month : date or None
        The panel's month range (None when nothing was accepted).
    by_rule : dict of str to int
        Quarantine lines per rule (only rules that occurred).
    gap_policy : str
        The gap policy applied.
    """

    rows_in: int
    rows_accepted: int
    rows_quarantined: int
    duplicates_collapsed: int
    gaps: int
    skus: int
    months: int
    first_month: date | None
    last_month: date | None
    by_rule: dict[str, int] = field(default_factory=dict)
    gap_policy: str = "missing"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (months as ISO strings)."""
        out = asdict(self)
        for key in ("first_month", "last_month"):
            out[key] = out[key].isoformat() if out[key] is not None else None
        return out


@dataclass(frozen=True)
class ValidationResult:
    """What :func:`validate_panel` returns.

    Fields
    ------
    panel : pl.DataFrame
        The validated panel (see :class:`schemas.SalesPanel`): sku, month, sales,
        customer_count, promo, category, on_hand, is_gap; sorted by (sku, month) on a
        regular monthly grid per SKU.
    quarantine : pl.DataFrame
        row, sku, month, rule, column, value (see :class:`schemas.Quarantine`), sorted by
        (row, rule order).
    gaps : pl.DataFrame
        sku, month of every gap row in the panel.
    counts : QualityCounts
        The counts; they add up.
    has_customers : bool
        Whether the source had a customer_count column (if not, the panel's
        customer_count is all NULL and features omit customer features).
    source : str
        The source it came from.
    """

    panel: pl.DataFrame
    quarantine: pl.DataFrame
    gaps: pl.DataFrame
    counts: QualityCounts
    has_customers: bool
    source: str = ""


def resolve_gap_policy(
    config: ValidationConfig, mapping: Mapping | None
) -> Literal["missing", "zero"]:
    """The gap policy in force: the config's if set, else the mapping's, else ``"missing"``."""
    policy = config.gap_policy or (mapping.gap_policy if mapping is not None else None) or "missing"
    if policy not in ("missing", "zero"):
        raise InvalidParameterError(
            f"gap_policy must be 'missing' or 'zero', got {policy!r}; set [validation] gap_policy"
        )
    return policy  # type: ignore[return-value]


def validate_panel(
    loaded: LoadedSource,
    *,
    config: ValidationConfig | None = None,
    as_of: date | None = None,
) -> ValidationResult:
    """Check every row against the contract, quarantine the bad ones, build the panel.

    Parameters
    ----------
    loaded : LoadedSource
        Output of :func:`poolcast.io.load_source` (string columns + ``_row``).
    config : ValidationConfig, optional
        Caps and gap policy (default: ``ValidationConfig()``; the gap policy then comes
        from the mapping, see :func:`resolve_gap_policy`).
    as_of : date, optional
        The last month the run may see; rows in later months are quarantined
        (``month_after_as_of``). Any day of the month may be given. None: no limit.

    Returns
    -------
    ValidationResult

    Raises
    ------
    InvalidParameterError
        ``loaded.frame`` lacks sku/month/sales/_row or its ``_row`` is not unique.
    DataContractError
        Only if the accepted panel fails the pandera contract (a bug, not bad data).
    """
    config = config or ValidationConfig()
    gap_policy = resolve_gap_policy(config, loaded.mapping)
    as_of_month = date(as_of.year, as_of.month, 1) if as_of is not None else None
    raw = loaded.frame
    _check_loaded(raw, source=loaded.source)
    has = set(raw.columns)

    flagged, rules = _flag_rows(raw, config=config, as_of_month=as_of_month)
    quarantine = Quarantine.validate(_quarantine_lines(flagged, rules))
    accepted = flagged.filter(~pl.col("_bad"))
    rows_in = raw.height
    rows_quarantined = quarantine.get_column("row").n_unique()
    rows_accepted = accepted.height
    if rows_in != rows_accepted + rows_quarantined:  # pragma: no cover - an invariant
        raise DataContractError(
            f"{loaded.source}: rows in {rows_in} != accepted {rows_accepted} + quarantined "
            f"{rows_quarantined} (a poolcast bug, please report it)"
        )

    observed = _typed_rows(accepted, has)
    end = as_of_month
    if end is None and observed.height:
        end = observed.get_column("month").max()
    panel = _fill_gaps(observed, gap_policy=gap_policy, end=end)
    panel = _check_contract(panel, source=loaded.source)
    gaps = panel.filter(pl.col("is_gap")).select("sku", "month")

    by_rule_frame = quarantine.group_by("rule").len()
    by_rule_map = dict(zip(by_rule_frame["rule"], by_rule_frame["len"], strict=True))
    by_rule = {r: int(by_rule_map[r]) for r in QUARANTINE_RULES if r in by_rule_map}
    counts = QualityCounts(
        rows_in=rows_in,
        rows_accepted=rows_accepted,
        rows_quarantined=rows_quarantined,
        duplicates_collapsed=by_rule.get("exact_duplicate", 0),
        gaps=gaps.height,
        skus=panel.get_column("sku").n_unique(),
        months=panel.get_column("month").n_unique(),
        first_month=panel.get_column("month").min() if panel.height else None,  # type: ignore[arg-type]
        last_month=panel.get_column("month").max() if panel.height else None,  # type: ignore[arg-type]
        by_rule=by_rule,
        gap_policy=gap_policy,
    )
    return ValidationResult(
        panel=panel,
        quarantine=quarantine,
        gaps=gaps,
        counts=counts,
        has_customers="customer_count" in has,
        source=loaded.source,
    )


def write_quarantine(result: ValidationResult | pl.DataFrame, path: str | Path) -> Path:
    """Write the quarantine table to CSV (``.csv``) or Parquet (``.parquet``/``.pq``).

    The parent folder is created. An empty quarantine is still written (header only), so
    a run always leaves its quarantine file.
    """
    table = result.quarantine if isinstance(result, ValidationResult) else result
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        table.write_parquet(path)
    elif suffix == ".csv":
        table.write_csv(path)
    else:
        raise InvalidParameterError(
            f"quarantine path {str(path)!r} must end in .csv, .parquet or .pq"
        )
    return path


# --------------------------------------------------------------------------- helpers


def _check_loaded(raw: pl.DataFrame, *, source: str) -> None:
    missing = [c for c in (ROW_COLUMN, "sku", "month", "sales") if c not in raw.columns]
    if missing:
        raise InvalidParameterError(
            f"{source}: the loaded frame lacks column(s) {missing}; build it with "
            f"poolcast.io.load_source"
        )
    if raw.get_column(ROW_COLUMN).n_unique() != raw.height:
        raise InvalidParameterError(f"{source}: the loaded frame's {ROW_COLUMN} is not unique")


def _flag_rows(
    raw: pl.DataFrame, *, config: ValidationConfig, as_of_month: date | None
) -> tuple[pl.DataFrame, dict[str, tuple[str, pl.Expr]]]:
    """Parse every column and add one Boolean ``_rule_<name>`` column per rule plus ``_bad``.

    Returns the flagged frame and the rules in force (rule -> (column, flag expression)).
    """
    has = set(raw.columns)
    parsed = raw.with_columns(
        _clean(pl.col(c)).alias(f"_clean_{c}") for c in raw.columns if c != ROW_COLUMN
    ).with_columns(
        pl.col("_clean_month").pipe(_parse_month).alias("_month"),
        *[
            _parse_number(pl.col(f"_clean_{c}")).alias(f"_num_{c}")
            for c in ("sales", "customer_count", "promo", "on_hand")
            if c in has
        ],
    )

    rules: dict[str, tuple[str, pl.Expr]] = {}  # rule -> (column, flag)
    sku = pl.col("_clean_sku")
    month = pl.col("_month")
    rules["sku_null"] = ("sku", sku.is_null())
    rules["month_unparseable"] = ("month", month.is_null())
    rules["month_not_first"] = ("month", month.is_not_null() & (month.dt.day() != 1))
    if as_of_month is not None:
        rules["month_after_as_of"] = (
            "month",
            month.is_not_null() & (month.dt.day() == 1) & (month > pl.lit(as_of_month)),
        )
    rules.update(_count_rules("sales", cap=config.sales_cap, nullable=False))
    if "customer_count" in has:
        rules.update(_count_rules("customer_count", cap=config.customer_cap, nullable=False))
    if "promo" in has:
        text, num = pl.col("_clean_promo"), pl.col("_num_promo")
        rules["promo_null"] = ("promo", text.is_null())
        rules["promo_invalid"] = (
            "promo",
            text.is_not_null() & ~num.is_in([0.0, 1.0]).fill_null(False),
        )
    if "on_hand" in has:
        rules.update(_count_rules("on_hand", cap=None, nullable=True))

    # duplicates among rows with a usable key; the window functions run only on the
    # (usually few) rows whose key occurs more than once
    key_ok = sku.is_not_null() & month.is_not_null() & (month.dt.day() == 1)
    value_cols = [f"_clean_{c}" for c in raw.columns if c not in (ROW_COLUMN, "sku", "month")]
    keyed = parsed.with_columns(
        (key_ok & pl.struct(sku, month).is_duplicated()).fill_null(False).alias("_dup_key")
    )
    key = ["_clean_sku", "_month"]
    n_distinct = (
        pl.struct(value_cols).n_unique().over(key) if value_cols else pl.lit(1, dtype=pl.UInt32)
    )
    first_row = pl.col(ROW_COLUMN).min().over(key)
    dups = keyed.filter(pl.col("_dup_key")).select(
        ROW_COLUMN,
        (n_distinct > 1).alias("_dup_conflict"),
        ((n_distinct == 1) & (pl.col(ROW_COLUMN) != first_row)).alias("_dup_exact"),
        first_row.alias("_dup_first_row"),
    )
    keyed = keyed.join(dups, on=ROW_COLUMN, how="left", maintain_order="left")
    rules["duplicate_conflict"] = (_KEY_COLUMN, pl.col("_dup_conflict"))
    rules["exact_duplicate"] = (_KEY_COLUMN, pl.col("_dup_exact"))

    flagged = keyed.with_columns(
        flag.fill_null(False).alias(f"_rule_{name}") for name, (_, flag) in rules.items()
    ).with_columns(pl.any_horizontal([pl.col(f"_rule_{name}") for name in rules]).alias("_bad"))
    return flagged, rules


def _clean(expr: pl.Expr) -> pl.Expr:
    """Strip whitespace; empty becomes null."""
    stripped = expr.str.strip_chars()
    return pl.when(stripped.str.len_chars() > 0).then(stripped)


def _parse_month(text: pl.Expr) -> pl.Expr:
    """Date of 'YYYY-MM' (day 1) or 'YYYY-MM-DD[ 00:00[:00]]'; null when neither parses."""
    ym = pl.when(text.str.contains(_MONTH_RE)).then(
        (text + "-01").str.to_date("%Y-%m-%d", strict=False)
    )
    ymd = pl.when(text.str.contains(_DATE_RE)).then(
        text.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)
    )
    return pl.coalesce(ym, ymd)


def _parse_number(text: pl.Expr) -> pl.Expr:
    """Float64 value of a cleaned string (null when not a number)."""
    return text.cast(pl.Float64, strict=False)


def _count_rules(column: str, *, cap: int | None, nullable: bool) -> dict[str, tuple[str, pl.Expr]]:
    """null / not_integer / negative / absurd flags of a count column, exclusive in that order."""
    text, num = pl.col(f"_clean_{column}"), pl.col(f"_num_{column}")
    present = text.is_not_null()
    whole = num.is_not_null() & num.is_finite() & (num == num.floor())
    rules: dict[str, tuple[str, pl.Expr]] = {}
    if not nullable:
        rules[f"{column}_null"] = (column, ~present)
    rules[f"{column}_not_integer"] = (column, present & ~whole)
    rules[f"{column}_negative"] = (column, present & whole & (num < 0))
    if cap is not None:
        rules[f"{column}_absurd"] = (column, present & whole & (num > cap))
    return rules


def _to_int(column: str) -> pl.Expr:
    """Exact Int64 of an accepted count: integer text parsed exactly, else the whole float."""
    text, num = pl.col(f"_clean_{column}"), pl.col(f"_num_{column}")
    exact = text.str.to_integer(strict=False)
    from_float = pl.when(num.abs() < _MAX_EXACT_FLOAT).then(num.cast(pl.Int64, strict=False))
    return pl.coalesce(exact, from_float)


def _quarantine_lines(flagged: pl.DataFrame, rules: dict[str, tuple[str, pl.Expr]]) -> pl.DataFrame:
    order = {name: i for i, name in enumerate(QUARANTINE_RULES)}
    parts = []
    for name, (column, _) in rules.items():
        hit = flagged.filter(pl.col(f"_rule_{name}"))
        if hit.height == 0:
            continue
        if name == "exact_duplicate":
            value = pl.format("copy of row {}", pl.col("_dup_first_row"))
        elif column == _KEY_COLUMN:
            value = pl.concat_str(
                [pl.col("sku").fill_null(""), pl.col("month").fill_null("")], separator=","
            )
        else:
            value = pl.col(column)
        parts.append(
            hit.select(
                pl.col(ROW_COLUMN).alias("row"),
                pl.col("sku"),
                pl.col("month"),
                pl.lit(name).alias("rule"),
                pl.lit(column).alias("column"),
                value.cast(pl.String).alias("value"),
                pl.lit(order[name]).alias("_order"),
            )
        )
    if not parts:
        return pl.DataFrame(schema=QUARANTINE_COLUMNS)
    return pl.concat(parts).sort("row", "_order").drop("_order")


def _typed_rows(accepted: pl.DataFrame, has: set[str]) -> pl.DataFrame:
    cols = [
        pl.col("_clean_sku").alias("sku"),
        pl.col("_month").alias("month"),
        _to_int("sales").alias("sales"),
        (_to_int("customer_count") if "customer_count" in has else pl.lit(None, pl.Int64)).alias(
            "customer_count"
        ),
        (_to_int("promo").cast(pl.Int8) if "promo" in has else pl.lit(0, dtype=pl.Int8)).alias(
            "promo"
        ),
        (pl.col("_clean_category") if "category" in has else pl.lit(None, pl.String)).alias(
            "category"
        ),
        (_to_int("on_hand") if "on_hand" in has else pl.lit(None, pl.Int64)).alias("on_hand"),
        pl.lit(False).alias("is_gap"),
    ]
    return accepted.select(cols).sort("sku", "month")


def _fill_gaps(observed: pl.DataFrame, *, gap_policy: str, end: date | None) -> pl.DataFrame:
    """Regular monthly grid per SKU from its first month to ``end`` (default: its last
    month); missing months are gaps."""
    if observed.height == 0:
        return observed.select(PANEL_COLUMNS)
    last = pl.lit(end, pl.Date) if end is not None else pl.col("month").max()
    grid = (
        observed.group_by("sku")
        .agg(pl.date_ranges(pl.col("month").min(), last, "1mo").alias("month"))
        .explode("month")
    )
    if grid.height == observed.height:
        return observed.select(PANEL_COLUMNS)
    fill_sales = pl.lit(0, pl.Int64) if gap_policy == "zero" else pl.lit(None, pl.Int64)
    panel = (
        grid.join(observed, on=["sku", "month"], how="left")
        .sort("sku", "month")
        .with_columns(
            pl.col("is_gap").is_null().alias("is_gap"),
        )
        .with_columns(
            pl.when(pl.col("is_gap")).then(fill_sales).otherwise(pl.col("sales")).alias("sales"),
            pl.col("promo").fill_null(0),
            pl.col("category").forward_fill().backward_fill().over("sku"),
        )
    )
    return panel.select(PANEL_COLUMNS)


def _check_contract(panel: pl.DataFrame, *, source: str) -> pl.DataFrame:
    try:
        return SalesPanel.validate(panel, lazy=True)
    except pa_errors.SchemaErrors as exc:
        raise DataContractError(
            f"{source}: the validated panel breaks the data contract (a poolcast bug, please "
            f"report it): {exc.failure_cases.head(10)}",
            rows=exc.failure_cases,
        ) from exc
