"""Dispersion classes of the NB2 GLMM candidates (``dispersion_classes``, ``*_disp`` names)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from poolcast.errors import InvalidParameterError
from poolcast.models import (
    GlmmNegBinRandomIntercept,
    GlmmNegBinRandomInterceptDisp,
    GlmmPoissonRandomIntercept,
    make_candidate,
)
from poolcast.models._dispersion import dispersion_classes, sku_excess_dispersion
from tests.poolcast.models._frames import simulate_feature_frame, split_last_month
from tests.poolcast.models.test_glmm_ar1 import ar1_panel


@pytest.fixture(scope="module")
def mixed_panel():
    """60 calm SKUs (NB2 alpha 0.02, ``S*``) and 60 volatile ones (alpha 0.8, ``VS*``)."""
    calm = simulate_feature_frame(
        n_sku=60, n_months=26, horizons=(1, 2), sd_sku=0.5, alpha=0.02, seed=1
    ).frame
    wild = simulate_feature_frame(
        n_sku=60, n_months=26, horizons=(1, 2), sd_sku=0.5, alpha=0.8, seed=2
    ).frame.with_columns(("V" + pl.col("sku")).alias("sku"))
    return split_last_month(pl.concat([calm, wild]))


@pytest.fixture(scope="module")
def split_ar1():
    from poolcast.backtest import prepare_splits
    from poolcast.config import FeatureConfig

    panel = ar1_panel(n_sku=40, n_month=30, seed=3)
    return prepare_splits(panel, feature_config=FeatureConfig(horizons=2), n_origins=1)[0]


@pytest.fixture(scope="module")
def disp_fit(mixed_panel):
    train, _ = mixed_panel
    return GlmmNegBinRandomInterceptDisp().fit(train)


def test_classes_separate_calm_and_volatile_skus(disp_fit):
    model = disp_fit.models_[1]
    classes = model.dispersion
    assert classes is not None and classes.n_classes == 5
    volatile = [c for s, c in classes.classes.items() if s.startswith("V")]
    calm = [c for s, c in classes.classes.items() if not s.startswith("V")]
    assert np.mean([c in ("d3", "d4") for c in volatile]) > 0.7
    assert np.mean([c in ("d0", "d1") for c in calm]) > 0.7
    coef = model.results.disp_coef
    sizes = [coef[f"disp_classd{k}"] for k in range(5)]
    assert sizes == sorted(sizes, reverse=True)  # calm classes have the larger NB2 size
    assert model.notes["dispersion_loglik_gain"] > 50


def test_class_map_is_built_from_the_training_rows_only(mixed_panel, disp_fit):
    """The map of each horizon is a function of that horizon's training rows and the
    one-size fit on them; forecast rows (with or without their sales) never change it."""
    train, rows = mixed_panel
    model = disp_fit.models_[1]
    one_size = GlmmNegBinRandomIntercept().fit(train).models_[1]
    frame = disp_fit._design_frame(model.spec, train.filter(pl.col("horizon") == 1), model.formula)
    frame = frame.sort("sku", maintain_order=True)
    expected = dispersion_classes(
        frame.get_column("sku"),
        frame.get_column("sales").to_numpy(),
        one_size.results.predict(frame),
        n_classes=5,
        min_rows=disp_fit.dispersion_min_rows,
    )
    assert model.dispersion.classes == expected.classes
    before = dict(model.dispersion.classes)
    wild_rows = rows.with_columns(pl.col("sales") * 1000)
    a = disp_fit.predict_distribution(
        wild_rows, quantiles=[0.1, 0.9], n_samples=200, rng=np.random.default_rng(5)
    )
    b = disp_fit.predict_distribution(
        rows.drop("sales"), quantiles=[0.1, 0.9], n_samples=200, rng=np.random.default_rng(5)
    )
    assert model.dispersion.classes == before
    np.testing.assert_array_equal(a.samples, b.samples)


def test_short_and_new_skus_get_the_middle_class():
    sku = pl.Series(["a"] * 8 + ["b"] * 8 + ["c"] * 8 + ["short"] * 3)
    rng = np.random.default_rng(0)
    mu = np.full(27, 10.0)
    y = np.r_[rng.poisson(10, 8), rng.negative_binomial(2, 2 / 12, 8), [10] * 8, [0, 40, 0]]
    classes = dispersion_classes(sku, y, mu, n_classes=3, min_rows=6)
    assert classes.default_class == "d1"
    assert "short" not in classes.classes
    assigned = classes.assign(pl.Series(["short", "never_seen", "b"])).to_list()
    assert assigned[:2] == ["d1", "d1"]
    per = sku_excess_dispersion(sku, y, mu).filter(pl.col("sku") == "c")
    assert per.get_column("alpha").item() == pytest.approx(-0.1)  # (0 - 10 * 8) / (100 * 8)


def test_forecast_intervals_follow_the_class(mixed_panel, disp_fit):
    _, rows = mixed_panel
    rows = rows.filter(pl.col("horizon") == 1)
    fc = disp_fit.predict_distribution(
        rows, quantiles=[0.1, 0.9], n_samples=400, rng=np.random.default_rng(1)
    )
    width = (fc.quantiles[0.9] - fc.quantiles[0.1]) / np.maximum(fc.mean, 1.0)
    volatile = rows.get_column("sku").str.starts_with("V").to_numpy()
    assert np.median(width[volatile]) > 1.5 * np.median(width[~volatile])  # Poisson part shared
    conv = disp_fit.describe().convergence["h=1"]
    assert conv["nb2_theta"] is None
    assert set(conv["nb2_disp_coef"]) == {f"disp_classd{k}" for k in range(5)}
    assert conv["dispersion_classes"]["default_class"] == "d2"


def test_refuses_dispersion_classes_where_unsupported(mixed_panel):
    train, _ = mixed_panel
    with pytest.raises(InvalidParameterError, match=r"dispersion_classes=3.*NB2"):
        GlmmPoissonRandomIntercept(dispersion_classes=3).fit(train)
    with pytest.raises(InvalidParameterError, match="dispersion_classes=1"):
        GlmmNegBinRandomIntercept(dispersion_classes=1).fit(train)
    with pytest.raises(InvalidParameterError, match="dispersion_classes"):
        GlmmNegBinRandomIntercept(dispersion_classes=11).fit(train)
    with pytest.raises(InvalidParameterError, match="dispersion_classes=1"):
        make_candidate("glmm_nb2_ar1", dispersion_classes=1).fit(train)


def test_one_size_default_is_unchanged(mixed_panel):
    train, _ = mixed_panel
    model = GlmmNegBinRandomIntercept().fit(train).models_[1]
    assert model.dispersion is None
    assert model.results.disp_coef is None and model.results.nb_theta > 0


def test_too_few_skus_keep_one_size(mixed_panel):
    train, _ = mixed_panel
    few = train.filter(pl.col("sku").is_in(["S0000", "S0001", "VS0000"]))
    cand = GlmmNegBinRandomIntercept(dispersion_classes=5).fit(few)
    model = cand.models_[1]
    assert model.dispersion is None
    assert "fewer than 5 SKUs" in model.notes["dispersion_fallback"]


def test_ar1_candidate_fits_dispersion_classes_by_default(split_ar1):
    """``glmm_nb2_ar1`` defaults to 5 classes (chosen on the backtests); 0 is the one-size model."""
    from poolcast.models.glmm_ar1 import GlmmNegBinAr1

    assert GlmmNegBinAr1().n_dispersion_classes == 5
    model = GlmmNegBinAr1().fit(split_ar1.train, history=split_ar1.history)
    conv = model.describe().convergence["h=1"]
    assert conv["dispersion_classes"]["n_classes"] == 5
    if "dispersion_fallback" not in conv:
        assert conv["nb2_theta"] is None and len(conv["nb2_disp_coef"]) == 5
        fc = model.predict_distribution(
            split_ar1.test, quantiles=[0.1, 0.9], n_samples=50, rng=np.random.default_rng(0)
        )
        assert np.all(np.isfinite(fc.mean))
    one = GlmmNegBinAr1(dispersion_classes=0).fit(split_ar1.train, history=split_ar1.history)
    assert (
        one.results_.nb_theta > 0 and "dispersion_classes" not in one.describe().convergence["h=1"]
    )
