"""Time the whole rolling-origin backtest of the candidate line-up on a simulated panel.

What it does (the "Speed" requirement of issue 4):

1. simulates an N-SKU x M-month NB2 panel with customer counts and promotions
   (:func:`poolcast.simulate.simulate_panel`), so the full line-up runs, the random
   promo-slope GLMMs included;
2. builds the rolling-origin splits once (:func:`poolcast.backtest.prepare_splits`; timed);
3. runs :func:`poolcast.backtest.backtest_candidate` (fit + predict + score at every origin)
   for each candidate of the default line-up, ``glmm_poisson_ri_agq`` included (it leaves the
   flow's default line-up above ``AGQ_MAX_SKUS`` SKUs), and times each one: wall time
   (``time.perf_counter``) and the CPU time of the process that ran it (``time.process_time``,
   all threads), which is less affected when other jobs share the machine;
4. prints a table: candidate, wall and CPU seconds, the ratio of each to the pooled Poisson GLM
   (``glm_poisson_pooled``) measured in the same run, overall scaled pinball and MASE, and the
   totals.

With ``--workers 2`` the candidates run two at a time in worker processes (spawned, not
forked: a fork after polars has started its thread pool can deadlock; each worker rebuilds the
same seeded splits once, untimed), mirroring the flow's 2-worker task runner; the table then
reports both the summed per-candidate time and the wall time of the whole pool. The load average of the machine is recorded at the start and end.

Usage::

    .venv/bin/python benchmarks/backtest_benchmark.py --skus 10000 --months 36 --origins 6 \\
        --horizons 3 --workers 2 --out benchmarks/backtest_results.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from poolcast.backtest import OriginSplit, backtest_candidate, prepare_splits
from poolcast.config import DEFAULT_QUANTILES, FeatureConfig
from poolcast.models import default_candidates
from poolcast.simulate import simulate_panel

PEER = "glm_poisson_pooled"
AGQ = "glmm_poisson_ri_agq"
_SPLITS: list[OriginSplit] = []  # the splits of this process (parent or worker)


def _build_splits(skus: int, months: int, origins: int, horizons: int, seed: int) -> float:
    """Simulate the panel and build the splits into ``_SPLITS``; returns the CPU seconds."""
    global _SPLITS
    panel = simulate_panel(skus, months, family="negbin", seed=seed).frame
    c0 = time.process_time()
    _SPLITS = prepare_splits(
        panel, feature_config=FeatureConfig(horizons=horizons), n_origins=origins
    )
    return time.process_time() - c0


def _machine() -> dict[str, Any]:
    mem_kb = 0
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "ram_gb": round(mem_kb / 1024**2, 1),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "polars": pl.__version__,
    }


def _run_one(name: str, has_customers: bool, has_promo: bool, n_samples: int, seed: int) -> dict:
    factory = default_candidates(has_customers=has_customers, has_promo=has_promo, names=(name,))[
        name
    ]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    result = backtest_candidate(
        name, factory, _SPLITS, quantiles=DEFAULT_QUANTILES, n_samples=n_samples, seed=seed
    )
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {
        "candidate": name,
        "wall_s": wall,
        "cpu_s": cpu,
        "fit_s": result.fit_seconds,
        "predict_s": result.predict_seconds,
        "scaled_pinball": result.metrics.get("scaled_pinball"),
        "mase": result.metrics.get("mase"),
        "pid": os.getpid(),
    }


def _print_table(rows: list[dict], peer: dict | None) -> None:
    head = (
        f"{'candidate':<26}{'wall s':>9}{'CPU s':>9}{'fit s':>9}{'pred s':>9}"
        f"{'wall/GLM':>10}{'CPU/GLM':>9}{'sc.pinball':>12}{'MASE':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        rw = r["wall_s"] / peer["wall_s"] if peer else float("nan")
        rc = r["cpu_s"] / peer["cpu_s"] if peer and peer["cpu_s"] > 0 else float("nan")
        r["wall_ratio"], r["cpu_ratio"] = rw, rc
        print(
            f"{r['candidate']:<26}{r['wall_s']:>9.1f}{r['cpu_s']:>9.1f}{r['fit_s']:>9.1f}"
            f"{r['predict_s']:>9.1f}{rw:>10.1f}{rc:>9.1f}{r['scaled_pinball']:>12.4f}"
            f"{r['mase']:>8.4f}"
        )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skus", type=int, default=10_000)
    p.add_argument("--months", type=int, default=36)
    p.add_argument("--origins", type=int, default=6)
    p.add_argument("--horizons", type=int, default=3)
    p.add_argument("--n-samples", type=int, default=500)
    p.add_argument("--seed", type=int, default=20261127)
    p.add_argument(
        "--candidates", nargs="*", default=None, help="names (default: full line-up incl. AGQ)"
    )
    p.add_argument("--workers", type=int, default=1, help="candidates run concurrently")
    p.add_argument("--out", type=Path, default=None, help="write every number as JSON")
    args = p.parse_args(argv)

    machine = _machine()
    load_start = os.getloadavg()
    print(f"machine: {machine}; load average at start: {load_start}", flush=True)
    t0 = time.perf_counter()
    panel = simulate_panel(args.skus, args.months, family="negbin", seed=args.seed).frame
    simulate_s = time.perf_counter() - t0
    has_customers, has_promo = True, bool(panel.get_column("promo").max())
    build = (args.skus, args.months, args.origins, args.horizons, args.seed)
    t0 = time.perf_counter()
    splits_cpu = _build_splits(*build)
    splits_s = time.perf_counter() - t0
    print(
        f"panel {args.skus} SKUs x {args.months} months ({panel.height} rows): simulate "
        f"{simulate_s:.1f} s; prepare_splits ({args.origins} origins, {args.horizons} horizons) "
        f"{splits_s:.1f} s wall, {splits_cpu:.1f} s CPU",
        flush=True,
    )
    if args.candidates:
        names = list(args.candidates)
    else:
        names = list(default_candidates(has_customers=has_customers, has_promo=has_promo))
        if AGQ not in names:
            names.append(AGQ)
    if PEER in names:  # the yardstick first, so a partial log already has it
        names.remove(PEER)
        names.insert(0, PEER)
    job = (has_customers, has_promo, args.n_samples, args.seed)
    rows: list[dict] = []
    pool_t0 = time.perf_counter()
    if args.workers <= 1:
        for name in names:
            rows.append(_run_one(name, *job))
            r = rows[-1]
            print(f"  {name}: {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU", flush=True)
    else:
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=args.workers, mp_context=ctx, initializer=_build_splits, initargs=build
        ) as pool:
            futures = {pool.submit(_run_one, name, *job): name for name in names}
            for fut in as_completed(futures):
                rows.append(fut.result())
                r = rows[-1]
                print(
                    f"  {r['candidate']}: {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU "
                    f"(done at +{time.perf_counter() - pool_t0:.0f} s)",
                    flush=True,
                )
    pool_wall = time.perf_counter() - pool_t0
    rows.sort(key=lambda r: names.index(r["candidate"]))
    peer = next((r for r in rows if r["candidate"] == PEER), None)
    print()
    _print_table(rows, peer)
    summed_wall = sum(r["wall_s"] for r in rows)
    summed_cpu = sum(r["cpu_s"] for r in rows)
    load_end = os.getloadavg()
    print(
        f"\nsum over candidates: {summed_wall:.1f} s wall, {summed_cpu:.1f} s CPU; "
        f"candidates wall with {args.workers} worker(s): {pool_wall:.1f} s; "
        f"+ prepare_splits {splits_s:.1f} s = {pool_wall + splits_s:.1f} s "
        f"({(pool_wall + splits_s) / 60:.1f} min)"
    )
    without_agq = [r for r in rows if r["candidate"] != AGQ]
    if len(without_agq) < len(rows):
        print(
            f"without {AGQ}: sum {sum(r['wall_s'] for r in without_agq):.1f} s wall, "
            f"{sum(r['cpu_s'] for r in without_agq):.1f} s CPU"
        )
    print(f"load average at end: {load_end}")
    if args.out:
        record = {
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "machine": machine,
            "load_start": load_start,
            "load_end": load_end,
            "simulate_s": simulate_s,
            "prepare_splits_s": splits_s,
            "prepare_splits_cpu_s": splits_cpu,
            "candidates": rows,
            "summed_wall_s": summed_wall,
            "summed_cpu_s": summed_cpu,
            "pool_wall_s": pool_wall,
            "total_wall_s": pool_wall + splits_s,
        }
        args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
