"""The dashboard's pages, built from the fixture database: the numbers shown are the fixture's
(worked out by hand), missing tables show "not published yet", and the Flask server answers
the page callback. The browser test (tests/flows/test_dashboard_browser.py) renders them."""

from __future__ import annotations

import json

from dash.development.base_component import Component

from poolcast.dashboard import data
from poolcast.dashboard.app import (
    create_app,
    fan_figure,
    fmt,
    forecast_page,
    inventory_page,
    inventory_table,
    leaderboard_page,
    runs_page,
)
from poolcast.dashboard.data import Outputs


def _walk(node):
    if isinstance(node, (list, tuple)):
        for child in node:
            yield from _walk(child)
    elif isinstance(node, Component):
        yield node
        yield from _walk(getattr(node, "children", None))


def _text(node) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, (list, tuple)):
        return " ".join(_text(c) for c in node)
    if isinstance(node, Component):
        return _text(getattr(node, "children", None) or "")
    return "" if node is None else str(node)


def _by_id(page, component_id: str):
    (node,) = [n for n in _walk(page) if getattr(n, "id", None) == component_id]
    return node


def _rows(page, table_id: str) -> list[list[str]]:
    """Cell texts of an html.Table (header row first)."""
    (table,) = [n for n in _walk(page) if getattr(n, "id", None) == table_id]
    head, body = table.children
    return [[_text(c) for c in head.children.children]] + [
        [_text(c) for c in row.children] for row in body.children
    ]


def test_fmt():
    assert fmt(1234567) == "1,234,567"
    assert fmt(1234.5678) == "1,234.57"
    assert fmt(None) == "-" and fmt(float("nan")) == "-"


def test_runs_page_shows_counts_and_quarantine_rules(published):
    page = runs_page(Outputs(published))
    rows = _rows(page, "run-history-table")
    header = rows[0]
    june = dict(zip(header, rows[2], strict=True))
    assert (june["as_of"], june["rows_in"], june["rows_accepted"], june["rows_quarantined"]) == (
        "2024-06-01",
        "110",
        "108",
        "2",
    )
    assert june["registry_version"] == "2"
    assert _rows(page, "quarantine-table")[1:] == [
        ["2024-05-01", "run-may", "sales_negative", "2"],
        ["2024-05-01", "run-may", "sku_null", "1"],
        ["2024-06-01", "run-june", "sales_negative", "2"],
    ]


def test_leaderboard_page(published):
    page = leaderboard_page(Outputs(published))
    board = _rows(page, "leaderboard-table")
    assert board[0][:3] == ["candidate", "status", "scaled_pinball"]
    assert [r[:3] for r in board[1:]] == [
        ["moving_average", "ok", "1.20"],
        ["seasonal_naive", "ok", "1.40"],
    ]
    champions = _rows(page, "champion-table")
    assert [r[2] for r in champions[1:]] == ["seasonal_naive", "moving_average"]


def test_forecast_page_picks_the_sku_and_shows_its_quantiles(published):
    page = forecast_page(Outputs(published), "B")
    table = _rows(page, "fan-table")
    first = dict(zip(table[0], table[1], strict=True))
    # June's run, B, horizon 1: mean 14, q_l = 14 * (0.5 + l)
    assert first["mean"] == "14.00" and first["q_0_025"] == "7.35" and first["q_0_975"] == "20.65"
    (picker,) = [n for n in _walk(page) if getattr(n, "id", None) == "sku-picker"]
    assert picker.value == "B" and [o["value"] for o in picker.options] == ["A", "B", "C"]
    # an unknown SKU falls back to the first one
    assert _by_id(forecast_page(Outputs(published), "ZZZ"), "sku-picker").value == "A"


def test_fan_figure_draws_three_bands_around_the_mean(published):
    history, forecast = data.fan_data(Outputs(published), "A")
    fig = fan_figure("A", history, forecast)
    filled = [t for t in fig.data if t.fill == "tonexty"]
    assert [t.name for t in filled] == ["0.025-0.975", "0.1-0.9", "0.25-0.75"]
    # the fan opens at the last observed month (June, sales 10), then July and August
    assert list(filled[0].y) == [10.0, 12.0 * 1.475, 13.0 * 1.475]
    (mean,) = [t for t in fig.data if t.name == "mean"]
    assert list(mean.y) == [10.0, 12.0, 13.0]
    assert [str(m) for m in mean.x] == ["2024-06-01", "2024-07-01", "2024-08-01"]
    (sales,) = [t for t in fig.data if t.name == "sales"]
    assert list(sales.y) == [15, 14, 13, 12, 11, 10]


def test_inventory_filters(published):
    plan = data.inventory_plan(Outputs(published))
    toys = inventory_table(plan, ["toys"], None)
    rows = _rows(toys, "inventory-table")
    assert sorted(r[rows[0].index("sku")] for r in rows[1:]) == ["A", "C"]
    only_b = _rows(inventory_table(plan, None, [0.9]), "inventory-table")
    assert [r[only_b[0].index("sku")] for r in only_b[1:]] == ["B"]
    totals = _rows(inventory_table(plan, ["toys"], [0.95]), "inventory-totals")
    assert dict(zip(totals[0], totals[1], strict=True))["skus"] == "1"
    preset = inventory_page(Outputs(published), ["food"], None)
    preset_rows = _rows(preset, "inventory-table")
    assert [r[preset_rows[0].index("sku")] for r in preset_rows[1:]] == ["B"]
    assert _by_id(preset, "category-filter").value == ["food"]
    page = inventory_page(Outputs(published))
    (category,) = [n for n in _walk(page) if getattr(n, "id", None) == "category-filter"]
    assert [o["value"] for o in category.options] == ["food", "toys"]


def test_missing_tables_show_not_published_yet(published_today):
    outputs = Outputs(published_today)
    assert "inventory_plan: not published yet" in _text(inventory_page(outputs))
    assert "not published yet" in _text(runs_page(outputs))  # quarantine by rule
    # the fan chart works without a stand-in (forecasts, quantiles and history are published today)
    assert _rows(forecast_page(outputs, "A"), "fan-table")[1][2] == "12.00"


def test_the_server_answers_the_page_callback(published):
    app = create_app(published)
    client = app.server.test_client()
    assert client.get("/").status_code == 200
    assert client.get("/_dash-layout").status_code == 200
    payload = {
        "output": "..page.children...header.children..",
        "outputs": [
            {"id": "page", "property": "children"},
            {"id": "header", "property": "children"},
        ],
        "inputs": [
            {"id": "url", "property": "pathname", "value": "/inventory"},
            {"id": "url", "property": "search", "value": ""},
        ],
        "changedPropIds": ["url.pathname"],
        "state": [],
    }
    answer = client.post("/_dash-update-component", json=payload)
    assert answer.status_code == 200
    body = json.dumps(answer.get_json())
    assert "inventory-table" in body and "toys" in body
    assert "latest as-of 2024-06-01: run run-june, champion moving_average" in body


def test_without_the_band_levels_the_published_levels_are_lines():
    """The default service quantiles (0.5, 0.8, 0.9, 0.95, 0.99) give no full band: lines, and a note."""
    import polars as pl

    from poolcast.dashboard.app import missing_band_levels

    forecast = pl.DataFrame(
        {"month": ["2024-07-01"], "horizon": [1], "mean": [5.0], "q_0_5": [5.0], "q_0_9": [8.0]}
    )
    fig = fan_figure("A", None, forecast)
    assert [t.name for t in fig.data] == ["q 0.5", "q 0.9", "mean"]
    assert not [t for t in fig.data if t.fill == "tonexty"]
    assert missing_band_levels(forecast.columns) == [0.025, 0.975, 0.1, 0.25, 0.75]
