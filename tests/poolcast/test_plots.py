"""Tests for poolcast/plots.py: artists read back from the figures against hand-computed values."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest
from matplotlib._pylab_helpers import Gcf
from matplotlib.collections import LineCollection, PathCollection, PolyCollection
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.figure import Figure

from poolcast.errors import InvalidParameterError
from poolcast.plots import (
    calibration_plot,
    caterpillar_plot,
    fan_chart,
    leaderboard_plot,
    shrinkage_plot,
)


def _months(start_month: int, n: int) -> list[date]:
    return [
        date(2024 + (start_month + i - 1) // 12, (start_month + i - 1) % 12 + 1, 1)
        for i in range(n)
    ]


def _history(skus: dict[str, int]) -> pl.DataFrame:
    rows = [(s, m, level + i) for s, level in skus.items() for i, m in enumerate(_months(1, 6))]
    return pl.DataFrame(rows, schema=["sku", "month", "sales"], orient="row")


def _forecast(skus: dict[str, float], *, lower: bool = False) -> pl.DataFrame:
    """Three future months; q_p = mean + 10 * (p - 0.5), so q_0.5 = mean."""
    frames = []
    for s, mean in skus.items():
        cols = {"sku": [s] * 3, "month": _months(7, 3), "mean": [mean, mean + 1, mean + 2]}
        levels = [0.1, 0.5, 0.8, 0.9, 0.95, 0.99] if lower else [0.5, 0.8, 0.9, 0.95, 0.99]
        for p in levels:
            cols[f"q_{p}"] = [m + 10 * (p - 0.5) for m in cols["mean"]]
        frames.append(pl.DataFrame(cols))
    return pl.concat(frames)


def _band(ax, p: float) -> PolyCollection:
    (band,) = [c for c in ax.collections if c.get_gid() == f"band-{p:g}"]
    return band


def _no_data(fig: Figure) -> bool:
    return len(fig.axes) == 1 and [t.get_text() for t in fig.axes[0].texts] == ["no data"]


# ---------------------------------------------------------------- fan_chart


def test_fan_chart_two_skus_two_panels_with_bands_lines_and_actuals():
    actuals = pl.DataFrame(
        {"sku": ["a", "a", "b"], "month": _months(7, 2) + _months(7, 1), "sales": [5, 6, 7]}
    )
    fig = fan_chart(
        _history({"a": 10, "b": 20}), _forecast({"a": 12.0, "b": 22.0}), actuals=actuals
    )
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2
    assert [ax.get_title() for ax in fig.axes] == ["b", "a"]  # larger forecast first
    for ax, n_actual in zip(fig.axes, [1, 2], strict=True):
        bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
        assert len(bands) == 4  # q_0.8, q_0.9, q_0.95, q_0.99
        assert len(ax.lines) == 2  # history + forecast mean
        assert len(ax.lines[0].get_ydata()) == 6 and len(ax.lines[1].get_ydata()) == 3
        (points,) = [c for c in ax.collections if isinstance(c, PathCollection)]
        assert len(points.get_offsets()) == n_actual
    assert list(fig.axes[0].collections[-1].get_offsets()[:, 1]) == [7]


def test_fan_chart_symmetric_band_when_lower_quantile_absent():
    fc = _forecast({"a": 2.0})  # q_0.5 = mean = 2, 3, 4 ; q_0.8 = mean + 3
    ax = fan_chart(_history({"a": 1}), fc).axes[0]
    ys = set(np.round(_band(ax, 0.8).get_paths()[0].vertices[:, 1], 9))
    # lower = max(0, 2 * q_0.5 - q_0.8) = max(0, mean - 3) = 0, 0, 1 ; upper = 5, 6, 7
    assert {0.0, 1.0, 5.0, 6.0, 7.0} <= ys
    assert min(ys) == 0.0  # floored at zero sales
    assert -1.0 not in ys


def test_fan_chart_uses_lower_quantile_column_when_present():
    fc = _forecast({"a": 20.0}, lower=True)  # q_0.1 = mean - 4 ; q_0.9 = mean + 4
    ax = fan_chart(_history({"a": 1}), fc).axes[0]
    ys = set(np.round(_band(ax, 0.9).get_paths()[0].vertices[:, 1], 9))
    assert {16.0, 17.0, 18.0, 24.0, 25.0, 26.0} <= ys
    # q_0.8 has no q_0.2: symmetric about q_0.5 -> 17, 18, 19
    ys8 = set(np.round(_band(ax, 0.8).get_paths()[0].vertices[:, 1], 9))
    assert {17.0, 18.0, 19.0, 23.0, 24.0, 25.0} <= ys8


def test_fan_chart_max_skus_explicit_skus_and_latest_origin():
    hist = _history({"a": 1, "b": 2, "c": 3, "d": 4})
    fc = _forecast({"a": 5.0, "b": 50.0, "c": 1.0, "d": 30.0})
    assert [ax.get_title() for ax in fan_chart(hist, fc, max_skus=2).axes] == ["b", "d"]
    assert [ax.get_title() for ax in fan_chart(hist, fc, skus=["c", "a", "d"]).axes] == [
        "c",
        "a",
        "d",
    ]
    old = fc.with_columns(
        origin=pl.lit(date(2024, 5, 1)), month=pl.col("month").dt.offset_by("-1mo")
    )
    both = pl.concat([old, fc.with_columns(origin=pl.lit(date(2024, 6, 1)))])
    ax = fan_chart(hist, both, skus=["a"]).axes[0]
    assert list(ax.lines[1].get_ydata()) == [5.0, 6.0, 7.0]  # only the latest origin's 3 rows
    with pytest.raises(InvalidParameterError, match=r"\['zz'\]"):
        fan_chart(hist, fc, skus=["a", "zz"])
    with pytest.raises(InvalidParameterError, match="max_skus"):
        fan_chart(hist, fc, max_skus=0)


def test_fan_chart_ranks_skus_from_forecast_then_history():
    # x only in the forecast, y and z only in the history (no forecast: history line only)
    fig = fan_chart(_history({"y": 10, "z": 30}), _forecast({"x": 1.0}))
    assert [ax.get_title() for ax in fig.axes] == ["x", "z", "y"]
    assert len(fig.axes[1].lines) == 2 and len(fig.axes[1].lines[1].get_ydata()) == 0


def test_fan_chart_missing_history_or_actuals_column():
    hist, fc = _history({"a": 1}), _forecast({"a": 2.0})
    with pytest.raises(InvalidParameterError, match=r"fan_chart: `history`.*'sales'"):
        fan_chart(hist.drop("sales"), fc)
    with pytest.raises(InvalidParameterError, match=r"fan_chart: `actuals`.*'month'"):
        fan_chart(hist, fc, actuals=hist.drop("month"))


def test_fan_chart_without_quantiles_draws_no_band():
    fc = _forecast({"a": 3.0}).select("sku", "month", "mean")
    ax = fan_chart(_history({"a": 1}), fc).axes[0]
    assert not ax.collections and len(ax.lines) == 2


# ---------------------------------------------------------------- shrinkage_plot


def test_shrinkage_plot_segments_points_and_population_line():
    frame = pl.DataFrame(
        {
            "level": ["a", "b", "c", "d"],
            "n_obs": [2, 10, 50, 3],
            "raw": [3.0, 1.0, 0.5, float("-inf")],
            "pooled": [1.2, 0.9, 0.5, 0.7],
        }
    )
    fig = shrinkage_plot(frame, population=0.8)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    by_gid = {c.get_gid(): c for c in ax.collections}
    segments = by_gid["shrink-segments"]
    assert isinstance(segments, LineCollection)
    # one segment per finite raw estimate, from (n, raw) to (n, pooled)
    got = sorted(tuple(np.round(s.ravel(), 9)) for s in segments.get_segments())
    assert got == sorted([(2, 3.0, 2, 1.2), (10, 1.0, 10, 0.9), (50, 0.5, 50, 0.5)])
    assert len(by_gid["raw"].get_offsets()) == 3
    assert len(by_gid["pooled"].get_offsets()) == 4
    (pop,) = [ln for ln in ax.lines if ln.get_gid() == "population"]
    assert list(pop.get_ydata()) == [0.8, 0.8]
    assert "1 non-finite" in ax.get_title()


def test_shrinkage_plot_zero_n_obs_uses_symlog_and_no_population_line():
    frame = pl.DataFrame(
        {"level": ["a", "b"], "n_obs": [0, 4], "raw": [0.0, 1.0], "pooled": [0.3, 0.9]}
    )
    ax = shrinkage_plot(frame).axes[0]
    assert ax.get_xscale() == "symlog"
    assert not ax.lines


# ---------------------------------------------------------------- caterpillar_plot


def test_caterpillar_three_levels_three_error_bars_per_term_sorted():
    ranef = pl.DataFrame(
        {
            "level": ["x", "y", "z"] * 2,
            "term": ["(Intercept)"] * 3 + ["promo"] * 3,
            "mode": [0.5, -1.0, 0.2, 0.0, 0.3, -0.3],
            "cond_sd": [0.1, 0.2, 0.3, 0.05, 0.05, 0.1],
        }
    )
    fig = caterpillar_plot(ranef)
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    (container,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    (bars,) = container.lines[2]
    segments = bars.get_segments()
    assert len(segments) == 3
    # sorted by mode: y (-1.0, sd .2), z (0.2, sd .3), x (0.5, sd .1)
    expected = [
        (-1.0 - 0.392, -1.0 + 0.392),
        (0.2 - 0.588, 0.2 + 0.588),
        (0.5 - 0.196, 0.5 + 0.196),
    ]
    for seg, (lo, hi) in zip(segments, expected, strict=True):
        assert seg[:, 0] == pytest.approx([lo, hi])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["y", "z", "x"]
    assert "(Intercept)" in ax.get_title() and "promo" in fig.axes[1].get_title()


def test_caterpillar_subsamples_evenly_and_keeps_extremes():
    n = 500
    ranef = pl.DataFrame(
        {
            "level": [f"s{i}" for i in range(n)],
            "term": ["(Intercept)"] * n,
            "mode": np.linspace(-2, 2, n)[::-1],
            "cond_sd": np.full(n, 0.1),
        }
    )
    ax = caterpillar_plot(ranef, max_levels=50).axes[0]
    (container,) = ax.containers
    x = container.lines[0].get_xdata()
    assert len(x) == 50
    assert x[0] == pytest.approx(-2.0) and x[-1] == pytest.approx(2.0)
    assert np.all(np.diff(x) > 0)
    assert "50 of 500" in ax.get_title()
    with pytest.raises(InvalidParameterError, match="max_levels"):
        caterpillar_plot(ranef, max_levels=1)


# ---------------------------------------------------------------- calibration_plot

TINY = pl.DataFrame(
    {
        "y": [1.0, 2.0, 3.0, 4.0, None],
        "q_0.5": [2.0, 1.0, 2.0, 2.0, 9.0],
        "q_0.9": [5.0, 1.5, 3.0, 3.0, 9.0],
    }
)


def test_calibration_empirical_coverage_matches_hand_count_and_pit_bars():
    fig = calibration_plot(TINY, quantiles=[0.9, 0.5])
    ax1, ax2 = fig.axes
    (emp,) = [ln for ln in ax1.lines if ln.get_gid() == "empirical"]
    # y <= q_0.5: T F F F -> 1/4 ; y <= q_0.9: T F T F -> 2/4 (the null-y row is dropped)
    assert list(emp.get_xdata()) == [0.5, 0.9]
    assert list(emp.get_ydata()) == [0.25, 0.5]
    (diag,) = [ln for ln in ax1.lines if ln.get_gid() == "diagonal"]
    assert list(diag.get_ydata()) == [0, 1]
    # no horizon column -> PIT-like bars over bins (-inf, q_.5], (q_.5, q_.9], (q_.9, inf)
    (bars,) = [c for c in ax2.containers if isinstance(c, BarContainer)]
    assert [b.get_height() for b in bars] == [0.25, 0.25, 0.5]
    (nominal,) = ax2.collections
    assert np.asarray(nominal.get_offsets())[:, 1].tolist() == pytest.approx([0.5, 0.4, 0.1])


def test_calibration_interval_coverage_by_horizon():
    preds = pl.DataFrame(
        {
            "horizon": [1, 1, 1, 2, 2],
            "y": [5.0, 0.0, 9.0, 5.0, 5.0],
            "q_0.1": [1.0, 1.0, 1.0, 6.0, 1.0],
            "q_0.5": [5.0, 5.0, 5.0, 7.0, 5.0],
            "q_0.9": [9.0, 9.0, 8.0, 9.0, 9.0],
        }
    )
    ax2 = calibration_plot(preds, quantiles=[0.1, 0.5, 0.9]).axes[1]
    (cov,) = [ln for ln in ax2.lines if ln.get_gid() == "coverage-0.8"]
    # h=1: 5 in [1,9] yes, 0 in [1,9] no, 9 in [1,8] no -> 1/3 ; h=2: no, yes -> 1/2
    assert list(cov.get_xdata()) == [1, 2]
    assert cov.get_ydata() == pytest.approx([1 / 3, 1 / 2])
    assert not [ln for ln in ax2.lines if ln.get_gid() == "coverage-0.95"]  # no q_0.025/q_0.975


def test_calibration_rejects_bad_levels_and_missing_quantile_column():
    with pytest.raises(InvalidParameterError, match=r"calibration_plot.*q_0\.95"):
        calibration_plot(TINY, quantiles=[0.5, 0.95])
    with pytest.raises(InvalidParameterError, match="quantiles"):
        calibration_plot(TINY, quantiles=[0.5, 1.5])
    with pytest.raises(InvalidParameterError, match="quantiles"):
        calibration_plot(TINY, quantiles=[])


# ---------------------------------------------------------------- leaderboard_plot


def test_leaderboard_sorted_bars_and_failed_candidates_listed():
    board = pl.DataFrame(
        {
            "candidate": ["glm", "glmm", "gee", "bayes"],
            "scaled_pinball": [0.9, 0.4, 0.6, None],
            "mase": [1.0, 0.8, 0.9, None],
        }
    )
    ax = leaderboard_plot(board, metric="scaled_pinball").axes[0]
    (bars,) = ax.containers
    assert [b.get_width() for b in bars] == [0.4, 0.6, 0.9]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["glmm", "gee", "glm"]
    assert ax.yaxis_inverted()  # best at the top
    assert "bayes" in ax.get_xlabel()


# ---------------------------------------------------------------- shared contracts

CASES = {
    "fan_chart": (
        lambda h, f: fan_chart(h, f),
        lambda: (_history({"a": 1}), _forecast({"a": 2.0})),
        "forecast",
        "mean",
    ),
    "shrinkage_plot": (
        lambda f: shrinkage_plot(f),
        lambda: (pl.DataFrame({"level": ["a"], "n_obs": [3], "raw": [1.0], "pooled": [0.5]}),),
        "shrinkage",
        "pooled",
    ),
    "caterpillar_plot": (
        lambda f: caterpillar_plot(f),
        lambda: (pl.DataFrame({"level": ["a"], "term": ["t"], "mode": [0.1], "cond_sd": [0.2]}),),
        "ranef",
        "cond_sd",
    ),
    "calibration_plot": (
        lambda f: calibration_plot(f, quantiles=[0.5, 0.9]),
        lambda: (TINY,),
        "predictions",
        "y",
    ),
    "leaderboard_plot": (
        lambda f: leaderboard_plot(f, metric="mase"),
        lambda: (pl.DataFrame({"candidate": ["a", "b"], "mase": [1.0, 2.0]}),),
        "leaderboard",
        "mase",
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_missing_required_column_names_column_and_function(name):
    plot, make, argument, column = CASES[name]
    frames = list(make())
    index = 1 if name == "fan_chart" else 0
    frames[index] = frames[index].drop(column)
    with pytest.raises(InvalidParameterError, match=rf"{name}: `{argument}`.*'{column}'"):
        plot(*frames)


@pytest.mark.parametrize("name", CASES)
def test_empty_input_gives_no_data_figure(name):
    plot, make, _, _ = CASES[name]
    frames = [f.clear() for f in make()]
    assert _no_data(plot(*frames))


@pytest.mark.parametrize("name", CASES)
def test_figure_saves_to_png_without_pyplot(tmp_path, name):
    plot, make, _, _ = CASES[name]
    fig = plot(*make())
    assert isinstance(fig, Figure)
    path = tmp_path / f"{name}.png"
    fig.savefig(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Gcf.get_num_fig_managers() == 0  # nothing registered in pyplot's global state


def test_non_dataframe_input_is_rejected():
    with pytest.raises(InvalidParameterError, match="polars DataFrame"):
        leaderboard_plot({"candidate": ["a"], "mase": [1.0]}, metric="mase")


def test_category_effects_plot_orders_by_posterior_mean_and_checks_shape():
    from poolcast.plots import category_effects_plot

    rng = np.random.default_rng(0)
    draws = rng.normal([0.5, -1.0, 0.0], 0.1, size=(400, 3))
    fig = category_effects_plot(draws, ["A", "B", "C"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["B", "C", "A"]  # ascending means
    with pytest.raises(InvalidParameterError, match="shape"):
        category_effects_plot(draws, ["A", "B"])


def test_trace_rank_plot_has_a_trace_and_a_rank_panel_per_parameter():
    from poolcast.plots import trace_rank_plot

    rng = np.random.default_rng(1)
    fig = trace_rank_plot({"sku_sd": rng.random((2, 50)), "alpha": rng.random((2, 50))}, bins=5)
    assert len(fig.axes) == 4
    # ranks of 100 draws in 5 bins: each chain's histogram sums to its 50 draws
    steps = fig.axes[1].patches
    assert len(steps) == 2
    assert [float(np.sum(p.get_data().values)) for p in steps] == [50.0, 50.0]
