"""Backtest coverage by volatility quintile: does one NB2 size fit calm and volatile SKUs?

Reads a ``poolcast run`` work dir (e.g. the ``--work-dir`` of ``benchmarks/heldout.py``): the
latest leaderboard (``outputs.duckdb``, ``latest_leaderboard``) and each candidate's per-SKU
backtest metrics (MLflow child run named after the candidate,
``mlartifacts/<run_id>/artifacts/tables/per_sku_metrics.json``). The SKUs are split into
quintiles of the per-SKU backtest WAPE of ``--split-by`` (one split for every candidate, so
the rows compare like with like); per quintile it prints the row-weighted WAPE and 80% / 95%
coverage of each candidate. Backtest only (data up to the run's as-of month).

Usage::

    .venv/bin/python benchmarks/dispersion_quintiles.py --work-dir /tmp/disp_ross \\
        --split-by glmm_nb2_ri --candidates glmm_nb2_ri glmm_nb2_ri_disp seasonal_naive
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

LEADERBOARD_COLUMNS = (
    "candidate",
    "status",
    "scaled_pinball",
    "wape",
    "mase",
    "coverage_80",
    "coverage_95",
    "raw_coverage_80",
    "raw_coverage_95",
    "fit_seconds",
)


def leaderboard(work_dir: Path) -> pl.DataFrame:
    """The latest backtest leaderboard of the work dir."""
    con = duckdb.connect(str(work_dir / "outputs.duckdb"), read_only=True)
    try:
        cols = ", ".join(LEADERBOARD_COLUMNS)
        return con.sql(f"select {cols} from latest_leaderboard order by scaled_pinball").pl()
    finally:
        con.close()


def per_sku_metrics(work_dir: Path) -> dict[str, pl.DataFrame]:
    """Candidate name -> its per-SKU backtest metrics (the newest run of that name)."""
    con = sqlite3.connect(work_dir / "mlflow.db")
    try:
        runs = con.execute("select run_uuid, name from runs order by start_time").fetchall()
    finally:
        con.close()
    out: dict[str, pl.DataFrame] = {}
    for run_id, name in runs:
        path = work_dir / "mlartifacts" / run_id / "artifacts" / "tables" / "per_sku_metrics.json"
        if path.exists():
            table = json.loads(path.read_text())
            out[name] = pl.DataFrame(table["data"], schema=table["columns"], orient="row")
    return out


def by_quintile(
    metrics: dict[str, pl.DataFrame], split_by: str, candidates: list[str]
) -> pl.DataFrame:
    """Row-weighted WAPE and coverage per quintile of ``split_by``'s per-SKU WAPE."""
    base = metrics[split_by].select("sku", "wape").drop_nulls()
    edges = np.quantile(base.get_column("wape").to_numpy(), [0.2, 0.4, 0.6, 0.8])
    q = np.searchsorted(edges, base.get_column("wape").to_numpy(), side="right")
    split = base.select("sku").with_columns(pl.Series("quintile", [f"q{k}" for k in q]))
    rows = []
    for name in candidates:
        if name not in metrics:
            continue
        m = metrics[name].join(split, on="sku", how="inner")
        agg = (
            m.group_by("quintile")
            .agg(
                pl.len().alias("skus"),
                ((pl.col("wape") * pl.col("n")).sum() / pl.col("n").sum()).alias("wape"),
                ((pl.col("coverage_80") * pl.col("n")).sum() / pl.col("n").sum()).alias("cov80"),
                ((pl.col("coverage_95") * pl.col("n")).sum() / pl.col("n").sum()).alias("cov95"),
            )
            .with_columns(pl.lit(name).alias("candidate"))
        )
        rows.append(agg)
    return pl.concat(rows).sort("quintile", "candidate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--split-by", required=True, help="Candidate whose per-SKU WAPE splits.")
    parser.add_argument("--candidates", nargs="+", required=True)
    parser.add_argument("--out", type=Path, default=None, help="Write the tables as JSON.")
    args = parser.parse_args()
    board = leaderboard(args.work_dir)
    quint = by_quintile(per_sku_metrics(args.work_dir), args.split_by, args.candidates)
    with pl.Config(tbl_rows=200, tbl_cols=20, float_precision=4):
        print(board)
        print(quint)
    if args.out is not None:
        args.out.write_text(
            json.dumps(
                {"leaderboard": board.to_dicts(), "quintiles": quint.to_dicts()},
                indent=2,
                default=float,
            )
        )


if __name__ == "__main__":
    main()
