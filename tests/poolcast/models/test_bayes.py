"""Bayesian hierarchical GLMM candidate (``poolcast.models.bayes``).

Fast tests check the pieces that need no sampler against theory: the diagnostics gate, the
leaderboard's ``ineligible`` status, posterior-predictive draws from hand-made posteriors.
Two small sampled fits (nutpie compiles each model with numba, tens of seconds, so they are
marked slow and shared by module fixtures) check truth recovery, agreement with the Laplace
GLMM, the gate on a real fit, forecasts for new SKUs and categories, and the pickled model.
"""

from __future__ import annotations

import pickle

import numpy as np
import polars as pl
import pytest

from poolcast.backtest import CandidateBacktest, build_leaderboard, select_champion
from poolcast.models import default_candidates, make_candidate
from poolcast.models._bayes_core import (
    CENTRED_MIN_ROWS_PER_SKU,
    CENTRED_MIN_SKUS_PER_CATEGORY,
    INTERCEPT_CENTRED_MAX_POOLING,
    SLOPE_CENTRED_MAX_POOLING,
    HierData,
    Posterior,
    _slope_column,
    _working_weights,
    build_model,
    choose_parameterization,
    choose_sku_slope_form,
    fit_posterior,
    fixed_effects_rotation,
    ineligibility,
    resolve_parameterization,
)
from poolcast.models._design import CovariateSpec
from poolcast.models.bayes import BayesNegBinHierarchical, _BayesModel
from poolcast.simulate import simulate_panel

# ----------------------------------------------------------------------------- gate


def _diag(**kw: float) -> dict[str, float]:
    base = {
        "rhat_max": 1.001,
        "ess_bulk_min": 800.0,
        "ess_tail_min": 700.0,
        "divergences": 0.0,
        "bfmi_min": 0.9,
    }
    return base | kw


def test_gate_thresholds_of_the_issue() -> None:
    assert ineligibility(_diag(), method="nuts") is None
    assert "rhat_max" in ineligibility(_diag(rhat_max=1.02), method="nuts")
    assert ineligibility(_diag(rhat_max=1.0099), method="nuts") is None
    assert "ess_bulk_min" in ineligibility(_diag(ess_bulk_min=399.0), method="nuts")
    assert "divergences=1" in ineligibility(_diag(divergences=1.0), method="nuts")
    # NaN R-hat (sampler broke) is not a pass
    assert ineligibility(_diag(rhat_max=float("nan")), method="nuts") is not None
    # ADVI has no chains to compare: labelled approximate, not gated
    assert ineligibility(_diag(rhat_max=float("nan")), method="advi") is None


def _result(name: str, score: float) -> CandidateBacktest:
    metrics = {"scaled_pinball": score, "mase": score}
    return CandidateBacktest(
        name, pl.DataFrame(), metrics, pl.DataFrame(), pl.DataFrame(), 1.0, 0.1, (0.5,)
    )


def test_ineligible_row_keeps_metrics_and_cannot_be_champion() -> None:
    board = build_leaderboard(
        [_result("bayes_nb2_hier", 0.5), _result("glmm_nb2_ri", 0.9)],
        {"broken": "PoolcastError: x"},
        ineligible={"bayes_nb2_hier": "rhat_max=1.05 > 1.01"},
    )
    rows = {r["candidate"]: r for r in board.iter_rows(named=True)}
    assert board.get_column("candidate").to_list() == ["glmm_nb2_ri", "bayes_nb2_hier", "broken"]
    assert rows["bayes_nb2_hier"]["status"] == "ineligible"
    assert rows["bayes_nb2_hier"]["error"] == "rhat_max=1.05 > 1.01"
    assert rows["bayes_nb2_hier"]["scaled_pinball"] == 0.5  # metrics kept
    assert rows["broken"]["status"] == "failed" and rows["broken"]["scaled_pinball"] is None
    assert select_champion(board) == "glmm_nb2_ri"  # the better score is ineligible


def test_registry_named_only() -> None:
    lineup = default_candidates(has_customers=True, has_promo=True)
    assert "bayes_nb2_hier" not in lineup
    named = default_candidates(has_customers=True, has_promo=True, names=("bayes_nb2_hier",))
    cand = named["bayes_nb2_hier"]()
    assert isinstance(cand, BayesNegBinHierarchical) and cand.ineligible_reason_ is None
    assert make_candidate("bayes_nb2_hier", draws=50).draws == 50


# ----------------------------------------------------------------------------- parameterisation


def _tiny(rows_per_sku: list[int], *, slope_shift: float | None = None) -> HierData:
    rng = np.random.default_rng(0)
    sku_idx = np.repeat(np.arange(len(rows_per_sku)), rows_per_sku)
    n = sku_idx.size
    promo = (rng.random(n) < 0.3).astype(float)
    X = rng.normal(size=(n, 1))
    terms: tuple[str, ...] = ("x",)
    if slope_shift is not None:
        X = np.column_stack([X, promo - slope_shift])
        terms = ("x", "promo")
    return HierData(
        y=rng.poisson(3.0, size=n),
        X=X,
        terms=terms,
        sku_idx=sku_idx,
        sku_levels=tuple(f"S{i}" for i in range(len(rows_per_sku))),
        sku_category=np.arange(len(rows_per_sku)) % 2,
        category_levels=("A", "B"),
        slope=promo if slope_shift is not None else None,
    )


def test_auto_parameterization_by_rows_per_sku_and_skus_per_category() -> None:
    m, c = CENTRED_MIN_ROWS_PER_SKU, CENTRED_MIN_SKUS_PER_CATEGORY
    # _tiny puts SKUs alternately in 2 categories: 2c SKUs -> c per category
    assert choose_parameterization(_tiny([m] * (c + 1) + [m - 1] * (c - 1))) == "centred"
    assert choose_parameterization(_tiny([m - 1] * c + [m - 1] + [3 * m] * c)) == "noncentred"
    # long histories but thin categories: the SKU level centred, the category level not
    assert choose_parameterization(_tiny([m, m, m - 1])) == "centred_sku"
    assert choose_parameterization(_tiny([2, 2]), "centred") == "centred"
    assert choose_parameterization(_tiny([40, 40]), "noncentred") == "noncentred"
    with pytest.raises(ValueError):
        choose_parameterization(_tiny([2]), "other")


@pytest.mark.parametrize(
    ("sd_promo", "intercept", "centred"),
    [
        (0.003, 1.0, False),  # the slopes hardly differ (Rossmann's stores): non-centred
        (0.8, 3.0, True),  # they differ and every SKU's data pin its slope down: centred
    ],
)
def test_auto_sku_slope_form_by_pooling_factor(sd_promo, intercept, centred) -> None:
    """``centre_sku_slope="auto"``: a Laplace pilot's median pooling factor of the SKU slopes
    against SLOPE_CENTRED_MAX_POOLING decides; recorded with the pilot's figures."""
    sim = simulate_panel(
        40, 36, family="negbin", seed=2, sd_promo=sd_promo, intercept=intercept, promo_rate=0.4
    )
    data = _design(sim.frame, categories=True)
    assert choose_parameterization(data) == "centred_sku"  # 36 rows per SKU, 5 per category
    chosen, pooling = choose_sku_slope_form(data, "centred_sku")
    assert chosen is centred
    assert (pooling["slope"] < SLOPE_CENTRED_MAX_POOLING) is centred
    assert 0.0 <= pooling["intercept"] < 0.5 and pooling["pilot_seconds"] > 0
    # an explicit choice is kept, no pilot; the non-centred model has no such choice
    assert choose_sku_slope_form(data, "centred", False) == (False, {})
    assert choose_sku_slope_form(data, "noncentred") == (True, {})
    with pytest.raises(ValueError):
        choose_sku_slope_form(data, "centred", "other")


@pytest.mark.parametrize(
    ("intercept", "sd_intercept", "expected"),
    [
        (-4.0, 0.05, "noncentred"),  # intermittent (car parts-like): the prior pins the levels
        (3.0, 0.5, "centred_sku"),  # dense counts: each SKU's data pin its level down
    ],
)
def test_auto_parameterization_by_the_pilot_intercept_pooling(
    intercept, sd_intercept, expected
) -> None:
    """``"auto"`` centres by rows per SKU (36 here), then a Laplace pilot's median pooling
    factor of the SKU intercepts at or above INTERCEPT_CENTRED_MAX_POOLING makes it
    non-centred; the pilot's figures come back with the choice."""
    sim = simulate_panel(
        40, 36, family="negbin", seed=4, intercept=intercept, sd_intercept=sd_intercept,
        sd_promo=0.0, sd_category=0.0, promo_rate=0.0,
    )  # fmt: skip
    data = _design(sim.frame, categories=True)
    data = HierData(**data.__dict__ | {"slope": None, "X": data.X[:, 1:], "terms": data.terms[1:]})
    assert choose_parameterization(data) == "centred_sku"  # the rows alone would centre
    param, pilot = resolve_parameterization(data)
    assert param == expected
    assert (pilot["intercept"] >= INTERCEPT_CENTRED_MAX_POOLING) is (expected == "noncentred")
    assert np.isnan(pilot["slope"]) and pilot["pilot_seconds"] > 0
    assert resolve_parameterization(data, "centred") == ("centred", None)  # kept, no pilot


def test_slope_column_found_up_to_a_shift() -> None:
    assert _slope_column(_tiny([5, 5], slope_shift=0.25)) == (1, pytest.approx(0.25))
    assert _slope_column(_tiny([5, 5])) == (None, 0.0)  # random intercept only


def test_centred_model_log_density_is_the_closed_form() -> None:
    """Hierarchical centring changes the coordinates, not the model: at a point, PyMC's log
    density (no Jacobian) of the centred NB2 model equals the sum of the scipy densities of
    the priors, the category levels m_c ~ N(mu, tau), the SKU levels theta_i ~ N(m_c, sd)
    and the NB2 likelihood with log mu = x beta + theta_i."""
    from scipy import stats

    data = _tiny([6, 6, 6, 6])
    model = build_model(data, family="negbin", parameterization="centred")
    centre = np.log(data.y.mean())
    point = {
        "level_intercept": 1.1,
        "beta_fixed": np.array([0.3]),
        "sku_sd": np.array([0.4]),
        "category_sd": np.array([0.2]),
        "category_level": np.array([[1.0], [1.3]]),
        "sku_level": np.array([[0.9], [1.5], [1.2], [1.1]]),
        "sqrt_alpha": 0.5,
    }
    values = {}
    for rv in model.free_RVs:
        value = model.rvs_to_values[rv]
        tr = model.rvs_to_transforms.get(rv)
        x = np.asarray(point[rv.name], dtype=float)
        values[value.name] = np.log(x) if tr is not None else x
    # FAST_COMPILE: the Python implementations, no C compile (seconds, not a minute)
    logp = float(model.compile_fn(model.logp(jacobian=False), mode="FAST_COMPILE")(values))
    cat = data.sku_category
    theta = point["sku_level"][:, 0]
    m = point["category_level"][:, 0]
    mu = np.exp(data.X[:, 0] * 0.3 + theta[data.sku_idx])
    alpha = 0.25
    expected = (
        stats.norm.logpdf(1.1, centre, 2.0)
        + stats.norm.logpdf(0.3, 0.0, 1.0)
        + stats.halfnorm.logpdf(0.4, scale=1.0)
        + stats.halfnorm.logpdf(0.2, scale=0.5)
        + stats.norm.logpdf(m, 1.1, 0.2).sum()
        + stats.norm.logpdf(theta, m[cat], 0.4).sum()
        + stats.halfnorm.logpdf(0.5, scale=1.0)
        + stats.nbinom.logpmf(data.y, 1 / alpha, (1 / alpha) / (1 / alpha + mu)).sum()
    )
    assert logp == pytest.approx(expected, rel=1e-9)


def test_sku_slopes_non_centred_given_the_intercepts_is_the_same_model() -> None:
    """``centre_sku_slope=False`` samples (theta_i0, z_i) with theta_i1 = m_1 + L10 (theta_i0 -
    m_0) / L00 + L11 z_i instead of theta_i: the same bivariate normal, so at matching points
    the two log densities differ by the Jacobian of z -> theta_1, sum_i log L11."""
    data = _tiny([5, 5, 5, 5], slope_shift=0.25)
    nc = build_model(data, family="poisson", parameterization="centred", centre_sku_slope=False)
    c = build_model(data, family="poisson", parameterization="centred")
    rng = np.random.default_rng(3)
    point = {k: v + rng.normal(0.0, 0.3, np.shape(v)) for k, v in nc.initial_point().items()}
    (theta_graph,) = nc.replace_rvs_by_values([nc["sku_level"]])
    level = nc.compile_fn(
        theta_graph, inputs=nc.value_vars, mode="FAST_COMPILE", on_unused_input="ignore"
    )
    theta = level(point)
    l11 = level(point | {"sku_slope_z": point["sku_slope_z"] + 1.0})[:, 1] - theta[:, 1]
    assert np.all(l11 > 0)
    shared = {k: v for k, v in point.items() if k not in ("sku_level_intercept", "sku_slope_z")}
    logp_nc = float(nc.compile_fn(nc.logp(), mode="FAST_COMPILE")(point))
    logp_c = float(c.compile_fn(c.logp(), mode="FAST_COMPILE")(shared | {"sku_level": theta}))
    assert logp_nc == pytest.approx(logp_c + np.log(l11).sum(), rel=1e-9)


def _outputs(model, point: dict, names: list[str]) -> list[np.ndarray]:
    """The deterministics ``names`` of ``model`` at the value-space ``point``."""
    fn = model.compile_fn(
        model.replace_rvs_by_values([model[n] for n in names]),
        inputs=model.value_vars,
        mode="FAST_COMPILE",
        on_unused_input="ignore",
    )
    return fn(point)


def _assert_same_model(a, a_point, b, b_point, names, *, logp_shift=0.0, rtol=1e-10) -> None:
    """Two parameterisations of one model at matching points: log densities equal up to the
    constant ``logp_shift`` (a linear map's log-Jacobian) and every output in ``names`` equal."""
    logp_a = float(a.compile_fn(a.logp(), mode="FAST_COMPILE")(a_point))
    logp_b = float(b.compile_fn(b.logp(), mode="FAST_COMPILE")(b_point))
    assert logp_a == pytest.approx(logp_b + logp_shift, rel=rtol)
    for x, y in zip(_outputs(a, a_point, names), _outputs(b, b_point, names), strict=True):
        np.testing.assert_allclose(x, y, rtol=max(rtol, 1e-9), atol=1e-12)


@pytest.mark.parametrize("centre_sku_slope", [True, False])
def test_within_sku_covariates_is_the_same_model(centre_sku_slope: bool) -> None:
    """``within_sku_covariates=True`` samples theta_i0 + (xbar_i - xbar) beta instead of
    theta_i0 and centres x within SKU: a shift with Jacobian 1, so at matching points the log
    density and every output (intercept, beta, SKU and category effects, linear predictor)
    are those of the plain centred model."""
    data = _tiny([5, 7, 4, 6], slope_shift=0.25)
    rng = np.random.default_rng(4)
    data = HierData(  # a covariate whose SKU means differ a lot (log customers)
        **data.__dict__ | {"X": data.X + np.outer([-2.0, 0.5, 1.0, 3.0], [1.0, 0.0])[data.sku_idx]}
    )
    kw = {"family": "negbin", "parameterization": "centred", "centre_sku_slope": centre_sku_slope}
    w = build_model(data, within_sku_covariates=True, **kw)
    c = build_model(data, **kw)
    name = "sku_level" if centre_sku_slope else "sku_level_intercept"
    point = {k: v + rng.normal(0.0, 0.3, np.shape(v)) for k, v in c.initial_point().items()}
    beta = point["beta_fixed"][0]
    xbar = np.bincount(data.sku_idx, weights=data.X[:, 0]) / np.bincount(data.sku_idx)
    offset = (xbar - xbar.mean()) * beta
    shifted = point[name].copy()
    if centre_sku_slope:
        shifted[:, 0] += offset
    else:
        shifted += offset
    wpoint = {k: v for k, v in point.items() if k != name} | {name + "_within": shifted}
    outs = ["intercept", "beta", "category_effect", "sku_effect", "sku_level"]
    _assert_same_model(w, wpoint, c, point, outs)


def _correlated_covariates(data: HierData) -> HierData:
    """``data`` with two more fixed covariates, strongly correlated with its first (like month
    dummies and a trend) and differing between SKUs."""
    rng = np.random.default_rng(7)
    x = data.X[:, 0]
    extra = np.column_stack([0.9 * x + 0.1 * rng.normal(size=x.size), x - 0.5 * data.sku_idx])
    X = np.column_stack([extra, data.X])
    return HierData(**data.__dict__ | {"X": X, "terms": ("x1", "x2", *data.terms)})


@pytest.mark.parametrize(
    ("parameterization", "slope_shift", "family"),
    [("centred", 0.25, "negbin"), ("centred", None, "poisson"), ("noncentred", 0.25, "negbin")],
)
def test_qr_fixed_basis_is_the_same_model(parameterization, slope_shift, family) -> None:
    """``fixed_basis="qr"`` samples gamma = R beta with R'R = X'WX + I/s^2 (X the fixed
    covariates as the likelihood sees them: centred within SKU in the centred form, where the
    mean promo slope joins beta with the promo column) and the
    prior gamma ~ N(0, s^2 RR'): a linear map, so at matching points the log density is the
    raw model's minus log|det R| and every output (intercept, beta, effects) is the same."""
    data = _correlated_covariates(_tiny([5, 7, 4, 6], slope_shift=slope_shift))
    kw = {"family": family, "parameterization": parameterization, "within_sku_covariates": True}
    raw = build_model(data, **kw)
    qr = build_model(data, fixed_basis="qr", **kw)
    centred = parameterization == "centred"
    joint = centred and slope_shift is not None  # the mean promo slope joins the rotation
    names = ["beta_fixed", "level_slope"] if joint else ["beta_fixed" if centred else "beta"]
    sampled = "fixed_and_slope_qr" if joint else names[0] + "_qr"
    # the covariates the rotation is built from, by the documented formula
    j_slope, _ = _slope_column(data)
    cols = [j for j in range(data.X.shape[1]) if j != j_slope or not centred]
    X = data.X[:, cols]
    if centred:
        cnt = np.bincount(data.sku_idx)
        xbar = np.column_stack([np.bincount(data.sku_idx, weights=c) / cnt for c in X.T])
        X = X - (xbar - xbar.mean(axis=0))[data.sku_idx]
    if joint:
        X = np.column_stack([X, data.slope])
    y = data.y.astype(float)
    m = (np.bincount(data.sku_idx, weights=y) / np.bincount(data.sku_idx))[data.sku_idx]
    a = max(0.0, np.sum((y - m) ** 2 - m) / np.sum(m**2)) if family == "negbin" else 0.0
    w = m / (1.0 + a * m)
    np.testing.assert_allclose(_working_weights(data, family), w, rtol=1e-12)
    R = fixed_effects_rotation(X, w, 1.0)
    np.testing.assert_allclose(R.T @ R, X.T @ (w[:, None] * X) + np.eye(X.shape[1]), rtol=1e-10)
    assert np.allclose(R, np.triu(R))
    rng = np.random.default_rng(5)
    point = {k: v + rng.normal(0.0, 0.3, np.shape(v)) for k, v in raw.initial_point().items()}
    coef = np.concatenate([np.atleast_1d(point[n]) for n in names])
    qpoint = {k: v for k, v in point.items() if k not in names} | {sampled: R @ coef}
    assert set(qpoint) == {v.name for v in qr.value_vars}
    outs = ["intercept", "beta", "sku_effect"] + (
        ["category_effect"] if data.has_categories else []
    )
    shift = -np.log(np.abs(np.diag(R))).sum()
    _assert_same_model(qr, qpoint, raw, point, outs, logp_shift=shift)


@pytest.mark.parametrize(
    ("parameterization", "slope_shift", "centre_sku_slope"),
    [
        ("centred", 0.25, False),
        ("centred", 0.25, True),
        ("centred", None, True),
        ("centred_sku", 0.25, True),
    ],
)
def test_levels_at_covariate_mean_is_the_same_model(
    parameterization, slope_shift, centre_sku_slope
) -> None:
    """``levels_at_covariate_mean=True`` centres the covariates fully within SKU and samples
    every level plus the covariates' mean contribution: SKU levels + xbar_i' beta (instead of
    + (xbar_i - xbar)' beta), the population intercept and the centred category intercepts
    + xbar' beta. A shift with Jacobian 1: at matching points the log density and every output
    equal the within-SKU model's."""
    data = _correlated_covariates(_tiny([5, 7, 4, 6], slope_shift=slope_shift))
    data = HierData(
        **data.__dict__ | {"X": data.X + np.array([2.0, -1.0, 0.5] + [0.0] * (data.X.shape[1] - 3))}
    )
    kw = {
        "family": "negbin",
        "parameterization": parameterization,
        "centre_sku_slope": centre_sku_slope,
        "within_sku_covariates": True,
    }
    base = build_model(data, **kw)
    shifted = build_model(data, levels_at_covariate_mean=True, **kw)
    rng = np.random.default_rng(6)
    point = {k: v + rng.normal(0.0, 0.3, np.shape(v)) for k, v in base.initial_point().items()}
    j_slope, _ = _slope_column(data)
    other = [j for j in range(data.X.shape[1]) if j != j_slope]
    cnt = np.bincount(data.sku_idx)
    xbar = np.column_stack([np.bincount(data.sku_idx, weights=data.X[:, j]) / cnt for j in other])
    c = float(xbar.mean(axis=0) @ point["beta_fixed"])
    spoint = dict(point)
    spoint["level_intercept_at_mean"] = spoint.pop("level_intercept") + c
    level = "sku_level_within" if centre_sku_slope else "sku_level_intercept_within"
    lev = spoint[level].copy()
    if lev.ndim == 2:
        lev[:, 0] += c
    else:
        lev += c
    spoint[level] = lev
    if "category_level" in spoint:
        cat = spoint.pop("category_level").copy()
        if cat.ndim == 2:
            cat[:, 0] += c
        else:
            cat += c
        spoint["category_level_at_mean"] = cat
    assert set(spoint) == {v.name for v in shifted.value_vars}
    outs = ["intercept", "beta", "category_effect", "sku_effect", "sku_level"]
    _assert_same_model(shifted, spoint, base, point, outs)


def test_qr_fixed_basis_refuses_an_unknown_basis() -> None:
    with pytest.raises(ValueError, match="fixed_basis='svd'"):
        build_model(_tiny([4, 4]), fixed_basis="svd")


def test_centred_outputs_map_back_to_the_noncentred_coordinates() -> None:
    """The deterministics of the centred model: category_effect = m_c - mu, sku_effect =
    theta_i - m_c(i), beta[promo] = the mean slope, intercept = mu_0 + mean slope * shift
    (the slope column of X is promo - shift); the category slopes are non-centred,
    m_c1 = mean slope + tau_1 z_c."""
    data = _tiny([4, 4, 4, 4], slope_shift=0.25)
    model = build_model(data, family="poisson", parameterization="centred")
    ip = model.initial_point()
    ip["level_intercept"] = np.array(0.7)
    ip["level_slope"] = np.array(0.4)
    ip["beta_fixed"] = np.array([-0.2])
    ip["category_level"] = np.array([0.5, 0.9])  # category intercepts, centred
    ip["category_sd_log__"] = np.log([0.3, 0.5])
    ip["category_slope_z"] = np.array([-0.6, 0.4])  # slopes 0.4 + 0.5 z = 0.1, 0.6
    ip["sku_level"] = np.array([[0.4, 0.0], [1.0, 0.5], [0.8, 0.3], [1.2, 0.8]])
    names = ["intercept", "beta", "category_effect", "sku_effect"]
    sampled = [
        "level_intercept",
        "level_slope",
        "beta_fixed",
        "category_level",
        "category_sd_log__",
        "category_slope_z",
        "sku_level",
    ]
    values = {v.name: v for v in model.value_vars}
    fn = model.compile_fn(
        model.replace_rvs_by_values([model[n] for n in names]),
        inputs=[values[k] for k in sampled],
        mode="FAST_COMPILE",
    )
    out = dict(zip(names, fn({k: ip[k] for k in sampled}), strict=True))
    np.testing.assert_allclose(out["intercept"], 0.7 + 0.4 * 0.25)
    np.testing.assert_allclose(out["beta"], [-0.2, 0.4])  # terms ("x", "promo")
    np.testing.assert_allclose(out["category_effect"], [[-0.2, -0.3], [0.2, 0.2]])
    m = np.array([[0.5, 0.1], [0.9, 0.6]])[data.sku_category]
    np.testing.assert_allclose(out["sku_effect"], ip["sku_level"] - m)


# ----------------------------------------------------------------------------- predictive draws


def _handmade(*, k: int, alpha: float | None, sku_sd: float, cat_sd: float, S: int = 4000):
    """A posterior with fixed draws: intercept log(5), no covariates, one known SKU with
    effect 0.3 in category "A" with effect -0.2."""
    chol = np.zeros((S, k, k))
    chol[:, 0, 0] = sku_sd
    if k == 2:
        chol[:, 1, 1] = sku_sd
    post = Posterior(
        beta=np.full((S, 1), np.log(5.0)),
        sku_effects=np.full((S, 1, k), 0.3),
        category_effects=np.full((S, 1, k), -0.2),
        sku_chol=chol,
        category_sd=np.full((S, k), cat_sd),
        alpha=None if alpha is None else np.full(S, alpha),
        method="nuts",
        diagnostics={},
    )
    model = _BayesModel(
        spec=CovariateSpec((), (), ()),
        data_terms=(),
        slope=k == 2,
        sku_index={"S1": 0},
        category_index={"A": 0},
        sku_category={"S1": "A"},
        posterior=post,
        levels=3,
        category_note=None,
        n_obs=10,
    )
    return model


def _rows(skus: list[str], cats: list[str | None], promo: float = 0.0) -> pl.DataFrame:
    n = len(skus)
    return pl.DataFrame(
        {
            "sku": skus,
            "category": pl.Series(cats, dtype=pl.String),
            "promo": [promo] * n,
            "horizon": [1] * n,
        }
    )


def test_predictive_known_sku_poisson_mean_and_variance() -> None:
    model = _handmade(k=1, alpha=None, sku_sd=0.5, cat_sd=0.4)
    cand = BayesNegBinHierarchical()
    mean, draws = cand._predict_horizon(
        model, _rows(["S1"], ["A"]), 20000, np.random.default_rng(0)
    )
    mu = 5.0 * np.exp(0.3 - 0.2)  # no parameter uncertainty: Poisson(mu)
    assert mean[0] == pytest.approx(mu, rel=1e-12)
    assert draws.mean() == pytest.approx(mu, rel=0.03)
    assert draws.var() == pytest.approx(mu, rel=0.06)


def test_predictive_nb2_variance() -> None:
    model = _handmade(k=1, alpha=0.5, sku_sd=0.5, cat_sd=0.4)
    cand = BayesNegBinHierarchical()
    _, draws = cand._predict_horizon(model, _rows(["S1"], ["A"]), 40000, np.random.default_rng(1))
    mu = 5.0 * np.exp(0.1)
    assert draws.mean() == pytest.approx(mu, rel=0.03)
    assert draws.var() == pytest.approx(mu + 0.5 * mu**2, rel=0.06)


def test_new_sku_and_new_category_draw_from_their_distribution() -> None:
    """Poisson with log-normal mean: E[y] = 5 exp(m + v/2) with v the variance of the drawn
    effects: v = sku_sd^2 for a new SKU of a known category (m = -0.2), sku_sd^2 + cat_sd^2
    for a new SKU of a new category (m = 0)."""
    model = _handmade(k=1, alpha=None, sku_sd=0.5, cat_sd=0.4)
    cand = BayesNegBinHierarchical()
    rng = np.random.default_rng(2)
    n = 60000
    _, in_known = cand._predict_horizon(model, _rows(["N1"], ["A"]), n, rng)
    _, in_new = cand._predict_horizon(model, _rows(["N2"], ["Z"]), n, rng)
    assert in_known.mean() == pytest.approx(5 * np.exp(-0.2 + 0.25 / 2), rel=0.03)
    assert in_new.mean() == pytest.approx(5 * np.exp(0.0 + (0.25 + 0.16) / 2), rel=0.04)
    # the extra spread: Var = E[mu] + Var[mu] > Poisson's
    assert in_new.var() > 1.5 * in_new.mean()


# ----------------------------------------------------------------------------- sampled fits


def _design(frame: pl.DataFrame, *, categories: bool) -> HierData:
    """The simulation's own covariates (its truth is on these), promo as the random slope."""
    skus, sku_idx = np.unique(frame.get_column("sku").to_numpy(), return_inverse=True)
    month = frame.get_column("month")
    angle = 2 * np.pi * month.dt.month().to_numpy() / 12
    first = month.min()
    t = ((month.dt.year() - first.year) * 12 + month.dt.month() - first.month).to_numpy() / 12
    promo = frame.get_column("promo").to_numpy().astype(float)
    X = np.column_stack(
        [
            promo,
            np.log1p(frame.get_column("customer_count").to_numpy()),
            t,
            np.sin(angle),
            np.cos(angle),
        ]
    )
    cat_codes, cat_levels = None, ()
    if categories:
        per_sku = frame.group_by("sku").agg(pl.col("category").first()).sort("sku")
        levels, cat_codes = np.unique(
            per_sku.get_column("category").to_numpy(), return_inverse=True
        )
        cat_levels = tuple(levels)
    return HierData(
        y=frame.get_column("sales").to_numpy(),
        X=X - np.r_[0.0, X[:, 1:].mean(axis=0)],
        terms=("promo", "log1p_customers", "t", "fourier_s1", "fourier_c1"),
        sku_idx=sku_idx,
        sku_levels=tuple(skus),
        sku_category=cat_codes,
        category_levels=cat_levels,
        slope=promo,
    )


@pytest.fixture(scope="module")
def two_level():
    sim = simulate_panel(60, 24, family="negbin", seed=11, n_categories=1, sd_category=0.0)
    data = _design(sim.frame, categories=False)
    post = fit_posterior(data, family="negbin", chains=2, tune=300, draws=300, seed=3)
    return sim, data, post


@pytest.mark.slow
def test_two_level_agrees_with_laplace(two_level) -> None:
    from poolcast.glmm import fit as glmm_fit

    _sim, data, post = two_level
    frame = pl.DataFrame(
        {"sales": data.y, "sku": np.array(data.sku_levels)[data.sku_idx]}
    ).with_columns([pl.Series(n, data.X[:, j]) for j, n in enumerate(data.terms)])
    res = glmm_fit(
        "sales ~ promo + log1p_customers + t + fourier_s1 + fourier_c1 + (1 + promo | sku)",
        frame,
        family="negbin",
    )
    laplace = np.array(list(res.fixef.values()))
    mean, sd = post.beta.mean(axis=0), post.beta.std(axis=0)
    # the posterior mean within one posterior SD of the ML estimate, every fixed effect
    assert np.all(np.abs(mean - laplace) < sd), (mean, laplace, sd)
    # the SKU intercept SD and NB2 dispersion too
    assert (
        abs(post.sku_sd()[:, 0].mean() - res.sd["sku"]["(Intercept)"])
        < post.sku_sd()[:, 0].std() * 1.5
    )
    assert abs(post.alpha.mean() - 1 / res.theta) < 2 * post.alpha.std()


@pytest.mark.slow
def test_two_level_truth_inside_90_intervals(two_level) -> None:
    """7 true values (5 slopes, the SKU intercept SD, NB2 alpha): with nominal 90% intervals
    at least 5 must contain the truth (P(<= 4 of 7 | p = 0.9) = 0.026)."""
    sim, data, post = two_level
    fixed = sim.truth.fixed
    truth = [fixed[n] for n in data.terms]
    draws = [post.beta[:, 1 + j] for j in range(len(truth))]
    truth += [sim.truth.sd["intercept"], 1 / sim.truth.theta]
    draws += [post.sku_sd()[:, 0], post.alpha]
    inside = [
        np.quantile(d, 0.05) <= v <= np.quantile(d, 0.95) for d, v in zip(draws, truth, strict=True)
    ]
    assert sum(inside) >= 5, inside


@pytest.fixture(scope="module")
def candidate_fit():
    from poolcast.backtest import prepare_splits
    from poolcast.config import FeatureConfig

    sim = simulate_panel(24, 24, family="negbin", seed=5, n_categories=3)
    split = prepare_splits(sim.frame, feature_config=FeatureConfig(), n_origins=1)[0]
    cand = BayesNegBinHierarchical(method="nuts", chains=2, tune=100, draws=100, seed=1)
    cand.fit(split.train, history=split.history)
    return split, cand


@pytest.mark.slow
def test_candidate_three_levels_gate_and_forecast(candidate_fit) -> None:
    split, cand = candidate_fit
    # 2 x 100 draws cannot give a bulk ESS of 400 for every parameter: the gate must trip
    assert cand.diagnostics_["ess_bulk_min"] < 400
    assert cand.ineligible_reason_ is not None and "ess_bulk_min" in cand.ineligible_reason_
    report = cand.describe()
    assert report.ineligible_reason == cand.ineligible_reason_
    assert set(report.diagnostics) == {
        "rhat_max",
        "ess_bulk_min",
        "ess_tail_min",
        "divergences",
        "bfmi_min",
    }
    conv = report.convergence["h=1"]
    assert conv["levels"] == 3 and conv["sampler"] == "nuts"
    # auto: >= CENTRED_MIN_ROWS_PER_SKU training rows per SKU but 8 SKUs per category ->
    # the SKU level centred, the category level not; recorded
    assert conv["parameterization_requested"] == "auto"
    assert conv["parameterization"] == "centred_sku"
    assert cand.horizons_ == (1,)  # fit_horizons="first": one posterior serves every horizon
    rows = split.test.with_columns(sales=pl.lit(None, pl.Int64))
    new = rows.head(1).with_columns(sku=pl.lit("NEWSKU"), category=pl.lit("NEWCAT"))
    rows = pl.concat([rows, new])
    fc = cand.predict_distribution(
        rows, quantiles=[0.05, 0.5, 0.95], n_samples=300, rng=np.random.default_rng(0)
    )
    assert fc.samples.shape == (rows.height, 300) and np.all(np.isfinite(fc.mean))
    # the pickled candidate forecasts from its stored draws: same seed, same forecast
    again = pickle.loads(pickle.dumps(cand)).predict_distribution(
        rows, quantiles=[0.05, 0.5, 0.95], n_samples=300, rng=np.random.default_rng(0)
    )
    np.testing.assert_array_equal(again.samples, fc.samples)
    # the truth of the test months mostly inside the central 90% predictive interval
    y = split.test.get_column("sales").to_numpy()
    lo, hi = fc.quantiles[0.05][:-1], fc.quantiles[0.95][:-1]
    assert np.mean((lo <= y) & (y <= hi)) > 0.75


@pytest.mark.slow
def test_candidate_report_logs_to_mlflow(candidate_fit, tmp_path) -> None:
    from poolcast.reporting import bayes_figures
    from poolcast.tracking import _client, log_posterior

    _, cand = candidate_fit
    report = cand.describe()
    figs = bayes_figures(report)
    assert {"category_effects", "shrinkage_category", "variance_trace_rank"} <= set(figs)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = _client(uri)
    exp = client.create_experiment("bayes", artifact_location=str(tmp_path / "art"))
    run_id = client.create_run(exp).info.run_id
    size = log_posterior(uri, run_id, report)
    assert size > 0
    names = [a.path for a in client.list_artifacts(run_id, "posterior")]
    assert names == ["posterior/posterior.zarr.zip"]
    assert client.get_run(run_id).data.tags["poolcast.sampler"] == "nuts"
