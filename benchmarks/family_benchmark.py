"""Time the GLMM engine's newer families and the SKU-seasonal model (issue 8, item 6).

On a simulated panel of N SKUs x 36 months (for each N in ``--sizes``), three models, each
timed as a ratio to a pooled statsmodels GLM (IRLS, no random effects, the same fixed part)
fitted on the same rows in the same run:

* ``tweedie_ri``: ``y ~ t + fourier_s1 + fourier_c1 + promo + (1 | sku)``, Tweedie (log link),
  the power profiled as in the ``glmm_tweedie_ri`` candidate's first horizon
  (``family="tweedie"``), and once more with the power fixed at the truth (one Laplace fit);
  yardstick: ``sm.GLM(..., family=Tweedie(var_power=1.6))``;
* ``hurdle``: the two parts of ``glmm_hurdle_nb2``, a logistic GLMM of ``y > 0`` on all rows
  and a zero-truncated NB2 GLMM of ``y`` on the positive rows, both with ``(1 | sku)``; the
  hurdle time is their sum; yardstick: a Poisson GLM on all rows;
* ``nb2_seasonal_corr``: the same slopes with an unstructured 3 x 3 covariance,
  ``(1 + fourier_s1 + fourier_c1 | sku)`` (one grouping term: the engine's block-diagonal
  path; ``glmm_nb2_seasonal(correlated=True)``);
* ``nb2_seasonal``: ``y ~ t + fourier_s1 + fourier_c1 + promo + (1 | sku) +
  (0 + fourier_s1 + fourier_c1 || sku)``, NB2 (the ``glmm_nb2_seasonal`` candidate's random
  part); yardstick: a Poisson GLM on the same rows.

Every fit runs in its own fresh Python process (as in ``glmm_benchmark.py``): the child
simulates the panel (seeded), warms up on a 50-SKU panel, then times the fit with
``time.perf_counter`` (wall) and ``time.process_time`` (CPU); its peak resident set size is
read by the parent with ``os.wait4``. With ``--glmmtmb`` the Tweedie and NB2-seasonal fits are
also timed in R (``glmmTMB``, ``system.time`` around the fit only; the CSV is written by the
parent), for the same rows.

Usage::

    .venv/bin/python benchmarks/family_benchmark.py --sizes 1000 --glmmtmb \\
        --out benchmarks/family_results_1k.json

The panel: ``t`` = month / 12; ``fourier_s1, fourier_c1`` = sin, cos(2 pi moy / 12);
``promo`` ~ Bernoulli(0.15); ``eta = 0.8 + 0.05 t + 0.3 s1 - 0.2 c1 + 0.4 promo + b_i`` with
``b_i ~ N(0, 0.7^2)``; the seasonal panel adds ``u_i1 s1 + u_i2 c1``, ``u_ik ~ N(0, 0.4^2)``.
Tweedie: compound Poisson-Gamma with p = 1.6, phi = 1.5. Hurdle: ``P(y > 0) = expit(0.3 + c_i)``,
``c_i ~ N(0, 1)``, and ``y | y > 0`` zero-truncated NB2 (theta = 2, mean parameter exp(eta)).
NB2 seasonal: theta = 4.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from glmm_benchmark import machine_info

N_MONTHS = 36
WARMUP_SKUS = 50
FIXED = "y ~ t + fourier_s1 + fourier_c1 + promo"
FORMULAS = {
    "tweedie_ri": f"{FIXED} + (1 | sku)",
    "tweedie_ri_fixed_power": f"{FIXED} + (1 | sku)",
    "hurdle_zero": f"{FIXED.replace('y ~', 'sold ~')} + (1 | sku)",
    "hurdle_count": f"{FIXED} + (1 | sku)",
    "nb2_seasonal": f"{FIXED} + (1 | sku) + (0 + fourier_s1 + fourier_c1 || sku)",
    "nb2_seasonal_corr": f"{FIXED} + (1 + fourier_s1 + fourier_c1 | sku)",
}
TRUTH = {
    "beta": {"(Intercept)": 0.8, "t": 0.05, "fourier_s1": 0.3, "fourier_c1": -0.2, "promo": 0.4},
    "sd_sku": 0.7,
    "sd_seasonal": 0.4,
    "tweedie_power": 1.6,
    "tweedie_phi": 1.5,
    "hurdle_theta": 2.0,
    "nb2_theta": 4.0,
}
# which simulated response each model is fitted on, and its statsmodels yardstick
PANEL_OF = {
    "tweedie_ri": "tweedie",
    "tweedie_ri_fixed_power": "tweedie",
    "hurdle_zero": "hurdle",
    "hurdle_count": "hurdle",
    "nb2_seasonal": "seasonal",
    "nb2_seasonal_corr": "seasonal",
}
GLM_OF = {"tweedie": "tweedie", "hurdle": "poisson", "seasonal": "poisson"}


def simulate(n_skus: int, kind: str, *, seed: int) -> dict[str, np.ndarray]:
    """Columns of the panel of ``kind`` ("tweedie", "hurdle", "seasonal"); see the docstring."""
    rng = np.random.default_rng(seed)
    n = n_skus * N_MONTHS
    sku = np.repeat(np.arange(n_skus), N_MONTHS)
    month = np.tile(np.arange(N_MONTHS), n_skus)
    moy = month % 12 + 1
    t = month / 12.0
    s1, c1 = np.sin(2 * np.pi * moy / 12), np.cos(2 * np.pi * moy / 12)
    promo = (rng.random(n) < 0.15).astype(float)
    b = rng.normal(0.0, TRUTH["sd_sku"], n_skus)
    beta = TRUTH["beta"]
    eta = (
        beta["(Intercept)"]
        + beta["t"] * t
        + beta["fourier_s1"] * s1
        + beta["fourier_c1"] * c1
        + beta["promo"] * promo
        + b[sku]
    )
    if kind == "seasonal":
        u = rng.normal(0.0, TRUTH["sd_seasonal"], (n_skus, 2))
        eta = eta + u[sku, 0] * s1 + u[sku, 1] * c1
    mu = np.exp(eta)
    if kind == "tweedie":
        p, phi = TRUTH["tweedie_power"], TRUTH["tweedie_phi"]
        jumps = rng.poisson(mu ** (2 - p) / (phi * (2 - p)))
        shape = np.maximum(jumps, 1) * (2 - p) / (p - 1)
        y = np.where(jumps > 0, rng.gamma(shape, phi * (p - 1) * mu ** (p - 1)), 0.0)
    elif kind == "hurdle":
        theta = TRUTH["hurdle_theta"]
        c = rng.normal(0.0, 1.0, n_skus)
        sold = rng.random(n) < 1.0 / (1.0 + np.exp(-(0.3 + c[sku])))
        count = rng.poisson(rng.gamma(theta, mu / theta))
        while np.any(zero := count == 0):  # zero-truncated NB2 by rejection
            count[zero] = rng.poisson(rng.gamma(theta, mu[zero] / theta))
        y = np.where(sold, count, 0).astype(float)
    else:
        theta = TRUTH["nb2_theta"]
        y = rng.poisson(rng.gamma(theta, mu / theta)).astype(float)
    return {"sku": sku, "t": t, "fourier_s1": s1, "fourier_c1": c1, "promo": promo, "y": y}


def _to_frame(cols: dict[str, np.ndarray]) -> Any:
    import polars as pl

    frame = pl.DataFrame(cols).with_columns(
        pl.col("sku").cast(pl.String).str.zfill(6), sold=(pl.col("y") > 0).cast(pl.Int32)
    )
    return frame


def _fit_model(model: str, frame: Any) -> Any:
    import polars as pl

    from poolcast.glmm import fit
    from poolcast.glmm.families import Tweedie

    formula = FORMULAS[model]
    if model == "tweedie_ri":
        return fit(formula, frame, family="tweedie")
    if model == "tweedie_ri_fixed_power":
        return fit(formula, frame, family=Tweedie(power=TRUTH["tweedie_power"]))
    if model == "hurdle_zero":
        return fit(formula, frame, family="binomial")
    if model == "hurdle_count":
        positive = frame.filter(pl.col("y") > 0).with_columns(pl.col("y").cast(pl.Int64))
        return fit(formula, positive, family="truncated_nbinom2")
    return fit(formula, frame.with_columns(pl.col("y").cast(pl.Int64)), family="nbinom2")


def _worker_glmm(model: str, size: int, seed: int) -> dict[str, Any]:
    kind = PANEL_OF[model]
    _fit_model(model, _to_frame(simulate(WARMUP_SKUS, kind, seed=seed + 1)))  # warm-up
    frame = _to_frame(simulate(size, kind, seed=seed))
    start, cpu_start = time.perf_counter(), time.process_time()
    res = _fit_model(model, frame)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    power = getattr(res.family, "power", None)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "n_rows": int(res.nobs),
        "fixef": {k: float(v) for k, v in res.fixef.items()},
        "sd": {g: {k: float(v) for k, v in s.items()} for g, s in res.sd.items()},
        "nb_theta": None if res.nb_theta is None else float(res.nb_theta),
        "tweedie_power": None if power is None else float(power),
        "loglik": float(res.loglik),
        "converged": bool(res.converged),
    }


def _worker_glm(kind: str, size: int, seed: int) -> dict[str, Any]:
    import statsmodels.api as sm

    def design(cols: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        x = np.column_stack(
            [np.ones(cols["t"].size)]
            + [cols[c] for c in ("t", "fourier_s1", "fourier_c1", "promo")]
        )
        return x, cols["y"]

    family = (
        sm.families.Tweedie(var_power=TRUTH["tweedie_power"])
        if GLM_OF[kind] == "tweedie"
        else sm.families.Poisson()
    )
    x_warm, y_warm = design(simulate(WARMUP_SKUS, kind, seed=seed + 1))
    sm.GLM(y_warm, x_warm, family=family).fit()  # warm-up
    x, y = design(simulate(size, kind, seed=seed))
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
fam <- if (args[2] == "tweedie") tweedie(link = "log") else nbinom2
f <- as.formula(args[3])
warm <- d[d$sku %in% levels(d$sku)[1:50], ]
invisible(glmmTMB(f, data = warm, family = fam))
tm <- system.time(m <- glmmTMB(f, data = d, family = fam))
cat(jsonlite::toJSON(list(seconds = unname(tm["elapsed"]),
  cpu_seconds = unname(tm["user.self"] + tm["sys.self"]),
  fixef = as.list(fixef(m)$cond), logLik = as.numeric(logLik(m)),
  power = if (args[2] == "tweedie") unname(family_params(m)) else NULL),
  auto_unbox = TRUE, digits = NA), file = args[4])
"""


def _run(cmd: list[str], result: Path, timeout: float) -> dict[str, Any]:
    """Run ``cmd`` in a fresh process; its JSON result plus its peak RSS (``os.wait4``)."""
    proc = subprocess.Popen(cmd)
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid != 0:
            break
        if time.monotonic() > deadline:
            proc.kill()
            os.wait4(proc.pid, 0)
            return {"error": f"timed out after {timeout:.0f} s"}
        time.sleep(0.05)
    code = os.waitstatus_to_exitcode(status)
    if code != 0 or not result.exists():
        return {"error": f"exited with code {code}"}
    out = json.loads(result.read_text())
    out["peak_rss_mb"] = usage.ru_maxrss / 1024.0
    return out


def _child(args: list[str], timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--worker", *args, "--result", str(result)]
        return _run(cmd, result, timeout)


def _glmmtmb(model: str, size: int, seed: int, timeout: float) -> dict[str, Any]:
    kind = PANEL_OF[model]
    family = "tweedie" if kind == "tweedie" else "nbinom2"
    with tempfile.TemporaryDirectory() as tmp:
        csv, script, result = Path(tmp) / "d.csv", Path(tmp) / "fit.R", Path(tmp) / "r.json"
        _to_frame(simulate(size, kind, seed=seed)).drop("sold").write_csv(csv)
        script.write_text(R_FIT)
        cmd = ["Rscript", str(script), str(csv), family, FORMULAS[model], str(result)]
        return _run(cmd, result, timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000])
    parser.add_argument("--models", nargs="+", default=list(FORMULAS), choices=list(FORMULAS))
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--glmmtmb", action="store_true", help="also time glmmTMB (needs R)")
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
            else _worker_glmm(name, args.size, args.seed)
        )
        args.result.write_text(json.dumps(out))
        return 0

    info = machine_info()
    print(f"machine: {info}", flush=True)
    records: list[dict[str, Any]] = []
    for size in args.sizes:
        common = ["--size", str(size), "--seed", str(args.seed)]
        glm = {
            kind: _child([f"glm:{kind}", *common], args.timeout)
            for kind in dict.fromkeys(PANEL_OF[m] for m in args.models)
        }
        for kind, r in glm.items():
            print(f"{size:>6} glm[{GLM_OF[kind]}] on {kind} rows: {r}", flush=True)
            records.append({"size": size, "model": f"statsmodels_glm_{kind}", **r})
        for model in args.models:
            r = _child([f"glmm:{model}", *common], args.timeout)
            g = glm[PANEL_OF[model]]
            if "error" not in r and "error" not in g:
                r["ratio_to_glm"] = r["seconds"] / g["seconds"]
                r["cpu_ratio_to_glm"] = r["cpu_seconds"] / g["cpu_seconds"]
            print(f"{size:>6} {model}: {r}", flush=True)
            records.append({"size": size, "model": model, **r})
            if args.glmmtmb and model in ("tweedie_ri", "nb2_seasonal"):
                t = _glmmtmb(model, size, args.seed, args.timeout)
                if "error" not in t and "error" not in r:
                    t["poolcast_speedup"] = t["seconds"] / r["seconds"]
                print(f"{size:>6} glmmTMB {model}: {t}", flush=True)
                records.append({"size": size, "model": f"glmmTMB_{model}", **t})
        parts = [r for r in records if r["size"] == size and r["model"].startswith("hurdle_")]
        if len(parts) == 2 and not any("error" in r for r in parts):
            g = glm["hurdle"]
            total = {key: parts[0][key] + parts[1][key] for key in ("seconds", "cpu_seconds")}
            if "error" not in g:
                total["ratio_to_glm"] = total["seconds"] / g["seconds"]
                total["cpu_ratio_to_glm"] = total["cpu_seconds"] / g["cpu_seconds"]
            total["peak_rss_mb"] = max(r["peak_rss_mb"] for r in parts)
            total["n_rows"] = parts[0]["n_rows"]
            print(f"{size:>6} hurdle (both parts): {total}", flush=True)
            records.append({"size": size, "model": "hurdle_both_parts", **total})
    print(format_markdown(records))
    if args.out is not None:
        payload = {"machine": info, "formulas": FORMULAS, "truth": TRUTH, "seed": args.seed}
        args.out.write_text(json.dumps({**payload, "results": records}, indent=2))
        print(f"wrote {args.out}")
    return 0


def format_markdown(records: list[dict[str, Any]]) -> str:
    """The results as the markdown table of benchmarks/README.md."""
    lines = [
        "| SKUs | model | rows | wall s | CPU s | wall / GLM | CPU / GLM | peak RSS MB | notes |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in records:
        if "error" in r:
            lines.append(f"| {r['size']:,} | {r['model']} | | {r['error']} | | | | | |")
            continue
        ratio = r.get("ratio_to_glm")
        cpu_ratio = r.get("cpu_ratio_to_glm")
        notes = []
        if r.get("tweedie_power") is not None:
            notes.append(f"p={r['tweedie_power']:.3f}")
        if r.get("nb_theta") is not None:
            notes.append(f"theta={r['nb_theta']:.3f}")
        if r.get("sd"):
            sds = {k: round(v, 3) for s in r["sd"].values() for k, v in s.items()}
            notes.append(f"sd={sds}")
        if r.get("poolcast_speedup") is not None:
            notes.append(f"glmmTMB / poolcast = {r['poolcast_speedup']:.1f}")
        if "converged" in r:
            notes.append(f"converged={r['converged']}")
        n_rows = r.get("n_rows")
        lines.append(
            f"| {r['size']:,} | {r['model']} | {'' if n_rows is None else f'{n_rows:,}'} | "
            f"{r['seconds']:.2f} | {r['cpu_seconds']:.2f} | "
            f"{'' if ratio is None else f'{ratio:.1f}'} | "
            f"{'' if cpu_ratio is None else f'{cpu_ratio:.1f}'} | {r['peak_rss_mb']:.0f} | "
            f"{'; '.join(notes)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
