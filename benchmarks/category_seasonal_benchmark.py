"""Time the SKU-and-category seasonal GLMM (``glmm_nb2_seasonal``'s category level) at N SKUs.

The panel is the one of ``tests/reference/glmm/make_category_seasonal_reference.py`` (its
``simulated_panel``, NB2, 8 categories, a quarter of the SKUs young) with ``--skus`` SKUs
instead of 200, and the model is that reference's formula with ``sku`` for ``category:sku``
(the same optimum, checked by ``test_reference_category_seasonal.py``):
``sales ~ fourier_s1 + fourier_c1 + (1 | category) + (0 + fourier_s1 + fourier_c1 || category)
+ (1 | sku) + (0 + fourier_s1 + fourier_c1 || sku)``.

Three fits on the same rows in the same process, each timed with ``time.perf_counter`` (wall)
and ``time.process_time`` (CPU):

* ``schur``: the default exact gradient, whose entries of H^-1 come from the Schur complement
  onto the 24 category effects (:mod:`poolcast.glmm._selinv`);
* ``dense``: the same gradient from a dense H^-1 (the path before; ``SCHUR_M_MAX = 0``);
* ``pooled_glm``: a pooled statsmodels NB2 GLM (IRLS, no random effects, alpha = 1/theta of the
  GLMM) of the same fixed part, the yardstick of the other GLMM benchmarks.

Usage::

    .venv/bin/python benchmarks/category_seasonal_benchmark.py --skus 1000 \\
        --out benchmarks/category_seasonal_results_1k.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import polars as pl

from poolcast.glmm import _selinv, fit

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_SCRIPT = ROOT / "tests/reference/glmm/make_category_seasonal_reference.py"
FORMULA = (
    "sales ~ fourier_s1 + fourier_c1 + (1 | category) + (0 + fourier_s1 + fourier_c1 || category)"
    " + (1 | sku) + (0 + fourier_s1 + fourier_c1 || sku)"
)


def panel(n_skus: int) -> pl.DataFrame:
    """The reference script's simulated panel with ``n_skus`` SKUs, Fourier columns added."""
    spec = importlib.util.spec_from_file_location("category_reference", REFERENCE_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.N_SKUS = n_skus
    frame = module.simulated_panel()
    angle = 2.0 * math.pi * pl.col("month") / 12.0
    return frame.with_columns(angle.sin().alias("fourier_s1"), angle.cos().alias("fourier_c1"))


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skus", type=int, default=1000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    data = panel(args.skus)
    print(f"{args.skus} SKUs, {data.height} rows")

    res_schur, wall_s, cpu_s = timed(lambda: fit(FORMULA, data, family="negbin"))
    print(f"schur: {wall_s:.1f} s wall, {cpu_s:.1f} s CPU, loglik {res_schur.loglik:.4f}")
    old = _selinv.SCHUR_M_MAX
    _selinv.SCHUR_M_MAX = 0
    try:
        res_dense, wall_d, cpu_d = timed(lambda: fit(FORMULA, data, family="negbin"))
    finally:
        _selinv.SCHUR_M_MAX = old
    print(f"dense: {wall_d:.1f} s wall, {cpu_d:.1f} s CPU, loglik {res_dense.loglik:.4f}")

    import statsmodels.api as sm

    X = sm.add_constant(data.select("fourier_s1", "fourier_c1").to_numpy())
    y = data.get_column("sales").to_numpy()
    alpha = 1.0 / float(res_schur.nb_theta)
    _, wall_g, cpu_g = timed(
        lambda: sm.GLM(y, X, family=sm.families.NegativeBinomial(alpha=alpha)).fit()
    )
    print(f"pooled NB2 GLM: {wall_g:.2f} s wall, {cpu_g:.2f} s CPU")
    agree = {
        "loglik_abs_diff": abs(float(res_schur.loglik) - float(res_dense.loglik)),
        "fixef_max_abs_diff": float(
            np.max(np.abs(np.asarray(res_schur.beta) - np.asarray(res_dense.beta)))
        ),
    }
    out = {
        "skus": args.skus,
        "rows": data.height,
        "formula": FORMULA,
        "machine": platform.platform(),
        "schur": {"wall_s": wall_s, "cpu_s": cpu_s, "evals": res_schur.opt_summary.n_evals},
        "dense": {"wall_s": wall_d, "cpu_s": cpu_d, "evals": res_dense.opt_summary.n_evals},
        "pooled_glm": {"wall_s": wall_g, "cpu_s": cpu_g},
        "dense_over_schur_cpu": cpu_d / cpu_s,
        "schur_over_pooled_glm_cpu": cpu_s / cpu_g,
        "agreement": agree,
    }
    print(json.dumps(out, indent=2))
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
