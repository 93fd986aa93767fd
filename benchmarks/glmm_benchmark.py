"""Time poolcast's GLMM engine on simulated SKU panels and check it recovers the truth.

Model (the GLMM issue's benchmark)::

    sales ~ t + log_customers + promo + (1 + promo | sku)

on a simulated panel of N SKUs x 36 months, Poisson and NB2, for each N in ``--sizes``.

Every (size, family) fit runs in its own fresh Python process, so its wall time and peak
memory are separate from the others: the wall time of the ``fit`` call is measured with
``time.perf_counter`` inside the child, and the child's peak resident set size is read by the
parent from ``os.wait4`` (the child's own ``getrusage``). A statsmodels Poisson GLM
(``sm.GLM(y, X, family=Poisson()).fit()``, IRLS, no random effects) is fitted on the same rows
in another child process, and every GLMM time is also reported as a ratio to it, which makes
the figures comparable across machines. Each child first fits the same model once on a 50-SKU
panel (a warm-up, so one-off lazy imports are not timed), then times the fit on the full
panel; it also records the process CPU time of that fit (``time.process_time``), which is
less affected than wall time when other work shares the machine (the load average at the
start is printed with the machine).

Usage::

    .venv/bin/python benchmarks/glmm_benchmark.py --sizes 1000 10000 100000 \\
        --families poisson negbin --out benchmarks/results.json

The panel (seeded, so every child rebuilds the same rows):

* ``t`` = months since start / 12 (years), 36 months;
* ``log_customers`` = 3 + a per-SKU N(0, 0.5^2) level + a monthly N(0, 0.15^2) wiggle;
* ``promo`` ~ Bernoulli(0.15);
* ``eta = -0.5 + 0.05 t + 0.7 log_customers + 0.4 promo + b0_sku + b1_sku promo``, with
  ``(b0, b1) ~ N(0, [[0.7^2, 0.3*0.7*0.3], [., 0.3^2]])`` (SDs 0.7 and 0.3, correlation 0.3);
* ``sales ~ Poisson(exp(eta))`` or NB2 with size theta = 4 (variance mu + mu^2/4).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

FORMULA = "sales ~ t + log_customers + promo + (1 + promo | sku)"
N_MONTHS = 36
TRUE_BETA = {"(Intercept)": -0.5, "t": 0.05, "log_customers": 0.7, "promo": 0.4}
TRUE_SD = {"(Intercept)": 0.7, "promo": 0.3}
TRUE_CORR = 0.3
TRUE_THETA = 4.0
PROMO_RATE = 0.15
WARMUP_SKUS = 50


def simulate_benchmark_panel(n_skus: int, family: str, *, seed: int) -> dict[str, np.ndarray]:
    """Columns of the simulated panel (see the module docstring), rows sorted by (sku, month)."""
    rng = np.random.default_rng(seed)
    n = n_skus * N_MONTHS
    sku = np.repeat(np.arange(n_skus), N_MONTHS)
    month = np.tile(np.arange(N_MONTHS), n_skus)
    t = month / 12.0
    log_customers = 3.0 + rng.normal(0.0, 0.5, n_skus)[sku] + rng.normal(0.0, 0.15, n)
    promo = (rng.random(n) < PROMO_RATE).astype(np.int8)
    sd0, sd1 = TRUE_SD["(Intercept)"], TRUE_SD["promo"]
    cov = np.array([[sd0**2, TRUE_CORR * sd0 * sd1], [TRUE_CORR * sd0 * sd1, sd1**2]])
    b = rng.multivariate_normal(np.zeros(2), cov, size=n_skus)
    eta = (
        TRUE_BETA["(Intercept)"]
        + TRUE_BETA["t"] * t
        + TRUE_BETA["log_customers"] * log_customers
        + TRUE_BETA["promo"] * promo
        + b[sku, 0]
        + b[sku, 1] * promo
    )
    mu = np.exp(eta)
    if family == "negbin":
        mu = rng.gamma(TRUE_THETA, mu / TRUE_THETA)
    sales = rng.poisson(mu)
    return {
        "sku": sku,
        "t": t,
        "log_customers": log_customers,
        "promo": promo,
        "sales": sales,
    }


def _to_frame(cols: dict[str, np.ndarray]) -> Any:
    import polars as pl

    return pl.DataFrame(
        {
            "sku": pl.Series("sku", cols["sku"]).cast(pl.String).str.zfill(6),
            "t": cols["t"],
            "log_customers": cols["log_customers"],
            "promo": cols["promo"],
            "sales": cols["sales"],
        }
    )


def _peak_rss_mb_self() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _worker_glmm(size: int, family: str, seed: int) -> dict[str, Any]:
    from poolcast.glmm import fit

    # warm-up on a small panel: one-off lazy imports and caches are not part of the timing
    fit(
        FORMULA,
        _to_frame(simulate_benchmark_panel(WARMUP_SKUS, family, seed=seed + 1)),
        family=family,
    )
    frame = _to_frame(simulate_benchmark_panel(size, family, seed=seed))
    rss_before = _peak_rss_mb_self()
    start, cpu_start = time.perf_counter(), time.process_time()
    res = fit(FORMULA, frame, family=family)
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    sd = {term: float(v) for term, v in res.sd["sku"].items()}
    corr = [float(c) for c in np.ravel(res.corr["sku"])]
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "peak_rss_mb_before_fit": rss_before,
        "n_rows": frame.height,
        "fixef": {k: float(v) for k, v in res.fixef.items()},
        "fixef_se": {k: float(v) for k, v in res.fixef_se.items()},
        "sd": sd,
        "corr": corr,
        "theta": None if res.theta is None else float(res.theta),
        "loglik": float(res.loglik),
        "converged": bool(res.converged),
    }


def _worker_glm(size: int, seed: int) -> dict[str, Any]:
    import statsmodels.api as sm

    cols = simulate_benchmark_panel(size, "poisson", seed=seed)
    x = np.column_stack(
        [np.ones(cols["t"].shape[0]), cols["t"], cols["log_customers"], cols["promo"]]
    )
    y = cols["sales"].astype(float)
    n_warm = WARMUP_SKUS * N_MONTHS
    sm.GLM(y[:n_warm], x[:n_warm], family=sm.families.Poisson()).fit()  # warm-up
    rss_before = _peak_rss_mb_self()
    start, cpu_start = time.perf_counter(), time.process_time()
    res = sm.GLM(y, x, family=sm.families.Poisson()).fit()
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "peak_rss_mb_before_fit": rss_before,
        "n_rows": int(y.shape[0]),
        "params": [float(v) for v in res.params],
    }


def _run_child(args: list[str], timeout: float) -> dict[str, Any]:
    """Run this script as a worker in a fresh process; return its JSON plus its peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        result_path = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--worker", *args, "--result", str(result_path)]
        proc = subprocess.Popen(cmd)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid != 0:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                return {"error": f"timed out after {timeout:.0f} s"}
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0 or not result_path.exists():
            return {"error": f"worker exited with code {proc.returncode}"}
        out = json.loads(result_path.read_text())
        out["peak_rss_mb"] = usage.ru_maxrss / 1024.0
        return out


def check_recovery(result: dict[str, Any], family: str) -> dict[str, Any]:
    """Compare a fit with the simulation truth: z-scores of the fixed effects, relative errors."""
    z = {
        name: (result["fixef"][name] - truth) / result["fixef_se"][name]
        for name, truth in TRUE_BETA.items()
    }
    sd_rel = {term: result["sd"][term] / truth - 1.0 for term, truth in TRUE_SD.items()}
    out: dict[str, Any] = {
        "fixef_z": z,
        "sd_rel_error": sd_rel,
        "corr_error": result["corr"][0] - TRUE_CORR,
    }
    ok = all(abs(v) < 4.0 for v in z.values()) and all(abs(v) < 0.2 for v in sd_rel.values())
    ok = ok and abs(out["corr_error"]) < 0.2
    if family == "negbin":
        out["theta_rel_error"] = result["theta"] / TRUE_THETA - 1.0
        ok = ok and abs(out["theta_rel_error"]) < 0.2
    out["ok"] = bool(ok)
    return out


def machine_info() -> dict[str, Any]:
    """Platform, core count and RAM of this machine."""
    ram_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "load_average_1_5_15min": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "ram_gb": round(ram_gb, 1),
        "numpy": np.__version__,
    }


def _format_row(size: int, family: str, r: dict[str, Any], glm_seconds: float | None) -> str:
    if "error" in r:
        return f"{size:>7} {family:<8} ERROR: {r['error']}"
    ratio = r["seconds"] / glm_seconds if glm_seconds else float("nan")
    rec = r["recovery"]
    theta = "" if r["theta"] is None else f" theta={r['theta']:.3f}"
    return (
        f"{size:>7} {family:<8} {r['n_rows']:>9} {r['seconds']:>9.2f} {r['cpu_seconds']:>9.2f} "
        f"{ratio:>9.1f} "
        f"{r['peak_rss_mb']:>9.0f}  conv={r['converged']} recovered={rec['ok']} "
        f"fixef={ {k: round(v, 3) for k, v in r['fixef'].items()} } "
        f"sd={ {k: round(v, 3) for k, v in r['sd'].items()} } corr={r['corr'][0]:.3f}{theta}"
    )


def format_markdown(records: list[dict[str, Any]]) -> str:
    """The results as the markdown table of benchmarks/README.md."""
    lines = [
        "| SKUs | rows | model | wall s | CPU s | wall / GLM | CPU / GLM | peak RSS MB | "
        "converged | truth recovered |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in records:
        if "error" in r:
            lines.append(f"| {r['size']:,} | | {r['model']} | {r['error']} | | | | | | |")
            continue
        is_glm = r["model"].startswith("statsmodels")
        ratio = "1" if is_glm else f"{r['ratio_to_glm']:.1f}"
        cpu_ratio = "1" if is_glm else f"{r['cpu_ratio_to_glm']:.1f}"
        conv = "" if is_glm else str(r["converged"])
        rec = "" if is_glm else str(r["recovery"]["ok"])
        lines.append(
            f"| {r['size']:,} | {r['n_rows']:,} | {r['model']} | {r['seconds']:.2f} | "
            f"{r['cpu_seconds']:.2f} | {ratio} | {cpu_ratio} | {r['peak_rss_mb']:.0f} | "
            f"{conv} | {rec} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument(
        "--families", nargs="+", default=["poisson", "negbin"], choices=["poisson", "negbin"]
    )
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per child fit")
    parser.add_argument("--out", type=Path, default=None, help="write all results as JSON")
    parser.add_argument("--worker", choices=["glmm", "glm"], help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--family", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker is not None:
        if args.worker == "glmm":
            out = _worker_glmm(args.size, args.family, args.seed)
        else:
            out = _worker_glm(args.size, args.seed)
        args.result.write_text(json.dumps(out))
        return 0

    info = machine_info()
    print(f"machine: {info}")
    print(f"model: {FORMULA}; {N_MONTHS} months per SKU; seed {args.seed}")
    print(
        f"{'skus':>7} {'family':<8} {'rows':>9} {'seconds':>9} {'cpu s':>9} {'x GLM':>9} "
        f"{'peak MB':>9}"
    )
    records: list[dict[str, Any]] = []
    for size in args.sizes:
        glm = _run_child(
            ["glm", "--size", str(size), "--seed", str(args.seed)], timeout=args.timeout
        )
        glm_seconds = glm.get("seconds")
        if "error" in glm:
            print(f"{size:>7} GLM      ERROR: {glm['error']}")
        else:
            print(
                f"{size:>7} {'GLM':<8} {glm['n_rows']:>9} {glm['seconds']:>9.2f} "
                f"{glm['cpu_seconds']:>9.2f} {1.0:>9.1f} "
                f"{glm['peak_rss_mb']:>9.0f}  (statsmodels Poisson GLM, no random effects)"
            )
        records.append({"size": size, "model": "statsmodels_glm_poisson", **glm})
        for family in args.families:
            r = _run_child(
                [
                    "glmm",
                    "--size",
                    str(size),
                    "--family",
                    family,
                    "--seed",
                    str(args.seed),
                ],
                timeout=args.timeout,
            )
            if "error" not in r:
                r["recovery"] = check_recovery(r, family)
                r["ratio_to_glm"] = r["seconds"] / glm_seconds if glm_seconds else None
                r["cpu_ratio_to_glm"] = (
                    r["cpu_seconds"] / glm["cpu_seconds"] if glm_seconds else None
                )
            print(_format_row(size, family, r, glm_seconds), flush=True)
            records.append({"size": size, "model": f"glmm_{family}", **r})
    print(format_markdown(records))
    if args.out is not None:
        payload = {
            "machine": info,
            "formula": FORMULA,
            "seed": args.seed,
            "truth": {
                "fixef": TRUE_BETA,
                "sd": TRUE_SD,
                "corr": TRUE_CORR,
                "theta_negbin": TRUE_THETA,
            },
            "results": records,
        }
        args.out.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
