"""Tests of poolcast/glmm/terms.py: formula parsing, R-style names, checks, new-data designs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest

from poolcast.errors import FormulaError, InvalidParameterError, ModelSpecificationError
from poolcast.glmm.control import GlmmControl
from poolcast.glmm.terms import build_design, design_for_newdata, parse_formula, r_style_name


def _data(n_groups: int = 6, n_per: int = 5, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = n_groups * n_per
    return pl.DataFrame(
        {
            "y": rng.poisson(2.0, n),
            "x": rng.normal(size=n),
            "f": rng.choice(["b", "a", "c"], n),
            "g": [f"g{i}" for i in np.repeat(np.arange(n_groups), n_per)],
            "h": [f"h{i % 3}" for i in range(n)],
            "m": np.full(n, 5),
        }
    )


def test_r_style_names():
    assert r_style_name("Intercept") == "(Intercept)"
    assert r_style_name("period[T.2]") == "period2"
    assert r_style_name("lbase:trt[T.progabide]") == "lbase:trtprogabide"
    assert r_style_name("x") == "x"


def test_parse_formula_expands_nesting_and_double_bar():
    p = parse_formula("y ~ x + (1 | category/sku) + (1 + x || g)")
    assert p.fixed_rhs == "x"
    assert p.random == (("1", "category"), ("1", "category:sku"), ("1", "g"), ("0 + x", "g"))


def test_treatment_contrasts_first_level_baseline_and_theta_layout():
    d = build_design("y ~ x + f + (1 + x | g)", _data())
    assert d.fixef_names == ("(Intercept)", "x", "fb", "fc")
    (b,) = d.blocks
    assert b.term_names == ("(Intercept)", "x")
    assert d.theta_names == ("g.(Intercept)", "g.x.(Intercept)", "g.x")
    np.testing.assert_array_equal(d.theta_lower, [0.0, -np.inf, 0.0])
    np.testing.assert_array_equal(d.theta_start(), [1.0, 0.0, 1.0])
    lam = b.lambda_block(np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(lam, [[1.0, 0.0], [2.0, 3.0]])


def test_polars_and_pandas_give_the_same_design():
    data = _data()
    a = build_design("y ~ x + f + (1 | g)", data)
    b = build_design("y ~ x + f + (1 | g)", data.to_pandas())
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.blocks[0].level_index, b.blocks[0].level_index)


def test_cbind_response_gives_successes_and_trials():
    data = _data().with_columns(s=pl.col("y").clip(0, 5))
    d = build_design("cbind(s, m - s) ~ x + (1 | g)", data, family="binomial")
    np.testing.assert_array_equal(d.y, data["s"].to_numpy())
    np.testing.assert_array_equal(d.trials, np.full(len(data), 5.0))


def test_nested_and_crossed_blocks():
    d = build_design("y ~ x + (1 | h/g) + (1 | f)", _data())
    assert [b.factor for b in d.blocks] == ["h", "h:g", "f"]
    assert d.blocks[1].n_levels == len(set(zip(_data()["h"], _data()["g"], strict=True)))


def test_missing_column_names_it():
    with pytest.raises(FormulaError, match="'nope'"):
        build_design("y ~ x + nope + (1 | g)", _data())
    with pytest.raises(FormulaError, match="'grp'"):
        build_design("y ~ x + (1 | grp)", _data())


def test_grouping_factor_with_one_level():
    with pytest.raises(ModelSpecificationError, match=r"'one'.*1 level"):
        build_design("y ~ x + (1 | one)", _data().with_columns(one=pl.lit("z")))


def test_levels_not_fewer_than_observations():
    data = _data().with_columns(row=pl.int_range(pl.len()).cast(pl.String))
    with pytest.raises(ModelSpecificationError, match="'row'"):
        build_design("y ~ x + (1 | row)", data)
    ctrl = GlmmControl(check_n_levels="ignore", check_z_rank="ignore")
    d = build_design("y ~ x + (1 | row)", data, control=ctrl)
    assert d.blocks[0].n_levels == len(data)


def test_non_integer_counts_rejected():
    data = _data().with_columns(y=pl.col("y") + 0.5)
    with pytest.raises(InvalidParameterError, match=r"non-negative integer counts.*row 0"):
        build_design("y ~ x + (1 | g)", data, family="poisson")
    with pytest.raises(InvalidParameterError, match="negbin"):
        build_design("y ~ x + (1 | g)", data, family="negbin")


def test_binomial_outside_trials_rejected():
    data = _data().with_columns(y=pl.col("m") + 1)
    with pytest.raises(InvalidParameterError, match=r"\[0, trials\].*trials="):
        build_design("y ~ x + (1 | g)", data, family="binomial", trials="m")
    with pytest.raises(InvalidParameterError, match="trials"):
        build_design("y ~ x + (1 | g)", _data(), family="binomial")  # Bernoulli with counts > 1


def test_nan_in_used_column_named():
    data = _data().to_pandas()
    data.loc[3, "x"] = np.nan
    with pytest.raises(InvalidParameterError, match=r"column 'x'.*row 3"):
        build_design("y ~ x + (1 | g)", data)


def test_bad_offset_and_weights_arguments():
    with pytest.raises(InvalidParameterError, match="offset='zz'"):
        build_design("y ~ x + (1 | g)", _data(), offset="zz")
    with pytest.raises(InvalidParameterError, match="weights has length 2"):
        build_design("y ~ x + (1 | g)", _data(), weights=[1.0, 2.0])


def test_formula_without_random_term():
    with pytest.raises(FormulaError, match=r"\(1 \| group\)"):
        build_design("y ~ x", _data())


def test_design_for_newdata_matches_fit_and_flags_new_levels():
    data = _data()
    d = build_design("y ~ x + f + (1 + x | g)", data, offset="m")
    new = pd.DataFrame({"x": [0.5, -1.0], "f": ["c", "a"], "g": ["g2", "zzz"], "m": [1.0, 2.0]})
    nd = design_for_newdata(d, new)
    np.testing.assert_allclose(nd.X, [[1, 0.5, 0, 1], [1, -1.0, 0, 0]])
    np.testing.assert_array_equal(nd.offset, [1.0, 2.0])  # offset column reused
    assert nd.trials is None
    (blk,) = nd.blocks
    assert blk.factor == "g"
    np.testing.assert_array_equal(blk.level_index, [2, -1])
    np.testing.assert_allclose(blk.Z, [[1, 0.5], [1, -1.0]])
    # the same rows as in the fit rebuild the fitted matrices
    nd_fit = design_for_newdata(d, data)
    np.testing.assert_allclose(nd_fit.X, d.X)
    np.testing.assert_array_equal(nd_fit.blocks[0].level_index, d.blocks[0].level_index)


def test_design_for_newdata_binomial_trials():
    data = _data().with_columns(s=pl.col("y").clip(0, 5))
    d = build_design("cbind(s, m - s) ~ x + (1 | g)", data, family="binomial")
    nd = design_for_newdata(d, data.head(3))
    np.testing.assert_array_equal(nd.trials, [5.0, 5.0, 5.0])
    nd2 = design_for_newdata(d, data.head(2).drop("s"), trials=np.array([3.0, 4.0]))
    np.testing.assert_array_equal(nd2.trials, [3.0, 4.0])
    with pytest.raises(InvalidParameterError, match="trials="):
        design_for_newdata(d, data.head(2).drop("s"))


def test_more_random_effects_than_observations():
    data = _data(n_groups=10, n_per=3).with_columns(z=pl.col("x") ** 2)
    with pytest.raises(ModelSpecificationError, match="q = 30 coefficients for n = 30"):
        build_design("y ~ x + (1 + x + z | g)", data)
    d = build_design("y ~ x + (1 + x + z | g)", data, control=GlmmControl(check_z_rank="ignore"))
    assert d.n_theta == 6


def test_control_rejects_bad_levels():
    with pytest.raises(InvalidParameterError, match="check_z_rank='loud'"):
        GlmmControl(check_z_rank="loud")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match="pirls_tol"):
        GlmmControl(pirls_tol=-1.0)
