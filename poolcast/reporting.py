"""What one retrain reports: the run summary and the rows of the ops-dashboard tables.

Pure functions of plain values and polars frames; the Prefect tasks in ``tasks/report.py``
turn their output into table and markdown artifacts, and the flow prints
:func:`summary_text` at the end of a run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

__all__ = [
    "CandidateFailure",
    "CandidateRun",
    "RetrainSummary",
    "candidate_figures",
    "candidate_metrics",
    "candidate_params",
    "candidate_tables",
    "data_quality_rows",
    "describe_candidate",
    "failures_of",
    "leaderboard_rows",
    "make_summary",
    "quality_counts",
    "quality_table",
    "split_outcomes",
    "summary_markdown",
    "summary_text",
]


@dataclass(frozen=True)
class RetrainSummary:
    """The outcome of one monthly retrain, returned by the flow and printed at its end.

    Fields
    ------
    as_of : date or None
        Last month the run saw.
    rows_in, rows_accepted, rows_quarantined : int
        Input rows, rows that went on, rows quarantined; ``rows_in = rows_accepted + rows_quarantined``.
    n_skus : int
        SKUs in the validated panel.
    leaderboard : pl.DataFrame
        One row per candidate (failed ones included), best first.
    failures : dict of str to str
        Candidate name to "ErrorType: message" for candidates that raised.
    champion : str or None
        The selected candidate (None when every candidate failed).
    champion_version : str or None
        Registry version of the champion model.
    alias_moved : bool
        Whether the registry alias ``champion`` now points at this run's model.
    alias_reason : str
        Why the alias moved or stayed.
    mlflow_run_id : str
        The MLflow parent run.
    mlflow_run_url : str
        Where to look at it (a UI URL or the tracking URI).
    outputs_db : Path or None
        The DuckDB file the forecasts were published to.
    quarantine_path : Path or None
        The quarantine file (None when no row was quarantined).
    forecast_rows : int
        Rows of the published forecast.
    backtest_coverage : pl.DataFrame or None
        Per backtest origin: SKUs and rows scored, unknown targets, inactive SKUs
        (``poolcast.backtest.backtest_coverage``).
    """

    as_of: date | None
    rows_in: int
    rows_accepted: int
    rows_quarantined: int
    n_skus: int
    leaderboard: pl.DataFrame
    failures: dict[str, str] = field(default_factory=dict)
    champion: str | None = None
    champion_version: str | None = None
    alias_moved: bool = False
    alias_reason: str = ""
    mlflow_run_id: str = ""
    mlflow_run_url: str = ""
    outputs_db: Path | None = None
    quarantine_path: Path | None = None
    forecast_rows: int = 0
    backtest_coverage: pl.DataFrame | None = None

    def __str__(self) -> str:
        return summary_text(self)


def quality_counts(counts: Any, *, by_rule: bool = True) -> dict[str, int]:
    """The numbers of a ``QualityCounts``: rows in / accepted / quarantined, gap months, SKUs,
    months, and (with `by_rule`) quarantine lines per rule as ``rule_<name>``."""
    out = {
        "rows_in": counts.rows_in,
        "rows_accepted": counts.rows_accepted,
        "rows_quarantined": counts.rows_quarantined,
        "gap_months": counts.gaps,
        "skus": counts.skus,
        "months": counts.months,
    }
    if by_rule:
        out |= {f"rule_{k}": v for k, v in counts.by_rule.items()}
    return out


def quality_table(counts: Any) -> pl.DataFrame:
    """One-row table of the counts (no per-rule columns), the month range and the gap policy,
    as published beside the forecasts."""
    row = quality_counts(counts, by_rule=False) | {
        "duplicates_collapsed": counts.duplicates_collapsed,
        "first_month": counts.first_month,
        "last_month": counts.last_month,
        "gap_policy": counts.gap_policy,
    }
    return pl.DataFrame([row], schema_overrides={"first_month": pl.Date, "last_month": pl.Date})


def failures_of(leaderboard: pl.DataFrame) -> dict[str, str]:
    """``{candidate: error}`` of the leaderboard's failed rows."""
    if "status" not in leaderboard.columns:
        return {}
    failed = leaderboard.filter(pl.col("status") == "failed")
    return {name: error or "" for name, error in failed.select("candidate", "error").iter_rows()}


def make_summary(
    counts: Any,
    leaderboard: pl.DataFrame,
    *,
    champion: str,
    registration: Any,
    run: Any,
    published: Any,
    quarantine_path: Path | None,
    backtest_coverage: pl.DataFrame | None = None,
) -> RetrainSummary:
    """Assemble the RetrainSummary from the validation counts, the leaderboard, the registry
    ``Registration``, the MLflow ``RetrainRun`` and the ``PublishResult``."""
    return RetrainSummary(
        as_of=counts.last_month,
        rows_in=counts.rows_in,
        rows_accepted=counts.rows_accepted,
        rows_quarantined=counts.rows_quarantined,
        n_skus=counts.skus,
        leaderboard=leaderboard,
        failures=failures_of(leaderboard),
        champion=champion,
        champion_version=registration.version,
        alias_moved=registration.decision.move,
        alias_reason=registration.decision.reason,
        mlflow_run_id=run.run_id,
        mlflow_run_url=run.url,
        outputs_db=published.path,
        quarantine_path=quarantine_path,
        forecast_rows=published.rows.get("forecasts", 0),
        backtest_coverage=backtest_coverage,
    )


def _clean(value: Any, digits: int) -> Any:
    """JSON-friendly cell: floats rounded, NaN/inf as None, dates as ISO strings."""
    if isinstance(value, float):
        return None if not math.isfinite(value) else round(value, digits)
    if isinstance(value, date):
        return value.isoformat()
    return value


def data_quality_rows(
    counts: Mapping[str, int], reasons: pl.DataFrame | None = None, *, reason_column: str = "rule"
) -> list[dict[str, Any]]:
    """Rows of the data-quality table: the counts, then one row per quarantine reason.

    Parameters
    ----------
    counts : mapping of str to int
        E.g. ``rows_in``, ``rows_accepted``, ``rows_quarantined``, ``gap_months``.
    reasons : pl.DataFrame, optional
        The quarantine table (one line per bad row and rule broken); counted per value of
        `reason_column`, most frequent first.
    reason_column : str
        Column naming the rule a row broke.

    Returns
    -------
    list of dict
        ``{"check": str, "rows": int}``.

    Examples
    --------
    >>> data_quality_rows({"rows_in": 3, "rows_accepted": 2, "rows_quarantined": 1})[0]
    {'check': 'rows_in', 'rows': 3}
    """
    rows = [{"check": name, "rows": int(value)} for name, value in counts.items()]
    if reasons is not None and reasons.height and reason_column in reasons.columns:
        per = (
            reasons.group_by(reason_column)
            .len()
            .sort(["len", reason_column], descending=[True, False])
        )
        rows += [
            {"check": f"quarantined: {reason}", "rows": int(n)} for reason, n in per.iter_rows()
        ]
    return rows


def leaderboard_rows(
    leaderboard: pl.DataFrame, *, columns: Sequence[str] | None = None, digits: int = 4
) -> list[dict[str, Any]]:
    """Rows of the leaderboard table artifact: floats rounded, NaN as None.

    Parameters
    ----------
    leaderboard : pl.DataFrame
        One row per candidate.
    columns : sequence of str, optional
        Columns to keep, in this order (absent ones are skipped); default all.
    digits : int
        Decimal places of float cells.
    """
    if columns is not None:
        leaderboard = leaderboard.select([c for c in columns if c in leaderboard.columns])
    return [
        {k: _clean(v, digits) for k, v in row.items()} for row in leaderboard.iter_rows(named=True)
    ]


def _top(summary: RetrainSummary, n: int) -> list[dict[str, Any]]:
    board = summary.leaderboard
    if "status" in board.columns:
        board = board.filter(pl.col("status") == "ok")
    return leaderboard_rows(board.head(n))


def summary_markdown(summary: RetrainSummary, *, top: int = 5) -> str:
    """Markdown run summary for the ops dashboard (Prefect markdown artifact)."""
    lines = [
        f"# poolcast monthly retrain, as of {summary.as_of or 'latest'}",
        "",
        "## Data",
        "",
        "| rows in | accepted | quarantined | SKUs |",
        "|---:|---:|---:|---:|",
        f"| {summary.rows_in} | {summary.rows_accepted} | {summary.rows_quarantined} | {summary.n_skus} |",
        "",
        "## Champion",
        "",
        f"- candidate: **{summary.champion or 'none (every candidate failed)'}**",
        f"- registry version: {summary.champion_version or '-'}; alias `champion` "
        f"{'moved' if summary.alias_moved else 'stayed'}: {summary.alias_reason or '-'}",
        f"- MLflow run: [{summary.mlflow_run_id}]({summary.mlflow_run_url})",
        f"- forecasts: {summary.forecast_rows} rows in `{summary.outputs_db}`",
        "",
    ]
    rows = _top(summary, top)
    if rows:
        cols = list(rows[0])
        lines += [f"## Leaderboard (top {len(rows)})", "", "| " + " | ".join(cols) + " |"]
        lines.append("|" + "|".join("---" for _ in cols) + "|")
        lines += [
            "| " + " | ".join("" if r[c] is None else str(r[c]) for c in cols) + " |" for r in rows
        ]
        lines.append("")
    if summary.failures:
        lines += ["## Failed candidates", ""]
        lines += [f"- `{name}`: {error}" for name, error in summary.failures.items()]
        lines.append("")
    return "\n".join(lines)


def summary_text(summary: RetrainSummary, *, top: int = 3) -> str:
    """A short plain-text summary printed at the end of a run."""
    best = ", ".join(f"{r.get('name', r.get('candidate', '?'))}" for r in _top(summary, top))
    lines = [
        f"poolcast retrain as of {summary.as_of or 'latest'}",
        f"  rows in {summary.rows_in} = accepted {summary.rows_accepted} + quarantined "
        f"{summary.rows_quarantined}; {summary.n_skus} SKUs",
        f"  leaderboard top: {best or '-'}",
        f"  failed candidates: {', '.join(summary.failures) or 'none'}",
        f"  champion: {summary.champion or 'none'} (version {summary.champion_version or '-'}, "
        f"alias {'moved' if summary.alias_moved else 'stayed'}: {summary.alias_reason or '-'})",
        f"  MLflow run: {summary.mlflow_run_id} ({summary.mlflow_run_url})",
        f"  forecasts: {summary.forecast_rows} rows -> {summary.outputs_db}",
    ]
    if summary.quarantine_path is not None:
        lines.append(f"  quarantine: {summary.quarantine_path}")
    if summary.backtest_coverage is not None and summary.backtest_coverage.height:
        lines.append(
            "  backtest origins (SKUs at origin / scored SKUs, rows / unknown-target "
            "rows / inactive SKUs, rows):"
        )
        for r in summary.backtest_coverage.iter_rows(named=True):
            lines.append(
                f"    {r['origin']}: {r['skus']} / {r['skus_scored']}, {r['rows_scored']} / "
                f"{r['rows_unknown_target']} / {r['skus_inactive']}, {r['rows_inactive']}"
            )
    return "\n".join(lines)


@dataclass(frozen=True)
class CandidateFailure:
    """A candidate that raised during the backtest: recorded, and the month goes on.

    Fields
    ------
    name : str
        Candidate name.
    error_type : str
        The exception's class name.
    message : str
        The exception's message.
    """

    name: str
    error_type: str
    message: str

    @property
    def error(self) -> str:
        """``"ErrorType: message"``, as shown on the leaderboard."""
        return f"{self.error_type}: {self.message}"


@dataclass(frozen=True)
class CandidateRun:
    """A candidate that finished the backtest.

    Fields
    ------
    result : CandidateBacktest
        Its backtest (predictions, metrics).
    report : CandidateReport or None
        ``describe()`` of the candidate fitted at the last origin (see :func:`describe_candidate`).
    ineligible_reason : str or None
        Why it may not become champion (its fits reported ``ineligible_reason_``), or None.
    """

    result: Any
    report: Any = None
    ineligible_reason: str | None = None

    @property
    def name(self) -> str:
        """Candidate name."""
        return self.result.name


def split_outcomes(outcomes: Sequence[Any]) -> tuple[list[Any], dict[str, str]]:
    """Split compete outcomes into backtest results and ``{name: "ErrorType: message"}`` failures."""
    results = [o.result for o in outcomes if isinstance(o, CandidateRun)]
    failures = {o.name: o.error for o in outcomes if isinstance(o, CandidateFailure)}
    return results, failures


def _horizon_slice(table: pl.DataFrame | None, horizon: int) -> pl.DataFrame | None:
    """The rows of one horizon (the first one present when `horizon` is absent), without ``horizon``."""
    if table is None or table.height == 0:
        return None
    if "horizon" not in table.columns:
        return table
    present = table.get_column("horizon").unique().sort()
    h = horizon if horizon in present.to_list() else present[0]
    return table.filter(pl.col("horizon") == h).drop("horizon")


def _as_levels(table: pl.DataFrame | None, needed: Sequence[str]) -> pl.DataFrame | None:
    """Rename ``sku`` to ``level``; None when the plot's columns are not all there."""
    if table is None:
        return None
    if "level" not in table.columns and "sku" in table.columns:
        table = table.rename({"sku": "level"})
    return table if all(c in table.columns for c in needed) else None


def candidate_figures(
    result: Any,
    history: pl.DataFrame,
    report: Any | None = None,
    *,
    horizon: int = 1,
    max_skus: int = 6,
) -> dict[str, Any]:
    """The plots a data scientist looks at first, for one candidate's child run.

    - ``fan_chart``: history up to the last backtest origin, the forecast fan from that
      origin and the realised values, for the `max_skus` SKUs with the largest forecast;
    - ``calibration``: nominal quantile level against empirical coverage over the backtest;
    - ``shrinkage`` (GLMMs): raw SKU estimates against partial-pooled ones (horizon `horizon`);
    - ``caterpillar`` (GLMMs): random-effect modes with 95% intervals (horizon `horizon`).

    Parameters
    ----------
    result : CandidateBacktest
        The candidate's backtest.
    history : pl.DataFrame
        The validated panel.
    report : CandidateReport, optional
        ``describe()`` of a fitted instance; shrinkage and caterpillar plots need it.
    """
    from poolcast import plots

    predictions = result.predictions
    last = predictions.get_column("origin").max()
    latest = predictions.filter(pl.col("origin") == last)
    figures: dict[str, Any] = {
        "fan_chart": plots.fan_chart(
            history.filter(pl.col("month") <= last),
            latest,
            max_skus=max_skus,
            actuals=latest.select("sku", "month", pl.col("y").alias("sales")),
        ),
        "calibration": plots.calibration_plot(predictions, quantiles=result.quantiles),
    }
    if report is not None:
        shrinkage = _as_levels(
            _horizon_slice(report.shrinkage, horizon), ("level", "n_obs", "raw", "pooled")
        )
        if shrinkage is not None:
            figures["shrinkage"] = plots.shrinkage_plot(shrinkage)
        ranef = _as_levels(
            _horizon_slice(report.random_effects, horizon), ("level", "term", "mode", "cond_sd")
        )
        if ranef is not None:
            figures["caterpillar"] = plots.caterpillar_plot(ranef)
        figures |= bayes_figures(report)
    return figures


def bayes_figures(report: Any) -> dict[str, Any]:
    """Bayesian child-run plots (a report with ``draws``, see ``poolcast.models.bayes``):
    posterior of the category effects, category shrinkage, trace / rank of the variance
    components. Empty for other reports."""
    from poolcast import plots

    draws = getattr(report, "draws", None)
    if draws is None:
        return {}
    figures: dict[str, Any] = {}
    if draws.category_effects is not None:
        figures["category_effects"] = plots.category_effects_plot(
            draws.category_effects[:, :, 0], report.category_levels
        )
    cat_shrink = getattr(report, "category_shrinkage", None)
    if cat_shrink is not None and cat_shrink.height:
        figures["shrinkage_category"] = plots.shrinkage_plot(cat_shrink)
    posterior = getattr(report, "posterior", None)
    if posterior is not None and getattr(report, "sampler", "") != "advi":
        post = posterior["posterior"]
        chains: dict[str, Any] = {}
        for var, labels in (
            ("sku_chol_cov_stds", ("sku_sd_intercept", "sku_sd_promo")),
            ("sku_sd", ("sku_sd_intercept",)),
            ("category_sd", ("category_sd_intercept", "category_sd_promo")),
            ("alpha", ("nb2_alpha",)),
        ):
            if var in post:
                arr = np.asarray(post[var], dtype=float)
                arr = arr.reshape(arr.shape[0], arr.shape[1], -1)
                for j, label in enumerate(labels[: arr.shape[2]]):
                    chains[label] = arr[:, :, j]
        figures["variance_trace_rank"] = plots.trace_rank_plot(chains)
    return figures


def candidate_tables(result: Any, report: Any | None = None) -> dict[str, pl.DataFrame | None]:
    """Tables of a candidate's child run: per-horizon and per-SKU metrics, coefficients,
    random effects, shrinkage and SKU fixed effects (None when the candidate has none)."""
    tables: dict[str, pl.DataFrame | None] = {
        "horizon_metrics": result.horizon_metrics,
        "per_sku_metrics": result.per_sku_metrics,
        "backtest_coverage": getattr(result, "coverage", None),
    }
    if report is not None:
        tables |= {
            "coefficients": report.coefficients,
            "random_effects": report.random_effects,
            "shrinkage": report.shrinkage,
            "sku_effects": report.sku_effects,
        }
    return tables


def candidate_metrics(result: Any) -> dict[str, float]:
    """Overall metrics, ``h<k>_<metric>`` per horizon, and the fit / predict wall times."""
    out = {k: float(v) for k, v in result.metrics.items() if v is not None}
    for row in result.horizon_metrics.iter_rows(named=True):
        h = row["horizon"]
        out |= {f"h{h}_{k}": float(v) for k, v in row.items() if k != "horizon" and v is not None}
    out |= {"fit_seconds": result.fit_seconds, "predict_seconds": result.predict_seconds}
    return out


def candidate_params(report: Any | None) -> dict[str, Any]:
    """Constructor parameters and per-horizon formulas of a described candidate."""
    if report is None:
        return {}
    params = {f"param.{k}": v for k, v in report.params.items()}
    params |= {f"formula.h{h}": f for h, f in report.formulas.items()}
    return params


def describe_candidate(factory: Any, split: Any) -> Any:
    """``describe()`` of a fresh candidate fitted on one backtest split's training rows
    (the last origin's fit, for the child run's coefficient and random-effect tables)."""
    return factory().fit(split.train, history=split.history).describe()


#: Leaderboard columns shown by ``poolcast leaderboard`` and in the README.
LEADERBOARD_COLUMNS: tuple[str, ...] = (
    "candidate",
    "status",
    "scaled_pinball",
    "mase",
    "mae",
    "wape",
    "bias",
    "coverage_80",
    "coverage_95",
    "crps",
    "fit_seconds",
)


def leaderboard_markdown(
    board: pl.DataFrame, *, columns: Sequence[str] = LEADERBOARD_COLUMNS, digits: int = 3
) -> str:
    """A leaderboard as a GitHub markdown table, rows in the board's order.

    Columns the board lacks are skipped; floats are rounded to `digits` decimals and a failed
    candidate's empty metrics print as ``-``.
    """
    shown = [c for c in columns if c in board.columns]
    lines = ["| " + " | ".join(shown) + " |", "|" + "|".join("---" for _ in shown) + "|"]
    for row in board.select(shown).iter_rows(named=True):
        cells = []
        for name in shown:
            value = row[name]
            if value is None or (isinstance(value, float) and math.isnan(value)):
                cells.append("-")
            elif isinstance(value, float):
                cells.append(f"{value:.{digits}f}")
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
