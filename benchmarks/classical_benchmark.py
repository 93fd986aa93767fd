"""Time the classical series candidates on the bundled Online Retail data, against seasonal naive.

Loads and validates ``data/example/online_retail_sku_monthly.csv.gz`` with the shipped
``online_retail`` mapping (gap policy zero), builds the rolling-origin splits once
(:func:`poolcast.backtest.prepare_splits`, 3 horizons), then runs
:func:`poolcast.backtest.backtest_candidate` (fit + predict with ``--samples`` draws per row +
scoring, at every origin) for ``seasonal_naive`` and each classical candidate, one after
another in one process. Per candidate it prints wall time (``time.perf_counter``), CPU time of
the process (``time.process_time``), the ratio of each to ``seasonal_naive`` measured in the
same run, fit and predict seconds, scaled pinball, MASE, WAPE and the 80% / 95% coverage.

Usage::

    .venv/bin/python benchmarks/classical_benchmark.py --origins 6 --out benchmarks/classical_results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from poolcast.backtest import backtest_candidate, prepare_splits
from poolcast.config import DEFAULT_QUANTILES, FeatureConfig, ValidationConfig
from poolcast.io import load_source
from poolcast.models import make_candidate
from poolcast.validation import validate_panel

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "example" / "online_retail_sku_monthly.csv.gz"
PEER = "seasonal_naive"
CANDIDATES = (PEER, "naive", "auto_ets", "croston", "tsb", "adida")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--origins", type=int, default=6)
    parser.add_argument("--horizons", type=int, default=3)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    load_start = os.getloadavg()
    t0, c0 = time.perf_counter(), time.process_time()
    validated = validate_panel(load_source(DATA, "online_retail"), config=ValidationConfig())
    panel = validated.panel
    splits = prepare_splits(
        panel, feature_config=FeatureConfig(horizons=args.horizons), n_origins=args.origins
    )
    prep = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
    n_skus = panel.get_column("sku").n_unique()
    print(
        f"panel: {panel.height:,} rows, {n_skus:,} SKUs; {len(splits)} origins "
        f"{splits[0].origin}..{splits[-1].origin}; validate + splits {prep['wall_s']:.1f} s wall"
    )
    rows = []
    for name in args.candidates:
        t0, c0 = time.perf_counter(), time.process_time()
        result = backtest_candidate(
            name,
            lambda name=name: make_candidate(name),
            splits,
            quantiles=DEFAULT_QUANTILES,
            n_samples=args.samples,
            seed=20261201,
        )
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        m = result.metrics
        rows.append(
            {
                "candidate": name,
                "wall_s": wall,
                "cpu_s": cpu,
                "fit_s": result.fit_seconds,
                "predict_s": result.predict_seconds,
                **{
                    k: m.get(k)
                    for k in ("n", "scaled_pinball", "mase", "wape", "coverage_80", "coverage_95")
                },
            }
        )
        print(f"{name}: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    peer = next((r for r in rows if r["candidate"] == PEER), None)
    print(
        "\n| candidate | wall s | CPU s | wall / SN | CPU / SN | fit s | predict s | rows "
        "| scaled pinball | MASE | WAPE | cov 80 | cov 95 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        rw = r["wall_s"] / peer["wall_s"] if peer else float("nan")
        rc = r["cpu_s"] / peer["cpu_s"] if peer else float("nan")
        print(
            f"| {r['candidate']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {rw:.1f} | {rc:.1f} "
            f"| {r['fit_s']:.1f} | {r['predict_s']:.1f} | {int(r['n']):,} "
            f"| {r['scaled_pinball']:.4f} | {r['mase']:.4f} | {r['wape']:.4f} "
            f"| {r['coverage_80']:.3f} | {r['coverage_95']:.3f} |"
        )
    record = {
        "data": str(DATA.relative_to(ROOT)),
        "n_skus": n_skus,
        "panel_rows": panel.height,
        "origins": [s.origin.isoformat() for s in splits],
        "horizons": args.horizons,
        "n_samples": args.samples,
        "prepare": prep,
        "results": rows,
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_start": load_start,
            "load_avg_end": os.getloadavg(),
        },
    }
    if args.out:
        args.out.write_text(json.dumps(record, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
