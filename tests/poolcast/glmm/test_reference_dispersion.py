"""The NB2 dispersion model (glmmTMB's ``dispformula``) reproduced against glmmTMB, and its use.

``tests/reference/glmm/reference_dispersion.json`` is written by
``tests/reference/glmm/make_dispersion_reference.R`` (glmmTMB 1.1.5, Debian's r-cran-glmmtmb)
on the simulated panel ``dispersion_sim.csv`` beside it: 200 SKUs x 36 months in 4 volatility
classes (NB2 sizes 40, 12, 4, 1.5), a random intercept, and a latent AR(1) level on the same
rows. Tolerances of issue 8: fixed effects 1e-3, SEs 2%, variance parameters 2%, AR(1)
correlation 0.02, log-likelihood 0.02; dispersion coefficients 2% or 1e-3 absolute.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from poolcast.errors import FormulaError, InvalidParameterError, SingularFitWarning
from poolcast.glmm import build_design, fit, make_objective

HERE = Path(__file__).resolve()
REFERENCE = HERE.parents[2] / "reference" / "glmm" / "reference_dispersion.json"
SIM = HERE.parents[2] / "reference" / "glmm" / "dispersion_sim.csv"

CASES = {
    "sim_nb2_ri_disp_class": ("y ~ x + (1 | sku)", "~ disp_class"),
    "sim_nb2_ri_disp_class_x": ("y ~ x + (1 | sku)", "~ disp_class + x"),
    "sim_nb2_ar1_disp_class": ("y_ar ~ x + ar1(month + 0 | sku)", "~ disp_class"),
}


def _sim() -> pl.DataFrame:
    return pl.read_csv(SIM)


@pytest.fixture(scope="module")
def references() -> dict:
    return json.loads(REFERENCE.read_text())


@pytest.fixture(scope="module")
def fits() -> dict:
    return {}


def _fit(key: str, fits: dict):
    if key not in fits:
        formula, dispformula = CASES[key]
        fits[key] = fit(formula, _sim(), family="negbin", dispformula=dispformula)
    return fits[key]


@pytest.mark.parametrize("key", list(CASES))
def test_matches_glmmtmb(key, references, fits):
    ref = references[key]
    res = _fit(key, fits)
    assert res.converged, res.messages
    assert res.nobs == ref["nobs"]
    assert res.nb_theta is None
    for name, value in ref["fixef"].items():
        assert res.fixef[name] == pytest.approx(value, abs=1e-3), name
        assert res.fixef_se[name] == pytest.approx(ref["fixef_se"][name], rel=0.02), name
    assert list(res.disp_coef) == list(ref["disp_coef"])
    for name, value in ref["disp_coef"].items():
        assert res.disp_coef[name] == pytest.approx(value, rel=0.02, abs=1e-3), name
        assert res.disp_coef_se[name] == pytest.approx(ref["disp_coef_se"][name], rel=0.02), name
    if res.ar1 is not None:
        assert res.ar1.sigma == pytest.approx(ref["sd"], rel=0.02)
        assert res.ar1.rho == pytest.approx(ref["ar1_rho"], abs=0.02)
    else:
        assert res.sd["sku"]["(Intercept)"] == pytest.approx(ref["sd"], rel=0.02)
    assert res.loglik == pytest.approx(ref["logLik"], abs=0.02)


@pytest.mark.parametrize(
    "formula",
    ["y ~ x + (1 | sku)", "y ~ x + (1 | sku) + (1 | month)", "y_ar ~ x + ar1(month + 0 | sku)"],
    ids=["one-factor", "two-factors", "ar1"],
)
def test_gradient_matches_finite_differences(formula):
    """The exact gradient over (theta, beta, gamma) on the three Laplace paths."""
    data = _sim().filter(pl.col("sku").str.slice(1).cast(pl.Int32) % 10 < 2)
    d = build_design(formula, data, family="negbin", dispformula="~ disp_class + x")
    ob = make_objective(d)
    nt = d.n_theta
    x = np.r_[np.full(nt, 0.6), 1.4, 0.3, 2.5, -1.0, -2.0, -3.0, 0.1]

    def dev(x):
        return ob.deviance(x[:nt], x[nt : nt + 2], x[nt + 2 :])

    _, gt, gb, gd = ob.deviance_and_gradient(x[:nt], x[nt : nt + 2], x[nt + 2 :])
    fd = np.array([(dev(x + e) - dev(x - e)) / 2e-5 for e in np.eye(len(x)) * 1e-5])
    np.testing.assert_allclose(np.r_[gt, gb, gd], fd, rtol=1e-5, atol=1e-4)


def test_intercept_only_dispformula_is_the_scalar_model():
    data = _sim().filter(pl.col("sku").str.slice(1).cast(pl.Int32) < 60)
    scalar = fit("y ~ x + (1 | sku)", data, family="negbin")
    one = fit("y ~ x + (1 | sku)", data, family="negbin", dispformula="~ 1")
    assert one.loglik == pytest.approx(scalar.loglik, abs=1e-6)
    assert np.exp(one.disp_coef["(Intercept)"]) == pytest.approx(scalar.nb_theta, rel=1e-4)
    np.testing.assert_allclose(one.beta, scalar.beta, atol=1e-6)
    np.testing.assert_allclose(one.nb_size(), scalar.nb_theta, rtol=1e-4)


def test_simulate_uses_the_size_of_each_new_row(fits):
    res = _fit("sim_nb2_ri_disp_class", fits)
    new = pl.DataFrame({"sku": ["new1", "new2"], "x": [0.0, 0.0], "disp_class": ["a", "d"]})
    sizes = res.nb_size(new)
    gamma = res.disp_coef
    assert sizes[0] == pytest.approx(np.exp(gamma["(Intercept)"]))
    assert sizes[1] == pytest.approx(np.exp(gamma["(Intercept)"] + gamma["disp_classd"]))
    # same mean, the volatile class's draws spread far more (random intercept drawn as well)
    known = pl.DataFrame({"sku": ["s001", "s001"], "x": [0.0, 0.0], "disp_class": ["a", "d"]})
    draws = res.simulate(known, 20_000, rng=np.random.default_rng(3))
    mu = res.predict(known)
    assert draws.mean(axis=1) == pytest.approx(mu, rel=0.05)
    var_nb = mu + mu**2 / sizes  # conditional NB2 variance; the mode's uncertainty adds a little
    assert draws.var(axis=1) == pytest.approx(var_nb, rel=0.15)


def test_simulate_ar1_uses_the_size_of_each_new_row(fits):
    res = _fit("sim_nb2_ar1_disp_class", fits)
    new = pl.DataFrame(
        {"sku": ["s001", "s001"], "month": [37, 37], "x": [0.0, 0.0], "disp_class": ["a", "d"]}
    )
    draws = res.simulate(new, 20_000, rng=np.random.default_rng(4))
    # both rows share the SKU's projected latent path (same mean); only the NB2 noise differs:
    # Var - E = Var(mu) + E[mu^2] / size, and class d's size is ~30x smaller than class a's
    m = draws.mean(axis=1)
    assert m[1] == pytest.approx(m[0], rel=0.05)
    assert draws[1].var() - m[1] > 5 * (draws[0].var() - m[0])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"family": "poisson"}, InvalidParameterError, "dispformula.*negbin"),
        ({"family": "gamma"}, InvalidParameterError, "dispformula.*negbin"),
        ({"family": "truncated_negbin"}, InvalidParameterError, "dispformula.*negbin"),
        ({"method": "agq", "n_agq": 5}, InvalidParameterError, "dispformula.*laplace"),
        ({"dispformula": "~ disp_class + (1 | sku)"}, FormulaError, "fixed effects only"),
        ({"dispformula": "disp_class"}, FormulaError, "one-sided"),
        ({"dispformula": "~ volatility"}, FormulaError, "volatility"),
        ({"dispformula": 3}, InvalidParameterError, "dispformula"),
    ],
)
def test_refuses_what_it_does_not_support(kwargs, error, match):
    data = _sim().head(720).with_columns(pl.col("y") + 1)
    args = {"family": "negbin", "dispformula": "~ disp_class", **kwargs}
    with pytest.raises(error, match=match):
        fit("y ~ x + (1 | sku)", data, **args)


def test_newdata_needs_the_dispformula_columns(fits):
    res = _fit("sim_nb2_ri_disp_class", fits)
    with pytest.raises(FormulaError, match="dispformula"):
        res.simulate(pl.DataFrame({"sku": ["s001"], "x": [0.0]}), 5, rng=np.random.default_rng(0))


def test_cell_means_coding_is_the_same_model_with_each_class_size_bounded(fits):
    """``~ 0 + disp_class`` (R's names ``disp_classa``...) reparametrises ``~ disp_class``;
    a class without overdispersion stops at the size bound as a boundary, not a failure."""
    res = _fit("sim_nb2_ri_disp_class", fits)
    cells = fit("y ~ x + (1 | sku)", _sim(), family="negbin", dispformula="~ 0 + disp_class")
    assert cells.loglik == pytest.approx(res.loglik, abs=1e-4)
    base = res.disp_coef["(Intercept)"]
    assert cells.disp_coef["disp_classa"] == pytest.approx(base, abs=1e-3)
    assert cells.disp_coef["disp_classd"] == pytest.approx(
        base + res.disp_coef["disp_classd"], abs=1e-3
    )
    rng = np.random.default_rng(12)  # a seed whose Poisson class runs to the boundary
    g = np.repeat(np.arange(80), 30)
    x = rng.normal(size=g.size)
    mu = np.exp(1.5 + 0.3 * x + rng.normal(0, 0.5, 80)[g])
    calm = g < 40  # Poisson rows: no overdispersion beyond the random intercept
    y = np.where(calm, rng.poisson(mu), rng.negative_binomial(2.0, 2.0 / (2.0 + mu)))
    data = pl.DataFrame(
        {"y": y, "x": x, "sku": [f"g{i}" for i in g], "cls": np.where(calm, "calm", "wild")}
    )
    with pytest.warns(SingularFitWarning, match="clscalm"):
        bounded = fit("y ~ x + (1 | sku)", data, family="negbin", dispformula="~ 0 + cls")
    assert bounded.converged, bounded.messages
    assert bounded.disp_coef["clscalm"] > np.log(1e6)
    assert np.isnan(bounded.disp_coef_se["clscalm"])
    assert bounded.disp_coef["clswild"] == pytest.approx(np.log(2.0), abs=0.3)
    assert np.isfinite(bounded.disp_coef_se["clswild"])
