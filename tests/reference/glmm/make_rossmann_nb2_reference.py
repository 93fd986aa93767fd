"""Reference fit of the Rossmann NB2 GLMM that once diverged, made with glmmTMB.

The case: the Rossmann monthly file cut at 2015-04, backtest origin 2014-09, horizon 1, the
``glmm_nb2_ri`` candidate's design (euros as the response, 11 covariates including the
calendar's day counts). Our engine's PIRLS once ran random effects to infinity on it (a
clamped mean in the NB2 log-likelihood); glmmTMB fits it. This script builds the candidate's
frame with poolcast, writes it to a temporary CSV (Rossmann's terms forbid copying the data
into the project), fits it with glmmTMB (Debian's r-cran-glmmtmb) and writes
``reference_rossmann_nb2.json`` next to itself. Tests never need R. Run from the repository root:

    .venv/bin/python tests/reference/glmm/make_rossmann_nb2_reference.py ../shared/data
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
OUT = HERE / "reference_rossmann_nb2.json"

R_CODE = r"""
suppressPackageStartupMessages(library(glmmTMB))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1], colClasses = c(sku = "character"))
d$sku <- factor(d$sku)
form <- as.formula(args[3])
fit <- glmmTMB(form, data = d, family = nbinom2)
vc <- VarCorr(fit)$cond
out <- list(
  formula = args[3],
  family = "nbinom2",
  method = "Laplace",
  fixef = as.list(fixef(fit)$cond),
  fixef_se = as.list(sqrt(diag(vcov(fit)$cond))),
  sd_sku = as.numeric(attr(vc$sku, "stddev")),
  nb_theta = as.numeric(sigma(fit)),
  logLik = as.numeric(logLik(fit)),
  n_obs = nrow(d),
  software = paste("glmmTMB", packageVersion("glmmTMB"))
)
writeLines(jsonlite::toJSON(out, auto_unbox = TRUE, digits = NA), args[2])
"""


def rossmann_nb2_frame(shared_data: Path) -> tuple[str, pl.DataFrame]:
    """The candidate's formula and design frame at origin 2014-09, horizon 1."""
    from poolcast.backtest import make_origin_split
    from poolcast.config import FeatureConfig
    from poolcast.features import panel_plan_columns
    from poolcast.io import load_source
    from poolcast.models._design import build_covariate_frame
    from poolcast.models.registry import default_candidates
    from poolcast.validation import validate_panel

    path = shared_data / "rossmann-store-sales" / "rossmann_store_monthly.csv"
    panel = validate_panel(load_source(path, "rossmann"), as_of=date(2015, 4, 1)).panel
    split = make_origin_split(panel, date(2014, 9, 1), feature_config=FeatureConfig())
    est = default_candidates(
        has_customers=True,
        has_promo=True,
        names=("glmm_nb2_ri",),
        plan_columns=panel_plan_columns(panel),
    )["glmm_nb2_ri"]()
    train = split.train.filter(pl.col("horizon") == 1)
    spec = est._covariate_spec(train)
    return spec.formula(random="(1 | sku)"), build_covariate_frame(spec, train)


def main(shared_data: Path) -> None:
    formula, frame = rossmann_nb2_frame(shared_data)
    with tempfile.TemporaryDirectory() as tmp:
        csv, js, rfile = Path(tmp, "d.csv"), Path(tmp, "out.json"), Path(tmp, "fit.R")
        frame.write_csv(csv)
        rfile.write_text(R_CODE)
        subprocess.run(["Rscript", str(rfile), str(csv), str(js), formula], check=True)
        ref = json.loads(js.read_text())
    ref["data"] = (
        "rossmann_store_monthly.csv cut at 2015-04, origin 2014-09, horizon 1, the "
        "glmm_nb2_ri candidate's design (built by poolcast)"
    )
    OUT.write_text(json.dumps(ref, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data"))
