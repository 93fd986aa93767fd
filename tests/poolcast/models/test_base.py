"""Interface conformance of every candidate (sklearn conventions, Forecast shapes)."""

from __future__ import annotations

import warnings

import numpy as np
import polars as pl
import pytest

from poolcast.errors import InvalidParameterError, NotFittedError
from poolcast.models import CANDIDATE_CLASSES, CANDIDATE_NAMES, CandidateReport, Forecast
from poolcast.models._validation import Interval, Options
from tests.poolcast.models._frames import simulate_feature_frame, split_last_month

#: The candidates the generic contract tests fit; the Bayesian GLMM (an MCMC run per fit)
#: has its own tests in test_bayes.py.
GENERIC = tuple(n for n in CANDIDATE_NAMES if n != "bayes_nb2_hier")

QUANTILES = (0.5, 0.8, 0.9, 0.95, 0.99)


@pytest.fixture(scope="module")
def small_panel():
    sim = simulate_feature_frame(
        n_sku=20,
        n_months=30,
        horizons=(1, 2),
        seed=11,
        alpha=0.3,
        promo_rate=0.25,
        sd_promo=0.2,
        customers=True,
        beta_cust=0.4,
    )
    return split_last_month(sim.frame)


@pytest.fixture(scope="module")
def fitted(small_panel):
    train, _ = small_panel
    return {name: CANDIDATE_CLASSES[name]().fit(train) for name in GENERIC}


def test_stable_candidate_names():
    """Names keep their order (MLflow child runs and dashboards use them); new ones append."""
    assert CANDIDATE_NAMES[18:] == (
        "glmm_tweedie_ri",
        "glmm_hurdle_nb2",
        "bayes_nb2_hier",
        "glmm_nb2_seasonal",
        "glmm_nb2_ar1",
        "glmm_nb2_ri_disp",
        "glmm_nb2_ri_dynamic_disp",
    )
    assert CANDIDATE_NAMES[:18] == (
        "seasonal_naive",
        "moving_average",
        "glm_poisson_pooled",
        "glm_nb2_pooled",
        "glm_nb2_sku_fixed",
        "gee_poisson_exchangeable",
        "gee_poisson_ar1",
        "glmm_poisson_ri",
        "glmm_nb2_ri",
        "glmm_poisson_ri_slope",
        "glmm_nb2_ri_slope",
        "glmm_poisson_ri_agq",
        "glmm_nb2_ri_dynamic",
        "naive",
        "auto_ets",
        "croston",
        "tsb",
        "adida",
    )


@pytest.mark.parametrize("name", GENERIC)
def test_fit_returns_self_and_sets_underscore_state(name, small_panel):
    train, _ = small_panel
    est = CANDIDATE_CLASSES[name]()
    assert not hasattr(est, "models_")
    assert est.fit(train) is est
    assert est.horizons_ == (1, 2)
    assert set(est.models_) == {1, 2}
    assert est.n_train_rows_ == {h: train.filter(pl.col("horizon") == h).height for h in (1, 2)}


@pytest.mark.parametrize("name", GENERIC)
def test_not_fitted_error_before_fit(name, small_panel):
    _, rows = small_panel
    est = CANDIDATE_CLASSES[name]()
    with pytest.raises(NotFittedError, match=name):
        est.predict_distribution(
            rows, quantiles=QUANTILES, n_samples=10, rng=np.random.default_rng(0)
        )
    with pytest.raises(NotFittedError):
        est.describe()


@pytest.mark.parametrize("name", GENERIC)
def test_init_stores_params_unchanged_and_fit_validates(name, small_panel):
    train, _ = small_panel
    cls = CANDIDATE_CLASSES[name]
    params = cls().get_params()
    assert set(params) == set(cls._get_param_names())
    checked = 0
    for key, constraints in cls._parameter_constraints.items():
        if object in constraints:
            continue
        bad = (
            "__bogus__"
            if not any(isinstance(c, Options) and "__bogus__" in c.values for c in constraints)
            else -1
        )
        if any(c is str for c in constraints):
            bad = -1
        est = cls(**{key: bad})
        assert getattr(est, key) == bad  # stored unchanged, no validation in __init__
        with pytest.raises(InvalidParameterError, match=key):
            est.fit(train)
        checked += 1
    assert checked >= 1


def test_interval_rejects_bool_and_out_of_range():
    iv = Interval(int, 1, None)
    assert iv.accepts(3) and not iv.accepts(0) and not iv.accepts(True) and not iv.accepts(2.5)
    assert InvalidParameterError.__mro__.count(ValueError) == 1 and issubclass(
        InvalidParameterError, TypeError
    )


@pytest.mark.parametrize("name", GENERIC)
def test_forecast_shapes_quantiles_and_samples(name, fitted, small_panel):
    _, rows = small_panel
    fc = fitted[name].predict_distribution(
        rows, quantiles=QUANTILES, n_samples=64, rng=np.random.default_rng(3)
    )
    assert isinstance(fc, Forecast)
    n = rows.height
    assert fc.keys.equals(rows.select("sku", "origin", "horizon", "month"))
    assert fc.mean.shape == (n,) and np.all(np.isfinite(fc.mean)) and np.all(fc.mean >= 0)
    assert fc.levels == QUANTILES
    qs = np.stack([fc.quantiles[q] for q in QUANTILES])
    assert np.all(np.diff(qs, axis=0) >= 0), "quantiles must be non-decreasing in the level"
    assert fc.samples is not None and fc.samples.shape == (n, 64)
    assert np.issubdtype(fc.samples.dtype, np.integer) and fc.samples.min() >= 0
    frame = fc.to_frame()
    assert frame.height == n and "q_0.99" in frame.columns


@pytest.mark.parametrize("name", GENERIC)
def test_same_seed_same_draws(name, fitted, small_panel):
    _, rows = small_panel
    a = fitted[name].predict_distribution(
        rows, quantiles=(0.5,), n_samples=16, rng=np.random.default_rng(5)
    )
    b = fitted[name].predict_distribution(
        rows, quantiles=(0.5,), n_samples=16, rng=np.random.default_rng(5)
    )
    np.testing.assert_array_equal(a.samples, b.samples)


@pytest.mark.parametrize("name", GENERIC)
def test_describe_report(name, fitted):
    report = fitted[name].describe()
    assert isinstance(report, CandidateReport)
    assert report.name == name
    assert report.params == fitted[name].get_params()
    assert set(report.convergence) == {"h=1", "h=2"}
    if report.coefficients is not None:
        assert {"term", "estimate", "std_error", "horizon"} <= set(report.coefficients.columns)
        assert set(report.coefficients.get_column("horizon").to_list()) == {1, 2}
        assert set(report.formulas) == {1, 2}
    if name.startswith("glmm"):
        assert report.random_effects is not None
        assert {"sku", "term", "mode", "cond_sd", "horizon"} <= set(report.random_effects.columns)
        assert report.shrinkage is not None and "sku" in report.shrinkage.columns
        assert "| sku)" in report.formulas[1]
        assert "(1" in report.formulas[1] or "ar1(" in report.formulas[1]
    else:
        assert report.random_effects is None


def test_predict_validates_its_arguments(fitted, small_panel):
    _, rows = small_panel
    est = fitted["glm_poisson_pooled"]
    with pytest.raises(InvalidParameterError, match="quantiles"):
        est.predict_distribution(
            rows, quantiles=(0.5, 1.0), n_samples=5, rng=np.random.default_rng(0)
        )
    with pytest.raises(InvalidParameterError, match="n_samples"):
        est.predict_distribution(rows, quantiles=(0.5,), n_samples=0, rng=np.random.default_rng(0))
    with pytest.raises(InvalidParameterError, match="rng"):
        est.predict_distribution(rows, quantiles=(0.5,), n_samples=5, rng=0)


def test_unseen_horizon_uses_nearest_fitted_model(fitted, small_panel):
    _, rows = small_panel
    est = fitted["glm_poisson_pooled"]
    h2 = rows.filter(pl.col("horizon") == 2)
    h5 = h2.with_columns(pl.lit(5, dtype=pl.Int32).alias("horizon"))
    a = est.predict_distribution(h2, quantiles=(0.5,), n_samples=4, rng=np.random.default_rng(0))
    b = est.predict_distribution(h5, quantiles=(0.5,), n_samples=4, rng=np.random.default_rng(0))
    np.testing.assert_allclose(a.mean, b.mean)


def test_empty_rows_give_an_empty_forecast(fitted, small_panel):
    _, rows = small_panel
    fc = fitted["glm_nb2_pooled"].predict_distribution(
        rows.head(0), quantiles=QUANTILES, n_samples=8, rng=np.random.default_rng(0)
    )
    assert len(fc) == 0 and fc.samples.shape == (0, 8)


@pytest.mark.parametrize("name", GENERIC)
def test_fitted_candidate_pickles_and_predicts_the_same(name, fitted, small_panel):
    """The champion is logged to MLflow as a pickled pyfunc wrapper."""
    import pickle

    _, rows = small_panel
    clone = pickle.loads(pickle.dumps(fitted[name]))
    a = fitted[name].predict_distribution(
        rows, quantiles=(0.5,), n_samples=8, rng=np.random.default_rng(9)
    )
    b = clone.predict_distribution(
        rows, quantiles=(0.5,), n_samples=8, rng=np.random.default_rng(9)
    )
    np.testing.assert_allclose(a.mean, b.mean)
    np.testing.assert_array_equal(a.samples, b.samples)


@pytest.mark.parametrize(
    "name",
    [
        n
        for n in CANDIDATE_NAMES
        # the baselines and the series candidates forecast 0 from all-zero sales
        if n not in ("seasonal_naive", "moving_average")
        and not getattr(CANDIDATE_CLASSES[n], "needs_history", False)
    ],
)
def test_degenerate_training_data_raise_poolcast_error_naming_the_candidate(name, small_panel):
    """All-zero sales: no finite estimate exists; the flow records the failure and goes on."""
    from poolcast.errors import PoolcastError

    train, _ = small_panel
    zeros = train.with_columns(pl.lit(0, dtype=pl.Int64).alias("sales"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(PoolcastError, match=name):
            CANDIDATE_CLASSES[name]().fit(zeros)
