"""Publish tasks through ``.fn()``: the inventory plan from a real champion, the month's tables."""

from __future__ import annotations

import numpy as np
import polars as pl

from poolcast.champion import fit_champion
from poolcast.config import FeatureConfig
from poolcast.inventory import sku_policy
from poolcast.simulate import simulate_panel
from tasks import data, forecast, publish


def _validated(tmp_path, make_config, toml: str):
    panel = simulate_panel(4, 26, seed=3).frame.with_columns(
        pl.col("month").cast(pl.String), (pl.col("sales") // 3).alias("on_hand")
    )
    bad = pl.DataFrame(
        {
            "sku": ["SKU_X", None],
            "month": ["2020-02-01", "2020-03-01"],
            "sales": [-1, 2],
            "customer_count": [5, 5],
            "promo": [0, 0],
        }
    )
    source = tmp_path / "sales.csv"
    pl.concat([panel, bad], how="diagonal_relaxed").write_csv(source)
    config = make_config(source, toml)
    return config, data.validate.fn(data.load.fn(config), config)


def test_the_inventory_task_uses_the_champion_samples_and_the_config(tmp_path, make_config):
    from poolcast.models.baselines import SeasonalNaive

    config, validated = _validated(
        tmp_path,
        make_config,
        "[features]\nhorizons = 3\n[backtest]\nn_samples = 300\n"
        "[inventory]\nlead_time_months = 2\nreview_period_months = 1\nservice_level = 0.8\n",
    )
    forecaster = fit_champion(
        "seasonal_naive",
        SeasonalNaive,
        validated.panel,
        FeatureConfig(horizons=3),
        quantiles=(0.5, 0.9),
        n_samples=300,
        seed=1,
    )
    # one forecast, computed once by the forecast task: its frame is published, its samples
    # feed the inventory plan
    dist = forecast.forecast.fn(forecaster, validated.panel)
    plan = publish.inventory.fn(forecaster, dist, validated, config)
    assert plan.height == 4 and set(plan.get_column("lead_time_months")) == {2}
    # the same draws as the champion's own forecast (same seed)
    published = forecaster.forecast(validated.panel).sort("sku", "horizon")
    keys = dist.frame.with_row_index("i").sort("sku", "horizon")
    np.testing.assert_allclose(published["mean"].to_numpy(), keys["mean"].to_numpy())
    first = plan.sort("sku").row(0, named=True)
    rows = keys.filter(pl.col("sku") == first["sku"]).get_column("i").to_numpy()
    last = validated.panel.filter(pl.col("sku") == first["sku"]).sort("month").row(-1, named=True)
    expected = sku_policy(
        dist.samples[rows],
        lead_time=2,
        review_period=1,
        service_level=0.8,
        on_hand=last["on_hand"],
    )
    assert first["order_up_to"] == expected["order_up_to"]
    assert first["order_quantity"] == max(0.0, expected["order_up_to"] - last["on_hand"])


def test_the_month_tables_hold_the_quarantined_rows_with_their_rules(tmp_path, make_config):
    _, validated = _validated(tmp_path, make_config, "[features]\nhorizons = 2\n")
    tables = publish.publication_tables(
        validated,
        pl.DataFrame({"sku": ["a"]}),
        pl.DataFrame({"candidate": ["x"]}),
        pl.DataFrame({"sku": ["a"]}),
    )
    assert list(tables) == [
        "forecasts",
        "inventory_plan",
        "leaderboard",
        "data_quality",
        "quarantine",
        "quarantine_summary",
        "history",
    ]
    quarantine = tables["quarantine"]
    assert {"source_row", "rule", "column_name", "value"} <= set(quarantine.columns)
    assert set(quarantine.get_column("rule")) == {"sales_negative", "sku_null"}
    summary = dict(tables["quarantine_summary"].rows())
    assert summary == {"sales_negative": 1, "sku_null": 1}
    assert tables["data_quality"].get_column("rows_quarantined").item() == 2
