"""The plan: known-future covariates for the months after the as-of.

A plan source (``poolcast run --plan PLAN``: CSV, Parquet or SQL, read through the same
mapping as the sales with :func:`poolcast.io.load_plan_source`) holds one row per SKU and
month with ``sku``, ``month`` and the plan columns (``promo`` and the mapping's
``[plan_columns]``, e.g. Rossmann's ``open_days``). :func:`validate_plan` checks it like the
sales: every row is accepted or quarantined (``rows_in == rows_accepted +
rows_quarantined``) with the rules of :mod:`poolcast.validation` (``sku_null``,
``month_unparseable``, ``month_not_first``, ``promo_null``, ``promo_invalid``, ``plan_null``,
``plan_not_number``, ``plan_not_finite``, ``plan_negative``, ``duplicate_conflict``,
``exact_duplicate``). Accepted rows at or before the as-of are ignored (counted in
``rows_at_or_before_as_of``: the history's own values are used for those months), as are
rows after the last forecast month (``rows_after_horizon``) and rows of SKUs the history
does not have (``rows_unknown_sku``).

Coverage of the forecast months :math:`T \\in \\{a+1, \\dots, a+H\\}` (``a`` the as-of) is
checked against the SKUs of the history and the plan columns the history has; every gap is
a line of :attr:`PlanResult.missing`:

=========================  ===========================================================
``plan_missing_column``    a plan column of the history that the plan source lacks
``plan_missing_sku``       a SKU of the history with no plan row for any forecast month
``plan_missing_month``     a SKU x forecast month without a plan row (the SKU has others)
=========================  ===========================================================

A candidate that needs a plan column (``required_plan_columns``) that is missing, or any
SKU x month without a plan row, is not eligible this month (:func:`ineligibility_reason`):
its forecasts would otherwise be fed values nobody planned.

:func:`cut_source` cuts a source that has the plan columns for every month (Rossmann's
monthly file) at an as-of into a sales file and a plan file for the next months: how a user
gets the plan for Rossmann's next months (``poolcast plan-template``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl

from poolcast.config import ValidationConfig
from poolcast.errors import DataContractError, InvalidParameterError, SourceError
from poolcast.io import ROW_COLUMN, LoadedSource, source_kind
from poolcast.mapping import Mapping, load_mapping
from poolcast.validation import _flag_rows, _parse, _quarantine_lines, _to_int
from schemas.quarantine import QUARANTINE_RULES, Quarantine

#: Plan months lie ahead of the data: only the plausible lower bound of a month applies.
_LAST_PLAN_MONTH = date(9999, 12, 1)

__all__ = [
    "PLAN_GAP_RULES",
    "PlanCounts",
    "PlanResult",
    "cut_source",
    "ineligibility_reason",
    "plan_months",
    "validate_plan",
]

#: Coverage rules of a plan (lines of :attr:`PlanResult.missing`).
PLAN_GAP_RULES: tuple[str, ...] = (
    "plan_missing_column",
    "plan_missing_sku",
    "plan_missing_month",
)
_MISSING_SCHEMA = {"rule": pl.String, "column": pl.String, "sku": pl.String, "month": pl.Date}


def _month_index(d: date) -> int:
    return d.year * 12 + d.month - 1


def _from_index(i: int) -> date:
    return date(i // 12, i % 12 + 1, 1)


def plan_months(as_of: date, horizons: int) -> list[date]:
    """The forecast months :math:`a+1, \\dots, a+H` after the as-of month ``a``."""
    base = _month_index(as_of)
    return [_from_index(base + h) for h in range(1, horizons + 1)]


@dataclass(frozen=True)
class PlanCounts:
    """Counts of one plan validation; ``rows_in == rows_accepted + rows_quarantined``.

    ``rows_at_or_before_as_of``, ``rows_after_horizon`` and ``rows_unknown_sku`` are parts
    of ``rows_accepted`` that are not used; ``rows_used`` the rest.
    """

    rows_in: int
    rows_accepted: int
    rows_quarantined: int
    rows_used: int
    rows_at_or_before_as_of: int
    rows_after_horizon: int
    rows_unknown_sku: int
    by_rule: dict[str, int] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for logging and MLflow)."""
        return asdict(self)


@dataclass(frozen=True)
class PlanResult:
    """What :func:`validate_plan` returns.

    Fields
    ------
    frame : pl.DataFrame
        ``sku, month`` (Date) and the plan columns the source has (``promo`` Int8, the others
        Float64) for the forecast months and known SKUs only: the ``future`` of
        :func:`poolcast.features.build_forecast_frame`.
    quarantine : pl.DataFrame
        Quarantined plan rows (:class:`schemas.Quarantine`).
    missing : pl.DataFrame
        ``rule, column, sku, month``: the coverage gaps (see :data:`PLAN_GAP_RULES`).
    counts : PlanCounts
    columns : tuple of str
        The plan columns the plan source supplies.
    months : tuple of date
        The forecast months checked.
    source : str
    """

    frame: pl.DataFrame
    quarantine: pl.DataFrame
    missing: pl.DataFrame
    counts: PlanCounts
    columns: tuple[str, ...]
    months: tuple[date, ...]
    source: str = ""


def validate_plan(
    loaded: LoadedSource,
    *,
    as_of: date,
    horizons: int,
    skus: Sequence[str],
    plan_columns: Sequence[str],
    config: ValidationConfig | None = None,
) -> PlanResult:
    """Validate a plan source and check it covers every SKU and forecast month.

    Parameters
    ----------
    loaded : LoadedSource
        From :func:`poolcast.io.load_plan_source`.
    as_of : date
        The run's as-of month (the forecast origin); plan rows at or before it are ignored.
    horizons : int
        H: the plan must cover months as_of + 1 .. as_of + H.
    skus : sequence of str
        The SKUs the run forecasts (the history's).
    plan_columns : sequence of str
        The plan columns of the history (:attr:`poolcast.features.FeatureSpec.plan_columns`);
        each should be in the plan.
    config : ValidationConfig, optional
        As for :func:`poolcast.validation.validate_panel` (the plan rules use no caps).

    Returns
    -------
    PlanResult
    """
    if not isinstance(horizons, int) or horizons < 1:
        raise InvalidParameterError(f"horizons={horizons!r}: must be an integer >= 1")
    raw = loaded.frame
    missing_keys = [c for c in (ROW_COLUMN, "sku", "month") if c not in raw.columns]
    if missing_keys:
        raise InvalidParameterError(
            f"{loaded.source}: the plan frame lacks column(s) {missing_keys}; build it with "
            "poolcast.io.load_plan_source"
        )
    if raw.get_column(ROW_COLUMN).n_unique() != raw.height:
        raise InvalidParameterError(f"{loaded.source}: the plan frame's {ROW_COLUMN} is not unique")
    raw = raw.select(c for c in raw.columns if c not in ("sales", "customer_count", "on_hand"))
    columns = tuple(c for c in loaded.mapping.plan_columns if c in raw.columns)
    has_promo = "promo" in raw.columns
    config = config or ValidationConfig()
    flagged, rules = _flag_rows(
        _parse(raw, columns),
        config=config,
        # plan months lie ahead: only the plausible lower bound applies to them
        month_range=(config.min_month, _LAST_PLAN_MONTH),
        as_of_month=None,
        partial_month=None,
        plan_columns=columns,
        check_sales=False,
    )
    quarantine = Quarantine.validate(_quarantine_lines(flagged, rules))
    accepted = flagged.filter(~pl.col("_bad")).select(
        pl.col("_clean_sku").alias("sku"),
        pl.col("_month").alias("month"),
        *([_to_int("promo").cast(pl.Int8).alias("promo")] if has_promo else []),
        *(pl.col(f"_num_{c}").cast(pl.Float64).alias(c) for c in columns),
    )
    rows_in = raw.height
    rows_quarantined = quarantine.get_column("row").n_unique()
    if rows_in != accepted.height + rows_quarantined:  # pragma: no cover - an invariant
        raise DataContractError(
            f"{loaded.source}: plan rows in {rows_in} != accepted {accepted.height} + "
            f"quarantined {rows_quarantined} (a poolcast bug, please report it)"
        )
    as_of = date(as_of.year, as_of.month, 1)
    months = plan_months(as_of, horizons)
    known = pl.Series("sku", [str(s) for s in skus], pl.String).unique()
    early = pl.col("month") <= as_of
    late = pl.col("month") > months[-1]
    unknown = ~pl.col("sku").is_in(known.implode())
    n_early = accepted.filter(early).height
    n_late = accepted.filter(late).height
    n_unknown = accepted.filter(~early & ~late & unknown).height
    frame = accepted.filter(~early & ~late & ~unknown).sort("sku", "month")

    all_columns = (("promo",) if has_promo else ()) + columns
    missing = _coverage(frame, known, months, plan_columns, all_columns)
    by_rule_frame = quarantine.group_by("rule").len()
    by_rule_map = dict(zip(by_rule_frame["rule"], by_rule_frame["len"], strict=True))
    by_missing = missing.group_by("rule").len()
    missing_map = dict(zip(by_missing["rule"], by_missing["len"], strict=True))
    counts = PlanCounts(
        rows_in=rows_in,
        rows_accepted=accepted.height,
        rows_quarantined=rows_quarantined,
        rows_used=frame.height,
        rows_at_or_before_as_of=n_early,
        rows_after_horizon=n_late,
        rows_unknown_sku=n_unknown,
        by_rule={r: int(by_rule_map[r]) for r in QUARANTINE_RULES if r in by_rule_map},
        missing={r: int(missing_map[r]) for r in PLAN_GAP_RULES if r in missing_map},
    )
    return PlanResult(
        frame=frame,
        quarantine=quarantine,
        missing=missing,
        counts=counts,
        columns=all_columns,
        months=tuple(months),
        source=loaded.source,
    )


def _coverage(
    frame: pl.DataFrame,
    skus: pl.Series,
    months: list[date],
    needed: Sequence[str],
    present: Sequence[str],
) -> pl.DataFrame:
    parts = [
        pl.DataFrame(
            {"rule": ["plan_missing_column"] * len(absent), "column": absent},
            schema={"rule": pl.String, "column": pl.String},
        ).with_columns(pl.lit(None, pl.String).alias("sku"), pl.lit(None, pl.Date).alias("month"))
        for absent in [[c for c in needed if c not in present]]
        if absent
    ]
    grid = pl.DataFrame({"sku": skus}).join(
        pl.DataFrame({"month": months}, schema={"month": pl.Date}), how="cross"
    )
    lacking = grid.join(frame.select("sku", "month"), on=["sku", "month"], how="anti")
    planned = frame.get_column("sku").unique().implode()
    no_sku = lacking.filter(~pl.col("sku").is_in(planned)).get_column("sku").unique().sort()
    parts.append(
        pl.DataFrame({"sku": no_sku}).select(
            pl.lit("plan_missing_sku").alias("rule"),
            pl.lit(None, pl.String).alias("column"),
            "sku",
            pl.lit(None, pl.Date).alias("month"),
        )
    )
    parts.append(
        lacking.filter(pl.col("sku").is_in(planned))
        .sort("sku", "month")
        .select(
            pl.lit("plan_missing_month").alias("rule"),
            pl.lit(None, pl.String).alias("column"),
            "sku",
            "month",
        )
    )
    return pl.concat([p.select(list(_MISSING_SCHEMA)).cast(_MISSING_SCHEMA) for p in parts])


def _span(months: Sequence[date]) -> str:
    first, last = months[0], months[-1]
    text = f"{first:%Y-%m}"
    return text if first == last else f"{text}..{last:%Y-%m}"


def ineligibility_reason(
    required: Sequence[str],
    plan: PlanResult | None,
    *,
    available: Sequence[str],
    as_of: date,
    horizons: int,
) -> str | None:
    """Why a candidate that needs the plan columns ``required`` cannot forecast this month.

    Parameters
    ----------
    required : sequence of str
        The candidate's ``required_plan_columns``.
    plan : PlanResult or None
        The run's validated plan (None: the run has no ``--plan``).
    available : sequence of str
        The plan columns of the history (only those can be needed: a column the data never
        had is not used by any model).
    as_of : date
        The forecast origin.
    horizons : int
        H.

    Returns
    -------
    str or None
        None when eligible, else the reason (for the leaderboard's ``error``).
    """
    needed = sorted(c for c in dict.fromkeys(required) if c in set(available))
    if not needed:
        return None
    months = plan_months(date(as_of.year, as_of.month, 1), horizons)
    head = f"needs plan column(s) {needed} for {_span(months)}"
    if plan is None:
        return f"{head}; run with --plan"
    lacking = [c for c in needed if c not in plan.columns]
    if lacking:
        return f"{head}; the plan {plan.source} lacks column(s) {lacking}"
    rows = plan.missing.filter(pl.col("rule") != "plan_missing_column")
    if rows.height:
        n_sku = rows.filter(pl.col("rule") == "plan_missing_sku").height
        n_month = rows.filter(pl.col("rule") == "plan_missing_month").height
        first = rows.row(0, named=True)
        example = f"sku {first['sku']}" + (
            f" {first['month']:%Y-%m}" if first["month"] is not None else ""
        )
        return (
            f"{head}; the plan {plan.source} has no row for {n_sku} SKU(s) and "
            f"{n_month} further SKU x month(s) (e.g. {example}); complete the plan"
        )
    return None


# --------------------------------------------------------------------------- cutting


def cut_source(
    source: str | Path,
    mapping: str | Path | Mapping,
    *,
    as_of: date,
    months: int,
    sales_out: str | Path,
    plan_out: str | Path,
) -> tuple[int, int]:
    """Cut a file source at ``as_of`` into a sales file and a plan file for the next months.

    The sales file keeps every column of the rows with month <= as_of; the plan file keeps
    the SKU, month, promo and ``[plan_columns]`` source columns of the rows with
    as_of < month <= as_of + ``months`` (no sales, no customers: those are not known in
    advance). Both are written in the source's column names, so the same mapping reads them.
    CSV or Parquet by the output suffix.

    Returns
    -------
    (int, int)
        Rows written to the sales and to the plan file.
    """
    mapping = load_mapping(mapping)
    if not isinstance(months, int) or not 1 <= months <= 12:
        raise InvalidParameterError(f"months={months!r}: must be an integer in 1..12")
    path = Path(source)
    kind = source_kind(source)
    if kind == "sql" or not path.is_file():
        raise SourceError(
            f"{source}: cut_source needs a CSV or Parquet file that exists", source=str(source)
        )
    if kind == "parquet":
        raw = pl.read_parquet(path)
    else:
        raw = pl.read_csv(path, separator=mapping.separator, infer_schema=False)
    month_src = mapping.columns["month"]
    if month_src not in raw.columns:
        raise SourceError(
            f"{source}: month column {month_src!r} of mapping {mapping.name!r} is absent",
            source=str(source),
            column=month_src,
        )
    ym = pl.col(month_src).cast(pl.String).str.slice(0, 7)
    first_plan = plan_months(as_of, 1)[0]
    last_plan = plan_months(as_of, months)[-1]
    sales = raw.filter(ym <= f"{as_of:%Y-%m}")
    keep = [mapping.columns["sku"], month_src]
    promo_src = mapping.columns.get("promo") or mapping.optional_columns.get("promo")
    keep += [c for c in (promo_src, *mapping.plan_columns.values()) if c and c in raw.columns]
    plan = raw.filter((ym >= f"{first_plan:%Y-%m}") & (ym <= f"{last_plan:%Y-%m}")).select(
        list(dict.fromkeys(keep))
    )
    for frame, out in ((sales, Path(sales_out)), (plan, Path(plan_out))):
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() in (".parquet", ".pq"):
            frame.write_parquet(out)
        else:
            frame.write_csv(out, separator=mapping.separator)
    return sales.height, plan.height
