"""The Rossmann NB2 GLMM that once diverged, reproduced against glmmTMB.

Rossmann cut at 2015-04, origin 2014-09, horizon 1, the ``glmm_nb2_ri`` candidate's design
(euros, 11 covariates). Our PIRLS once ran random effects to 7e4 on it because the NB2
log-likelihood used a clamped mean; ``reference_rossmann_nb2.json`` is glmmTMB 1.1.5's fit of
the same frame, written by ``tests/reference/glmm/make_rossmann_nb2_reference.py``.
Tolerances as for the other reference fits: fixed effects 1e-3, SEs 2%, variance parameters
2%, log-likelihood 0.02.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from poolcast.glmm import fit

REF_DIR = Path(__file__).resolve().parents[2] / "reference" / "glmm"


def _builder():
    spec = importlib.util.spec_from_file_location(
        "make_rossmann_nb2_reference", REF_DIR / "make_rossmann_nb2_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.rossmann_nb2_frame


@pytest.fixture(scope="module")
def fitted(shared_data_dir):
    formula, frame = _builder()(shared_data_dir)
    ref = json.loads((REF_DIR / "reference_rossmann_nb2.json").read_text())
    assert formula == ref["formula"] and frame.height == ref["n_obs"]
    return fit(formula, frame, family="negbin"), ref


def test_the_fit_converges_with_finite_modes(fitted):
    res, _ = fitted
    assert res.converged and np.isfinite(res.loglik)
    re = res.ranef["sku"]
    assert np.all(np.isfinite(re.get_column("cond_sd").to_numpy()))
    # a store's level differs from the pooled one by far less than e^5
    assert np.abs(re.get_column(re.columns[2]).to_numpy()).max() < 5


def test_matches_glmmtmb(fitted):
    res, ref = fitted
    assert list(res.fixef) == list(ref["fixef"])
    for name, value in ref["fixef"].items():
        assert res.fixef[name] == pytest.approx(value, abs=1e-3), name
        assert res.fixef_se[name] == pytest.approx(ref["fixef_se"][name], rel=0.02), name
    assert res.sd["sku"]["(Intercept)"] == pytest.approx(ref["sd_sku"], rel=0.02)
    assert res.nb_theta == pytest.approx(ref["nb_theta"], rel=0.02)
    assert res.loglik == pytest.approx(ref["logLik"], abs=0.02)
