"""Tests of poolcast/glmm/fit.py: invariances, sugar, several factors, argument checks."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from poolcast.errors import InvalidParameterError
from poolcast.glmm import fit
from tests.poolcast.glmm._panels import simulate_panel


def test_weights_equal_duplicated_rows():
    data = simulate_panel(n_groups=20, seed=6)
    w = np.where(data["row"].to_numpy() % 3 == 0, 2.0, 1.0)
    dup = pl.concat([data, data.filter(pl.col("row") % 3 == 0)])
    a = fit("y ~ x + (1 | g)", data, weights=w)
    b = fit("y ~ x + (1 | g)", dup)
    assert a.fixef == pytest.approx(b.fixef, abs=1e-6)
    assert a.sd["g"]["(Intercept)"] == pytest.approx(b.sd["g"]["(Intercept)"], abs=1e-6)
    assert a.loglik == pytest.approx(b.loglik, abs=1e-6)


def test_cbind_equals_trials_argument():
    data = simulate_panel(family="binomial", n_groups=25, seed=7)
    a = fit("cbind(y, m - y) ~ x + (1 | g)", data, family="binomial")
    b = fit("y ~ x + (1 | g)", data, family="binomial", trials="m")
    assert a.fixef == pytest.approx(b.fixef, abs=1e-8)
    assert a.loglik == pytest.approx(b.loglik, abs=1e-8)
    np.testing.assert_array_equal(a.trials, np.full(250, 6.0))


def test_agq_with_one_node_is_laplace():
    data = simulate_panel(n_groups=20, seed=9)
    a = fit("y ~ x + (1 | g)", data, method="agq", n_agq=1)
    b = fit("y ~ x + (1 | g)", data)
    assert a.fixef == pytest.approx(b.fixef, abs=1e-8)


@pytest.mark.filterwarnings("ignore::poolcast.errors.SingularFitWarning")
def test_offset_column_and_array_agree_and_recover_exposure():
    rng = np.random.default_rng(1)
    data = simulate_panel(seed=10)
    expo = rng.uniform(0.5, 3.0, data.height)
    y = rng.poisson(expo * np.exp(0.2 + 0.3 * data["x"].to_numpy()))
    data = data.with_columns(y=pl.Series(y), log_expo=np.log(expo))
    a = fit("y ~ x + (1 | g)", data, offset="log_expo")
    b = fit("y ~ x + (1 | g)", data, offset=np.log(expo))
    assert a.fixef == pytest.approx(b.fixef, abs=1e-10)
    assert a.fixef["x"] == pytest.approx(0.3, abs=0.05)


def test_crossed_factors_recover_the_truth():
    rng = np.random.default_rng(12)
    A, B, reps = 30, 20, 2
    a = np.repeat(np.arange(A), B * reps)
    b = np.tile(np.repeat(np.arange(B), reps), A)
    ua, ub = rng.normal(0, 0.5, A), rng.normal(0, 0.3, B)
    x = rng.normal(size=a.size)
    y = rng.poisson(np.exp(0.8 + 0.4 * x + ua[a] + ub[b]))
    data = pl.DataFrame({"y": y, "x": x, "a": a.astype(str), "b": b.astype(str)})
    res = fit("y ~ x + (1 | a) + (1 | b)", data)
    assert res.converged
    assert res.fixef["x"] == pytest.approx(0.4, abs=0.05)
    assert res.sd["a"]["(Intercept)"] == pytest.approx(0.5, rel=0.35)
    assert res.sd["b"]["(Intercept)"] == pytest.approx(0.3, rel=0.4)
    assert res.ranef["b"].height == B
    # sparse path conditional variances are the diagonal of the joint H^{-1} blocks: positive
    assert np.all(res.b_cond_cov["a"] > 0) and np.all(res.b_cond_cov["b"] > 0)


def test_nested_factors():
    rng = np.random.default_rng(13)
    C, S, T = 8, 12, 6
    cat = np.repeat(np.arange(C), S * T)
    sku = np.repeat(np.arange(C * S), T)
    uc, us = rng.normal(0, 0.6, C), rng.normal(0, 0.4, C * S)
    y = rng.poisson(np.exp(1.0 + uc[cat] + us[sku]))
    data = pl.DataFrame({"y": y, "category": cat.astype(str), "sku": (sku % S).astype(str)})
    res = fit("y ~ 1 + (1 | category) + (1 | category:sku)", data)
    assert set(res.sd) == {"category", "category:sku"}
    assert res.ranef["category:sku"].height == C * S
    assert res.sd["category:sku"]["(Intercept)"] == pytest.approx(0.4, rel=0.3)
    same = fit("y ~ 1 + (1 | category/sku)", data)
    assert same.loglik == pytest.approx(res.loglik, abs=1e-6)


def test_argument_checks():
    data = simulate_panel(n_groups=10, n_per=5)
    with pytest.raises(InvalidParameterError, match="method='bayes'"):
        fit("y ~ x + (1 | g)", data, method="bayes")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match="n_agq=1"):
        fit("y ~ x + (1 | g)", data, n_agq=5)
    with pytest.raises(InvalidParameterError, match="family='gaussian'"):
        fit("y ~ x + (1 | g)", data, family="gaussian")  # type: ignore[arg-type]


def test_row_order_does_not_matter():
    data = simulate_panel(rho=0.3, seed=14)
    shuffled = data.sample(fraction=1.0, shuffle=True, seed=3)
    a = fit("y ~ x + (1 + x | g)", data)
    b = fit("y ~ x + (1 + x | g)", shuffled)
    assert a.fixef == pytest.approx(b.fixef, abs=1e-7)
    assert a.corr["g"][0] == pytest.approx(b.corr["g"][0], abs=1e-6)
    ra = a.ranef["g"].sort(["level", "term"])
    rb = b.ranef["g"].sort(["level", "term"])
    np.testing.assert_allclose(ra["mode"].to_numpy(), rb["mode"].to_numpy(), atol=1e-6)


@pytest.mark.parametrize(
    ("family", "formula"),
    [("poisson", "y ~ x + (1 + x | g)"), ("negbin", "y ~ x + (1 | g)")],
)
def test_a_warm_start_reaches_the_cold_start_optimum(family, formula):
    # start the fit of one panel from the estimates of another panel of the same model
    # (as a candidate's horizon h+1 from horizon h): only the optimiser's path may change
    other = fit(formula, simulate_panel(n_groups=40, family=family, seed=11), family=family)
    data = simulate_panel(n_groups=40, family=family, seed=12)
    opt = other.opt_summary
    start = {"theta": opt.theta, "beta": opt.beta, "nb_theta": opt.nb_theta}
    cold = fit(formula, data, family=family)
    warm = fit(formula, data, family=family, start=start)
    assert warm.opt_summary.x0[: len(opt.theta)] == pytest.approx(opt.theta)  # start was used
    assert warm.loglik == pytest.approx(cold.loglik, abs=1e-6)
    assert warm.fixef == pytest.approx(cold.fixef, abs=1e-4)
    assert warm.fixef_se == pytest.approx(cold.fixef_se, rel=1e-3)
    for term, sd in cold.sd["g"].items():
        assert warm.sd["g"][term] == pytest.approx(sd, abs=1e-4)
    if family == "negbin":
        assert warm.theta == pytest.approx(cold.theta, rel=1e-3)


def test_start_rejects_unknown_keys():
    with pytest.raises(InvalidParameterError, match="unknown key"):
        fit("y ~ x + (1 | g)", simulate_panel(n_groups=10, seed=2), start={"sigma": 1.0})
