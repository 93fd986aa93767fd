"""Benchmark and checks of the Bayesian hierarchical GLMM (``poolcast.models.bayes``).

Two parts, results to ``benchmarks/bayes_results.json`` (and ``benchmarks/README.md``):

``speed``     1k SKUs x 36 months (simulated NB2, promo slope, 8 categories), the
              candidate's default sampler settings (nutpie, 2 chains x 500 tune + 500 draws):
              compile and sampling wall time, draws/s, min bulk ESS/s; the Laplace GLMM
              (``poolcast.glmm.fit``, two levels, the same covariates) on the same data in
              the same run; PyMC's own NUTS with ``--pymc``.
``recovery``  several seeds of a smaller panel: does the 90% posterior interval of each fixed
              effect and variance component contain the truth (nominal rate 0.9)?

Run: ``PYTHONPATH=. python benchmarks/bayes_benchmark.py [speed|recovery|all] [--pymc]
[--seeds 5] [--skus 150] [--out FILE]``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from poolcast.models._bayes_core import HierData, fit_posterior
from poolcast.simulate import simulate_panel

OUT = Path(__file__).with_name("bayes_results.json")
TERMS = ("promo", "log1p_customers", "t", "fourier_s1", "fourier_c1")


def design(frame: pl.DataFrame, *, categories: bool) -> HierData:
    skus, sku_idx = np.unique(frame.get_column("sku").to_numpy(), return_inverse=True)
    month = frame.get_column("month")
    angle = 2 * np.pi * month.dt.month().to_numpy() / 12
    first = month.min()
    t = ((month.dt.year() - first.year) * 12 + month.dt.month() - first.month).to_numpy() / 12
    promo = frame.get_column("promo").to_numpy().astype(float)
    X = np.column_stack(
        [
            promo,
            np.log1p(frame.get_column("customer_count").to_numpy()),
            t,
            np.sin(angle),
            np.cos(angle),
        ]
    )
    codes, levels = None, ()
    if categories:
        per_sku = frame.group_by("sku").agg(pl.col("category").first()).sort("sku")
        lv, codes = np.unique(per_sku.get_column("category").to_numpy(), return_inverse=True)
        levels = tuple(lv)
    return HierData(
        y=frame.get_column("sales").to_numpy(),
        X=X - np.r_[0.0, X[:, 1:].mean(axis=0)],
        terms=TERMS,
        sku_idx=sku_idx,
        sku_levels=tuple(skus),
        sku_category=codes,
        category_levels=levels,
        slope=promo,
    )


def speed(pymc: bool) -> dict:
    sim = simulate_panel(1000, 36, family="negbin", seed=1)
    data = design(sim.frame, categories=True)
    out: dict = {"skus": 1000, "months": 36, "rows": int(data.y.size)}
    runs = [("nuts", "nutpie")] + ([("nuts_pymc", "pymc")] if pymc else [])
    for method, label in runs:
        t0 = time.perf_counter()
        post = fit_posterior(
            data, method=method, chains=2, tune=500, draws=500, seed=1, centred=True
        )
        wall = time.perf_counter() - t0
        sample_s = post.seconds.get("sample", wall)
        out[label] = {
            "wall_seconds": wall,
            "seconds": post.seconds,
            "draws_per_second": 1000 / sample_s,
            "ess_bulk_min": post.diagnostics["ess_bulk_min"],
            "ess_bulk_min_per_second": post.diagnostics["ess_bulk_min"] / sample_s,
            "diagnostics": post.diagnostics,
            "sku_sd": post.sku_sd().mean(axis=0).tolist(),
            "category_sd": post.category_sd.mean(axis=0).tolist(),
        }
        print(label, json.dumps(out[label], default=float), flush=True)
    from poolcast.glmm import fit as glmm_fit

    frame = pl.DataFrame(
        {"sales": data.y, "sku": np.array(data.sku_levels)[data.sku_idx]}
    ).with_columns([pl.Series(n, data.X[:, j]) for j, n in enumerate(TERMS)])
    t0 = time.perf_counter()
    res = glmm_fit(f"sales ~ {' + '.join(TERMS)} + (1 + promo | sku)", frame, family="negbin")
    out["laplace_glmm"] = {
        "wall_seconds": time.perf_counter() - t0,
        "fixef": res.fixef,
        "sd": res.sd,
    }
    print("laplace", out["laplace_glmm"], flush=True)
    return out


def recovery(seeds: range, n_skus: int, n_months: int) -> dict:
    hits: dict[str, list[bool]] = {}
    per_seed = []
    for seed in seeds:
        sim = simulate_panel(n_skus, n_months, family="negbin", seed=seed)
        data = design(sim.frame, categories=True)
        t0 = time.perf_counter()
        post = fit_posterior(data, chains=2, tune=500, draws=500, seed=seed, centred=True)
        truth = {n: sim.truth.fixed[n] for n in TERMS}
        draws = {n: post.beta[:, 1 + j] for j, n in enumerate(TERMS)}
        sd = post.sku_sd()
        truth |= {
            "sd_intercept": sim.truth.sd["intercept"],
            "sd_promo": sim.truth.sd["promo"],
            "corr": sim.truth.corr,
            "sd_category": sim.truth.sd["category"],
            "alpha": 1 / sim.truth.theta,
        }
        draws |= {
            "sd_intercept": sd[:, 0],
            "sd_promo": sd[:, 1],
            "corr": post.sku_corr(),
            "sd_category": post.category_sd[:, 0],
            "alpha": post.alpha,
        }
        row = {"seed": seed, "seconds": time.perf_counter() - t0, "diagnostics": post.diagnostics}
        for name, value in truth.items():
            lo, hi = np.quantile(draws[name], [0.05, 0.95])
            hits.setdefault(name, []).append(bool(lo <= value <= hi))
            row[name] = [float(lo), float(value), float(hi)]
        per_seed.append(row)
        print(json.dumps(row, default=float), flush=True)
    total = [h for v in hits.values() for h in v]
    return {
        "panel": f"{n_skus} SKUs x {n_months} months, 8 categories, NB2 theta=5",
        "coverage_by_parameter": {k: float(np.mean(v)) for k, v in hits.items()},
        "coverage_overall": float(np.mean(total)),
        "intervals": len(total),
        "per_seed": per_seed,
    }


def _arg(flag: str, default: str) -> str:
    return sys.argv[sys.argv.index(flag) + 1] if flag in sys.argv else default


def main() -> None:
    part = sys.argv[1] if len(sys.argv) > 1 else "all"
    out = Path(_arg("--out", str(OUT)))
    results = json.loads(out.read_text()) if out.exists() else {}
    if part in ("speed", "all"):
        results["speed"] = speed("--pymc" in sys.argv)
        out.write_text(json.dumps(results, indent=2, default=float))
    if part in ("recovery", "all"):
        seeds = int(_arg("--seeds", "5"))
        results["recovery"] = recovery(range(1, seeds + 1), int(_arg("--skus", "150")), 24)
        out.write_text(json.dumps(results, indent=2, default=float))
    print(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
