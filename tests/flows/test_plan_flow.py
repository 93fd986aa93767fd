"""``--plan`` end to end: the monthly retrain with and without a plan, under the test harness.

A simulated panel gets a plan column (open days) through a TOML mapping; the sales file stops
at the as-of and the plan file holds the next two months. With the plan, the GLM that uses
promo and open days competes; without it, it is listed as ineligible with the reason and the
baseline that needs no plan is champion.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest

from poolcast.publish import read_table
from poolcast.simulate import simulate_panel

pytestmark = [pytest.mark.flow, pytest.mark.slow]

AS_OF = date(2022, 4, 1)  # simulate_panel starts 2020-01: 28 months of history
CONFIG = """
[features]
horizons = 2

[backtest]
n_origins = 2
n_samples = 40
quantiles = [0.5, 0.9]
candidates = ["seasonal_naive", "glm_poisson_pooled"]

[tracking]
registered_model_name = "poolcast-plan-flow-test"
"""
MAPPING = """
name = "planned"
[columns]
sku = "sku"
month = "month"
sales = "sales"
[optional_columns]
customer_count = "customer_count"
promo = "promo"
[plan_columns]
open_days = "OpenDays"
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan-flow")
    frame = simulate_panel(6, 30, seed=4).frame.drop("category")
    rng = np.random.default_rng(4)
    frame = frame.with_columns(
        pl.Series("OpenDays", rng.integers(22, 27, frame.height)),
        pl.col("month").dt.strftime("%Y-%m"),
    )
    sales = frame.filter(pl.col("month") <= f"{AS_OF:%Y-%m}")
    plan = frame.filter(pl.col("month") > f"{AS_OF:%Y-%m}").select(
        "sku", "month", "promo", "OpenDays"
    )
    # one plan row at the as-of (ignored: the history has it) and one broken row (quarantined)
    extra = pl.DataFrame(
        {"sku": ["SKU000001", "SKU999999"], "month": [f"{AS_OF:%Y-%m}", "2022-05"],
         "promo": [0, 0], "OpenDays": [20, -3]},
        schema=plan.schema,
    )  # fmt: skip
    sales.write_csv(root / "sales.csv")
    pl.concat([plan, extra]).write_csv(root / "plan.csv")
    (root / "planned.toml").write_text(MAPPING)
    (root / "run.toml").write_text(CONFIG)
    return root


def _run(files, work: str, plan: str | None):
    from flows.monthly_retrain import monthly_retrain

    return monthly_retrain(
        str(files / "sales.csv"),
        str(files / "planned.toml"),
        as_of=f"{AS_OF:%Y-%m}",
        config_path=str(files / "run.toml"),
        work_dir=str(files / work),
        plan=plan,
    )


def test_with_a_plan_the_plan_candidates_compete(prefect_harness, files):
    summary = _run(files, "with-plan", str(files / "plan.csv"))
    board = summary.leaderboard
    assert dict(board.select("candidate", "status").iter_rows()) == {
        "seasonal_naive": "ok",
        "glm_poisson_pooled": "ok",
    }
    # the plan's quarantine: the broken row, nothing else; the row at the as-of is ignored
    quarantine = pl.read_csv(files / "with-plan" / "plan_quarantine.csv")
    assert quarantine.select("row", "rule", "column").rows() == [(14, "plan_negative", "open_days")]
    assert pl.read_csv(files / "with-plan" / "plan_missing.csv").height == 0
    forecasts = read_table(summary.outputs_db, "forecasts", run_id=summary.mlflow_run_id)
    assert forecasts.height == 6 * 2
    assert set(forecasts.get_column("month")) == {date(2022, 5, 1), date(2022, 6, 1)}


def test_without_a_plan_the_plan_candidates_are_ineligible(prefect_harness, files):
    summary = _run(files, "no-plan", None)
    board = summary.leaderboard
    row = board.filter(pl.col("candidate") == "glm_poisson_pooled").row(0, named=True)
    assert row["status"] == "ineligible"
    assert row["error"] == (
        "needs plan column(s) ['open_days', 'promo'] for 2022-05..2022-06; run with --plan"
    )
    assert row["scaled_pinball"] is None
    assert summary.champion == "seasonal_naive" and summary.failures == {}
    published = read_table(summary.outputs_db, "leaderboard", run_id=summary.mlflow_run_id)
    assert (
        published.filter(pl.col("candidate") == "glm_poisson_pooled").get_column("status").item()
        == "ineligible"
    )
