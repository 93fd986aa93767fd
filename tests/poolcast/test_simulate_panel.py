"""Simulated panels: shape, truth file, and recovery of the truth by independent fits."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import statsmodels.api as sm

from poolcast.errors import InvalidParameterError
from poolcast.io import load_source
from poolcast.simulate import simulate_panel, write_simulation
from poolcast.validation import validate_panel


def test_shape_and_contract() -> None:
    sim = simulate_panel(50, 24, family="poisson", seed=3, start=date(2021, 7, 1))
    f = sim.frame
    assert f.height == 50 * 24
    assert f.columns == ["sku", "month", "sales", "customer_count", "category", "promo"]
    assert f["month"].min() == date(2021, 7, 1) and f["month"].max() == date(2023, 6, 1)
    assert f.select(pl.col("sku").n_unique()).item() == 50
    assert (f["sales"] >= 0).all() and (f["customer_count"] >= 0).all()
    # it passes validation untouched, with no gap
    path_free = validate_panel(_loaded(f))
    assert path_free.counts.rows_quarantined == 0 and path_free.counts.gaps == 0


def _loaded(frame: pl.DataFrame):
    from poolcast.io import LoadedSource
    from poolcast.mapping import load_mapping

    strings = frame.with_columns(pl.all().cast(pl.String)).with_row_index("_row", offset=1)
    return LoadedSource(
        frame=strings.with_columns(pl.col("_row").cast(pl.Int64)),
        source="memory",
        mapping=load_mapping("contract"),
    )


def test_same_seed_same_panel() -> None:
    a = simulate_panel(20, 12, family="negbin", seed=7)
    b = simulate_panel(20, 12, family="negbin", seed=7)
    assert a.frame.equals(b.frame)
    assert not a.frame.equals(simulate_panel(20, 12, family="negbin", seed=8).frame)


def test_random_effects_have_the_requested_covariance() -> None:
    sim = simulate_panel(40_000, 1, seed=11, sd_intercept=0.5, sd_promo=0.3, corr=-0.4)
    e = sim.truth.sku_effects
    b0, b1 = e["intercept"].to_numpy(), e["promo"].to_numpy()
    # standard errors ~ 0.5/sqrt(2*40000) = 0.002 for the SDs, ~0.004 for the correlation
    assert b0.std() == pytest.approx(0.5, abs=0.01)
    assert b1.std() == pytest.approx(0.3, abs=0.01)
    assert np.corrcoef(b0, b1)[0, 1] == pytest.approx(-0.4, abs=0.02)


def _design(sim):
    f = sim.frame.join(
        sim.truth.sku_effects.select("sku", "intercept", pl.col("promo").alias("b1")), on="sku"
    )
    cat = pl.DataFrame(
        {
            "category": list(sim.truth.category_effects),
            "gamma": list(sim.truth.category_effects.values()),
        }
    )
    f = f.join(cat, on="category")
    first = f["month"].min()
    months = (f["month"].dt.year() - first.year) * 12 + (f["month"].dt.month() - first.month)
    moy = f["month"].dt.month().to_numpy()
    X = np.column_stack(
        [
            np.ones(f.height),
            f["promo"].to_numpy(),
            np.log1p(f["customer_count"].to_numpy()),
            months.to_numpy() / 12.0,
            np.sin(2 * np.pi * moy / 12),
            np.cos(2 * np.pi * moy / 12),
        ]
    )
    offset = (f["intercept"] + f["gamma"] + f["b1"] * f["promo"]).to_numpy()
    return f["sales"].to_numpy(), X, offset


def test_poisson_glm_with_true_random_effects_as_offset_recovers_fixed_effects() -> None:
    sim = simulate_panel(2_000, 36, family="poisson", seed=5)
    y, X, offset = _design(sim)
    fit = sm.GLM(y, X, family=sm.families.Poisson(), offset=offset).fit()
    names = ["intercept", "promo", "log1p_customers", "t", "fourier_s1", "fourier_c1"]
    truth = np.array([sim.truth.fixed[n] for n in names])
    z = (fit.params - truth) / fit.bse
    assert np.all(np.abs(z) < 4.5), dict(zip(names, z, strict=True))


def test_negbin_dispersion_matches_theta() -> None:
    sim = simulate_panel(1_000, 24, family="negbin", seed=9, theta=4.0)
    y, X, offset = _design(sim)
    fit = sm.NegativeBinomial(y, X, offset=offset, loglike_method="nb2").fit(disp=0, maxiter=200)
    alpha = fit.params[-1]  # NB2 alpha = 1 / theta
    assert 1.0 / alpha == pytest.approx(4.0, rel=0.15)
    assert sim.truth.theta == 4.0
    assert simulate_panel(5, 2, family="poisson").truth.theta is None


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_write_simulation(tmp_path: Path, suffix: str) -> None:
    sim = simulate_panel(30, 12, family="negbin", seed=1)
    panel_path, truth_path = write_simulation(sim, tmp_path / f"sim{suffix}")
    assert truth_path == tmp_path / "sim.truth.json"
    truth = json.loads(truth_path.read_text())
    assert truth["family"] == "negbin" and truth["theta"] == 5.0
    assert set(truth["fixed"]) == {
        "intercept",
        "promo",
        "log1p_customers",
        "t",
        "fourier_s1",
        "fourier_c1",
    }
    assert len(truth["sku_effects"]["sku"]) == 30
    assert truth["corr"] == sim.truth.corr
    loaded = load_source(panel_path, "contract")
    assert loaded.frame.height == 30 * 12
    assert validate_panel(loaded).counts.rows_accepted == 30 * 12


def test_invalid_arguments() -> None:
    with pytest.raises(InvalidParameterError, match="family"):
        simulate_panel(5, 5, family="gamma")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match="n_skus"):
        simulate_panel(0, 5)
    with pytest.raises(InvalidParameterError, match=r"\.csv"):
        write_simulation(simulate_panel(2, 2), "out.txt")
