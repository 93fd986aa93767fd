"""Reference fits of the Rossmann GLMMs that once diverged, made with glmmTMB.

The cases (``CASES``): the Rossmann monthly file cut at 2015-04, a backtest origin, horizon 1,
a GLMM candidate's design (euros as the response, 11 covariates including the calendar's day
counts). Our engine once failed both: the NB2 fit at origin 2014-09 because PIRLS ran store
effects to 7e4 (a clamped mean in the NB2 log-likelihood), the Poisson random-slope fit at
2014-08 because a PIRLS warm start from a trial near theta = 0 put eta beyond exp()'s range.
glmmTMB fits the first; it stops at its evaluation limit on the second (logLik NA),
which lme4's ``glmer`` (bobyqa) fits, so that reference is lme4's. This script builds the candidate's
frame with poolcast, writes it to a temporary CSV (Rossmann's terms forbid copying the data
into the project), fits it with glmmTMB or lme4 (Debian's r-cran-glmmtmb, r-cran-lme4) and writes
``reference_rossmann.json`` next to itself. Tests never need R. Run from the repository root:

    .venv/bin/python tests/reference/glmm/make_rossmann_reference.py ../shared/data
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve().parent
OUT = HERE / "reference_rossmann.json"

R_CODE = r"""
suppressPackageStartupMessages({library(glmmTMB); library(lme4)})
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1], colClasses = c(sku = "character"))
d$sku <- factor(d$sku)
form <- as.formula(args[3])
if (args[4] == "nbinom2") {
  fit <- glmmTMB(form, data = d, family = nbinom2)
  vc <- VarCorr(fit)$cond$sku
  beta <- fixef(fit)$cond
  se <- sqrt(diag(vcov(fit)$cond))
  software <- paste("glmmTMB", packageVersion("glmmTMB"))
} else {
  # glmmTMB stops at its evaluation limit on this one (logLik NA); lme4 converges
  fit <- glmer(form, data = d, family = poisson,
               control = glmerControl(optimizer = "bobyqa", optCtrl = list(maxfun = 1e5)))
  vc <- VarCorr(fit)$sku
  beta <- fixef(fit)
  se <- sqrt(diag(as.matrix(vcov(fit))))
  software <- paste("lme4", packageVersion("lme4"), "glmer, bobyqa")
}
sds <- attr(vc, "stddev")
out <- list(
  formula = args[3],
  family = args[4],
  method = "Laplace",
  fixef = as.list(beta),
  fixef_se = as.list(setNames(as.numeric(se), names(beta))),
  sd_sku = as.list(sds),
  corr_sku = if (length(sds) > 1) attr(vc, "correlation")[2, 1] else NULL,
  nb_theta = if (args[4] == "nbinom2") as.numeric(sigma(fit)) else NULL,
  logLik = as.numeric(logLik(fit)),
  n_obs = nrow(d),
  software = software
)
writeLines(jsonlite::toJSON(out, auto_unbox = TRUE, digits = NA), args[2])
"""


# key: (origin, candidate, random part, glmmTMB family)
CASES: dict[str, tuple[date, str, str, str]] = {
    "nb2_ri_2014_09": (date(2014, 9, 1), "glmm_nb2_ri", "(1 | sku)", "nbinom2"),
    "poisson_ri_slope_2014_08": (
        date(2014, 8, 1),
        "glmm_poisson_ri_slope",
        "(1 + promo | sku)",
        "poisson",
    ),
}


def rossmann_frame(shared_data: Path, key: str) -> tuple[str, pl.DataFrame]:
    """The candidate's formula and design frame of case ``key`` (horizon 1)."""
    from poolcast.backtest import make_origin_split
    from poolcast.config import FeatureConfig
    from poolcast.features import panel_plan_columns
    from poolcast.io import load_source
    from poolcast.models._design import build_covariate_frame, make_covariate_spec
    from poolcast.models.registry import default_candidates
    from poolcast.validation import validate_panel

    path = shared_data / "rossmann-store-sales" / "rossmann_store_monthly.csv"
    panel = validate_panel(load_source(path, "rossmann"), as_of=date(2015, 4, 1)).panel
    origin, name, random, _ = CASES[key]
    split = make_origin_split(panel, origin, feature_config=FeatureConfig())
    est = default_candidates(
        has_customers=True,
        has_promo=True,
        names=(name,),
        plan_columns=panel_plan_columns(panel),
    )[name]()
    train = split.train.filter(pl.col("horizon") == 1)
    # the designs as they failed: Fourier seasonality (the candidates now switch to
    # month-of-year indicators from 18 training months on)
    spec = make_covariate_spec(
        train,
        customer_terms=est.customer_terms,
        include_promo=est.include_promo,
        plan_terms=tuple(est.plan_terms),
        seasonality="fourier",
    )
    return spec.formula(random=random), build_covariate_frame(spec, train)


def main(shared_data: Path) -> None:
    out = {}
    for key, (origin, name, _, family) in CASES.items():
        formula, frame = rossmann_frame(shared_data, key)
        with tempfile.TemporaryDirectory() as tmp:
            csv, js, rfile = Path(tmp, "d.csv"), Path(tmp, "out.json"), Path(tmp, "fit.R")
            frame.write_csv(csv)
            rfile.write_text(R_CODE)
            cmd = ["Rscript", str(rfile), str(csv), str(js), formula, family]
            subprocess.run(cmd, check=True)
            ref = json.loads(js.read_text())
        ref["data"] = (
            f"rossmann_store_monthly.csv cut at 2015-04, origin {origin:%Y-%m}, horizon 1, "
            f"the {name} candidate's design (built by poolcast)"
        )
        out[key] = ref
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data"))
