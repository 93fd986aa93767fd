"""The latent AR(1) term ``ar1(month + 0 | sku)`` reproduced against glmmTMB, and its projection.

``tests/reference/glmm/reference_ar1.json`` is written by
``tests/reference/glmm/make_ar1_reference.R`` (glmmTMB 1.1.5, Debian's r-cran-glmmtmb) on the
simulated panel ``ar1_sim.csv`` beside it (NB2 and Poisson, 150 SKUs x 30 months with ragged
starts) and on 100 SKUs of the bundled Online Retail panel (Poisson). Tolerances of issue 8:
fixed effects 1e-3, SEs 2%, variance parameters 2%, AR(1) correlation 0.02, log-likelihood 0.02.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from poolcast.errors import InvalidParameterError, ModelSpecificationError
from poolcast.glmm import build_design, fit, make_objective
from poolcast.glmm.ar1 import project_latent

HERE = Path(__file__).resolve()
REFERENCE = HERE.parents[2] / "reference" / "glmm" / "reference_ar1.json"
SIM = HERE.parents[2] / "reference" / "glmm" / "ar1_sim.csv"
EXAMPLE = HERE.parents[3] / "data" / "example" / "online_retail_sku_monthly.csv.gz"


def _sim() -> pl.DataFrame:
    return pl.read_csv(SIM)


def _online_retail() -> pl.DataFrame:
    """The R script's subset: first 100 StockCodes sold in all 24 months 2009-12..2011-11."""
    ol = pl.read_csv(EXAMPLE, schema_overrides={"StockCode": pl.String}).filter(
        pl.col("Month") < "2011-12"
    )
    counts = ol.group_by("StockCode", maintain_order=True).len().filter(pl.col("len") == 24)
    codes = counts.get_column("StockCode").head(100)
    ol = ol.filter(pl.col("StockCode").is_in(codes.implode()))
    year = pl.col("Month").str.slice(0, 4).cast(pl.Int32)
    month = pl.col("Month").str.slice(5, 2).cast(pl.Int32)
    return ol.with_columns(
        sku=pl.col("StockCode"),
        month=(year - 2009) * 12 + month - 11,
        x=(pl.col("ShopCustomers") / 1000).log(),
    )


CASES = {
    "sim_nb2_ar1": (_sim, "y_nb ~ x + ar1(month + 0 | sku)", "negbin"),
    "sim_poisson_ar1": (_sim, "y_pois ~ x + ar1(month + 0 | sku)", "poisson"),
    "online_retail_poisson_ar1": (_online_retail, "Lines ~ x + ar1(month + 0 | sku)", "poisson"),
}


@pytest.fixture(scope="module")
def references() -> dict:
    return json.loads(REFERENCE.read_text())


@pytest.fixture(scope="module")
def fits() -> dict:
    return {}


def _fit(key: str, fits: dict):
    if key not in fits:
        data, formula, family = CASES[key]
        fits[key] = fit(formula, data(), family=family)
    return fits[key]


@pytest.mark.parametrize("key", list(CASES))
def test_matches_glmmtmb(key, references, fits):
    ref = references[key]
    res = _fit(key, fits)
    assert res.converged, res.messages
    assert res.nobs == ref["nobs"]
    for name, value in ref["fixef"].items():
        assert res.fixef[name] == pytest.approx(value, abs=1e-3), name
        assert res.fixef_se[name] == pytest.approx(ref["fixef_se"][name], rel=0.02), name
    assert res.ar1.sigma == pytest.approx(ref["ar1_sd"], rel=0.02)
    assert res.sd["sku"]["month"] == pytest.approx(ref["ar1_sd"], rel=0.02)
    assert res.ar1.rho == pytest.approx(ref["ar1_rho"], abs=0.02)
    assert res.loglik == pytest.approx(ref["logLik"], abs=0.02)
    if ref["nb_theta"] is not None:
        assert res.nb_theta == pytest.approx(ref["nb_theta"], rel=0.02)


def test_gradient_matches_finite_differences():
    d = build_design("y_nb ~ x + ar1(month + 0 | sku)", _sim().head(600), family="negbin")
    ob = make_objective(d)
    x = np.array([0.7, 0.9, 0.9, 0.25, np.log(4.0)])

    def dev(x):
        return ob.deviance(x[:2], x[2:4], float(np.exp(x[4])))

    _, gt, gb, gp = ob.deviance_and_gradient(x[:2], x[2:4], 4.0)
    fd = np.array([(dev(x + e) - dev(x - e)) / 2e-5 for e in np.eye(5) * 1e-5])
    np.testing.assert_allclose(np.r_[gt, gb, gp], fd, rtol=1e-5, atol=1e-4)


def test_laplace_system_matches_dense_algebra():
    """log det H, H^{-1} r and Var(b | y) against the dense T x T matrices per SKU."""
    d = build_design("y_pois ~ x + ar1(month + 0 | sku)", _sim().head(300), family="poisson")
    ob = make_objective(d)
    theta = np.array([0.5, 0.6])
    pr = ob.mode(theta, np.array([1.0, 0.3]))
    G, T = ob.system.G, ob.system.T
    sigma, rho = 0.5, np.tanh(0.6)
    t = np.arange(T)
    lam = sigma * np.linalg.cholesky(rho ** np.abs(t[:, None] - t[None, :]))
    dcell = ob.system.cellsum(pr.h)  # (T, G)
    H = np.zeros((G * T, G * T))  # level-major
    for g in range(G):
        H[g * T : (g + 1) * T, g * T : (g + 1) * T] = lam.T @ np.diag(dcell[:, g]) @ lam + np.eye(T)
    assert pr.factor.logdet == pytest.approx(np.linalg.slogdet(H)[1], rel=1e-10)
    perm = (np.arange(T)[:, None] * G + np.arange(G)[None, :]).T.ravel()  # level-major -> u
    r = np.random.default_rng(0).normal(size=G * T)
    np.testing.assert_allclose(pr.factor.solve(r)[perm], np.linalg.solve(H, r[perm]), atol=1e-10)
    Hinv = np.linalg.inv(H)
    var_b = np.stack([np.diag(lam @ Hinv[g * T : (g + 1) * T, g * T : (g + 1) * T] @ lam.T)
                      for g in range(G)])  # fmt: skip
    np.testing.assert_allclose(pr.factor.cond_cov()[0], var_b, rtol=1e-8)
    b = ob.system.b_of_u(pr.u)  # (T, G)
    u_level_major = pr.u[perm].reshape(G, T)
    np.testing.assert_allclose(b.T, u_level_major @ lam.T, atol=1e-12)


def test_projection_decays_to_the_pooled_level(fits):
    """Draws h steps ahead: mean rho^h b_T and variance rho^2h V_T + sigma^2 (1 - rho^2h)."""
    res = _fit("sim_nb2_ar1", fits)
    a = res.ar1
    levels = np.array([0, 1, 2, -1])
    H = 24
    draws = project_latent(a, levels, H, 40_000, np.random.default_rng(7))
    h = np.arange(1, H + 1)
    last = a.n_times - 1
    m_t = np.r_[a.modes[levels[:3], last], 0.0]
    v_t = np.r_[a.cond_var[levels[:3], last], a.sigma**2]
    mean = (a.rho**h)[None, :] * m_t[:, None]
    var = (a.rho ** (2 * h))[None, :] * v_t[:, None] + a.sigma**2 * (1 - a.rho ** (2 * h))
    se = np.sqrt(var / draws.shape[2])
    assert np.all(np.abs(draws.mean(axis=2) - mean) < 5 * se)
    np.testing.assert_allclose(draws.var(axis=2), var, rtol=0.04)
    # far ahead: the pooled level with the prior variance
    assert np.all(np.abs(mean[:, -1]) < 0.01 + 0.01 * np.abs(m_t))
    np.testing.assert_allclose(var[:, -1], a.sigma**2, rtol=0.05)


def test_predict_and_simulate_ahead(fits):
    res = _fit("sim_nb2_ar1", fits)
    a = res.ar1
    last_month = a.time_max
    new = pl.DataFrame(
        {"sku": ["s001"] * 3 + ["new"], "month": [last_month, last_month + 1, last_month + 12,
                                                  last_month + 1], "x": [0.0] * 4}
    )  # fmt: skip
    mu = res.predict(new)
    b_t = a.modes[0, -1]
    beta0 = res.fixef["(Intercept)"]
    np.testing.assert_allclose(
        np.log(mu), beta0 + np.array([b_t, a.rho * b_t, a.rho**12 * b_t, 0.0]), rtol=1e-12
    )
    marg = res.predict(new, level="marginal")
    np.testing.assert_allclose(marg, np.exp(beta0 + a.sigma**2 / 2))
    draws = res.simulate(new, 4000, rng=np.random.default_rng(3))
    assert draws.shape == (4, 4000)
    assert np.all(draws >= 0)
    # a far horizon and a new SKU have the same pooled distribution (mean of the NB2 draws)
    far = draws[2].mean()
    pooled = np.exp(beta0 + a.sigma**2 / 2)
    assert abs(far - pooled) < 0.15 * pooled


def test_refusals():
    df = _sim().head(200)
    with pytest.raises(InvalidParameterError, match="Laplace approximation only"):
        fit("y_nb ~ x + ar1(month + 0 | sku)", df, family="poisson", method="agq", n_agq=5)
    with pytest.raises(ModelSpecificationError, match="combines ar1"):
        fit("y_nb ~ x + ar1(month + 0 | sku) + (1 | sku)", df, family="poisson")
    with pytest.raises(ModelSpecificationError, match="no intercept"):
        fit("y_nb ~ x + ar1(month | sku)", df, family="poisson")
    with pytest.raises(ModelSpecificationError, match="integer steps"):
        fit(
            "y_nb ~ x + ar1(t + 0 | sku)",
            df.with_columns(t=pl.col("month") / 2),
            family="poisson",
        )
    res = fit("y_pois ~ x + ar1(month + 0 | sku)", df, family="poisson")
    with pytest.raises(InvalidParameterError, match="before the fitted calendar"):
        res.predict(pl.DataFrame({"sku": ["s001"], "month": [0], "x": [0.0]}))
