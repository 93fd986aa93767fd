"""Diagnostic plots: forecast fan charts, shrinkage, caterpillar, calibration and leaderboard.

Every function is pure: it takes polars frames with the documented columns and returns a new
:class:`matplotlib.figure.Figure` built with the object-oriented API (no ``pyplot``, so no global
figure registry and nothing to close; ``fig.savefig(path)`` renders with Agg). Quantile columns are
named ``q_<level>`` (``q_0.5``, ``q_0.95``), as in ``Forecast.to_frame``; levels are read back from
the names, so ``q_0.50`` and ``q_0.5`` both mean the median. A missing required column raises
:class:`~poolcast.errors.InvalidParameterError`; an empty frame gives a figure with a "no data" note.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence

import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from poolcast.errors import InvalidParameterError

__all__ = [
    "calibration_plot",
    "category_effects_plot",
    "caterpillar_plot",
    "fan_chart",
    "leaderboard_plot",
    "shrinkage_plot",
    "trace_rank_plot",
]

_QUANTILE_COLUMN = re.compile(r"^q_(\d*\.?\d+)$")
_INTERVALS = ((0.80, 0.10, 0.90), (0.95, 0.025, 0.975))  # (nominal, lower level, upper level)


def _require(frame: pl.DataFrame, columns: Sequence[str], *, function: str, argument: str) -> None:
    if not isinstance(frame, pl.DataFrame):
        raise InvalidParameterError(
            f"{function}: `{argument}` must be a polars DataFrame, got {type(frame).__name__}."
        )
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InvalidParameterError(
            f"{function}: `{argument}` is missing required column(s) {missing}; it has "
            f"{frame.columns}. Rename or add the column(s) before plotting."
        )


def _quantile_columns(frame: pl.DataFrame) -> dict[float, str]:
    """Map each level in (0, 1) to its ``q_<level>`` column."""
    found = {float(m.group(1)): c for c in frame.columns if (m := _QUANTILE_COLUMN.match(c))}
    return {p: found[p] for p in sorted(found) if 0.0 < p < 1.0}


def _values(frame: pl.DataFrame, column: str) -> np.ndarray:
    return frame[column].cast(pl.Float64).to_numpy()


def _column_for(levels: dict[float, str], level: float) -> str | None:
    return next((c for p, c in levels.items() if math.isclose(p, level, abs_tol=1e-9)), None)


def _no_data(title: str) -> Figure:
    fig = Figure(figsize=(6, 3), layout="constrained")
    ax = fig.subplots()
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, gid="no-data")
    ax.set_axis_off()
    ax.set_title(title)
    return fig


def _grid(n: int, *, ncols: int, panel: tuple[float, float]) -> tuple[Figure, list[Axes]]:
    """A figure with exactly ``n`` axes on a grid of ``ncols`` columns (spare cells removed)."""
    ncols, nrows = min(ncols, n), math.ceil(n / min(ncols, n))
    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained")
    axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[n:]:
        fig.delaxes(ax)
    return fig, axes[:n]


def fan_chart(
    history: pl.DataFrame,
    forecast: pl.DataFrame,
    *,
    skus: Sequence[str] | None = None,
    max_skus: int = 6,
    actuals: pl.DataFrame | None = None,
) -> Figure:
    """Small multiples of history, forecast mean and quantile bands, one panel per SKU.

    Parameters
    ----------
    history : pl.DataFrame
        Columns ``sku``, ``month`` (Date), ``sales``; drawn as a line.
    forecast : pl.DataFrame
        Columns ``sku``, ``month``, ``mean`` and any ``q_<level>`` columns. If an ``origin`` column
        holds several origins, only the latest is drawn.
    skus : sequence of str, optional
        SKUs to draw, all of them, in this order. Each must occur in `history` or `forecast`.
    max_skus : int
        When `skus` is None, the `max_skus` SKUs with the largest total forecast mean (then
        total history sales, then name) are drawn.
    actuals : pl.DataFrame, optional
        Columns ``sku``, ``month``, ``sales``; drawn as points (realised values of the forecast).

    Notes
    -----
    One shaded band per upper level :math:`p > 0.5` present, the central interval
    :math:`[q_{1-p}, q_p]`, widest palest. When ``q_<1-p>`` is absent the lower bound is the
    reflection about the median, :math:`\\max(0, 2 q_{0.5} - q_p)` (``mean`` when ``q_0.5`` is
    absent), i.e. a symmetric band floored at zero sales.
    """
    name = "fan_chart"
    _require(history, ["sku", "month", "sales"], function=name, argument="history")
    _require(forecast, ["sku", "month", "mean"], function=name, argument="forecast")
    if actuals is not None:
        _require(actuals, ["sku", "month", "sales"], function=name, argument="actuals")
    if not isinstance(max_skus, int) or max_skus < 1:
        raise InvalidParameterError(f"{name}: max_skus must be an integer >= 1, got {max_skus!r}.")
    if "origin" in forecast.columns and forecast.height:
        forecast = forecast.filter(pl.col("origin") == pl.col("origin").max())
    f = forecast.group_by("sku").agg(f=pl.col("mean").cast(pl.Float64).sum())
    h = history.group_by("sku").agg(h=pl.col("sales").cast(pl.Float64).sum())
    totals = f.join(h, on="sku", how="full", coalesce=True).fill_null(0.0)
    totals = totals.sort(["f", "h", "sku"], descending=[True, True, False])
    if skus is None:
        chosen = totals["sku"].head(max_skus).to_list()
    else:
        chosen = list(skus)
        unknown = sorted(set(chosen) - set(totals["sku"].to_list()))
        if unknown:
            raise InvalidParameterError(
                f"{name}: skus {unknown} occur in neither history nor forecast; pass SKUs that do."
            )
    if not chosen:
        return _no_data("forecast fan chart")
    levels = _quantile_columns(forecast)
    centre = _column_for(levels, 0.5) or "mean"
    uppers = sorted((p for p in levels if p > 0.5), reverse=True)
    fig, axes = _grid(len(chosen), ncols=3, panel=(4.0, 2.8))
    for ax, sku in zip(axes, chosen, strict=True):
        hist = history.filter(pl.col("sku") == sku).sort("month")
        fc = forecast.filter(pl.col("sku") == sku).sort("month")
        x = fc["month"].to_numpy()
        for i, p in enumerate(uppers):
            upper, low_col = _values(fc, levels[p]), _column_for(levels, 1.0 - p)
            lower = np.maximum(0.0, 2.0 * _values(fc, centre) - upper)
            lower = lower if low_col is None else _values(fc, low_col)
            label, alpha = f"{round(200 * p - 100)}% band", 0.15 + 0.45 * i / len(uppers)
            ax.fill_between(
                x, lower, upper, color="C0", alpha=alpha, lw=0, label=label, gid=f"band-{p:g}"
            )
        ax.plot(hist["month"].to_numpy(), _values(hist, "sales"), "k", lw=1, label="history")
        ax.plot(x, _values(fc, "mean"), color="C0", lw=1.5, label="forecast mean")
        if actuals is not None:
            act = actuals.filter(pl.col("sku") == sku)
            ax.scatter(act["month"].to_numpy(), _values(act, "sales"), c="C3", s=12, label="actual")
        ax.set_title(str(sku), fontsize="medium")
        ax.tick_params(axis="x", labelrotation=30, labelsize="small")
    axes[0].legend(fontsize="x-small")
    return fig


def shrinkage_plot(shrinkage: pl.DataFrame, *, population: float | None = None) -> Figure:
    """Raw group estimates against partial-pooled ones, by group size.

    Parameters
    ----------
    shrinkage : pl.DataFrame
        Columns ``level``, ``n_obs``, ``raw`` (the group's own estimate), ``pooled`` (the
        partial-pooled estimate), as from ``GlmmResults.shrinkage``.
    population : float, optional
        The population (complete-pooling) value, drawn as a horizontal line.

    Notes
    -----
    x is ``n_obs`` on a log scale (symlog when some ``n_obs`` <= 0); a vertical segment joins each
    raw estimate (hollow) to its pooled estimate (filled). Partial pooling pulls small groups
    hardest: :math:`\\hat b_j \\approx \\frac{n_j}{n_j + \\sigma^2/\\tau^2}(\\bar y_j - \\mu)`. Rows whose
    raw estimate is not finite (e.g. the log of an all-zero group) get a pooled point only.
    """
    columns = ["level", "n_obs", "raw", "pooled"]
    _require(shrinkage, columns, function="shrinkage_plot", argument="shrinkage")
    if shrinkage.height == 0:
        return _no_data("shrinkage")
    n, raw, pooled = (_values(shrinkage, c) for c in columns[1:])
    ok = np.isfinite(raw) & np.isfinite(pooled) & np.isfinite(n)
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    ax.vlines(n[ok], raw[ok], pooled[ok], color="0.6", lw=0.8, gid="shrink-segments")
    ax.scatter(n[ok], raw[ok], facecolors="none", edgecolors="C1", s=18, label="raw", gid="raw")
    ax.scatter(n, pooled, color="C0", s=14, label="partial pooling", gid="pooled")
    if population is not None:
        ax.axhline(population, color="k", ls="--", lw=1, label="population", gid="population")
    if np.nanmin(n) > 0:
        ax.set_xscale("log")
    else:
        ax.set_xscale("symlog", linthresh=1.0)
    note = f" ({int((~ok).sum())} non-finite raw estimate(s) not shown)" if (~ok).any() else ""
    ax.set(xlabel="observations per level (n_obs)", ylabel="estimate")
    ax.set_title(f"Shrinkage: raw → partial pooling{note}")
    ax.legend(fontsize="small")
    return fig


def caterpillar_plot(ranef: pl.DataFrame, *, max_levels: int = 200) -> Figure:
    """Sorted conditional modes with 95% intervals, one panel per random-effect term.

    Parameters
    ----------
    ranef : pl.DataFrame
        Columns ``level``, ``term``, ``mode``, ``cond_sd`` (one factor of ``GlmmResults.ranef``).
    max_levels : int
        A term with more levels is thinned to `max_levels` levels evenly spaced in rank of
        ``mode`` (indices ``round(linspace(0, n - 1, max_levels))``), which keeps both extremes.

    Notes
    -----
    Each interval is :math:`\\hat b_j \\pm 1.96\\,\\mathrm{sd}(b_j \\mid y)`, with the conditional SD.
    """
    name = "caterpillar_plot"
    _require(ranef, ["level", "term", "mode", "cond_sd"], function=name, argument="ranef")
    if not isinstance(max_levels, int) or max_levels < 2:
        raise InvalidParameterError(f"{name}: max_levels must be an int >= 2, got {max_levels!r}.")
    if ranef.height == 0:
        return _no_data("random effects")
    terms = ranef["term"].unique(maintain_order=True).to_list()
    fig, axes = _grid(len(terms), ncols=len(terms), panel=(4.0, 6.0))
    for ax, term in zip(axes, terms, strict=True):
        part = ranef.filter(pl.col("term") == term).sort("mode")
        total = part.height
        if total > max_levels:
            idx = np.unique(np.round(np.linspace(0, total - 1, max_levels)).astype(np.int64))
            part = part[idx.tolist()]
        y = np.arange(part.height)
        xerr = 1.96 * _values(part, "cond_sd")
        ax.errorbar(
            _values(part, "mode"), y, xerr=xerr, fmt="o", ms=3, ecolor="0.5", elinewidth=0.8
        )
        ax.axvline(0.0, color="k", lw=0.8, ls="--")
        if part.height <= 40:
            ax.set_yticks(y, [str(v) for v in part["level"].to_list()], fontsize="x-small")
        else:
            ax.set_yticks([])
        shown = f"{part.height} of {total} levels" if part.height < total else f"{total} levels"
        ax.set(title=f"{term} ({shown})", xlabel="conditional mode ± 1.96·sd")
    return fig


def calibration_plot(predictions: pl.DataFrame, *, quantiles: Sequence[float]) -> Figure:
    """Quantile calibration: nominal level against empirical coverage, plus a second panel.

    Parameters
    ----------
    predictions : pl.DataFrame
        Column ``y`` and a ``q_<level>`` column for each level in `quantiles`; optional ``horizon``.
    quantiles : sequence of float
        Levels in (0, 1) to check.

    Notes
    -----
    Left: the empirical coverage :math:`\\hat F(p) = \\frac1n \\sum_i 1\\{y_i \\le q_{p,i}\\}` over rows
    with both values non-null, against :math:`p`, with the diagonal. Right: when ``horizon`` is present
    and both bounds of the 80% (``q_0.1``, ``q_0.9``) or 95% (``q_0.025``, ``q_0.975``) central
    interval are, the fraction with :math:`q_{lo} \\le y \\le q_{hi}` by horizon against the nominal
    level; otherwise PIT-like bars, the fraction of ``y`` in each bin
    :math:`(q_{p_{k-1}}, q_{p_k}]` (with :math:`p_0 = 0, p_{K+1} = 1`) beside its nominal width
    :math:`p_k - p_{k-1}`; each row's quantiles are sorted first, so crossings cannot
    double-count a row.
    """
    name = "calibration_plot"
    levels = sorted(float(p) for p in quantiles)
    if not levels or any(not 0.0 < p < 1.0 for p in levels):
        raise InvalidParameterError(
            f"{name}: quantiles must be non-empty levels in (0, 1), got {quantiles!r}."
        )
    _require(predictions, ["y"], function=name, argument="predictions")
    present = _quantile_columns(predictions)
    cols = [_column_for(present, p) for p in levels]
    missing = [f"q_{p:g}" for p, c in zip(levels, cols, strict=True) if c is None]
    _require(predictions, missing, function=name, argument="predictions")
    if predictions.height == 0:
        return _no_data("calibration")
    y, qs = _values(predictions, "y"), [_values(predictions, c) for c in cols]
    usable = [~np.isnan(y) & ~np.isnan(q) for q in qs]  # a null y or q_p drops the row for that p
    empirical = [
        float(((y <= q) & m).sum() / max(m.sum(), 1)) for q, m in zip(qs, usable, strict=True)
    ]
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot([0, 1], [0, 1], color="0.5", ls="--", lw=1, label="ideal", gid="diagonal")
    ax1.plot(levels, empirical, "o-", color="C0", label="empirical", gid="empirical")
    ax1.set(xlim=(0, 1), ylim=(0, 1), xlabel="nominal level p", ylabel="fraction y ≤ q_p")
    ax1.set_title("Quantile calibration")
    ax1.legend(fontsize="small")
    intervals = [
        (nom, _column_for(present, lo), _column_for(present, hi)) for nom, lo, hi in _INTERVALS
    ]
    intervals = [(nom, lo, hi) for nom, lo, hi in intervals if lo and hi]
    if "horizon" in predictions.columns and intervals:
        for k, (nom, lo, hi) in enumerate(intervals):
            cov = (
                predictions.drop_nulls(["y", lo, hi, "horizon"])
                .group_by("horizon")
                .agg(((pl.col("y") >= pl.col(lo)) & (pl.col("y") <= pl.col(hi))).mean().alias("c"))
                .sort("horizon")
            )
            style = {"color": f"C{k}", "label": f"{nom:.0%} interval", "gid": f"coverage-{nom:g}"}
            ax2.plot(cov["horizon"].to_numpy(), cov["c"].to_numpy(), "o-", **style)
            ax2.axhline(nom, color=f"C{k}", ls="--", lw=1)
        ax2.set(ylim=(0, 1.02), xlabel="horizon (months)", ylabel="empirical coverage")
        ax2.set_title("Interval coverage by horizon")
        ax2.legend(fontsize="small")
    else:
        q = np.sort(np.vstack(qs), axis=0)  # rearranged so crossing quantiles give disjoint bins
        ok = ~np.isnan(y) & ~np.isnan(q).any(axis=0)
        inf = np.full((1, int(ok.sum())), np.inf)
        edges = np.vstack([-inf, q[:, ok], inf])
        mass = [
            float(((y[ok] > a) & (y[ok] <= b)).sum() / max(ok.sum(), 1))
            for a, b in itertools.pairwise(edges)
        ]
        nominal = np.diff([0.0, *levels, 1.0])
        pos = np.arange(len(mass))
        ax2.bar(pos, mass, color="C0", alpha=0.7, label="empirical", gid="pit-bars")
        ax2.scatter(pos, nominal, marker="_", s=400, color="k", label="nominal", zorder=3)
        bounds = ["0", *(f"{p:g}" for p in levels), "1"]
        ticks = [f"{a}–{b}" for a, b in itertools.pairwise(bounds)]
        ax2.set_xticks(pos, ticks, fontsize="x-small", rotation=30)
        ax2.set(xlabel="quantile bin", ylabel="fraction of y", title="PIT-like coverage")
        ax2.legend(fontsize="small")
    return fig


def leaderboard_plot(leaderboard: pl.DataFrame, *, metric: str) -> Figure:
    """Horizontal bars of one metric per candidate, smallest (best for a loss) at the top.

    Parameters
    ----------
    leaderboard : pl.DataFrame
        Column ``candidate`` and the numeric column `metric`. Candidates whose value is null or
        NaN (failed candidates) get no bar and are listed under the axis.
    metric : str
        The column to plot.

    Examples
    --------
    >>> board = pl.DataFrame({"candidate": ["glm", "glmm"], "mase": [0.9, 0.7]})
    >>> ax = leaderboard_plot(board, metric="mase").axes[0]
    >>> [t.get_text() for t in ax.get_yticklabels()]
    ['glmm', 'glm']
    """
    name = "leaderboard_plot"
    _require(leaderboard, ["candidate", metric], function=name, argument="leaderboard")
    if leaderboard.height == 0:
        return _no_data(f"leaderboard: {metric}")
    values = leaderboard.select("candidate", v=pl.col(metric).cast(pl.Float64).fill_nan(None))
    scored = values.drop_nulls("v").sort(["v", "candidate"])
    failed = values.filter(pl.col("v").is_null())["candidate"].to_list()
    fig = Figure(figsize=(7, 1.0 + 0.4 * max(scored.height, 1)), layout="constrained")
    ax = fig.subplots()
    bars = ax.barh(np.arange(scored.height), scored["v"].to_numpy(), color="C0", gid="bars")
    ax.bar_label(bars, fmt="%.4g", fontsize="small", padding=2)
    ax.set_yticks(np.arange(scored.height), [str(c) for c in scored["candidate"].to_list()])
    ax.invert_yaxis()
    ax.set(xlabel=metric, title=f"Leaderboard by {metric}")
    if failed:
        ax.set_xlabel(f"{metric}\nno value: {', '.join(map(str, failed))}")
    return fig


def category_effects_plot(
    draws: np.ndarray, levels: Sequence[str], *, term: str = "intercept"
) -> Figure:
    """Posterior of the category effects: mean, 50% and 90% intervals per category.

    Parameters
    ----------
    draws : (S, n_categories) array
        Posterior draws of one category effect (e.g. the intercept :math:`a_{c0}`).
    levels : sequence of str
        Category names, in the columns' order.
    """
    draws = np.asarray(draws, dtype=float)
    if draws.ndim != 2 or draws.shape[1] != len(levels):
        raise InvalidParameterError(
            f"category_effects_plot: draws has shape {draws.shape}; need (S, {len(levels)}) "
            "for the given levels"
        )
    if draws.size == 0:
        return _no_data("category effects")
    order = np.argsort(draws.mean(axis=0))
    q = np.quantile(draws[:, order], [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)
    y = np.arange(len(levels))
    fig = Figure(figsize=(7, max(2.5, 0.25 * len(levels) + 1.2)), layout="constrained")
    ax = fig.subplots()
    ax.hlines(y, q[0], q[4], color="C0", lw=1, label="90% interval")
    ax.hlines(y, q[1], q[3], color="C0", lw=3, label="50% interval")
    ax.plot(draws[:, order].mean(axis=0), y, "o", color="k", ms=3, label="posterior mean")
    ax.axvline(0.0, color="0.5", ls="--", lw=0.8)
    ax.set_yticks(y, [str(levels[i]) for i in order], fontsize="small")
    ax.set(xlabel=f"category effect ({term}, log scale)", title="Posterior of the category effects")
    ax.legend(fontsize="x-small")
    return fig


def trace_rank_plot(chains: dict[str, np.ndarray], *, bins: int = 20) -> Figure:
    """Trace and rank plots of scalar parameters (e.g. the variance components).

    Parameters
    ----------
    chains : dict of str to (n_chains, n_draws) array
        Draws per chain of each scalar.
    bins : int
        Rank histogram bins: with good mixing each chain's ranks are uniform.
    """
    if not chains:
        return _no_data("trace / rank")
    fig = Figure(figsize=(9, 2.2 * len(chains)), layout="constrained")
    axes = fig.subplots(len(chains), 2, squeeze=False)
    for (name, arr), (ax_t, ax_r) in zip(chains.items(), axes, strict=True):
        arr = np.atleast_2d(np.asarray(arr, dtype=float))
        ranks = np.argsort(np.argsort(arr.ravel())).reshape(arr.shape)
        edges = np.linspace(0, arr.size, bins + 1)
        for c in range(arr.shape[0]):
            ax_t.plot(arr[c], lw=0.6, alpha=0.8, label=f"chain {c}")
            ax_r.stairs(np.histogram(ranks[c], bins=edges)[0], edges, label=f"chain {c}")
        ax_r.axhline(arr.shape[1] / bins, color="k", ls="--", lw=0.8)
        ax_t.set_title(f"{name}: trace", fontsize="small")
        ax_r.set_title(f"{name}: rank histogram", fontsize="small")
    axes[0][0].legend(fontsize="x-small")
    return fig
