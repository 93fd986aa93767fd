"""Reference fit of seasonality per category and per SKU within its category, made with glmmTMB.

Issue 8, item 2: ``sales ~ fourier_s1 + fourier_c1 + (1 | category)
+ (0 + fourier_s1 + fourier_c1 || category) + (1 | category:sku)
+ (0 + fourier_s1 + fourier_c1 || category:sku)``, NB2 (glmmTMB's ``nbinom2``), Laplace.

The panel is simulated here: :func:`poolcast.simulate.simulate_panel` (200 SKUs x 36 months,
8 categories, seed 20261201) gives the SKUs, their categories, the category effects and the
SKU random intercepts; its seasonality is one shape for every SKU, so this script draws
the sales again with a seasonal shape that varies by category and by SKU (``SEASONAL``: SDs of
the category's and the SKU's first-harmonic Fourier coefficients), and with ragged starts
(a quarter of the SKUs start in the last 4..12 months, young SKUs). The CSV
``category_seasonal_sim.csv`` beside this script holds sku, category, month (1..36, month 1
a January) and sales; the Fourier columns are computed from the month by R and by the test
alike, as :mod:`poolcast.features` does: ``fourier_s1 = sin(2 pi m / 12)``,
``fourier_c1 = cos(2 pi m / 12)`` with m the month of year (sin and cos have period 12, so
the month index gives the same values). Tests never need R: they read the CSV and
``reference_category_seasonal.json``. Run from the repository root (Debian's r-cran-glmmtmb):

    .venv/bin/python tests/reference/glmm/make_category_seasonal_reference.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

HERE = Path(__file__).resolve().parent
CSV = HERE / "category_seasonal_sim.csv"
OUT = HERE / "reference_category_seasonal.json"

N_SKUS, N_MONTHS, N_CATEGORIES, SEED = 200, 36, 8, 20261201
INTERCEPT = 1.2
FIXED_SEASONAL = (0.4, -0.3)  # pooled coefficients of sin and cos
SEASONAL = {"category": 0.35, "sku": 0.2}  # SD of the Fourier coefficients per level
THETA = 5.0
FORMULA = (
    "sales ~ fourier_s1 + fourier_c1 + (1 | category) + (0 + fourier_s1 + fourier_c1 || category)"
    " + (1 | category:sku) + (0 + fourier_s1 + fourier_c1 || category:sku)"
)

R_CODE = r"""
suppressPackageStartupMessages(library(glmmTMB))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1], colClasses = c(sku = "character", category = "character"))
d$fourier_s1 <- sin(2 * pi * d$month / 12)
d$fourier_c1 <- cos(2 * pi * d$month / 12)
d$sku <- factor(d$sku); d$category <- factor(d$category)
t0 <- proc.time()[["elapsed"]]
fit <- glmmTMB(as.formula(args[3]), data = d, family = nbinom2)
secs <- proc.time()[["elapsed"]] - t0
vc <- VarCorr(fit)$cond
varcorr <- lapply(names(vc), function(g) {
  m <- vc[[g]]
  sds <- attr(m, "stddev")
  cm <- attr(m, "correlation")
  list(sd = as.list(sds), corr = if (length(sds) > 1) cm[lower.tri(cm)] else list())
})
names(varcorr) <- names(vc)
out <- list(
  formula = args[3],
  family = "nbinom2",
  method = "Laplace",
  fixef = as.list(fixef(fit)$cond),
  fixef_se = as.list(sqrt(diag(vcov(fit)$cond))),
  varcorr = varcorr,
  nb_theta = as.numeric(sigma(fit)),
  logLik = as.numeric(logLik(fit)),
  nobs = nrow(d),
  convergence = fit$fit$convergence,
  pdHess = fit$sdr$pdHess,
  seconds = secs,
  software = paste("glmmTMB", packageVersion("glmmTMB"))
)
writeLines(jsonlite::toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), args[2])
"""


def simulated_panel() -> pl.DataFrame:
    """sku, category, month (1..N_MONTHS), sales: the panel of the module docstring."""
    from poolcast.simulate import simulate_panel

    sim = simulate_panel(N_SKUS, N_MONTHS, family="negbin", seed=SEED, n_categories=N_CATEGORIES)
    truth = sim.truth
    skus = truth.sku_effects
    cats = sorted(truth.category_effects)
    rng = np.random.default_rng(SEED)
    cat_seasonal = rng.normal(0.0, SEASONAL["category"], (len(cats), 2))
    sku_seasonal = rng.normal(0.0, SEASONAL["sku"], (skus.height, 2))
    cat_idx = np.array([cats.index(c) for c in skus.get_column("category")])
    month = np.arange(1, N_MONTHS + 1)
    angle = 2.0 * np.pi * month / 12.0
    sin1, cos1 = np.sin(angle), np.cos(angle)
    coef = np.asarray(FIXED_SEASONAL) + cat_seasonal[cat_idx] + sku_seasonal  # (sku, 2)
    level = (
        INTERCEPT
        + np.array([truth.category_effects[c] for c in skus.get_column("category")])
        + skus.get_column("intercept").to_numpy()
    )
    eta = level[:, None] + coef[:, :1] * sin1[None, :] + coef[:, 1:] * cos1[None, :]
    mu = np.exp(eta)
    sales = rng.poisson(rng.gamma(THETA, mu / THETA))
    young = rng.random(skus.height) < 0.25
    first = np.where(young, N_MONTHS - rng.integers(3, 12, skus.height), 1)
    frame = pl.DataFrame(
        {
            "sku": np.repeat(skus.get_column("sku").to_numpy(), N_MONTHS),
            "category": np.repeat(skus.get_column("category").to_numpy(), N_MONTHS),
            "month": np.tile(month, skus.height),
            "sales": sales.ravel(),
            "first": np.repeat(first, N_MONTHS),
        }
    )
    return frame.filter(pl.col("month") >= pl.col("first")).drop("first")


def main() -> None:
    panel = simulated_panel()
    panel.write_csv(CSV)
    with tempfile.TemporaryDirectory() as tmp:
        js, rfile = Path(tmp, "out.json"), Path(tmp, "fit.R")
        rfile.write_text(R_CODE)
        subprocess.run(["Rscript", str(rfile), str(CSV), str(js), FORMULA], check=True)
        ref = json.loads(js.read_text())
    ref["data"] = (
        f"{CSV.name} (this folder): simulate_panel({N_SKUS}, {N_MONTHS}, family='negbin', "
        f"seed={SEED}, n_categories={N_CATEGORIES}) SKUs and categories, sales redrawn with "
        f"seasonal Fourier coefficients {FIXED_SEASONAL} + N(0, {SEASONAL['category']}^2) per "
        f"category + N(0, {SEASONAL['sku']}^2) per SKU, NB2 size {THETA}; a quarter of the "
        "SKUs start in the last 4..12 months"
    )
    OUT.write_text(json.dumps({"sim_category_sku_seasonal_nb2": ref}, indent=1) + "\n")
    print(f"wrote {CSV} ({CSV.stat().st_size} bytes) and {OUT}")


if __name__ == "__main__":
    sys.exit(main())
