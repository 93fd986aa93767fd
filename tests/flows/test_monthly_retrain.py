"""The monthly retrain end to end on tiny simulated data, under the Prefect test harness.

One flow run (module fixture) with three candidates, one of which raises; the tests read
its records back from MLflow, the registry, Prefect's artifacts and the outputs database.
"""

from __future__ import annotations

import asyncio

import polars as pl
import pytest

from poolcast.models.baselines import MovingAverage, SeasonalNaive
from poolcast.publish import read_table
from poolcast.simulate import simulate_panel

pytestmark = [pytest.mark.flow, pytest.mark.slow]

CANDIDATES = ("seasonal_naive", "moving_average", "exploding")
CONFIG = """
[features]
horizons = 2

[backtest]
n_origins = 2
n_samples = 40
quantiles = [0.5, 0.9]
candidates = ["seasonal_naive", "moving_average", "exploding"]

[tracking]
registered_model_name = "poolcast-flow-test"
"""


class Exploding(SeasonalNaive):
    """A candidate whose fit always raises."""

    def fit(self, train, *, history=None):
        raise RuntimeError("exploding candidate raised on purpose")


def _lineup(*, has_customers: bool, has_promo: bool, names=None, n_skus=None, **_):
    """Stands in for poolcast.models.default_candidates: two baselines and a raising candidate."""
    lineup = {
        "seasonal_naive": SeasonalNaive,
        "moving_average": MovingAverage,
        "exploding": Exploding,
    }
    return {name: lineup[name] for name in (names or lineup)}


@pytest.fixture(scope="module")
def retrain(prefect_harness, tmp_path_factory):
    """Run the flow once on 8 SKUs x 30 months plus 3 bad rows; return (summary, work_dir)."""
    from flows.monthly_retrain import monthly_retrain
    from tasks import compete

    root = tmp_path_factory.mktemp("retrain")
    panel = simulate_panel(8, 30, seed=11).frame.with_columns(pl.col("month").cast(pl.String))
    bad = pl.DataFrame(
        {
            "sku": ["SKU_BAD", None, "SKU000002"],
            "month": ["2020-03-01", "2020-01-01", "2020-13-01"],
            "sales": [-4, 5, 3],
        }
    )
    source = root / "sales.csv"
    pl.concat([panel, bad], how="diagonal_relaxed").write_csv(source)
    config = root / "poolcast.toml"
    config.write_text(CONFIG)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compete, "default_candidates", _lineup)
        summary = monthly_retrain(
            str(source), "contract", config_path=str(config), work_dir=str(root / "work")
        )
    return summary, root / "work"


def _client(work):
    from mlflow import MlflowClient

    uri = f"sqlite:///{(work / 'mlflow.db').resolve()}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _children(work, parent_run_id):
    client = _client(work)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'"
    )
    return {r.info.run_name: r for r in runs}


def test_a_failing_candidate_does_not_fail_the_flow(retrain):
    summary, work = retrain
    assert summary.failures == {"exploding": "RuntimeError: exploding candidate raised on purpose"}
    board = summary.leaderboard
    assert board.filter(pl.col("status") == "failed").get_column("candidate").to_list() == [
        "exploding"
    ]
    assert summary.champion in {"seasonal_naive", "moving_average"}
    failed = _children(work, summary.mlflow_run_id)["exploding"]
    assert failed.info.status == "FAILED"
    assert failed.data.tags["poolcast.error"].startswith("RuntimeError")


def test_parent_run_has_data_quality_counts_and_the_quarantine_file(retrain):
    summary, work = retrain
    client = _client(work)
    metrics = client.get_run(summary.mlflow_run_id).data.metrics
    assert metrics["dq_rows_in"] == 8 * 30 + 3 and metrics["dq_gap_months"] == 0
    assert metrics["dq_rows_quarantined"] == 3
    assert metrics["dq_rows_in"] == metrics["dq_rows_accepted"] + metrics["dq_rows_quarantined"]
    assert (summary.rows_in, summary.rows_accepted, summary.rows_quarantined) == (243, 240, 3)
    artifacts = [f.path for f in client.list_artifacts(summary.mlflow_run_id, "data_quality")]
    assert artifacts == ["data_quality/quarantine.csv"]
    inputs = client.get_run(summary.mlflow_run_id).inputs.dataset_inputs
    assert [i.dataset.name for i in inputs] == ["validated_panel"]


def test_each_candidate_has_a_child_run_with_metrics_and_plots(retrain):
    summary, work = retrain
    children = _children(work, summary.mlflow_run_id)
    assert set(children) == set(CANDIDATES)
    client = _client(work)
    for name in ("seasonal_naive", "moving_average"):
        run = children[name]
        assert run.info.status == "FINISHED"
        assert {"scaled_pinball", "mase", "coverage_80", "h1_mase", "h2_mase"} <= set(
            run.data.metrics
        )
        plots = {f.path for f in client.list_artifacts(run.info.run_id, "plots")}
        assert {"plots/fan_chart.png", "plots/calibration.png"} <= plots
        tables = {f.path for f in client.list_artifacts(run.info.run_id, "tables")}
        assert "tables/per_sku_metrics.json" in tables
        assert "convergence.json" in {f.path for f in client.list_artifacts(run.info.run_id)}
    parent = {f.path for f in client.list_artifacts(summary.mlflow_run_id, "plots")}
    assert parent == {"plots/leaderboard.png"}


def test_the_champion_is_registered_with_the_alias(retrain):
    summary, work = retrain
    version = _client(work).get_model_version_by_alias("poolcast-flow-test", "champion")
    assert str(version.version) == summary.champion_version
    assert version.tags["poolcast.candidate"] == summary.champion
    assert summary.alias_moved and summary.alias_reason == "no current champion"


def test_prefect_artifacts_are_readable_from_the_api(retrain):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    summary, _ = retrain

    async def read(key):
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
            )

    # other flow tests share the harness: look for this run's artifacts among all of them
    boards = asyncio.run(read("leaderboard"))
    assert any("exploding" in str(b.data) for b in boards)
    quality = asyncio.run(read("data-quality"))
    assert quality and "rows_quarantined" in str(quality[-1].data)
    markdown = asyncio.run(read("retrain-summary"))
    assert any(summary.mlflow_run_id in str(m.data) for m in markdown)
    link = asyncio.run(read("mlflow-run"))
    assert any(summary.mlflow_run_id in str(x.data) for x in link)


def test_the_forecast_is_published_for_the_run(retrain):
    summary, _ = retrain
    forecasts = read_table(summary.outputs_db, "forecasts", run_id=summary.mlflow_run_id)
    assert forecasts.height == summary.forecast_rows == 8 * 2
    assert sorted(set(forecasts.get_column("horizon"))) == [1, 2]
    quantiles = read_table(summary.outputs_db, "forecast_quantiles", run_id=summary.mlflow_run_id)
    # issue 7: the service levels, the published levels (default) and the interval bounds
    expected = {0.5, 0.9, 0.025, 0.05, 0.1, 0.25, 0.75, 0.8, 0.95, 0.975, 0.99}
    assert sorted(set(quantiles.get_column("level"))) == sorted(expected)
    # a valid distribution per row: non-negative and non-decreasing in the level
    assert quantiles.get_column("value").min() >= 0
    steps = quantiles.sort("sku", "month", "level").with_columns(
        step=pl.col("value").diff().over("sku", "month")
    )
    assert steps.get_column("step").drop_nulls().min() >= 0


def test_when_every_candidate_fails_the_flow_fails_and_its_mlflow_run_is_failed(retrain):
    from flows.monthly_retrain import monthly_retrain
    from poolcast.errors import PoolcastError
    from tasks import compete

    summary, work = retrain
    root = work.parent
    config = root / "all_fail.toml"
    config.write_text(
        CONFIG.replace('["seasonal_naive", "moving_average", "exploding"]', '["exploding"]')
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compete, "default_candidates", _lineup)
        with pytest.raises(PoolcastError, match="no candidate can be champion"):
            monthly_retrain(
                str(root / "sales.csv"), "contract", config_path=str(config), work_dir=str(work)
            )
    client = _client(work)
    experiment = client.get_run(summary.mlflow_run_id).info.experiment_id
    parents = client.search_runs([experiment], filter_string="tags.`poolcast.kind` = 'retrain'")
    statuses = {r.info.run_id: r.info.status for r in parents}
    assert statuses.pop(summary.mlflow_run_id) == "FINISHED"
    assert list(statuses.values()) == ["FAILED"]
