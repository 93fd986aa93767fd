"""The champion's refit calibrates on every backtest row, calibration origins included."""

from __future__ import annotations

import polars as pl

from poolcast.backtest import backtest_candidate
from poolcast.models import make_candidate
from poolcast.reporting import CandidateRun
from poolcast.simulate import simulate_panel
from tasks import data, forecast


def test_the_published_forecast_calibrates_on_the_calibration_origins_too(tmp_path, make_config):
    panel = simulate_panel(20, 36, seed=4).frame.with_columns(pl.col("month").cast(pl.String))
    source = tmp_path / "sales.csv"
    panel.drop("promo").write_csv(source)
    config = make_config(source, "[features]\nhorizons = 2\n[backtest]\nn_origins = 2\n")
    validated = data.validate.fn(data.load.fn(config), config)
    splits = data.build_backtest.fn(validated.panel, config)
    assert sum(not s.scored for s in splits) == 2  # the default: H calibration origins
    b = config.backtest

    def factory():
        return make_candidate("moving_average")

    result = backtest_candidate(
        "moving_average",
        factory,
        splits,
        quantiles=b.quantiles,
        n_samples=50,
        seed=b.seed,
        publish_quantiles=b.publish_quantiles,
        calibration=b.calibration,
    )
    forecaster = forecast.refit.fn(
        "moving_average",
        {"moving_average": factory},
        validated.panel,
        config,
        [CandidateRun(result, None)],
    )
    # every row the backtest calibrated on, the calibration origins' targets included
    assert forecaster.calibration_history.equals(result.calibration_history)
    first_scored = min(s.origin for s in splits if s.scored)
    calibration_months = forecaster.calibration_history.filter(pl.col("month") <= first_scored)
    assert calibration_months.height > 0
    assert result.predictions.filter(pl.col("month") <= first_scored).height == 0
