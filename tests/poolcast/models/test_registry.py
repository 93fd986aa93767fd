"""The default line-up and candidate lookup by name."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from poolcast.config import FeatureConfig
from poolcast.errors import InvalidParameterError
from poolcast.models import CANDIDATE_NAMES, Candidate, default_candidates, make_candidate
from poolcast.models.registry import OPT_IN


def test_promo_slope_candidates_only_with_promo_variation():
    with_promo = default_candidates(has_customers=True, has_promo=True)
    without = default_candidates(has_customers=True, has_promo=False)
    # every candidate but the named-only ones (minutes per origin, or not yet measured)
    assert list(with_promo) == [n for n in CANDIDATE_NAMES if n not in OPT_IN]
    assert set(with_promo) - set(without) == {"glmm_poisson_ri_slope", "glmm_nb2_ri_slope"}


def test_agq_leaves_the_default_lineup_on_large_panels_unless_named():
    small = default_candidates(has_customers=True, has_promo=False, n_skus=500)
    large = default_candidates(has_customers=True, has_promo=False, n_skus=10_000)
    assert "glmm_poisson_ri_agq" in small and "glmm_poisson_ri_agq" not in large
    assert set(small) - set(large) == {"glmm_poisson_ri_agq"}
    named = default_candidates(
        has_customers=True, has_promo=False, n_skus=10_000, names=("glmm_poisson_ri_agq",)
    )
    assert list(named) == ["glmm_poisson_ri_agq"]


def test_factories_build_fresh_configured_candidates():
    lineup = default_candidates(has_customers=False, has_promo=False)
    a, b = lineup["glmm_nb2_ri"](), lineup["glmm_nb2_ri"]()
    assert isinstance(a, Candidate) and a is not b and a.name == "glmm_nb2_ri"
    assert a.customer_terms == "none" and a.include_promo is False
    assert (
        default_candidates(has_customers=True, has_promo=True)["gee_poisson_ar1"]().customer_terms
        == "log"
    )
    assert lineup["seasonal_naive"]().name == "seasonal_naive"


def test_names_restrict_the_lineup_and_unknown_names_raise():
    assert list(
        default_candidates(has_customers=True, has_promo=False, names=("glm_nb2_pooled",))
    ) == ["glm_nb2_pooled"]
    with pytest.raises(InvalidParameterError, match="nope"):
        default_candidates(has_customers=True, has_promo=False, names=("nope",))
    with pytest.raises(InvalidParameterError, match="unknown candidate"):
        make_candidate("nope")
    assert make_candidate("moving_average", window=12).window == 12


def test_lineup_runs_on_the_real_feature_pipeline():
    """simulate_panel -> features -> every default candidate fits and forecasts."""
    from poolcast.features import build_forecast_frame, build_training_frame, make_feature_spec
    from poolcast.simulate import simulate_panel

    panel = simulate_panel(25, 30, family="negbin", seed=3).frame
    spec = make_feature_spec(panel, FeatureConfig())
    train = build_training_frame(panel, spec)
    rows = build_forecast_frame(panel, spec)
    has_promo = bool(panel.get_column("promo").max())
    for name, factory in default_candidates(
        has_customers=spec.has_customers, has_promo=has_promo
    ).items():
        est = factory().fit(train, history=panel)
        fc = est.predict_distribution(
            rows, quantiles=(0.5, 0.8, 0.9, 0.95, 0.99), n_samples=50, rng=np.random.default_rng(0)
        )
        assert fc.keys.height == rows.height == 25 * 3, name
        assert np.all(np.isfinite(fc.mean)), name
        if name not in ("seasonal_naive", "moving_average") and not est.needs_history:
            assert "log_customers" in est.describe().formulas[1], name
    assert rows.get_column("horizon").unique().sort().to_list() == [1, 2, 3]
    assert train.filter(pl.col("sales").is_null()).height == 0


def test_plan_transforms_give_the_covariate_candidates_log1p_terms_that_need_the_raw_column():
    plan = ("promo", "open_days", "promo_days")
    lineup = default_candidates(
        has_customers=True,
        has_promo=True,
        plan_columns=plan,
        plan_transforms={"open_days": "log1p"},
    )
    for name in ("glmm_nb2_ri", "glmm_nb2_ar1", "glm_nb2_pooled", "gee_poisson_ar1"):
        candidate = lineup[name]()
        assert candidate.plan_terms == ("log1p_open_days", "promo_days"), name
        # the plan must carry open_days, the column the term is derived from
        assert candidate.required_plan_columns == ("promo", "open_days", "promo_days"), name
    plain = default_candidates(has_customers=True, has_promo=True, plan_columns=plan)
    assert plain["glmm_nb2_ri"]().plan_terms == ("open_days", "promo_days")
    assert lineup["seasonal_naive"]().required_plan_columns == ()
