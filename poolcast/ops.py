"""What a planner reads first in a run's summary: inventory totals, the largest changes against
last month, and links to the ops dashboard and the MLflow run.

Pure functions of polars frames and plain values; ``tasks/report.py`` reads the frames from
the published outputs (:mod:`poolcast.dashboard.data`) and adds :func:`ops_markdown` to the
run's Prefect summary artifact.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl

from poolcast.errors import InvalidParameterError

__all__ = [
    "DEFAULT_DASHBOARD_URL",
    "dashboard_url",
    "inventory_totals",
    "largest_changes",
    "ops_markdown",
    "ops_section",
]

#: Where ``poolcast dashboard`` serves by default; ``POOLCAST_DASHBOARD_URL`` overrides it.
DEFAULT_DASHBOARD_URL = "http://127.0.0.1:8050/"

#: Summed columns of an inventory plan, in the order shown (absent ones are skipped).
TOTAL_COLUMNS: tuple[str, ...] = (
    "order_quantity",
    "safety_stock",
    "order_up_to",
    "lead_time_demand_mean",
    "expected_short",
    "on_hand",
)


def dashboard_url() -> str:
    """The ops dashboard's URL: ``$POOLCAST_DASHBOARD_URL`` or :data:`DEFAULT_DASHBOARD_URL`."""
    return os.environ.get("POOLCAST_DASHBOARD_URL") or DEFAULT_DASHBOARD_URL


def inventory_totals(plan: pl.DataFrame) -> dict[str, float | int]:
    """Totals of an inventory plan: SKUs, SKUs with a positive order, and column sums.

    Parameters
    ----------
    plan : pl.DataFrame
        One row per SKU; the columns of :data:`TOTAL_COLUMNS` that it has are summed (nulls
        are skipped).

    Returns
    -------
    dict
        ``skus``, ``skus_to_order`` (``order_quantity > 0``, when the column exists) and
        ``<column>`` sums, in :data:`TOTAL_COLUMNS` order.
    """
    out: dict[str, float | int] = {"skus": plan.height}
    if "order_quantity" in plan.columns:
        out["skus_to_order"] = int(plan.filter(pl.col("order_quantity") > 0).height)
    for col in TOTAL_COLUMNS:
        if col in plan.columns:
            out[col] = float(plan.get_column(col).cast(pl.Float64).sum())
    return out


def largest_changes(
    current: pl.DataFrame,
    previous: pl.DataFrame,
    value: str,
    *,
    key: str = "sku",
    n: int = 10,
) -> pl.DataFrame:
    """The `n` keys whose `value` changed most (in absolute terms) between two publications.

    A key present in only one frame counts as 0 in the other (a new SKU's change is its whole
    value; a dropped SKU's is minus its previous value) and is marked in ``status``.

    Parameters
    ----------
    current, previous : pl.DataFrame
        One row per `key` with the numeric column `value` (this month's and last month's).
    value : str
        The compared column, e.g. ``forecast_total`` or ``order_quantity``.
    key : str
        Row key.
    n : int
        Rows returned (>= 1).

    Returns
    -------
    pl.DataFrame
        ``<key>, previous, current, change (= current - previous), status`` (``changed``,
        ``new`` or ``dropped``), largest ``|change|`` first, ties by key; rows with no change
        are left out.
    """
    if n < 1:
        raise InvalidParameterError(f"largest_changes: n={n}; pass n >= 1")
    for name, frame in (("current", current), ("previous", previous)):
        missing = [c for c in (key, value) if c not in frame.columns]
        if missing:
            raise InvalidParameterError(
                f"largest_changes: {name} frame lacks column(s) {missing}; it has {frame.columns}"
            )
    now = current.select(key, pl.col(value).cast(pl.Float64).alias("current"))
    before = previous.select(key, pl.col(value).cast(pl.Float64).alias("previous"))
    joined = now.join(before, on=key, how="full", coalesce=True)
    status = (
        pl.when(pl.col("previous").is_null())
        .then(pl.lit("new"))
        .when(pl.col("current").is_null())
        .then(pl.lit("dropped"))
        .otherwise(pl.lit("changed"))
    )
    out = joined.with_columns(
        (pl.col("current").fill_null(0.0) - pl.col("previous").fill_null(0.0)).alias("change"),
        status.alias("status"),
    )
    return (
        out.filter(pl.col("change") != 0)
        .with_columns(pl.col("change").abs().alias("_abs"))
        .sort(["_abs", key], descending=[True, False])
        .head(n)
        .select(key, "previous", "current", "change", "status")
    )


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _table(frame: pl.DataFrame) -> list[str]:
    lines = [
        "| " + " | ".join(frame.columns) + " |",
        "|" + "|".join("---" for _ in frame.columns) + "|",
    ]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in frame.iter_rows()]
    return lines


def ops_markdown(
    *,
    dashboard: str,
    mlflow_run_id: str,
    mlflow_run_url: str,
    totals: Mapping[str, float | int] | None,
    changes: Mapping[str, pl.DataFrame],
    previous_as_of: date | None,
    notes: Sequence[str] = (),
) -> str:
    """The ops section of a run's summary artifact (markdown).

    Parameters
    ----------
    dashboard : str
        Dashboard URL.
    mlflow_run_id, mlflow_run_url : str
        The MLflow parent run and its URL.
    totals : mapping or None
        :func:`inventory_totals` of this run's plan (None: no plan published).
    changes : mapping of str to pl.DataFrame
        Compared value name to :func:`largest_changes` output.
    previous_as_of : date or None
        The as-of compared against (None: first publication).
    notes : sequence of str
        Lines shown as a list under the links (e.g. why a section is empty).
    """
    lines = [
        "## Ops",
        "",
        f"- dashboard: [{dashboard}]({dashboard}) (`poolcast dashboard --work-dir DIR`)",
        f"- MLflow run: [{mlflow_run_id}]({mlflow_run_url})",
        *[f"- {note}" for note in notes],
        "",
    ]
    if totals:
        frame = pl.DataFrame([{k: totals[k] for k in totals}])
        lines += ["### Inventory totals", "", *_table(frame), ""]
    label = previous_as_of.isoformat() if previous_as_of else "-"
    for name, frame in changes.items():
        lines += [f"### Largest changes in {name} vs as-of {label}", ""]
        lines += _table(frame) if frame.height else ["no change"]
        lines.append("")
    return "\n".join(lines)


def ops_section(
    outputs_db: str | Path,
    run_id: str,
    run_url: str,
    *,
    dashboard: str | None = None,
    top: int = 10,
) -> str:
    """:func:`ops_markdown` for a published run, read from its outputs database (read-only).

    Compares the run with the latest run of the previous published as-of: per-SKU forecast
    totals (sum of the mean over the horizons) and, when both months have an inventory plan,
    order quantities.
    """
    from poolcast.dashboard.data import Outputs, Unavailable, month_comparison

    previous, f_now, f_before, p_now, p_before = month_comparison(Outputs(outputs_db), run_id)
    notes: list[str] = []
    totals = None
    if isinstance(p_now, Unavailable):
        notes.append(p_now.message)
    else:
        totals = inventory_totals(p_now)
    changes: dict[str, pl.DataFrame] = {}
    for name, now, before in (
        ("forecast_total", f_now, f_before),
        ("order_quantity", p_now, p_before),
    ):
        if isinstance(now, Unavailable) or isinstance(before, Unavailable):
            reason = before.message if isinstance(before, Unavailable) else now.message  # type: ignore[union-attr]
            notes.append(f"changes in {name}: {reason}")
        elif name in now.columns and name in before.columns:
            changes[name] = largest_changes(now, before, name, n=top)
    return ops_markdown(
        dashboard=dashboard or dashboard_url(),
        mlflow_run_id=run_id,
        mlflow_run_url=run_url,
        totals=totals,
        changes=changes,
        previous_as_of=previous["as_of"] if previous else None,
        notes=notes,
    )
