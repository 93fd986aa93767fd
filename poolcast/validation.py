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
``month_out_of_range``      a month before ``ValidationConfig.min_month`` (default 1990-01)
                            or after ``max_month`` (default: the current calendar month);
                            year 0 (``0000-01``) and ``9999-12`` land here
``month_after_as_of``       a month after the as-of month given by the caller
``month_partial``           (no as-of given) the data's last month, judged partial: see
                            :func:`infer_as_of`; the as-of is then the month before it
``sales_null``              sales null or empty
``sales_not_finite``        sales ``inf``, ``-inf`` or ``nan`` (any spelling polars parses)
``sales_not_integer``       sales not a number, or not a whole number (``"3.0"`` is 3)
``sales_negative``          sales < 0
``sales_absurd``            sales > ``ValidationConfig.sales_cap``
``customer_count_*``        the same five rules for customer_count (only when the source
                            has the column), cap ``ValidationConfig.customer_cap``
``promo_null``              promo column present but the value null
``promo_not_finite``        promo ``inf``/``nan`` (never binarised: see ``poolcast.io``)
``promo_invalid``           promo not 0 or 1
``on_hand_not_finite``      on_hand ``inf``/``nan``
``on_hand_not_integer``     on_hand present and not a whole number (null is allowed)
``on_hand_negative``        on_hand < 0
``plan_null``               a plan column (the mapping's ``[plan_columns]``) null or empty
``plan_not_number``         a plan value that is not a number
``plan_not_finite``         a plan value that is NaN or infinite
``plan_negative``           a plan value < 0
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

Plan columns (``[plan_columns]`` of the mapping, e.g. Rossmann's ``open_days``) are
non-negative finite numbers; they follow the contract columns in the panel as Float64
(NULL on gap rows) and are listed in ``ValidationResult.plan_columns``. The same rules
check a plan source for the months after the as-of (:mod:`poolcast.plan`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandera.errors as pa_errors
import polars as pl

from poolcast.config import ValidationConfig
from poolcast.errors import DataContractError, InvalidParameterError
from poolcast.io import ROW_COLUMN, LoadedSource
from poolcast.mapping import Mapping
from schemas.quarantine import QUARANTINE_COLUMNS, QUARANTINE_RULES, Quarantine
from schemas.sales_input import PANEL_COLUMNS, SalesPanel

__all__ = [
    "AsOf",
    "QualityCounts",
    "ValidationResult",
    "current_month",
    "infer_as_of",
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
    as_of : date or None
        The as-of month in force: the caller's, else the inferred latest complete month.
    partial_month : date or None
        The last month of the data when it was judged partial (its rows are quarantined as
        ``month_partial``).
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
    as_of: date | None = None
    partial_month: date | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (months as ISO strings)."""
        out = asdict(self)
        for key in ("first_month", "last_month", "as_of", "partial_month"):
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
    as_of_note : str
        How the as-of was chosen: given, or inferred (and why the last month was judged
        complete or partial).
    plan_columns : tuple of str
        The plan columns (Float64, after the contract columns) the panel carries.
    plan_transforms : dict of str to str
        The mapping's ``[plan_transforms]`` of those plan columns (how the covariate models
        enter them; the panel keeps the values as they are).
    """

    panel: pl.DataFrame
    quarantine: pl.DataFrame
    gaps: pl.DataFrame
    counts: QualityCounts
    has_customers: bool
    source: str = ""
    as_of_note: str = ""
    plan_columns: tuple[str, ...] = ()
    plan_transforms: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AsOf:
    """The as-of month of a validation and how it was chosen (see :func:`infer_as_of`).

    Fields
    ------
    month : date or None
        The last month the run may see (None: the data has no usable month).
    partial_month : date or None
        The data's last month when it was judged partial (then ``month`` is the month
        before it that has data).
    note : str
        One sentence saying how the month was chosen, with the figures.
    """

    month: date | None
    partial_month: date | None = None
    note: str = ""


def current_month() -> date:
    """The first day of the current calendar month (UTC)."""
    today = datetime.now(UTC).date()
    return date(today.year, today.month, 1)


def infer_as_of(monthly: pl.DataFrame, *, config: ValidationConfig | None = None) -> AsOf:
    r"""The latest *complete* month of the data: the as-of of a run given none.

    The data's last month :math:`L` is **partial** (a source that ends mid-month, like
    Online Retail's 2011-12, which ends on the 9th) when, for total sales or for active
    SKUs (SKUs with a sales value that month), its ratio to the median of the previous
    :math:`w` months (``partial_month_window``, default 3),

    .. math:: r_L = x_L / \operatorname{median}(x_{L-w}, \dots, x_{L-1}),

    is below ``partial_month_ratio`` (default 0.6) **and** below every earlier month's
    ratio :math:`r_t` (a drop the data has never shown before). The check needs
    :math:`w + 1` months and a median of at least ``partial_month_min_skus`` (default 10)
    active SKUs over the window; otherwise (or with ratio 0) the last month counts as
    complete. Only the last month is judged: a source ends mid-month at most once.

    Parameters
    ----------
    monthly : pl.DataFrame
        One row per month: ``month`` (Date), ``skus`` (active SKUs) and ``sales`` (total),
        of the rows with a usable key, a month in the plausible range and a sales number.
    config : ValidationConfig, optional
        ``partial_month_ratio``, ``partial_month_window``, ``partial_month_min_skus``.

    Returns
    -------
    AsOf
        ``L`` when complete; the previous month with data when ``L`` is partial.
    """
    config = config or ValidationConfig()
    m = monthly.sort("month")
    if m.height == 0:
        return AsOf(None, note="no usable month: nothing to infer the as-of from")
    months = m.get_column("month").to_list()
    last = months[-1]
    w = config.partial_month_window
    if config.partial_month_ratio <= 0:
        return AsOf(last, note=f"as-of {last:%Y-%m}: the data's last month (check turned off)")
    if m.height < w + 1:
        return AsOf(
            last,
            note=f"as-of {last:%Y-%m}: the data's last month ({m.height} months: too few "
            f"to judge completeness, which needs {w + 1})",
        )
    window_skus = m.get_column("skus").to_numpy()[-w - 1 : -1]
    if float(np.median(window_skus)) < config.partial_month_min_skus:
        return AsOf(
            last,
            note=f"as-of {last:%Y-%m}: the data's last month (under "
            f"{config.partial_month_min_skus} active SKUs a month: too few to judge completeness)",
        )
    shown = []
    for column, what in (("sales", "total sales"), ("skus", "active SKUs")):
        x = m.get_column(column).cast(pl.Float64).to_numpy()
        ratios = np.full(x.size, np.nan)
        for t in range(w, x.size):
            med = float(np.median(x[t - w : t]))
            if med > 0:
                ratios[t] = x[t] / med
        r_last = ratios[-1]
        earlier = ratios[w:-1][np.isfinite(ratios[w:-1])]
        lowest = float(earlier.min()) if earlier.size else np.inf
        if np.isfinite(r_last) and r_last < config.partial_month_ratio and r_last < lowest:
            prev = months[-2]
            med = float(np.median(x[-w - 1 : -1]))
            below = (
                f" and below every earlier month's ratio (lowest {lowest:.0%})"
                if earlier.size
                else ""
            )
            return AsOf(
                prev,
                partial_month=last,
                note=(
                    f"as-of {prev:%Y-%m}, the latest complete month: {last:%Y-%m} is partial "
                    f"(its {what} {x[-1]:,.0f} are {r_last:.0%} of the median {med:,.0f} of the "
                    f"previous {w} months, below the {config.partial_month_ratio:.0%} threshold"
                    f"{below}); its rows are quarantined as month_partial"
                ),
            )
        if np.isfinite(r_last):
            shown.append(f"{what} {r_last:.0%}")
    figures = f" ({' and '.join(shown)} of the previous {w} months' median)" if shown else ""
    return AsOf(last, note=f"as-of {last:%Y-%m}: the data's last month, complete{figures}")


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
        (``month_after_as_of``). Any day of the month may be given. None: the latest
        complete month of the data (:func:`infer_as_of`; a partial last month is
        quarantined as ``month_partial``), never after ``config.max_month`` (default the
        current calendar month), since later months are out of range.

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
    raw = loaded.frame
    _check_loaded(raw, source=loaded.source)
    has = set(raw.columns)
    plan_columns = tuple(c for c in loaded.mapping.plan_columns if c in has)

    month_range = (config.min_month, config.max_month or current_month())
    parsed = _parse(raw, plan_columns)
    if as_of is not None:
        as_of_month = date(as_of.year, as_of.month, 1)
        chosen = AsOf(as_of_month, note=f"as-of {as_of_month:%Y-%m}: given")
    else:
        chosen = infer_as_of(_monthly_activity(parsed, month_range), config=config)
    flagged, rules = _flag_rows(
        parsed,
        config=config,
        month_range=month_range,
        as_of_month=chosen.month if as_of is not None else None,
        partial_month=chosen.partial_month,
        plan_columns=plan_columns,
    )
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

    observed = _typed_rows(accepted, has, plan_columns)
    end = chosen.month
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
        as_of=chosen.month,
        partial_month=chosen.partial_month,
    )
    return ValidationResult(
        panel=panel,
        quarantine=quarantine,
        gaps=gaps,
        counts=counts,
        has_customers="customer_count" in has,
        source=loaded.source,
        as_of_note=chosen.note,
        plan_columns=plan_columns,
        plan_transforms={
            c: t for c, t in loaded.mapping.plan_transforms.items() if c in plan_columns
        },
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


def _parse(raw: pl.DataFrame, plan_columns: tuple[str, ...] = ()) -> pl.DataFrame:
    """Add ``_clean_<col>`` (stripped, empty -> null), ``_month`` and ``_num_<number col>``."""
    has = set(raw.columns)
    return raw.with_columns(
        _clean(pl.col(c)).alias(f"_clean_{c}") for c in raw.columns if c != ROW_COLUMN
    ).with_columns(
        pl.col("_clean_month").pipe(_parse_month).alias("_month"),
        *[
            _parse_number(pl.col(f"_clean_{c}")).alias(f"_num_{c}")
            for c in ("sales", "customer_count", "promo", "on_hand", *plan_columns)
            if c in has
        ],
    )


def _in_range(month: pl.Expr, month_range: tuple[date, date]) -> pl.Expr:
    return (month >= pl.lit(month_range[0])) & (month <= pl.lit(month_range[1]))


def _monthly_activity(parsed: pl.DataFrame, month_range: tuple[date, date]) -> pl.DataFrame:
    """Per month: active SKUs and total sales of the rows usable for judging completeness."""
    month, num = pl.col("_month"), pl.col("_num_sales")
    usable = (
        pl.col("_clean_sku").is_not_null()
        & month.is_not_null()
        & (month.dt.day() == 1)
        & _in_range(month, month_range)
        & num.is_finite()
        & (num >= 0)
    ).fill_null(False)
    return (
        parsed.filter(usable)
        .group_by("_month")
        .agg(pl.col("_clean_sku").n_unique().alias("skus"), num.sum().alias("sales"))
        .rename({"_month": "month"})
        .sort("month")
    )


def _flag_rows(
    parsed: pl.DataFrame,
    *,
    config: ValidationConfig,
    month_range: tuple[date, date],
    as_of_month: date | None,
    partial_month: date | None,
    plan_columns: tuple[str, ...] = (),
    check_sales: bool = True,
) -> tuple[pl.DataFrame, dict[tuple[str, str], tuple[str, pl.Expr]]]:
    """Add one Boolean ``_rule_<name>`` column per rule plus ``_bad`` to the parsed frame.

    Returns the flagged frame and the rules in force (rule -> (column, flag expression)).
    """
    raw_columns = [c for c in parsed.columns if not c.startswith("_") or c == ROW_COLUMN]
    has = set(raw_columns)

    rules: dict[str, tuple[str, pl.Expr]] = {}  # rule -> (column, flag)
    sku = pl.col("_clean_sku")
    month = pl.col("_month")
    first = month.is_not_null() & (month.dt.day() == 1)
    in_range = _in_range(month, month_range)
    rules["sku_null"] = ("sku", sku.is_null())
    rules["month_unparseable"] = ("month", month.is_null())
    rules["month_not_first"] = ("month", month.is_not_null() & (month.dt.day() != 1))
    rules["month_out_of_range"] = ("month", first & ~in_range)
    if as_of_month is not None:
        rules["month_after_as_of"] = (
            "month",
            first & in_range & (month > pl.lit(as_of_month)),
        )
    if partial_month is not None:
        rules["month_partial"] = ("month", first & in_range & (month == pl.lit(partial_month)))
    if check_sales:
        rules.update(_count_rules("sales", cap=config.sales_cap, nullable=False))
    if "customer_count" in has:
        rules.update(_count_rules("customer_count", cap=config.customer_cap, nullable=False))
    if "promo" in has:
        text, num = pl.col("_clean_promo"), pl.col("_num_promo")
        rules["promo_null"] = ("promo", text.is_null())
        not_finite = text.is_not_null() & num.is_not_null() & ~num.is_finite()
        rules["promo_not_finite"] = ("promo", not_finite)
        rules["promo_invalid"] = (
            "promo",
            text.is_not_null() & ~not_finite & ~num.is_in([0.0, 1.0]).fill_null(False),
        )
    if "on_hand" in has:
        rules.update(_count_rules("on_hand", cap=None, nullable=True))
    plan_rules: list[tuple[str, str, pl.Expr]] = []
    for col in plan_columns:
        text, num = pl.col(f"_clean_{col}"), pl.col(f"_num_{col}")
        plan_rules += [
            ("plan_null", col, text.is_null()),
            ("plan_not_number", col, text.is_not_null() & num.is_null()),
            ("plan_not_finite", col, num.is_not_null() & ~num.is_finite()),
            ("plan_negative", col, num.is_not_null() & num.is_finite() & (num < 0)),
        ]

    # duplicates among rows with a usable key; the window functions run only on the
    # (usually few) rows whose key occurs more than once
    key_ok = sku.is_not_null() & first & in_range
    value_cols = [f"_clean_{c}" for c in raw_columns if c not in (ROW_COLUMN, "sku", "month")]
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

    # keyed by (rule, column): the plan rules apply to each plan column
    keyed_rules = {(name, column): (name, flag) for name, (column, flag) in rules.items()}
    keyed_rules |= {(name, col): (name, flag) for name, col, flag in plan_rules}
    flagged = keyed.with_columns(
        flag.fill_null(False).alias(_rule_flag(name, col))
        for (name, col), (_, flag) in keyed_rules.items()
    ).with_columns(
        pl.any_horizontal([pl.col(_rule_flag(n, c)) for n, c in keyed_rules]).alias("_bad")
    )
    return flagged, {(n, c): (c, f) for (n, c), (_, f) in keyed_rules.items()}


def _rule_flag(rule: str, column: str) -> str:
    return f"_rule_{rule}@{column}"


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
    """null / not_finite / not_integer / negative / absurd flags of a count column, exclusive
    in that order (``inf``, ``-inf``, ``nan`` are not_finite, never a number)."""
    text, num = pl.col(f"_clean_{column}"), pl.col(f"_num_{column}")
    present = text.is_not_null()
    not_finite = present & num.is_not_null() & ~num.is_finite()
    whole = num.is_not_null() & num.is_finite() & (num == num.floor())
    rules: dict[str, tuple[str, pl.Expr]] = {}
    if not nullable:
        rules[f"{column}_null"] = (column, ~present)
    rules[f"{column}_not_finite"] = (column, not_finite)
    rules[f"{column}_not_integer"] = (column, present & ~not_finite & ~whole)
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


def _quarantine_lines(
    flagged: pl.DataFrame, rules: dict[tuple[str, str], tuple[str, pl.Expr]]
) -> pl.DataFrame:
    order = {name: i for i, name in enumerate(QUARANTINE_RULES)}
    parts = []
    for (name, column), _ in rules.items():
        hit = flagged.filter(pl.col(_rule_flag(name, column)))
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


def _typed_rows(
    accepted: pl.DataFrame, has: set[str], plan_columns: tuple[str, ...] = ()
) -> pl.DataFrame:
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
        *(pl.col(f"_num_{c}").cast(pl.Float64).alias(c) for c in plan_columns),
    ]
    return accepted.select(cols).sort("sku", "month")


def _fill_gaps(observed: pl.DataFrame, *, gap_policy: str, end: date | None) -> pl.DataFrame:
    """Regular monthly grid per SKU from its first month to ``end`` (default: its last
    month); missing months are gaps."""
    columns = [*PANEL_COLUMNS, *(c for c in observed.columns if c not in PANEL_COLUMNS)]
    if observed.height == 0:
        return observed.select(columns)
    last = pl.lit(end, pl.Date) if end is not None else pl.col("month").max()
    grid = (
        observed.group_by("sku")
        .agg(pl.date_ranges(pl.col("month").min(), last, "1mo").alias("month"))
        .explode("month")
    )
    if grid.height == observed.height:
        return observed.select(columns)
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
    return panel.select(columns)


def _check_contract(panel: pl.DataFrame, *, source: str) -> pl.DataFrame:
    extra = [c for c in panel.columns if c not in PANEL_COLUMNS]  # plan columns, checked above
    try:
        checked = SalesPanel.validate(panel.select(PANEL_COLUMNS), lazy=True)
        return checked.hstack(panel.select(extra)) if extra else checked
    except pa_errors.SchemaErrors as exc:
        raise DataContractError(
            f"{source}: the validated panel breaks the data contract (a poolcast bug, please "
            f"report it): {exc.failure_cases.head(10)}",
            rows=exc.failure_cases,
        ) from exc
