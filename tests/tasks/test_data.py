"""Data tasks through ``.fn()``: config, load, validate, quarantine file, backtest splits."""

from __future__ import annotations

import polars as pl

from poolcast.simulate import simulate_panel
from tasks import data


def test_load_validate_and_split_a_small_source(tmp_path, make_config):
    panel = simulate_panel(3, 26, seed=9).frame.with_columns(pl.col("month").cast(pl.String))
    bad = pl.DataFrame({"sku": ["SKU_X"], "month": ["2020-02-01"], "sales": [-1]})
    source = tmp_path / "sales.csv"
    pl.concat([panel, bad], how="diagonal_relaxed").write_csv(source)
    config = make_config(source, "[features]\nhorizons = 2\n[backtest]\nn_origins = 2\n")
    assert config.features.horizons == 2 and config.source == str(source)
    validated = data.validate.fn(data.load.fn(config), config)
    assert (validated.counts.rows_in, validated.counts.rows_quarantined) == (3 * 26 + 1, 1)
    path = data.save_quarantine.fn(validated, config.work_dir)
    assert "sales_negative" in pl.read_csv(path).get_column("rule").to_list()
    splits = data.build_backtest.fn(validated.panel, config)
    scored = [s.origin for s in splits if s.scored]
    assert len(scored) == 2 and scored[0] < scored[1]
    # H = 2 calibration origins (the default) just before the scored ones
    assert [s.origin for s in splits if not s.scored] == [s.origin for s in splits[:2]] and splits[
        1
    ].origin < scored[0]
