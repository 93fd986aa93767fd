"""Held-out check of a published run: cut a data set at month C, run ``poolcast run`` on the
cut, score the **published** forecasts on the three months after C against Naive, seasonal
naive, AutoETS, Croston and TSB fitted by this script on the same cut.

Steps
-----
1. Write the cut file: the source rows with month <= C (a temp dir under ``--work-dir``).
   For Rossmann also a plan file for C+1..C+3 (Store, Month, Days, OpenDays, PromoDays,
   StateHolidayDays, SchoolHolidayDays, from the monthly file's calendar columns; all known in
   advance); it is passed as ``--plan`` only when ``poolcast run --help`` lists that option.
2. Run ``poolcast run --source CUT --mapping M --as-of C --work-dir W`` in a subprocess
   (nothing after C reaches it).
3. Read the published forecasts of the latest run from ``W/outputs.duckdb``: ``forecasts``
   (``mean``) and ``forecast_quantiles`` (long: ``level``, ``value``); only the columns
   ``sku, month, horizon`` are relied on as keys.
4. Fit Naive, seasonal naive, AutoETS, Croston and TSB (``poolcast.models``) on the validated cut panel,
   completed to C for every SKU under ``gap_policy = "zero"`` (trailing months = 0; under
   "missing" they stay unknown), and forecast C+1..C+3 for every SKU.
5. Truth: the full file, validated with the same mapping. Every published (sku, month) is
   scored: a month absent from the full file counts as 0 under the mapping's gap policy
   "zero" and is unknown (left out, counted) under "missing".
6. Metrics per model, on the same rows (the published ones): WAPE, MASE (scale: the SKU's
   in-sample seasonal-naive MAE up to C, floored at 1: ``poolcast.metrics.seasonal_naive_scale``
   on the cut panel), scaled pinball at 0.5 / 0.9 / 0.95 (each and their mean), 80% and 95%
   central-interval coverage (NaN when the published levels lack 0.1/0.9 or 0.025/0.975),
   number of SKUs and rows. Prints a markdown table and writes ``benchmarks/heldout_<data>.json``.

Nothing after C is used to choose or fit anything; the months after C are read only in step 5.

``--skus N`` keeps only the first N SKUs of the source file (in file order; for Rossmann the
file is sorted by store, so stores 1..N): the subset is written under ``--work-dir``/input
(never into the repository) and used as the source of every step, cut, plan and truth alike.

Usage::

    .venv/bin/python benchmarks/heldout.py --data online_retail --cutoff 2011-08 \\
        --work-dir /tmp/heldout-or
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl

from poolcast.config import FeatureConfig, ValidationConfig, parse_month
from poolcast.features import build_origin_frames, make_feature_spec
from poolcast.io import load_source
from poolcast.mapping import load_mapping
from poolcast.metrics import interval_levels, pinball_loss, seasonal_naive_scale, wape
from poolcast.models import make_candidate
from poolcast.validation import resolve_gap_policy, validate_panel

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SOURCES: dict[str, Path] = {
    "online_retail": ROOT / "data" / "example" / "online_retail_sku_monthly.csv.gz",
    "rossmann": SHARED / "rossmann-store-sales" / "rossmann_store_monthly.csv",
    "carparts": SHARED / "carparts" / "carparts_monthly_long.csv.gz",
}
PLAN_COLUMNS = ("Days", "OpenDays", "PromoDays", "StateHolidayDays", "SchoolHolidayDays")
SERVICE = (0.5, 0.9, 0.95)
HORIZONS = 3
BASELINES = ("naive", "seasonal_naive", "auto_ets", "croston", "tsb")


def _month_text(d: date) -> str:
    return f"{d.year:04d}-{d.month:02d}"


def _add_months(d: date, k: int) -> date:
    i = d.year * 12 + d.month - 1 + k
    return date(i // 12, i % 12 + 1, 1)


def _read_raw(path: Path) -> pl.DataFrame:
    return pl.read_csv(path, infer_schema=False)


def write_cut(data: str, source: Path, cutoff: date, out_dir: Path) -> tuple[Path, Path | None]:
    """The source rows with month <= cutoff (and Rossmann's plan for the next 3 months)."""
    mapping = load_mapping(data)
    month_col = mapping.columns["month"]
    raw = _read_raw(source)
    month = pl.col(month_col).str.slice(0, 7)
    out_dir.mkdir(parents=True, exist_ok=True)
    cut_path = out_dir / f"{data}_cut_{_month_text(cutoff)}.csv"
    raw.filter(month <= _month_text(cutoff)).write_csv(cut_path)
    plan_path = None
    if data == "rossmann":
        months = [_month_text(_add_months(cutoff, k)) for k in range(1, HORIZONS + 1)]
        sku_col = mapping.columns["sku"]
        plan = raw.filter(month.is_in(months)).select(sku_col, month_col, *PLAN_COLUMNS)
        plan_path = out_dir / f"{data}_plan_{months[0]}_{months[-1]}.csv"
        plan.write_csv(plan_path)
    return cut_path, plan_path


def write_subset(data: str, source: Path, n_skus: int, out_dir: Path) -> Path:
    """The source rows of its first ``n_skus`` SKUs (file order), as a CSV under out_dir."""
    sku_col = load_mapping(data).columns["sku"]
    raw = _read_raw(source)
    first = raw.get_column(sku_col).unique(maintain_order=True).head(n_skus)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{data}_first_{n_skus}_skus.csv"
    raw.filter(pl.col(sku_col).is_in(first.implode())).write_csv(path)
    return path


def _poolcast_cmd() -> list[str]:
    return [sys.executable, "-m", "poolcast.cli"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("MPLBACKEND", "Agg")
    return env


def run_supports_plan() -> bool:
    """True when ``poolcast run --help`` lists ``--plan``."""
    out = subprocess.run(
        [*_poolcast_cmd(), "run", "--help"],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=ROOT,
        check=False,
    )
    return "--plan" in (out.stdout + out.stderr)


def run_poolcast(
    cut: Path, data: str, cutoff: date, work_dir: Path, plan: Path | None, config: Path | None
) -> float:
    cmd = [
        *_poolcast_cmd(),
        "run",
        "--source",
        str(cut),
        "--mapping",
        data,
        "--as-of",
        _month_text(cutoff),
        "--work-dir",
        str(work_dir),
    ]
    if plan is not None:
        cmd += ["--plan", str(plan)]
    if config is not None:
        cmd += ["--config", str(config)]
    print("running:", " ".join(cmd), flush=True)
    start = time.perf_counter()
    log = work_dir / "heldout_run.log"
    work_dir.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_env(), cwd=ROOT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log.read_text().splitlines()[-15:]
        raise SystemExit(
            f"poolcast run failed (exit {proc.returncode}); see {log}:\n" + "\n".join(tail)
        )
    return seconds


def read_published(db: Path) -> tuple[dict[str, Any], pl.DataFrame]:
    """Latest run and its forecasts: ``sku, month, horizon, mean, q_<level>...``."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        runs = con.sql("SELECT * FROM runs ORDER BY published_at DESC").pl()
        if runs.is_empty():
            raise SystemExit(f"{db}: no published run")
        run = runs.row(0, named=True)
        points = con.sql("SELECT * FROM forecasts WHERE run_id = ?", params=[run["run_id"]]).pl()
        quants = con.sql(
            "SELECT * FROM forecast_quantiles WHERE run_id = ?", params=[run["run_id"]]
        ).pl()
    finally:
        con.close()
    keys = ["sku", "month"]
    points = points.select(
        pl.col("sku").cast(pl.String),
        pl.col("month").cast(pl.Date),
        pl.col("horizon").cast(pl.Int32),
        pl.col("mean").cast(pl.Float64),
    )
    if quants.height:
        wide = quants.select(
            pl.col("sku").cast(pl.String),
            pl.col("month").cast(pl.Date),
            pl.format("q_{}", pl.col("level").round(6).cast(pl.String)).alias("level"),
            pl.col("value").cast(pl.Float64),
        ).pivot(on="level", index=keys, values="value", aggregate_function="first")
        points = points.join(wide, on=keys, how="left")
    return run, points


LEADERBOARD_COLUMNS = (
    "candidate",
    "status",
    "scaled_pinball",
    "mase",
    "wape",
    "coverage_80",
    "coverage_95",
    "raw_coverage_80",
    "raw_coverage_95",
    "crps",
    "n",
    "fit_seconds",
    "error",
)
DIAGNOSTICS = ("rhat_max", "ess_bulk_min", "ess_tail_min", "divergences", "bfmi_min")


def read_leaderboard(db: Path) -> list[dict[str, Any]]:
    """The latest run's backtest leaderboard (``poolcast leaderboard``'s rows)."""
    from poolcast.publish import read_latest_leaderboard

    _, board = read_latest_leaderboard(db)
    return board.select(c for c in LEADERBOARD_COLUMNS if c in board.columns).to_dicts()


def read_diagnostics(mlflow_db: Path, run_id: str | None = None) -> dict[str, dict[str, Any]]:
    """MCMC diagnostics and sampler tags of the candidate child runs that logged them (the
    Bayesian candidate: its last backtest origin's fit), latest child run per candidate."""
    import sqlite3

    if not mlflow_db.exists():
        return {}
    con = sqlite3.connect(f"file:{mlflow_db}?mode=ro", uri=True)
    try:
        keys = ",".join("?" * len(DIAGNOSTICS))
        rows = con.execute(
            "SELECT r.run_uuid, r.name, r.start_time, m.key, m.value FROM latest_metrics m "
            f"JOIN runs r ON r.run_uuid = m.run_uuid WHERE m.key IN ({keys}) "
            "ORDER BY r.start_time",
            DIAGNOSTICS,
        ).fetchall()
        out: dict[str, dict[str, Any]] = {}
        for run_uuid, name, _, key, value in rows:
            entry = out.setdefault(name, {})
            if entry.get("mlflow_run_id") != run_uuid:
                entry.clear()
                entry["mlflow_run_id"] = run_uuid
            entry[key] = value
        for entry in out.values():
            tags = con.execute(
                "SELECT key, value FROM tags WHERE run_uuid = ? AND key LIKE 'poolcast.%'",
                (entry["mlflow_run_id"],),
            ).fetchall()
            entry |= dict(tags)
            params = con.execute(
                "SELECT key, value FROM params WHERE run_uuid = ? AND key IN "
                "('method', 'parameterization', 'chains', 'tune', 'draws')",
                (entry["mlflow_run_id"],),
            ).fetchall()
            entry |= {f"param.{k}": v for k, v in params}
    finally:
        con.close()
    return out


def _qcol(level: float) -> str:
    return f"q_{round(float(level), 6)}"


def baseline_forecasts(
    panel: pl.DataFrame, cutoff: date, levels: list[float]
) -> dict[str, pl.DataFrame]:
    """The BASELINES fitted on the panel up to C: forecasts for C+1..C+3."""
    spec = make_feature_spec(panel, FeatureConfig(horizons=HORIZONS))
    train, rows = build_origin_frames(panel, spec, origin=cutoff)
    out = {}
    for name in BASELINES:
        t0 = time.perf_counter()
        est = make_candidate(name).fit(train, history=panel)
        fc = est.predict_distribution(
            rows, quantiles=levels, n_samples=1000, rng=np.random.default_rng(20261201)
        )
        frame = fc.to_frame().select(
            pl.col("sku").cast(pl.String),
            pl.col("month").cast(pl.Date),
            "mean",
            *(pl.col(f"q_{q:g}").alias(_qcol(q)) for q in levels),
        )
        out[name] = frame
        print(
            f"baseline {name}: {frame.height:,} rows in {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
    return out


def complete_to(panel: pl.DataFrame, cutoff: date, gap_policy: str) -> pl.DataFrame:
    """Under "zero", every SKU's months after its last row up to C are added with sales 0."""
    if gap_policy != "zero":
        return panel
    last = panel.group_by("sku").agg(pl.col("month").max().alias("_last"))
    stale = last.filter(pl.col("_last") < cutoff)
    if stale.height == 0:
        return panel
    extra = (
        stale.with_columns(
            pl.date_ranges(pl.col("_last"), pl.lit(cutoff), interval="1mo").alias("month")
        )
        .explode("month")
        .filter(pl.col("month") > pl.col("_last"))
        .drop("_last")
    )
    fill = {c: None for c in panel.columns if c not in ("sku", "month")}
    extra = extra.with_columns(
        *(pl.lit(v).cast(panel.schema[c]).alias(c) for c, v in fill.items())
    ).with_columns(pl.lit(0).cast(panel.schema["sales"]).alias("sales"))
    # carry the SKU's category forward; customers and promo stay unknown
    if "category" in panel.columns:
        cat = panel.group_by("sku").agg(pl.col("category").drop_nulls().last().alias("_cat"))
        extra = (
            extra.join(cat, on="sku", how="left")
            .with_columns(pl.col("_cat").cast(panel.schema["category"]).alias("category"))
            .drop("_cat")
        )
    if "is_gap" in panel.columns:
        extra = extra.with_columns(pl.lit(True).alias("is_gap"))
    return pl.concat([panel, extra.select(panel.columns)]).sort("sku", "month")


def score(frame: pl.DataFrame, levels: set[float]) -> dict[str, Any]:
    """Metrics of one model on the scored rows (``y``, ``mean``, ``q_*``, ``mase_scale``)."""
    y = frame.get_column("y").to_numpy().astype(float)
    mean = frame.get_column("mean").to_numpy().astype(float)
    s = frame.get_column("mase_scale").to_numpy().astype(float)
    out: dict[str, Any] = {
        "skus": frame.get_column("sku").n_unique(),
        "rows": frame.height,
        "wape": wape(y, mean),
        "mase": float(np.mean(np.abs(y - mean) / s)) if y.size else float("nan"),
    }
    per_level = []
    for q in SERVICE:
        col = _qcol(q)
        if q in levels and col in frame.columns:
            loss = pinball_loss(y, frame.get_column(col).to_numpy().astype(float), q) / s
            out[f"scaled_pinball_{q:g}"] = float(loss.mean())
            per_level.append(loss)
        else:
            out[f"scaled_pinball_{q:g}"] = float("nan")
    out["scaled_pinball"] = (
        float(np.mean(np.stack(per_level).mean(axis=0)))
        if len(per_level) == len(SERVICE)
        else float("nan")
    )
    for nominal in (0.8, 0.95):
        lo, hi = interval_levels(nominal)
        key = f"coverage_{round(nominal * 100)}"
        if lo in levels and hi in levels:
            lower = frame.get_column(_qcol(lo)).to_numpy()
            upper = frame.get_column(_qcol(hi)).to_numpy()
            out[key] = float(np.mean((lower <= y) & (y <= upper)))
        else:
            out[key] = float("nan")
    return out


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", choices=sorted(SOURCES), required=True)
    parser.add_argument("--cutoff", required=True, help="Cut-off month C (YYYY-MM).")
    parser.add_argument("--source", type=Path, default=None, help="Override the data file.")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--config", type=Path, default=None, help="Passed to poolcast run.")
    parser.add_argument(
        "--skus", type=int, default=None, help="Keep only the first N SKUs of the source file."
    )
    parser.add_argument(
        "--skip-run", action="store_true", help="Score an existing --work-dir without running."
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    cutoff = parse_month(args.cutoff, what="--cutoff")
    source = args.source or SOURCES[args.data]
    work = args.work_dir or Path(f"/tmp/heldout-{args.data}-{_month_text(cutoff)}")
    mapping = load_mapping(args.data)
    gap_policy = resolve_gap_policy(ValidationConfig(), mapping)
    targets = [_add_months(cutoff, k) for k in range(1, HORIZONS + 1)]

    if args.skus is not None:
        source = write_subset(args.data, source, args.skus, work / "input")
    cut, plan = write_cut(args.data, source, cutoff, work / "input")
    plan_passed = plan is not None and run_supports_plan()
    run_seconds = None
    if not args.skip_run:
        run_seconds = run_poolcast(
            cut, args.data, cutoff, work, plan if plan_passed else None, args.config
        )
    run, published = read_published(work / "outputs.duckdb")
    board = read_leaderboard(work / "outputs.duckdb")
    diagnostics = read_diagnostics(work / "mlflow.db")
    published = published.filter(pl.col("month").is_in(targets))
    levels = sorted(
        {round(float(c[2:]), 6) for c in published.columns if c.startswith("q_")}
        | {0.025, 0.1, 0.5, 0.9, 0.95, 0.975}
    )
    pub_levels = {round(float(c[2:]), 6) for c in published.columns if c.startswith("q_")}

    # the cut panel (what the run saw) and the truth (the full file), same mapping
    cut_panel = validate_panel(
        load_source(cut, args.data), config=ValidationConfig(), as_of=cutoff
    ).panel
    cut_panel = complete_to(cut_panel, cutoff, gap_policy)
    full = validate_panel(load_source(source, args.data), config=ValidationConfig()).panel
    truth = full.filter(pl.col("month").is_in(targets) & pl.col("sales").is_not_null()).select(
        pl.col("sku").cast(pl.String), "month", pl.col("sales").cast(pl.Float64).alias("y")
    )
    scale = seasonal_naive_scale(cut_panel).select("sku", "mase_scale")

    rows = published.select("sku", "month").join(truth, on=["sku", "month"], how="left")
    n_unknown = 0
    if gap_policy == "zero":
        rows = rows.with_columns(pl.col("y").fill_null(0.0))
    else:
        n_unknown = rows.filter(pl.col("y").is_null()).height
        rows = rows.filter(pl.col("y").is_not_null())
    rows = rows.join(scale, on="sku", how="left").with_columns(pl.col("mase_scale").fill_null(1.0))

    results: dict[str, dict[str, Any]] = {}
    champion = str(run.get("champion"))
    results[f"published ({champion})"] = score(
        rows.join(published, on=["sku", "month"], how="left"), pub_levels
    )
    missing_baseline: dict[str, int] = {}
    for name, fc in baseline_forecasts(cut_panel, cutoff, levels).items():
        joined = rows.join(fc, on=["sku", "month"], how="left")
        missing_baseline[name] = joined.filter(pl.col("mean").is_null()).height
        results[name] = score(joined.filter(pl.col("mean").is_not_null()), set(levels))

    header = (
        "| model | SKUs | rows | WAPE | MASE | sp 0.5 | sp 0.9 | sp 0.95 | scaled pinball "
        "| cov 80 | cov 95 |"
    )
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        lines.append(
            f"| {name} | {_fmt(r['skus'])} | {_fmt(r['rows'])} | {_fmt(r['wape'], True)} "
            f"| {_fmt(r['mase'])} | {_fmt(r['scaled_pinball_0.5'])} | {_fmt(r['scaled_pinball_0.9'])} "
            f"| {_fmt(r['scaled_pinball_0.95'])} | {_fmt(r['scaled_pinball'])} "
            f"| {_fmt(r['coverage_80'], True)} | {_fmt(r['coverage_95'], True)} |"
        )
    published_skus = published.get_column("sku").n_unique()
    print(
        f"\n{args.data}: cut-off {_month_text(cutoff)}, scored {', '.join(map(_month_text, targets))}; "
        f"gap policy {gap_policy}; run {run['run_id']} champion {champion}; "
        f"published {published_skus:,} SKUs / {published.height:,} rows; "
        f"unknown truth rows left out: {n_unknown:,}; plan passed: {plan_passed}\n"
    )
    print("\n".join(lines))
    print("\nbacktest leaderboard:")
    for r in board:
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
    if diagnostics:
        print("MCMC diagnostics (last origin's fit):", json.dumps(diagnostics, indent=1))
    record = {
        "data": args.data,
        "source": str(source),
        "skus_subset": args.skus,
        "config": str(args.config) if args.config else None,
        "cutoff": _month_text(cutoff),
        "scored_months": [_month_text(t) for t in targets],
        "gap_policy": gap_policy,
        "run_id": run["run_id"],
        "champion": champion,
        "published_skus": published_skus,
        "published_rows": published.height,
        "published_levels": sorted(pub_levels),
        "unknown_truth_rows": n_unknown,
        "baseline_rows_missing": missing_baseline,
        "plan_file": str(plan) if plan else None,
        "plan_passed": plan_passed,
        "run_seconds": run_seconds,
        "leaderboard": board,
        "mcmc_diagnostics": diagnostics,
        "results": results,
        "table": "\n".join(lines),
    }
    out = args.out or ROOT / "benchmarks" / f"heldout_{args.data}.json"
    out.write_text(json.dumps(record, indent=2, default=str))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
