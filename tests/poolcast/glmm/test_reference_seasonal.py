"""SKU seasonality (issue 8, item 2) reproduced against glmmTMB.

``tests/reference/glmm/make_family_reference.R`` fits, with glmmTMB's ``nbinom2``,
``Quantity ~ t + fourier_s1 + fourier_c1 + (1 | sku) + (0 + fourier_s1 + fourier_c1 || sku)``
on the bundled Online Retail panel (the first 200 StockCodes in file order with at least 12
monthly rows, all their months) and writes the entry ``online_retail_sku_seasonal_nb2`` of
``reference_families.json``. The subset and the covariates are rebuilt here the same way.
Tolerances as for the other reference sets (issue 8): fixed effects 1e-3, SEs 2%, SDs 2% or
2e-3, log-likelihood 0.02, NB theta 2%.

glmmTMB reports the ``||`` block as one diagonal group ``sku.1`` holding both slopes (its
correlation fixed at 0); our engine splits it, as lme4 does, into one group per slope
(``sku.1``, ``sku.2``). Standard deviations are therefore matched by group base name and
term name, and the reference's diagonal correlation must be exactly 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from poolcast.glmm import fit

REFERENCE = Path(__file__).resolve().parents[2] / "reference" / "glmm" / "reference_families.json"
EXAMPLE = (
    Path(__file__).resolve().parents[3] / "data" / "example" / "online_retail_sku_monthly.csv.gz"
)
SEASONAL_KEYS = ["online_retail_sku_seasonal_nb2"]


def online_retail_seasonal_subset() -> pl.DataFrame:
    """The R script's subset: first 200 StockCodes (file order) with >= 12 monthly rows."""
    ol = pl.read_csv(EXAMPLE, schema_overrides={"StockCode": pl.String})
    counts = ol.group_by("StockCode", maintain_order=True).len()
    codes = counts.filter(pl.col("len") >= 12).get_column("StockCode").head(200)
    ol = ol.filter(pl.col("StockCode").is_in(codes.implode()))
    year = pl.col("Month").str.slice(0, 4).cast(pl.Int32)
    month = pl.col("Month").str.slice(5, 2).cast(pl.Int32)
    angle = 2 * np.pi * month / 12
    return ol.with_columns(
        t=(year - 2009) + (month - 12) / 12,
        fourier_s1=angle.sin(),
        fourier_c1=angle.cos(),
        sku=pl.col("StockCode"),
    )


def _sd_by_base(res, base: str, name: str) -> float:
    """The SD of term ``name`` in the (possibly split) groups of base name ``base``."""
    hits = [
        sds[name] for group, sds in res.sd.items() if group.split(".")[0] == base and name in sds
    ]
    assert len(hits) == 1, (base, name, res.sd)
    return hits[0]


@pytest.fixture(scope="module")
def references() -> dict:
    return json.loads(REFERENCE.read_text())


@pytest.fixture(scope="module")
def fits(references) -> dict:
    data = online_retail_seasonal_subset()
    return {
        key: fit(references[key]["formula"], data, family=references[key]["family"])
        for key in SEASONAL_KEYS
    }


def test_subset_is_the_r_scripts(references):
    """Same rows as R: 200 SKUs, 4195 months (the count glmmTMB reported for this subset)."""
    data = online_retail_seasonal_subset()
    assert data.get_column("sku").n_unique() == 200
    assert data.height == 4195
    assert references["online_retail_sku_seasonal_nb2"]["family"] == "nbinom2"


@pytest.mark.parametrize("key", SEASONAL_KEYS)
def test_fixed_effects_and_ses(fits, references, key):
    ref, res = references[key], fits[key]
    assert list(res.fixef) == list(ref["fixef"])
    for name, value in ref["fixef"].items():
        assert res.fixef[name] == pytest.approx(value, abs=1e-3), name
    for name, value in ref["fixef_se"].items():
        assert res.fixef_se[name] == pytest.approx(value, rel=0.02), name


@pytest.mark.parametrize("key", SEASONAL_KEYS)
def test_sku_seasonal_sds_theta_and_loglik(fits, references, key):
    ref, res = references[key], fits[key]
    n_ref_sds = 0
    for group, vc in ref["varcorr"].items():
        base = group.split(".")[0]
        for name, sd in vc["sd"].items():
            n_ref_sds += 1
            assert _sd_by_base(res, base, name) == pytest.approx(sd, rel=0.02, abs=2e-3), (
                group,
                name,
            )
        # a `||` block: glmmTMB's correlation is structurally zero, ours has no such parameter
        assert np.all(np.atleast_1d(np.asarray(vc["corr"], dtype=float)) == 0.0)
    assert sum(len(sds) for sds in res.sd.values()) == n_ref_sds
    assert all(len(np.atleast_1d(c)) == 0 for c in res.corr.values())
    assert res.nb_theta == pytest.approx(ref["nb_theta"], rel=0.02)
    assert res.loglik == pytest.approx(ref["logLik"], abs=0.02)
