"""Every lme4 / glmmTMB reference fit in ../shared/reference/glmm is reproduced.

Tolerances (issue 3): fixed effects 1e-3 absolute, their SEs 2% relative, random-effect SDs 2%
relative or 2e-3, correlations 0.02, Laplace log-likelihoods 0.02, NB2 size 2%. AGQ
log-likelihoods are on lme4's saturated-model scale and are not compared (SOURCE.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from poolcast.glmm import fit
from poolcast.glmm.objective import make_objective
from poolcast.glmm.terms import build_design

KEYS = [
    "cbpp_laplace",
    "cbpp_agq25",
    "grouseticks_laplace",
    "grouseticks_agq25",
    "epil_ri_laplace",
    "epil_rs_laplace",
    "salamanders_nb2",
]

# lme4's Nelder-Mead stopped a little short on grouseticks (its logLik is 0.0022 below the
# optimum, and at its own estimates our deviance is 0.0043 lower than lme4's, i.e. its PIRLS
# tolerance), which moves the intercept by 1.03e-3; see test_grouseticks_lme4_stopped_short.
FIXEF_TOL = {"grouseticks_laplace": 1.5e-3}


def _spec(ref: dict) -> dict:
    method = ref["method"]
    return {
        "formula": ref["formula"].split("  [")[0],
        "family": {"nbinom2": "negbin"}.get(ref["family"], ref["family"]),
        "method": "agq" if method.startswith("AGQ") else "laplace",
        "n_agq": int(method.split("=")[1]) if method.startswith("AGQ") else 1,
    }


@pytest.fixture(scope="module")
def fits(load_reference, glmm_references):
    out = {}
    for key in KEYS:
        ref = glmm_references[key]
        data = load_reference(ref["data"].removesuffix(".csv"))
        out[key] = fit(data=data, **_spec(ref))
    return out


def test_every_reference_entry_is_covered(glmm_references):
    assert sorted(glmm_references) == sorted(KEYS)


@pytest.mark.parametrize("key", KEYS)
def test_fixed_effects(fits, glmm_references, key):
    ref, res = glmm_references[key], fits[key]
    assert list(res.fixef) == list(ref["fixef"])
    tol = FIXEF_TOL.get(key, 1e-3)
    for name, value in ref["fixef"].items():
        assert res.fixef[name] == pytest.approx(value, abs=tol), name


@pytest.mark.parametrize("key", KEYS)
def test_fixed_effect_standard_errors(fits, glmm_references, key):
    ref, res = glmm_references[key], fits[key]
    for name, value in ref["fixef_se"].items():
        assert res.fixef_se[name] == pytest.approx(value, rel=0.02), name


@pytest.mark.parametrize("key", KEYS)
def test_random_effect_sds_and_correlations(fits, glmm_references, key):
    ref, res = glmm_references[key], fits[key]
    for factor, vc in ref["varcorr"].items():
        for term, value in vc["sd"].items():
            got = res.sd[factor][term]
            assert abs(got - value) <= max(0.02 * value, 2e-3), (factor, term)
        np.testing.assert_allclose(res.corr[factor], vc["corr"], atol=0.02)


@pytest.mark.parametrize("key", [k for k in KEYS if "agq" not in k])
def test_laplace_loglik(fits, glmm_references, key):
    assert fits[key].loglik == pytest.approx(glmm_references[key]["logLik"], abs=0.02)


def test_nb2_size(fits, glmm_references):
    ref = glmm_references["salamanders_nb2"]
    assert fits["salamanders_nb2"].theta == pytest.approx(ref["nb_theta"], rel=0.02)
    assert fits["cbpp_laplace"].theta is None


@pytest.mark.parametrize("key", KEYS)
def test_reference_fits_converged(fits, key):
    res = fits[key]
    assert res.converged
    assert res.diagnostics["hessian_pd"]
    assert not res.diagnostics["singular"]


def test_agq_differs_from_laplace_in_the_direction_lme4_found(fits):
    # lme4: AGQ-25 cbpp SD 0.6475 > Laplace 0.6421; intercept -1.3992 < -1.3983
    assert (
        fits["cbpp_agq25"].sd["herd"]["(Intercept)"]
        > fits["cbpp_laplace"].sd["herd"]["(Intercept)"]
    )
    assert fits["cbpp_agq25"].fixef["(Intercept)"] < fits["cbpp_laplace"].fixef["(Intercept)"]


def test_grouseticks_lme4_stopped_short(load_reference, glmm_references, fits):
    """Our deviance at lme4's own estimates is within 0.005 of lme4's, and our optimum is higher."""
    ref = glmm_references["grouseticks_laplace"]
    data = load_reference("grouseticks")
    design = build_design(_spec(ref)["formula"], data, family="poisson")
    objective = make_objective(design)
    theta = np.array([ref["varcorr"]["LOCATION"]["sd"]["(Intercept)"]])
    dev = objective.deviance(theta, np.array(list(ref["fixef"].values())))
    assert -0.5 * dev == pytest.approx(ref["logLik"], abs=0.005)
    assert fits["grouseticks_laplace"].loglik > ref["logLik"]


@pytest.mark.parametrize("key", ["cbpp_agq25", "grouseticks_agq25"])
def test_agq_loglik_equals_lme4_plus_the_saturated_model(fits, glmm_references, key):
    """lme4's nAGQ > 1 log-likelihood drops the saturated model's; ours keeps every constant."""
    from scipy import stats

    res = fits[key]
    d = res.design
    if d.family == "binomial":
        saturated = stats.binom.logpmf(d.y, d.trials, d.y / d.trials).sum()
    else:
        saturated = stats.poisson.logpmf(d.y, d.y).sum()
    assert res.loglik == pytest.approx(glmm_references[key]["logLik"] + saturated, abs=0.02)
