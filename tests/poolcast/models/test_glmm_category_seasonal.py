"""The seasonal NB2 GLMM candidate with the category level (issue 8, item 2).

The panel is drawn here from a known model: 8 categories of 25 SKUs, 36 months
(2021-01..2023-12), and for SKU i in category c

.. math::
   \\log\\mu_{it} = \\beta_0 + b_i + (\\beta_s + a_{cs} + u_{is})\\sin(2\\pi m_t/12)
   + (\\beta_c + a_{cc} + u_{ic})\\cos(2\\pi m_t/12),

NB2 noise, with category seasonal deviations :math:`a_c` much larger (SD 0.5) than the SKU's
own (:math:`u_i`, SD 0.1). Three SKUs per category are young: sold only in the last 6 months.
A young SKU's own data say little about its shape, so the model with the category level
should give it (about) its category's shape, and the SKU-only model (about) the pooled one;
with the truth known, the category model's shapes of the young SKUs are the closer to the
true ones. Both are properties of the model (partial pooling in two levels), checked against
the simulated truth, not against numbers the code produced before.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest

from poolcast.errors import DataContractError
from poolcast.models.glmm import NO_CATEGORY, GlmmNegBinSeasonal

N_CAT, PER_CAT, N_MONTHS, N_YOUNG, YOUNG_MONTHS = 8, 25, 36, 3, 6
POOLED = np.array([0.3, -0.2])
SKU_ONLY_RANDOM = "(1 | sku) + (0 + fourier_s1 + fourier_c1 || sku)"
CATEGORY_RANDOM = "(1 | category) + (0 + fourier_s1 + fourier_c1 || category)"


def _month(i: int) -> date:
    y, m = divmod(i, 12)
    return date(2021 + y, m + 1, 1)


def _feature_rows(skus, cats, month_idx, sales=None) -> pl.DataFrame:
    """Horizon-1 feature rows (the columns of poolcast.features the candidate reads)."""
    month_idx = np.asarray(month_idx)
    moy = month_idx % 12 + 1
    angle = 2 * np.pi * moy / 12
    return pl.DataFrame(
        {
            "sku": list(skus),
            "origin": [_month(int(k) - 1) for k in month_idx],
            "horizon": np.ones(month_idx.size, dtype=np.int32),
            "month": [_month(int(k)) for k in month_idx],
            "sales": [None] * month_idx.size
            if sales is None
            else np.asarray(sales, dtype=np.int64),
            "category": list(cats),
            "t": month_idx / 12.0,
            "month_of_year": moy.astype(np.int8),
            "fourier_s1": np.sin(angle),
            "fourier_c1": np.cos(angle),
            "fourier_s2": np.sin(2 * angle),
            "fourier_c2": np.cos(2 * angle),
        },
        schema_overrides={"sales": pl.Int64, "category": pl.String},
    )


def simulate(seed: int) -> dict:
    """The panel of the module docstring, with its truth."""
    rng = np.random.default_rng(seed)
    n = N_CAT * PER_CAT
    cat_of = np.repeat(np.arange(N_CAT), PER_CAT)
    a = rng.normal(0.0, 0.5, (N_CAT, 2))
    u = rng.normal(0.0, 0.1, (n, 2))
    b = rng.normal(0.0, 0.4, n)
    shape = POOLED + a[cat_of] + u  # true (sin, cos) coefficients per SKU
    young = np.zeros(n, dtype=bool)
    for c in range(N_CAT):
        young[c * PER_CAT : c * PER_CAT + N_YOUNG] = True
    k = np.arange(N_MONTHS)
    angle = 2 * np.pi * (k % 12 + 1) / 12
    eta = 1.5 + b[:, None] + shape[:, :1] * np.sin(angle) + shape[:, 1:] * np.cos(angle)
    mu = np.exp(eta)
    y = rng.poisson(rng.gamma(10.0, mu / 10.0))
    keep = ~young[:, None] | (k[None, :] >= N_MONTHS - YOUNG_MONTHS)
    sku_i, month_i = np.nonzero(keep)
    skus = np.array([f"S{i:03d}" for i in range(n)])
    cats = np.array([f"C{c}" for c in range(N_CAT)])
    frame = _feature_rows(skus[sku_i], cats[cat_of[sku_i]], month_i, y[sku_i, month_i])
    return {
        "frame": frame,
        "skus": skus,
        "cats": cats,
        "cat_of": cat_of,
        "shape": shape,
        "young": young,
    }


@pytest.fixture(scope="module")
def panel():
    return simulate(8)


def _make() -> GlmmNegBinSeasonal:
    return GlmmNegBinSeasonal(customer_terms="none", include_promo=False)


@pytest.fixture(scope="module")
def with_categories(panel):
    return _make().fit(panel["frame"])


@pytest.fixture(scope="module")
def without_categories(panel):
    return _make().fit(panel["frame"].drop("category"))


def _modes(res, group: str, level: str) -> float:
    return float(res.ranef[group].filter(pl.col("level") == level).get_column("mode")[0])


def _fitted_shapes(res, panel) -> tuple[np.ndarray, np.ndarray | None]:
    """(sin, cos) coefficients of every SKU, and of every category (None without categories)."""
    pooled = np.array([res.fixef["fourier_s1"], res.fixef["fourier_c1"]])
    own = np.array([[_modes(res, f"sku.{j}", s) for j in (1, 2)] for s in panel["skus"]])
    if "category" not in res.ranef:
        return pooled + own, None
    cat = np.array([[_modes(res, f"category.{j}", c) for j in (1, 2)] for c in panel["cats"]])
    return pooled + cat[panel["cat_of"]] + own, pooled + cat


def test_category_terms_are_used_and_recorded(with_categories):
    report = with_categories.describe()
    formula = report.formulas[1]
    assert formula.endswith(f"+ {CATEGORY_RANDOM} + {SKU_ONLY_RANDOM}"), formula
    conv = report.convergence["h=1"]
    assert conv["converged"]
    assert conv["category_level_dropped"] is None
    assert conv["random_slope_dropped"] is None
    assert conv["n_categories"] == N_CAT
    assert set(conv["category_effects"]) == {f"C{c}" for c in range(N_CAT)}
    assert set(conv["category_effects"]["C0"]) == {"(Intercept)", "fourier_s1", "fourier_c1"}
    # categories differ in shape far more than SKUs within a category (SDs 0.5 and 0.1)
    sd = conv["sd"]
    assert sd["category.1"]["fourier_s1"] > 2 * sd["sku.1"]["fourier_s1"]
    assert sd["category.2"]["fourier_c1"] > 2 * sd["sku.2"]["fourier_c1"]
    # the SKU table keeps its layout: one row per SKU and term
    ranef = report.random_effects
    assert set(ranef["term"]) == {"(Intercept)", "fourier_s1", "fourier_c1"}
    assert ranef.height == 3 * N_CAT * PER_CAT


def test_a_young_skus_shape_is_shrunk_towards_its_categorys(with_categories, panel):
    res = with_categories.results_[1]
    sku_shape, cat_shape = _fitted_shapes(res, panel)
    pooled = np.array([res.fixef["fourier_s1"], res.fixef["fourier_c1"]])
    young = panel["young"]
    own = sku_shape[young]
    to_category = np.linalg.norm(own - cat_shape[panel["cat_of"][young]], axis=1)
    to_pooled = np.linalg.norm(own - pooled, axis=1)
    assert to_category.mean() < 0.5 * to_pooled.mean(), (to_category, to_pooled)
    assert np.mean(to_category < to_pooled) >= 0.8
    # amplitudes too: a young SKU's seasonal swing is its category's, not the pooled one
    amp = np.linalg.norm(own, axis=1)
    amp_cat = np.linalg.norm(cat_shape[panel["cat_of"][young]], axis=1)
    amp_pooled = np.linalg.norm(pooled)
    assert np.abs(amp - amp_cat).mean() < np.abs(amp - amp_pooled).mean()


def test_young_skus_shapes_are_closer_to_the_truth_than_without_categories(
    with_categories, without_categories, panel
):
    young, truth = panel["young"], panel["shape"]
    err = {}
    for name, est in (("category", with_categories), ("sku_only", without_categories)):
        shapes, _ = _fitted_shapes(est.results_[1], panel)
        err[name] = float(np.mean(np.sum((shapes[young] - truth[young]) ** 2, axis=1)))
    assert err["category"] < 0.5 * err["sku_only"], err


def test_a_new_sku_of_a_known_category_forecasts_with_the_categorys_effects(with_categories, panel):
    res = with_categories.results_[1]
    months = np.arange(N_MONTHS, N_MONTHS + 12)
    rows = _feature_rows(["NEW"] * 12, ["C3"] * 12, months)
    fc = with_categories.predict_distribution(
        rows, quantiles=(0.5,), n_samples=20, rng=np.random.default_rng(1)
    )
    spec = with_categories.models_[1].spec
    fixed = res.fixef["(Intercept)"] + sum(
        res.fixef[term] * (rows.get_column(term).to_numpy() - centre)
        for term, centre in zip(spec.terms, spec.centres, strict=True)
    )
    s, c = rows.get_column("fourier_s1").to_numpy(), rows.get_column("fourier_c1").to_numpy()
    expected = (
        fixed
        + _modes(res, "category", "C3")
        + _modes(res, "category.1", "C3") * s
        + _modes(res, "category.2", "C3") * c
    )
    np.testing.assert_allclose(np.log(fc.mean), expected, rtol=1e-10)
    # a row without a category column cannot be placed: refused, not silently pooled
    with pytest.raises(DataContractError, match="category"):
        with_categories.predict_distribution(
            rows.drop("category"), quantiles=(0.5,), n_samples=5, rng=np.random.default_rng(1)
        )


def test_without_a_category_column_the_model_is_as_before_and_says_why(without_categories):
    report = without_categories.describe()
    assert report.formulas[1] == (
        f"sales ~ t + fourier_s1 + fourier_c1 + fourier_s2 + fourier_c2 + {SKU_ONLY_RANDOM}"
    )
    conv = report.convergence["h=1"]
    assert conv["category_level_dropped"] == "the training frame has no category column"
    assert conv["random_slope_dropped"] is None
    assert conv["n_categories"] == 0
    assert "category_effects" not in conv
    assert not any(g.startswith("category") for g in without_categories.results_[1].sd)


def test_too_few_categories_or_too_short_a_history_drop_the_category_level(panel):
    frame = panel["frame"].filter(pl.col("category").is_in(["C0", "C1"]))
    est = _make().fit(frame)
    conv = est.describe().convergence["h=1"]
    assert est.describe().formulas[1].endswith(f"+ {SKU_ONLY_RANDOM}")
    assert "category" not in est.describe().formulas[1]
    assert conv["category_level_dropped"] == (
        "the training frame has 2 categories, the category level needs >= 3 (min_categories)"
    )
    assert conv["n_categories"] == 2
    # under 24 training months: no seasonal slopes, so no category level either
    short = panel["frame"].filter(pl.col("month") >= _month(N_MONTHS - 18))
    conv = _make().fit(short).describe().convergence["h=1"]
    assert conv["random_slope_dropped"].startswith("SKU seasonal slopes need >= 24")
    assert conv["category_level_dropped"].startswith("no seasonal slopes: SKU seasonal slopes")


def test_skus_without_a_category_share_one_level(panel):
    frame = panel["frame"].with_columns(
        pl.when(pl.col("sku").is_in(["S000", "S001", "S030"]))
        .then(None)
        .otherwise(pl.col("category"))
        .alias("category")
    )
    kept = pl.col("category").is_in(["C0", "C1", "C2"]) | pl.col("category").is_null()
    est = _make().fit(frame.filter(kept))
    res = est.results_[1]
    assert set(res.ranef["category"].get_column("level")) == {"C0", "C1", "C2", NO_CATEGORY}
    assert est.describe().convergence["h=1"]["n_categories"] == 3


def test_the_category_reaches_the_model_through_the_feature_pipeline():
    """simulate_panel (with a category column) -> poolcast.features -> the category level."""
    from poolcast.config import FeatureConfig
    from poolcast.features import build_forecast_frame, build_training_frame, make_feature_spec
    from poolcast.simulate import simulate_panel

    panel = simulate_panel(40, 30, family="negbin", seed=5, n_categories=4).frame
    spec = make_feature_spec(panel, FeatureConfig(horizons=1))
    train = build_training_frame(panel, spec)
    assert train.get_column("category").null_count() == 0
    est = _make().fit(train, history=panel)
    assert CATEGORY_RANDOM in est.describe().formulas[1]
    assert est.describe().convergence["h=1"]["n_categories"] == 4
    rows = build_forecast_frame(panel, spec)
    fc = est.predict_distribution(
        rows, quantiles=(0.5,), n_samples=20, rng=np.random.default_rng(0)
    )
    assert fc.keys.height == 40 and np.all(np.isfinite(fc.mean))
