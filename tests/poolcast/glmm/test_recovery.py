"""Parameter recovery: fit panels simulated from a known truth and check the estimates cover it.

The truth is the benchmark's model at a smaller size: ``y ~ t + log_customers + promo +
(1 + promo | sku)`` with correlated random intercepts and promo slopes, Poisson and NB2.
Tolerances: fixed effects within 3.5 standard errors, random-effect SDs within 15%, the
correlation within 0.25 and the NB2 size theta within 20%. At 400 SKUs x 24 months, over eight
replicate panels (seeds 100-107, not the test's), the estimates scattered with SDs of about 3%
(intercept SD), 4-5% (promo SD), 0.04-0.09 (correlation) and 3% (theta) around the truth, so
every bound sits at three or more sampling SDs.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from poolcast.glmm import fit

FORMULA = "y ~ t + log_customers + promo + (1 + promo | sku)"
BETA = {"(Intercept)": -0.3, "t": 0.1, "log_customers": 0.6, "promo": 0.5}
SD = {"(Intercept)": 0.6, "promo": 0.35}
CORR = 0.4
THETA = 5.0


def _panel(family: str, *, n_skus: int, n_months: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    sku = np.repeat(np.arange(n_skus), n_months)
    t = np.tile(np.arange(n_months), n_skus) / 12.0
    log_customers = 2.5 + rng.normal(0.0, 0.5, n_skus)[sku] + rng.normal(0.0, 0.2, sku.shape[0])
    promo = (rng.random(sku.shape[0]) < 0.3).astype(np.int64)
    c = CORR * SD["(Intercept)"] * SD["promo"]
    cov = np.array([[SD["(Intercept)"] ** 2, c], [c, SD["promo"] ** 2]])
    b = rng.multivariate_normal(np.zeros(2), cov, size=n_skus)
    eta = (
        BETA["(Intercept)"]
        + BETA["t"] * t
        + BETA["log_customers"] * log_customers
        + BETA["promo"] * promo
        + b[sku, 0]
        + b[sku, 1] * promo
    )
    mu = np.exp(eta)
    if family == "negbin":
        mu = rng.gamma(THETA, mu / THETA)
    return pl.DataFrame(
        {
            "y": rng.poisson(mu),
            "t": t,
            "log_customers": log_customers,
            "promo": promo,
            "sku": [f"s{i:04d}" for i in sku],
        }
    )


def _check_recovery(res) -> None:
    for name, truth in BETA.items():
        z = (res.fixef[name] - truth) / res.fixef_se[name]
        assert abs(z) < 3.5, f"{name}: estimate {res.fixef[name]:.4f}, truth {truth}, z = {z:.2f}"
    for term, truth in SD.items():
        assert res.sd["sku"][term] == pytest.approx(truth, rel=0.15), term
    assert float(np.ravel(res.corr["sku"])[0]) == pytest.approx(CORR, abs=0.25)


def test_poisson_recovers_fixef_and_correlated_random_effects():
    data = _panel("poisson", n_skus=400, n_months=24, seed=41)
    res = fit(FORMULA, data, family="poisson")
    assert res.converged
    assert res.theta is None
    _check_recovery(res)


def test_negbin_recovers_fixef_random_effects_and_theta():
    data = _panel("negbin", n_skus=400, n_months=24, seed=42)
    res = fit(FORMULA, data, family="negbin")
    assert res.converged
    _check_recovery(res)
    assert res.theta == pytest.approx(THETA, rel=0.2)
