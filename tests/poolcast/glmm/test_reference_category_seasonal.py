"""Seasonality per category and per SKU within its category (issue 8, item 2) against glmmTMB.

``tests/reference/glmm/make_category_seasonal_reference.py`` simulates the panel
``category_seasonal_sim.csv`` (200 SKUs in 8 categories x 36 months, a seasonal shape that
varies by category and by SKU, a quarter of the SKUs young) and fits, with glmmTMB 1.1.5's
``nbinom2``, ``sales ~ fourier_s1 + fourier_c1 + (1 | category)
+ (0 + fourier_s1 + fourier_c1 || category) + (1 | category:sku)
+ (0 + fourier_s1 + fourier_c1 || category:sku)``, writing ``reference_category_seasonal.json``.
The Fourier columns are rebuilt here from the month as R does. Tolerances of the other
reference sets (issue 8): fixed effects 1e-3, SEs 2%, SDs 2%, NB theta 2%, log-likelihood 0.02.

glmmTMB reports each ``||`` block as one diagonal group (``category.1``; ``category:sku``
spelled ``category.sku``), our engine splits it, as lme4 does, into one group per slope
(``category.1``, ``category.2``): SDs are matched by the group's base name and term name.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from poolcast.glmm import fit

HERE = Path(__file__).resolve()
REFERENCE = HERE.parents[2] / "reference" / "glmm" / "reference_category_seasonal.json"
SIM = HERE.parents[2] / "reference" / "glmm" / "category_seasonal_sim.csv"
KEY = "sim_category_sku_seasonal_nb2"


def category_seasonal_panel() -> pl.DataFrame:
    """The R script's frame: the CSV plus fourier_s1 / fourier_c1 = sin / cos(2 pi month / 12)."""
    angle = 2.0 * math.pi * pl.col("month").cast(pl.Float64) / 12.0
    frame = pl.read_csv(SIM, schema_overrides={"sku": pl.String, "category": pl.String})
    return frame.with_columns(fourier_s1=angle.sin(), fourier_c1=angle.cos())


def _base(group: str) -> str:
    """Group base name in both spellings: ``category:sku.2`` and ``category.sku.1`` -> ``category:sku``."""
    parts = group.replace(":", ".").split(".")
    return ":".join(p for p in parts if not p.isdigit())


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(REFERENCE.read_text())[KEY]


@pytest.fixture(scope="module")
def result(reference):
    return fit(reference["formula"], category_seasonal_panel(), family="negbin")


def test_panel_is_the_scripts(reference):
    data = category_seasonal_panel()
    assert data.height == reference["nobs"] == 5627
    assert data.get_column("sku").n_unique() == 200
    assert data.get_column("category").n_unique() == 8
    # every SKU in one category, so category:sku has the SKUs' levels
    assert data.group_by("sku").agg(pl.col("category").n_unique()).get_column("category").max() == 1
    assert reference["convergence"] == 0 and reference["pdHess"]


def test_fixed_effects_and_ses(result, reference):
    assert result.converged, result.messages
    assert result.nobs == reference["nobs"]
    assert list(result.fixef) == list(reference["fixef"])
    for name, value in reference["fixef"].items():
        assert result.fixef[name] == pytest.approx(value, abs=1e-3), name
        assert result.fixef_se[name] == pytest.approx(reference["fixef_se"][name], rel=0.02), name


def test_category_and_sku_seasonal_sds_theta_and_loglik(result, reference):
    ours = {
        (_base(group), name): sd for group, sds in result.sd.items() for name, sd in sds.items()
    }
    theirs = {
        (_base(group), name): sd
        for group, vc in reference["varcorr"].items()
        for name, sd in vc["sd"].items()
    }
    assert set(ours) == set(theirs) and len(ours) == 6
    for key, sd in theirs.items():
        assert ours[key] == pytest.approx(sd, rel=0.02), key
    # the `||` blocks: glmmTMB's correlations are structurally 0, ours have no parameter
    for vc in reference["varcorr"].values():
        assert np.all(np.atleast_1d(np.asarray(vc["corr"], dtype=float)) == 0.0)
    assert all(len(np.atleast_1d(c)) == 0 for c in result.corr.values())
    assert result.nb_theta == pytest.approx(reference["nb_theta"], rel=0.02)
    assert result.loglik == pytest.approx(reference["logLik"], abs=0.02)


def test_a_new_sku_of_a_known_category_gets_the_categorys_shape(result):
    """Unseen ``category:sku`` level: the category's conditional modes, the SKU's part 0."""
    cat = result.ranef["category"]
    level = cat.get_column("level")[0]
    rows = pl.DataFrame(
        {"sku": ["new-sku"] * 12, "category": [level] * 12, "month": list(range(1, 13))}
    )
    angle = 2.0 * math.pi * pl.col("month").cast(pl.Float64) / 12.0
    rows = rows.with_columns(fourier_s1=angle.sin(), fourier_c1=angle.cos())
    b = {
        name: result.ranef[group].filter(pl.col("level") == level).get_column("mode")[0]
        for group, name in [
            ("category", "(Intercept)"),
            ("category.1", "fourier_s1"),
            ("category.2", "fourier_c1"),
        ]
    }
    s, c = rows.get_column("fourier_s1").to_numpy(), rows.get_column("fourier_c1").to_numpy()
    fe = result.fixef
    expected = (
        fe["(Intercept)"]
        + b["(Intercept)"]
        + (fe["fourier_s1"] + b["fourier_s1"]) * s
        + (fe["fourier_c1"] + b["fourier_c1"]) * c
    )
    np.testing.assert_allclose(np.log(result.predict(rows)), expected, rtol=1e-12)


def test_sku_ids_unique_across_categories_give_the_same_fit_as_category_sku(result, reference):
    """The candidate writes the SKU terms on ``sku`` (ids are the panel's key): same model."""
    formula = reference["formula"].replace("category:sku", "sku")
    assert formula.count("| sku)") == 2
    res = fit(formula, category_seasonal_panel(), family="negbin")
    assert res.loglik == pytest.approx(result.loglik, abs=1e-6)
    for name, value in result.fixef.items():
        assert res.fixef[name] == pytest.approx(value, abs=1e-6), name
    assert res.sd["sku.1"]["fourier_s1"] == pytest.approx(
        result.sd["category:sku.1"]["fourier_s1"], rel=1e-5
    )
