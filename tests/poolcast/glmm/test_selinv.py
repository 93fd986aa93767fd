"""Tests of poolcast/glmm/_selinv.py: the Schur-complement blocks of H^{-1} against a dense
inverse of the same H."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from poolcast.glmm import _selinv
from poolcast.glmm._resystem import SparseSystem
from poolcast.glmm._selinv import row_inverse_blocks, schur_applies
from poolcast.glmm.terms import build_design


def _frame(seed: int = 5) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n_sku, months = 60, 10
    sku = np.repeat(np.arange(n_sku), months)
    category = sku % 4
    x = rng.normal(size=sku.size)
    z = rng.normal(size=sku.size)
    month = np.tile(np.arange(months), n_sku)
    y = rng.poisson(np.exp(0.5 + 0.3 * x + rng.normal(0, 0.4, n_sku)[sku]))
    return pl.DataFrame(
        {
            "y": y,
            "x": x,
            "z": z,
            "sku": [f"s{i}" for i in sku],
            "category": [f"c{i}" for i in category],
            "month": [f"m{i}" for i in month],
        }
    )


@pytest.mark.parametrize(
    "formula",
    [
        # nested: the small block (category, 2 correlated effects) after the SKU block
        "y ~ x + (1 + x | sku) + (1 + z | category)",
        # the small block first, the big one second; a crossed month factor
        "y ~ x + (1 | month) + (1 + x || sku)",
        # three blocks: SKU seasonal slopes with category and month effects
        "y ~ x + (0 + x + z || category) + (1 | month) + (1 + z | sku)",
        # glmm_nb2_seasonal's form: uncorrelated terms, three blocks on sku, three on category
        "y ~ x + (1 | category) + (0 + x + z || category) + (1 | sku) + (0 + x + z || sku)",
    ],
)
def test_schur_blocks_equal_the_dense_inverse_among_each_rows_columns(formula):
    d = build_design(formula, _frame(), family="poisson")
    system = SparseSystem(d, dense_max=10_000)
    rng = np.random.default_rng(11)
    system.set_theta(rng.uniform(0.3, 1.2, d.n_theta) * np.sign(d.theta_start() + 0.5))
    assert schur_applies(system)
    D = rng.uniform(0.2, 3.0, len(d.y))
    H = system.factor(D)
    dense = H.solve(np.eye(system.q))
    cols = system.cols
    expected = dense[cols[:, :, None], cols[:, None, :]]
    got = row_inverse_blocks(system, D)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_schur_does_not_apply_to_one_factor_or_too_many_small_effects(monkeypatch):
    frame = _frame().with_columns(pl.format("{}-{}", "category", "month").alias("cell"))
    one = SparseSystem(build_design("y ~ x + (1 + x | sku)", frame, family="poisson"), 10)
    assert not schur_applies(one)
    two = SparseSystem(build_design("y ~ x + (1 | sku) + (1 | cell)", frame, family="poisson"), 10)
    assert two.q == 60 + 40 and schur_applies(two)
    monkeypatch.setattr(_selinv, "SCHUR_M_MAX", 39)  # 40 effects outside the largest block
    assert not schur_applies(two)


def test_the_conditional_covariances_by_schur_equal_the_dense_ones():
    d = build_design(
        "y ~ x + (1 | category) + (0 + x + z || category) + (1 + z | sku)",
        _frame(),
        family="poisson",
    )
    system = SparseSystem(d, dense_max=10_000)
    system.set_theta(np.linspace(0.4, 1.1, d.n_theta))
    D = np.random.default_rng(2).uniform(0.2, 3.0, len(d.y))
    factor = system.factor(D)
    system.set_theta(np.full(d.n_theta, 5.0))  # a later theta must not change this factor's H
    got = factor.cond_cov()
    factor.system = None  # the chunked solves of the dense factor
    expected = factor.cond_cov()
    assert [g.shape for g in got] == [e.shape for e in expected]
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)
