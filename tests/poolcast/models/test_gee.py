"""GEE candidates against statsmodels' GEE fitted directly."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import statsmodels.api as sm
from statsmodels.genmod import cov_struct

from poolcast.models import GeePoissonAR1, GeePoissonExchangeable
from tests.poolcast.models._frames import simulate_feature_frame, split_last_month

COVARIATES = ["t", "fourier_s1", "fourier_c1", "fourier_s2", "fourier_c2", "promo"]


@pytest.fixture(scope="module")
def panel():
    sim = simulate_feature_frame(
        n_sku=60, n_months=30, horizons=(1, 2), sd_sku=0.5, alpha=0.3, promo_rate=0.3, seed=21
    )
    return split_last_month(sim.frame)


def _reference(train: pl.DataFrame, structure) -> object:
    tr = train.sort("sku", "month")
    x = sm.add_constant(tr.select(COVARIATES).to_numpy().astype(float))
    groups = tr.get_column("sku").to_numpy()
    return sm.GEE(
        tr.get_column("sales").to_numpy(),
        x,
        groups=groups,
        family=sm.families.Poisson(),
        cov_struct=structure,
    ).fit()


@pytest.mark.parametrize(
    ("cls", "structure"),
    [
        (GeePoissonExchangeable, cov_struct.Exchangeable),
        (GeePoissonAR1, lambda: cov_struct.Autoregressive(grid=True)),
    ],
)
@pytest.mark.parametrize("solver", ["numpy", "statsmodels"])
def test_gee_matches_statsmodels(panel, cls, structure, solver):
    train, rows = panel
    est = cls(solver=solver).fit(train)
    report = est.describe()
    for h in (1, 2):
        ref = _reference(train.filter(pl.col("horizon") == h), structure())
        coefs = report.coefficients.filter(pl.col("horizon") == h)
        est_by_term = dict(zip(coefs["term"], coefs["estimate"], strict=True))
        se_by_term = dict(zip(coefs["term"], coefs["std_error"], strict=True))
        for j, name in enumerate(COVARIATES, start=1):
            assert est_by_term[name] == pytest.approx(ref.params[j], abs=1e-7)
            assert se_by_term[name] == pytest.approx(ref.bse[j], rel=1e-5)  # robust (sandwich) SEs
        rho = report.convergence[f"h={h}"]["working_correlation"][0]
        assert rho == pytest.approx(float(np.atleast_1d(ref.cov_struct.dep_params)[0]), abs=1e-7)
        # predictive mean = statsmodels' marginal mean on the forecast rows
        rh = rows.filter(pl.col("horizon") == h)
        fc = est.predict_distribution(
            rh, quantiles=(0.5,), n_samples=2, rng=np.random.default_rng(0)
        )
        xr = sm.add_constant(rh.select(COVARIATES).to_numpy().astype(float), has_constant="add")
        np.testing.assert_allclose(fc.mean, ref.predict(exog=xr), rtol=1e-6)


def test_quasi_poisson_draws_have_variance_phi_mu(panel):
    train, rows = panel
    est = GeePoissonExchangeable().fit(train)
    phi = est.describe().convergence["h=1"]["quasi_poisson_phi"]
    # Pearson dispersion, recomputed from statsmodels' fit
    tr = train.filter(pl.col("horizon") == 1)
    ref = _reference(tr, cov_struct.Exchangeable())
    y = tr.sort("sku", "month").get_column("sales").to_numpy()
    mu = ref.fittedvalues
    assert phi == pytest.approx(np.sum((y - mu) ** 2 / mu) / (y.size - len(ref.params)), rel=1e-6)
    assert phi > 1.5  # SKU heterogeneity + NB noise: overdispersed
    rh = rows.filter(pl.col("horizon") == 1).head(5)
    fc = est.predict_distribution(
        rh, quantiles=(0.5,), n_samples=40_000, rng=np.random.default_rng(1)
    )
    np.testing.assert_allclose(fc.samples.mean(axis=1), fc.mean, rtol=0.03)
    np.testing.assert_allclose(fc.samples.var(axis=1), phi * fc.mean, rtol=0.08)


def test_a_diverging_gee_stops_with_its_reason_not_a_linear_algebra_error():
    """A start where the fitted means are e^-30 against counts near 100: the first
    Fisher-scoring step is about (y - mu) / mu ~ 1e15 on the log scale (closed form), so the
    solver must stop with GeeDivergedError naming the iteration, not run on into inf/NaN and
    fail inside scipy ("array must not contain infs or NaNs", as on Rossmann)."""
    from poolcast.models._gee_solver import GeeDivergedError, fit_gee_poisson

    rng = np.random.default_rng(0)
    n_groups, n_time = 20, 6
    g = np.repeat(np.arange(n_groups), n_time)
    x = np.column_stack([np.ones(g.size), rng.normal(size=g.size)])
    y = rng.poisson(100.0, g.size).astype(float)
    with pytest.raises(GeeDivergedError, match="diverged at iteration 1"):
        fit_gee_poisson(y, x, g, corr="ar1", start=np.array([-30.0, 0.0]))
    # from a sane start the same rows fit (intercept log(mean y), closed form for x ~ noise)
    res = fit_gee_poisson(y, x, g, corr="ar1", start=np.array([np.log(y.mean()), 0.0]))
    assert res.beta[0] == pytest.approx(np.log(y.mean()), abs=0.05)
