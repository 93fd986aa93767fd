"""Time the latent AR(1) GLMM ``ar1(month + 0 | sku)`` (issue 8, item 6).

On a simulated panel of N SKUs x 36 months (for each N in ``--sizes``), the NB2 GLMM

    y ~ fourier_s1 + fourier_c1 + promo + ar1(month + 0 | sku)

(the ``glmm_nb2_ar1`` candidate's model with a promo term) is timed as a ratio to a pooled
statsmodels GLM (IRLS, no random effects, the same fixed part) fitted on the same rows in the
same run: a Poisson GLM (the yardstick of ``family_benchmark.py``) and an NB2 GLM at the true
dispersion (``sm.families.NegativeBinomial(alpha=1/4)``, also one IRLS; statsmodels has no
cheap NB2 GLM with the dispersion estimated). With ``--glmmtmb`` the same model is fitted by
glmmTMB (``ar1(factor(month) + 0 | sku)``, ``nbinom2``; ``system.time`` around the fit only).

Every fit runs in its own fresh Python (or R) process: the child simulates the panel
(seeded), warms up on a 50-SKU panel, then times the fit with ``time.perf_counter`` (wall) and
``time.process_time`` (CPU); its peak resident set size is read by the parent (``os.wait4``).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ar1_benchmark.py --sizes 1000 10000 \\
        --glmmtmb-sizes 1000 --out benchmarks/ar1_results.json

The panel: month = 1..36; ``fourier_s1, fourier_c1`` = sin, cos(2 pi moy / 12); ``promo`` ~
Bernoulli(0.15); ``eta = 0.8 + 0.3 s1 - 0.2 c1 + 0.4 promo + b_{i,month}`` with each SKU's
``b`` a stationary AR(1), sd 0.6 and correlation 0.8; ``y ~ NB2(exp(eta), theta = 4)``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from family_benchmark import _run
from glmm_benchmark import machine_info

N_MONTHS = 36
WARMUP_SKUS = 50
FORMULA = "y ~ fourier_s1 + fourier_c1 + promo + ar1(month + 0 | sku)"
TRUTH = {
    "beta": {"(Intercept)": 0.8, "fourier_s1": 0.3, "fourier_c1": -0.2, "promo": 0.4},
    "ar1_sd": 0.6,
    "ar1_rho": 0.8,
    "nb2_theta": 4.0,
}


def simulate(n_skus: int, *, seed: int) -> dict[str, np.ndarray]:
    """Columns of the panel (see the module docstring)."""
    rng = np.random.default_rng(seed)
    n = n_skus * N_MONTHS
    sku = np.repeat(np.arange(n_skus), N_MONTHS)
    month = np.tile(np.arange(1, N_MONTHS + 1), n_skus)
    moy = (month - 1) % 12 + 1
    s1, c1 = np.sin(2 * np.pi * moy / 12), np.cos(2 * np.pi * moy / 12)
    promo = (rng.random(n) < 0.15).astype(float)
    sd, rho = TRUTH["ar1_sd"], TRUTH["ar1_rho"]
    b = np.empty((n_skus, N_MONTHS))
    b[:, 0] = rng.normal(0.0, sd, n_skus)
    for t in range(1, N_MONTHS):
        b[:, t] = rho * b[:, t - 1] + sd * np.sqrt(1 - rho**2) * rng.normal(size=n_skus)
    beta = TRUTH["beta"]
    eta = (
        beta["(Intercept)"]
        + beta["fourier_s1"] * s1
        + beta["fourier_c1"] * c1
        + beta["promo"] * promo
        + b.ravel()
    )
    theta = TRUTH["nb2_theta"]
    y = rng.poisson(rng.gamma(theta, np.exp(eta) / theta)).astype(float)
    return {"sku": sku, "month": month, "fourier_s1": s1, "fourier_c1": c1, "promo": promo, "y": y}


def _to_frame(cols: dict[str, np.ndarray]) -> Any:
    import polars as pl

    return pl.DataFrame(cols).with_columns(
        pl.col("sku").cast(pl.String).str.zfill(6), pl.col("y").cast(pl.Int64)
    )


def _worker_glmm(size: int, seed: int) -> dict[str, Any]:
    from poolcast.glmm import fit

    fit(FORMULA, _to_frame(simulate(WARMUP_SKUS, seed=seed + 1)), family="negbin")  # warm-up
    frame = _to_frame(simulate(size, seed=seed))
    start, cpu_start = time.perf_counter(), time.process_time()
    res = fit(FORMULA, frame, family="negbin")
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "n_rows": int(res.nobs),
        "fixef": {k: float(v) for k, v in res.fixef.items()},
        "ar1_sd": float(res.ar1.sigma),
        "ar1_rho": float(res.ar1.rho),
        "nb_theta": float(res.nb_theta),
        "loglik": float(res.loglik),
        "converged": bool(res.converged),
        "n_evals": int(res.opt_summary.n_evals),
    }


def _worker_glm(kind: str, size: int, seed: int) -> dict[str, Any]:
    import statsmodels.api as sm

    def design(cols: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        x = np.column_stack(
            [np.ones(cols["y"].size)] + [cols[c] for c in ("fourier_s1", "fourier_c1", "promo")]
        )
        return x, cols["y"]

    family = (
        sm.families.Poisson()
        if kind == "poisson"
        else sm.families.NegativeBinomial(alpha=1.0 / TRUTH["nb2_theta"])
    )
    x_warm, y_warm = design(simulate(WARMUP_SKUS, seed=seed + 1))
    sm.GLM(y_warm, x_warm, family=family).fit()  # warm-up
    x, y = design(simulate(size, seed=seed))
    start, cpu_start = time.perf_counter(), time.process_time()
    res = sm.GLM(y, x, family=family).fit()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "n_rows": int(y.size),
        "params": [float(v) for v in res.params],
    }


R_FIT = """
suppressPackageStartupMessages(library(glmmTMB))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1]); d$sku <- factor(d$sku)
d$month_f <- factor(d$month, levels = sort(unique(d$month)))
f <- y ~ fourier_s1 + fourier_c1 + promo + ar1(month_f + 0 | sku)
warm <- droplevels(d[d$sku %in% levels(d$sku)[1:50], ])
invisible(glmmTMB(f, data = warm, family = nbinom2))
tm <- system.time(m <- glmmTMB(f, data = d, family = nbinom2))
vc <- VarCorr(m)$cond$sku
cat(jsonlite::toJSON(list(seconds = unname(tm["elapsed"]),
  cpu_seconds = unname(tm["user.self"] + tm["sys.self"]),
  fixef = as.list(fixef(m)$cond), logLik = as.numeric(logLik(m)),
  ar1_sd = unname(attr(vc, "stddev")[1]), ar1_rho = attr(vc, "correlation")[2, 1],
  nb_theta = sigma(m)), auto_unbox = TRUE, digits = NA), file = args[2])
"""


def _child(args: list[str], timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--worker", *args, "--result", str(result)]
        return _run(cmd, result, timeout)


def _glmmtmb(size: int, seed: int, timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        csv, script, result = Path(tmp) / "d.csv", Path(tmp) / "fit.R", Path(tmp) / "r.json"
        _to_frame(simulate(size, seed=seed)).write_csv(csv)
        script.write_text(R_FIT)
        return _run(["Rscript", str(script), str(csv), str(result)], result, timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000])
    parser.add_argument("--glmmtmb-sizes", type=int, nargs="*", default=[])
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker is not None:
        kind, _, name = args.worker.partition(":")
        out = (
            _worker_glm(name, args.size, args.seed)
            if kind == "glm"
            else _worker_glmm(args.size, args.seed)
        )
        args.result.write_text(json.dumps(out))
        return 0

    info = machine_info()
    print(f"machine: {info}", flush=True)
    records: list[dict[str, Any]] = []
    for size in args.sizes:
        common = ["--size", str(size), "--seed", str(args.seed)]
        glm = {kind: _child([f"glm:{kind}", *common], args.timeout) for kind in ("poisson", "nb2")}
        for kind, r in glm.items():
            print(f"{size:>6} statsmodels GLM {kind}: {r}", flush=True)
            records.append({"size": size, "model": f"statsmodels_glm_{kind}", **r})
        r = _child(["glmm:nb2_ar1", *common], args.timeout)
        for kind, g in glm.items():
            if "error" not in r and "error" not in g:
                r[f"ratio_to_glm_{kind}"] = r["seconds"] / g["seconds"]
                r[f"cpu_ratio_to_glm_{kind}"] = r["cpu_seconds"] / g["cpu_seconds"]
        print(f"{size:>6} poolcast nb2_ar1: {r}", flush=True)
        records.append({"size": size, "model": "poolcast_nb2_ar1", **r})
        if size in args.glmmtmb_sizes:
            t = _glmmtmb(size, args.seed, args.timeout)
            if "error" not in t and "error" not in r:
                t["poolcast_speedup"] = t["seconds"] / r["seconds"]
            print(f"{size:>6} glmmTMB nb2_ar1: {t}", flush=True)
            records.append({"size": size, "model": "glmmTMB_nb2_ar1", **t})
    print(format_markdown(records))
    if args.out is not None:
        payload = {"machine": info, "formula": FORMULA, "truth": TRUTH, "seed": args.seed}
        args.out.write_text(json.dumps({**payload, "results": records}, indent=2))
        print(f"wrote {args.out}")
    return 0


def format_markdown(records: list[dict[str, Any]]) -> str:
    """The results as the markdown table of benchmarks/README.md."""
    lines = [
        "| SKUs | model | rows | wall s | CPU s | wall / Poisson GLM | wall / NB2 GLM "
        "| peak RSS MB | notes |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in records:
        if "error" in r:
            lines.append(f"| {r['size']:,} | {r['model']} | | {r['error']} | | | | | |")
            continue
        notes = []
        if r.get("ar1_sd") is not None:
            notes.append(f"sd={r['ar1_sd']:.3f} rho={r['ar1_rho']:.3f}")
        if r.get("nb_theta") is not None:
            notes.append(f"theta={r['nb_theta']:.3f}")
        if r.get("logLik") is not None or r.get("loglik") is not None:
            notes.append(f"logLik={r.get('loglik', r.get('logLik')):.2f}")
        if r.get("poolcast_speedup") is not None:
            notes.append(f"glmmTMB / poolcast = {r['poolcast_speedup']:.1f}")
        if "converged" in r:
            notes.append(f"converged={r['converged']}")
        ratio_p, ratio_n = r.get("ratio_to_glm_poisson"), r.get("ratio_to_glm_nb2")
        n_rows = r.get("n_rows")
        lines.append(
            f"| {r['size']:,} | {r['model']} | {'' if n_rows is None else f'{n_rows:,}'} | "
            f"{r['seconds']:.2f} | {r['cpu_seconds']:.2f} | "
            f"{'' if ratio_p is None else f'{ratio_p:.1f}'} | "
            f"{'' if ratio_n is None else f'{ratio_n:.1f}'} | "
            f"{r.get('peak_rss_mb', float('nan')):.0f} | {'; '.join(notes)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
