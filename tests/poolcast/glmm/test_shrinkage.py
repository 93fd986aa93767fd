"""Tests of poolcast/glmm/shrinkage.py against per-group statsmodels GLMs and pooling theory.

Truths used here: the raw estimate is the intercept of a statsmodels GLM fitted to one group's
rows with the population fixed part as offset; counts per level come from polars; for a
random-intercept Poisson model the conditional mode solves
:math:`\\sum y - e^{b}\\sum\\mu = b/\\sigma^2`, so it always lies between 0 and the raw shift.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import statsmodels.api as sm
from scipy.special import expit
from scipy.stats import spearmanr

from poolcast.errors import InvalidParameterError
from poolcast.glmm import fit
from poolcast.glmm.shrinkage import shrinkage


def _unbalanced_panel(*, family: str, seed: int) -> pl.DataFrame:
    """Groups of 2..40 rows, y ~ x + (1 | g), intercept SD 0.6; group g000 has only zeros."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 41, size=50)
    g = np.repeat(np.arange(sizes.shape[0]), sizes)
    x = rng.normal(size=g.shape[0])
    eta = 0.5 + 0.4 * x + rng.normal(0.0, 0.6, sizes.shape[0])[g]
    if family == "binomial":
        y = rng.binomial(5, expit(eta - 0.5))
    else:
        y = rng.poisson(np.exp(eta))
    y[g == 0] = 0
    return pl.DataFrame(
        {"y": y, "x": x, "m": np.full(g.shape[0], 5), "g": [f"g{i:03d}" for i in g]}
    )


@pytest.fixture(scope="module")
def poisson_case():
    data = _unbalanced_panel(family="poisson", seed=31)
    res = fit("y ~ x + (1 | g)", data, family="poisson")
    return data, res, shrinkage(res, "g")


def _own_glm_intercept(res, data: pl.DataFrame, level: str, family) -> float:
    rows = data.filter(pl.col("g") == level)
    offset = res.fixef["(Intercept)"] + res.fixef["x"] * rows["x"].to_numpy()
    y = rows["y"].to_numpy().astype(float)
    if isinstance(family, sm.families.Binomial):
        endog = np.column_stack([y, rows["m"].to_numpy() - y])
    else:
        endog = y
    glm = sm.GLM(endog, np.ones((rows.height, 1)), family=family, offset=offset).fit(tol=1e-12)
    return res.fixef["(Intercept)"] + float(glm.params[0])


def test_table_has_one_row_per_level_with_counts_and_ranef(poisson_case):
    data, res, table = poisson_case
    assert table.columns == ["level", "n_obs", "raw", "pooled", "mode", "cond_sd"]
    assert res.shrinkage("g").equals(table)
    counts = data.group_by("g").len().sort("g")
    assert table["level"].to_list() == counts["g"].to_list()
    assert table["n_obs"].to_list() == counts["len"].to_list()
    ranef = res.ranef["g"].filter(pl.col("term") == "(Intercept)")
    np.testing.assert_allclose(table["mode"].to_numpy(), ranef["mode"].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(table["cond_sd"].to_numpy(), ranef["cond_sd"].to_numpy())
    np.testing.assert_allclose(
        table["pooled"].to_numpy(), res.fixef["(Intercept)"] + table["mode"].to_numpy()
    )


def test_raw_is_the_groups_own_poisson_glm_intercept(poisson_case):
    data, res, table = poisson_case
    for level in ["g001", "g010", "g025", "g049"]:
        raw = table.filter(pl.col("level") == level)["raw"].item()
        expected = _own_glm_intercept(res, data, level, sm.families.Poisson())
        assert raw == pytest.approx(expected, abs=1e-7)


def test_all_zero_group_has_no_raw_estimate(poisson_case):
    _, _, table = poisson_case
    row = table.filter(pl.col("level") == "g000")
    assert row["raw"].is_null().item()
    assert row["mode"].item() < 0  # pooled towards, but below, the population intercept


def test_pooled_lies_between_population_and_raw_and_small_groups_shrink_more(poisson_case):
    _, res, table = poisson_case
    beta0 = res.fixef["(Intercept)"]
    t = table.drop_nulls("raw")
    raw_shift = t["raw"].to_numpy() - beta0
    mode = t["mode"].to_numpy()
    assert np.all(np.sign(mode) == np.sign(raw_shift))
    assert np.all(np.abs(mode) < np.abs(raw_shift))
    kept = mode / raw_shift  # 1 = no pooling, 0 = complete pooling
    rho = spearmanr(kept, t["n_obs"].to_numpy()).statistic
    assert rho > 0.6


def test_binomial_raw_is_the_groups_own_logistic_glm_intercept():
    data = _unbalanced_panel(family="binomial", seed=32)
    res = fit("y ~ x + (1 | g)", data, family="binomial", trials="m")
    table = shrinkage(res, "g")
    for level in ["g003", "g020", "g041"]:
        raw = table.filter(pl.col("level") == level)["raw"].item()
        expected = _own_glm_intercept(res, data, level, sm.families.Binomial())
        assert raw == pytest.approx(expected, abs=1e-7)
    assert table.filter(pl.col("level") == "g000")["raw"].is_null().item()


def test_unknown_factor_raises(poisson_case):
    _, res, _ = poisson_case
    with pytest.raises(InvalidParameterError, match="factor='sku'"):
        shrinkage(res, "sku")


def test_with_a_random_slope_the_table_is_about_the_intercept():
    rng = np.random.default_rng(33)
    g = np.repeat(np.arange(30), 15)
    promo = (rng.random(g.shape[0]) < 0.4).astype(np.int64)
    b = rng.multivariate_normal([0.0, 0.0], [[0.3, 0.05], [0.05, 0.2]], size=30)
    y = rng.poisson(np.exp(0.7 + 0.3 * promo + b[g, 0] + b[g, 1] * promo))
    data = pl.DataFrame({"y": y, "promo": promo, "g": [f"g{i:02d}" for i in g]})
    res = fit("y ~ promo + (1 + promo | g)", data, family="poisson")
    table = shrinkage(res, "g")
    ranef = res.ranef["g"].filter(pl.col("term") == "(Intercept)")
    np.testing.assert_allclose(table["mode"].to_numpy(), ranef["mode"].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(table["cond_sd"].to_numpy(), ranef["cond_sd"].to_numpy())
    level = "g05"
    expected = _own_glm_intercept_promo(res, data, level)
    assert table.filter(pl.col("level") == level)["raw"].item() == pytest.approx(expected, abs=1e-7)


def _own_glm_intercept_promo(res, data: pl.DataFrame, level: str) -> float:
    rows = data.filter(pl.col("g") == level)
    offset = res.fixef["(Intercept)"] + res.fixef["promo"] * rows["promo"].to_numpy()
    glm = sm.GLM(
        rows["y"].to_numpy().astype(float),
        np.ones((rows.height, 1)),
        family=sm.families.Poisson(),
        offset=offset,
    ).fit(tol=1e-12)
    return res.fixef["(Intercept)"] + float(glm.params[0])
