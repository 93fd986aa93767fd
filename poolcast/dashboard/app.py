"""The ops dashboard: a read-only Dash app over the published outputs.

Four pages, each rebuilt from the database on every request (through
:mod:`poolcast.dashboard.data`, which opens the file read-only for one call at a time):

- ``/runs``: run history with data quality (rows in / accepted / quarantined) and quarantined
  rows by rule over time;
- ``/leaderboard``: the latest run's leaderboard and the champion over runs;
- ``/forecast?sku=S``: a fan chart per SKU (SKU picker): its sales history and the published
  quantiles as bands (0.025-0.975, 0.1-0.9, 0.25-0.75) around the mean, with the numbers below;
- ``/inventory``: the latest inventory plan, filtered by category and service level, with totals.

Why Dash: it is actively maintained by Plotly, draws the same plotly charts the rest of the
project can use, and is a plain Flask app, so it runs headless, serves from one process with
no build step, and is tested with a browser or Flask's test client.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import plotly.graph_objects as go
import polars as pl
from dash import Dash, Input, Output, dcc, html

from poolcast.dashboard import data
from poolcast.dashboard.data import FAN_BANDS, Outputs, Unavailable, quantile_column
from poolcast.ops import inventory_totals

__all__ = [
    "PAGES",
    "create_app",
    "fan_figure",
    "fmt",
    "forecast_page",
    "inventory_page",
    "inventory_table",
    "leaderboard_page",
    "runs_page",
]

#: Path and title of each page, in the navigation's order.
PAGES: tuple[tuple[str, str], ...] = (
    ("/runs", "Runs & data quality"),
    ("/leaderboard", "Leaderboard"),
    ("/forecast", "Forecasts"),
    ("/inventory", "Inventory plan"),
)

LEADERBOARD_COLUMNS: tuple[str, ...] = (
    "candidate",
    "status",
    "scaled_pinball",
    "mase",
    "mae",
    "wape",
    "bias",
    "coverage_80",
    "coverage_95",
    "crps",
    "fit_seconds",
    "error",
)

#: Inventory plan rows shown at once (the totals cover every filtered row).
MAX_PLAN_ROWS = 500

_CELL = {
    "padding": "3px 10px",
    "borderBottom": "1px solid #ddd",
    "textAlign": "right",
    "whiteSpace": "nowrap",
}
_HEAD = {**_CELL, "borderBottom": "2px solid #555", "background": "#f3f3f3"}


def fmt(value: Any) -> str:
    """A table cell: integers with thousands separators, floats with 2 decimals, dates ISO,
    missing values as ``-``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _table(frame: pl.DataFrame, table_id: str, columns: Sequence[str] | None = None) -> html.Table:
    cols = [c for c in (columns or frame.columns) if c in frame.columns]
    head = html.Thead(html.Tr([html.Th(c, style=_HEAD) for c in cols]))
    body = html.Tbody(
        [
            html.Tr([html.Td(fmt(v), style=_CELL) for v in row])
            for row in frame.select(cols).iter_rows()
        ]
    )
    return html.Table(
        [head, body], id=table_id, style={"borderCollapse": "collapse", "fontSize": "13px"}
    )


def _missing(result: Unavailable, what: str) -> html.Div:
    return html.Div(
        f"{what}: {result.message}",
        className="not-published",
        style={"color": "#8a6d3b", "background": "#fcf8e3", "padding": "8px", "margin": "6px 0"},
    )


def _graph(figure: go.Figure, graph_id: str) -> dcc.Graph:
    return dcc.Graph(
        id=graph_id, figure=figure, config={"displayModeBar": False, "staticPlot": False}
    )


def _layout(fig: go.Figure, title: str, **kwargs: Any) -> go.Figure:
    fig.update_layout(
        **{"title": title, "height": 340, "margin": {"l": 50, "r": 20, "t": 50, "b": 40}, **kwargs}
    )
    return fig


def runs_page(outputs: Outputs) -> list[Any]:
    """Run history with data-quality counts, and quarantined rows by rule over time."""
    out: list[Any] = [html.H2("Runs and data quality")]
    runs = data.run_history(outputs)
    if isinstance(runs, Unavailable):
        out.append(_missing(runs, "run history"))
    else:
        fig = go.Figure()
        x = [fmt(d) for d in runs.get_column("as_of")]
        for col, colour in (
            ("rows_in", "#4c72b0"),
            ("rows_accepted", "#55a868"),
            ("rows_quarantined", "#c44e52"),
        ):
            fig.add_bar(x=x, y=runs.get_column(col).to_list(), name=col, marker_color=colour)
        out += [
            _graph(_layout(fig, "Rows per run (by as-of)", barmode="group"), "runs-graph"),
            _table(runs, "run-history-table"),
        ]
    out.append(html.H3("Quarantine by rule"))
    rules = data.quarantine_by_rule(outputs)
    if isinstance(rules, Unavailable):
        out.append(_missing(rules, "quarantine by rule"))
    elif rules.height == 0:
        out.append(html.Div("no row was quarantined in any run", id="quarantine-empty"))
    else:
        fig = go.Figure()
        for rule in sorted(set(rules.get_column("rule").to_list())):
            part = rules.filter(pl.col("rule") == rule)
            fig.add_bar(
                x=[fmt(d) for d in part.get_column("as_of")],
                y=part.get_column("rows").to_list(),
                name=rule,
            )
        out += [
            _graph(_layout(fig, "Quarantined rows by rule", barmode="stack"), "quarantine-graph"),
            _table(rules.select("as_of", "run_id", "rule", "rows"), "quarantine-table"),
        ]
    return out


def leaderboard_page(outputs: Outputs) -> list[Any]:
    """The latest run's leaderboard and the champion history."""
    out: list[Any] = [html.H2("Leaderboard of the latest run")]
    board = data.latest_leaderboard(outputs)
    if isinstance(board, Unavailable):
        out.append(_missing(board, "leaderboard"))
    else:
        if board.height:
            out.append(
                html.P(f"as of {fmt(board.item(0, 'as_of'))}, run {board.item(0, 'run_id')}")
            )
        out.append(_table(board, "leaderboard-table", LEADERBOARD_COLUMNS))
    out.append(html.H3("Champion history"))
    history = data.champion_history(outputs)
    if isinstance(history, Unavailable):
        out.append(_missing(history, "champion history"))
    else:
        fig = go.Figure()
        fig.add_scatter(
            x=[fmt(d) for d in history.get_column("as_of")],
            y=history.get_column("scaled_pinball").to_list(),
            text=history.get_column("champion").to_list(),
            mode="lines+markers+text",
            textposition="top center",
            name="champion scaled pinball",
        )
        out += [
            _graph(_layout(fig, "Champion's scaled pinball loss by as-of"), "champion-graph"),
            _table(history, "champion-table"),
        ]
    return out


def fan_figure(sku: str, history: pl.DataFrame | None, forecast: pl.DataFrame) -> go.Figure:
    """Sales history, quantile bands (widest first) and the mean forecast of one SKU."""
    fig = go.Figure()
    if history is not None and history.height:
        fig.add_scatter(
            x=history.get_column("month").to_list(),
            y=history.get_column("sales").to_list(),
            mode="lines+markers",
            name="sales",
            line={"color": "#222"},
        )
    # the fan opens at the last observed month (history's last sales value), when there is one
    anchor_x: list[Any] = []
    anchor_y: list[Any] = []
    if history is not None and history.height and history.item(-1, "sales") is not None:
        first = forecast.get_column("month").min() if forecast.height else None
        if first is None or history.item(-1, "month") < first:
            anchor_x, anchor_y = [history.item(-1, "month")], [float(history.item(-1, "sales"))]
    months = anchor_x + forecast.get_column("month").to_list()
    for (lo, hi), alpha in zip(FAN_BANDS, (0.18, 0.3, 0.45), strict=True):
        lo_col, hi_col = quantile_column(lo), quantile_column(hi)
        if lo_col not in forecast.columns or hi_col not in forecast.columns:
            continue
        fig.add_scatter(
            x=months,
            y=anchor_y + forecast.get_column(lo_col).to_list(),
            mode="lines",
            line={"width": 0},
            showlegend=False,
            hoverinfo="skip",
        )
        fig.add_scatter(
            x=months,
            y=anchor_y + forecast.get_column(hi_col).to_list(),
            mode="lines",
            line={"width": 0},
            fill="tonexty",
            fillcolor=f"rgba(31,119,180,{alpha})",
            name=f"{lo:g}-{hi:g}",
        )
    # levels outside the bands (e.g. the default service quantiles 0.8, 0.95, 0.99): dotted lines
    banded = {quantile_column(v) for pair in FAN_BANDS for v in pair}
    drawn = {c for c in banded if _band_of(c, forecast.columns)}
    for col in forecast.columns:
        if col.startswith("q_") and col not in drawn:
            fig.add_scatter(
                x=months,
                y=anchor_y + forecast.get_column(col).to_list(),
                mode="lines",
                line={"color": "#1f77b4", "dash": "dot", "width": 1},
                name=f"q {col.removeprefix('q_').replace('_', '.', 1)}",
            )
    fig.add_scatter(
        x=months,
        y=anchor_y + forecast.get_column("mean").to_list(),
        mode="lines+markers",
        name="mean",
        line={"color": "#1f77b4", "dash": "dash"},
    )
    return _layout(fig, f"{sku}: sales history and published forecast quantiles", height=420)


def _band_of(column: str, columns: Sequence[str]) -> bool:
    """Whether `column` is one end of a band of :data:`FAN_BANDS` whose both ends are present."""
    for lo, hi in FAN_BANDS:
        ends = (quantile_column(lo), quantile_column(hi))
        if column in ends and all(e in columns for e in ends):
            return True
    return False


def missing_band_levels(columns: Sequence[str]) -> list[float]:
    """Levels of :data:`FAN_BANDS` the published forecast lacks (its bands are not drawn)."""
    return [v for pair in FAN_BANDS for v in pair if quantile_column(v) not in columns]


def forecast_page(outputs: Outputs, sku: str | None) -> list[Any]:
    """SKU picker, fan chart and the forecast numbers of the picked SKU."""
    out: list[Any] = [html.H2("Forecast fan chart per SKU")]
    skus = data.sku_list(outputs)
    if isinstance(skus, Unavailable):
        return [*out, _missing(skus, "forecasts")]
    names = skus.get_column("sku").to_list()
    if not names:
        return [*out, html.Div("the latest run has no forecast rows")]
    value = sku if sku in names else names[0]
    out += [
        dcc.Dropdown(
            id="sku-picker",
            options=[{"label": s, "value": s} for s in names],
            value=value,
            clearable=False,
            style={"width": "320px"},
        ),
        html.Div(fan_content(outputs, value), id="fan-box"),
    ]
    return out


def fan_content(outputs: Outputs, sku: str) -> list[Any]:
    """The fan chart and tables of one SKU."""
    history, forecast = data.fan_data(outputs, sku)
    out: list[Any] = []
    if isinstance(forecast, Unavailable):
        return [_missing(forecast, "forecast")]
    if isinstance(history, Unavailable):
        out.append(_missing(history, "sales history"))
        history = None
    out.append(_graph(fan_figure(sku, history, forecast), "fan-graph"))
    lacking = missing_band_levels(forecast.columns)
    if lacking:
        out.append(
            html.Div(
                f"quantile levels {', '.join(f'{v:g}' for v in lacking)} are not published by "
                "this run, so their bands are not drawn (add them to [backtest] quantiles)",
                className="not-published",
                style={"color": "#8a6d3b", "fontSize": "12px"},
            )
        )
    out += [html.H4(f"{sku}: published forecast"), _table(forecast, "fan-table")]
    if history is not None and history.height:
        out += [
            html.H4(f"{sku}: last 12 months of sales"),
            _table(history.tail(12), "history-table"),
        ]
    return out


def _options(plan: pl.DataFrame, column: str) -> list[dict[str, Any]]:
    if column not in plan.columns:
        return []
    values = sorted(v for v in plan.get_column(column).unique().to_list() if v is not None)
    return [{"label": fmt(v), "value": v} for v in values]


def inventory_page(
    outputs: Outputs,
    categories: Sequence[str] | None = None,
    levels: Sequence[float] | None = None,
) -> list[Any]:
    """Filters (category, service level; preset from the URL's ``?category=...&service_level=...``)
    and the inventory plan."""
    out: list[Any] = [html.H2("Inventory plan")]
    plan = data.inventory_plan(outputs)
    if isinstance(plan, Unavailable):
        return [*out, _missing(plan, "inventory plan")]
    out += [
        html.Div(
            [
                html.Label("category"),
                dcc.Dropdown(
                    id="category-filter",
                    options=_options(plan, "category"),
                    value=list(categories or []),
                    multi=True,
                    placeholder="all categories",
                    style={"width": "320px"},
                ),
                html.Label("service level"),
                dcc.Dropdown(
                    id="service-filter",
                    options=_options(plan, "service_level"),
                    value=list(levels or []),
                    multi=True,
                    placeholder="all service levels",
                    style={"width": "240px"},
                ),
            ],
            style={
                "display": "flex",
                "gap": "10px",
                "alignItems": "center",
                "marginBottom": "10px",
            },
        ),
        html.Div(inventory_table(plan, categories, levels), id="inventory-box"),
    ]
    return out


def _floats(values: Sequence[str]) -> list[float]:
    out = []
    for v in values:
        try:
            out.append(float(v))
        except ValueError:
            continue
    return out


def inventory_table(
    plan: pl.DataFrame, categories: Sequence[str] | None, levels: Sequence[float] | None
) -> list[Any]:
    """Totals and rows of the plan after the filters (empty or None = no filter), largest
    order quantity first, at most :data:`MAX_PLAN_ROWS` rows."""
    if categories and "category" in plan.columns:
        plan = plan.filter(pl.col("category").is_in(list(categories)))
    if levels and "service_level" in plan.columns:
        plan = plan.filter(pl.col("service_level").is_in([float(v) for v in levels]))
    totals = inventory_totals(plan)
    if "order_quantity" in plan.columns:
        plan = plan.sort(["order_quantity", "sku"], descending=[True, False], nulls_last=True)
    shown = [c for c in plan.columns if c not in ("run_id", "champion")]
    return [
        _table(pl.DataFrame([totals]), "inventory-totals"),
        html.P(f"{min(plan.height, MAX_PLAN_ROWS):,} of {plan.height:,} SKUs shown"),
        _table(plan.head(MAX_PLAN_ROWS), "inventory-table", shown),
    ]


def _header(outputs: Outputs) -> list[Any]:
    latest = data.latest_run(outputs)
    if isinstance(latest, Unavailable):
        status = latest.message
    elif latest.height == 0:
        status = "no published run yet"
    else:
        row = latest.row(0, named=True)
        status = (
            f"latest as-of {fmt(row['as_of'])}: run {row['run_id']}, champion {row.get('champion')}"
        )
    return [html.Span(f"{outputs.path} - {status}", id="status-line")]


def create_app(outputs_db: str | Path) -> Dash:
    """The Dash app serving the dashboard over `outputs_db` (read-only).

    Parameters
    ----------
    outputs_db : str or Path
        The DuckDB file the monthly run publishes to; it need not exist yet (pages then say
        so).
    """
    outputs = Outputs(outputs_db)
    app = Dash(
        __name__,
        title="poolcast ops",
        suppress_callback_exceptions=True,
        update_title=None,
    )
    nav = html.Div(
        [dcc.Link(title, href=path, style={"marginRight": "18px"}) for path, title in PAGES],
        style={"padding": "8px 0", "borderBottom": "1px solid #ccc"},
    )
    app.layout = html.Div(
        [
            dcc.Location(id="url"),
            html.H1("poolcast ops dashboard", style={"fontSize": "22px", "margin": "4px 0"}),
            html.Div(id="header", style={"fontSize": "12px", "color": "#555"}),
            nav,
            html.Div(id="page"),
        ],
        style={"fontFamily": "sans-serif", "margin": "10px 20px"},
    )

    @app.callback(
        Output("page", "children"),
        Output("header", "children"),
        Input("url", "pathname"),
        Input("url", "search"),
    )
    def render(pathname: str | None, search: str | None) -> tuple[list[Any], list[Any]]:
        query = parse_qs((search or "").lstrip("?"))
        path = (pathname or "/").rstrip("/") or "/runs"
        if path == "/leaderboard":
            page = leaderboard_page(outputs)
        elif path == "/forecast":
            page = forecast_page(outputs, (query.get("sku") or [None])[0])
        elif path == "/inventory":
            page = inventory_page(
                outputs, query.get("category"), _floats(query.get("service_level", []))
            )
        elif path in ("/", "/runs"):
            page = runs_page(outputs)
        else:
            page = [html.H2("not found"), html.P(f"no page {pathname}; use the links above")]
        return page, _header(outputs)

    @app.callback(
        Output("fan-box", "children"), Input("sku-picker", "value"), prevent_initial_call=True
    )
    def pick(sku: str) -> list[Any]:
        return fan_content(outputs, sku)

    @app.callback(
        Output("inventory-box", "children"),
        Input("category-filter", "value"),
        Input("service-filter", "value"),
        prevent_initial_call=True,
    )
    def filter_plan(categories: list[str] | None, levels: list[float] | None) -> list[Any]:
        plan = data.inventory_plan(outputs)
        if isinstance(plan, Unavailable):
            return [_missing(plan, "inventory plan")]
        return inventory_table(plan, categories, levels)

    return app
