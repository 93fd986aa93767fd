"""Faults injected at each step of the end of the monthly retrain, with real MLflow (SQLite),
real DuckDB and the Prefect test harness: the database, the registry alias and the MLflow
parent run are checked together after every fault.

Order under test: register the version (alias untouched) -> publish (one transaction) ->
move the alias -> finish the parent run. No fault may leave the alias on a version whose
forecasts were not published, nor a failed flow with a FINISHED parent run.
"""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

import poolcast.publish as publish_mod
from poolcast import tracking as tracking_mod
from poolcast.models.baselines import MovingAverage, SeasonalNaive
from poolcast.publish import read_sql, read_table
from poolcast.simulate import simulate_panel

pytestmark = [pytest.mark.flow, pytest.mark.slow]

MODEL = "poolcast-fault-test"
CONFIG = f"""
[features]
horizons = 2

[backtest]
n_origins = 2
n_samples = 40
quantiles = [0.5, 0.9]
candidates = ["seasonal_naive", "moving_average"]

[tracking]
registered_model_name = "{MODEL}"

[inventory]
lead_time_months = 1
review_period_months = 1
service_level = 0.9
"""


def _lineup(*, has_customers: bool, has_promo: bool, names=None, n_skus=None, **_):
    lineup = {"seasonal_naive": SeasonalNaive, "moving_average": MovingAverage}
    return {name: lineup[name] for name in (names or lineup)}


class Injected(RuntimeError):
    """The fault the tests inject."""


@pytest.fixture(scope="module")
def work(prefect_harness, tmp_path_factory):
    """Sales of 8 SKUs, 2020-01..2022-06, with stock on hand; a config; an empty work dir."""
    root = tmp_path_factory.mktemp("faults")
    panel = simulate_panel(8, 30, seed=5).frame
    panel = panel.with_columns(
        (pl.col("sales") // 2).alias("on_hand"), pl.col("month").cast(pl.String)
    )
    panel.write_csv(root / "sales.csv")
    (root / "poolcast.toml").write_text(CONFIG)
    return root


def _run(root, as_of: str, **kw):
    from flows.monthly_retrain import monthly_retrain
    from tasks import compete

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compete, "default_candidates", _lineup)
        return monthly_retrain(
            str(root / "sales.csv"),
            "contract",
            as_of=as_of,
            config_path=str(root / "poolcast.toml"),
            work_dir=str(root / "work"),
            **kw,
        )


def _client(root):
    from mlflow import MlflowClient

    uri = f"sqlite:///{(root / 'work' / 'mlflow.db').resolve()}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _alias(root) -> str:
    return str(_client(root).get_model_version_by_alias(MODEL, "champion").version)


def _versions(root) -> int:
    return len(_client(root).search_model_versions(f"name = '{MODEL}'"))


def _last_parent(root):
    client = _client(root)
    experiment = client.get_experiment_by_name("poolcast-monthly-retrain")
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string="tags.`poolcast.kind` = 'retrain'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0]


def _db(root):
    return root / "work" / "outputs.duckdb"


def _published(root) -> list[tuple]:
    return read_sql(
        _db(root), "SELECT as_of, run_id, registry_version FROM runs ORDER BY as_of"
    ).rows()


@pytest.fixture(scope="module")
def baseline(work):
    """A first, successful run as of 2022-04: it publishes and takes the alias."""
    summary = _run(work, "2022-04")
    return summary


def test_a_first_run_publishes_an_inventory_plan_then_takes_the_alias(work, baseline):
    assert baseline.alias_moved and _alias(work) == baseline.champion_version
    assert _last_parent(work).info.status == "FINISHED"
    plan = read_table(_db(work), "latest_inventory_plan")
    assert plan.height == 8
    assert set(plan.get_column("registry_version")) == {baseline.champion_version}
    assert set(plan.get_column("as_of")) == {date(2022, 4, 1)}
    # on_hand is known at the origin, so every SKU has an order quantity = max(0, S - on_hand)
    expected = (plan["order_up_to"] - plan["on_hand"]).clip(lower_bound=0)
    assert plan["order_quantity"].to_list() == expected.to_list()
    assert (plan["safety_stock"] >= 0).all() and plan["fill_rate"].is_between(0, 1).all()
    latest = read_table(_db(work), "latest_forecasts")
    assert {"mean", "q_0_5", "q_0_9"} <= set(latest.columns) and latest.height == 16


@pytest.mark.parametrize(
    "where",
    ["after_register", "inside_transaction", "after_commit"],
)
def test_a_fault_after_registering_keeps_the_alias_and_fails_the_run(work, baseline, where):
    alias_before = _alias(work)
    published_before = _published(work)
    versions_before = _versions(work)
    with pytest.MonkeyPatch.context() as mp:
        if where == "after_register":  # registered, then the publish cannot even start

            def fail_publish(*args, **kwargs):
                raise Injected("outputs unreachable (injected)")

            mp.setattr("tasks.publish.publish_run", fail_publish)
        elif where == "inside_transaction":  # forecasts and plan inserted, then a failure
            real = publish_mod._insert

            def fail_inside(db, name, frame):
                if name == "quarantine":
                    raise Injected("disk full inside the transaction (injected)")
                real(db, name, frame)

            mp.setattr(publish_mod, "_insert", fail_inside)
        else:  # the publication committed, then moving the alias fails

            def fail_promote(*args, **kwargs):
                raise Injected("registry unreachable after commit (injected)")

            mp.setattr(tracking_mod, "promote_champion", fail_promote)
        with pytest.raises(Injected):
            _run(work, "2022-05")
    # a version was registered, but the alias did not move
    assert _versions(work) == versions_before + 1
    assert _alias(work) == alias_before
    parent = _last_parent(work)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["poolcast.alias_moved"] == "False"
    new_version = parent.data.tags["poolcast.champion_version"]
    if where == "after_commit":
        # the month is published (by the new version), the alias is still on the old one
        assert (date(2022, 5, 1), parent.info.run_id, new_version) in _published(work)
    else:
        assert _published(work) == published_before
        assert not [p for p in (work / "work").iterdir() if p.name.endswith(".tmp")]


def test_rerunning_the_month_replaces_it_and_a_backfill_does_not_move_the_alias(work, baseline):
    may = _run(work, "2022-05")
    assert _last_parent(work).info.status == "FINISHED"
    rows = _published(work)
    assert [r[0] for r in rows] == [date(2022, 4, 1), date(2022, 5, 1)]  # May replaced, once
    assert rows[-1][1] == may.mlflow_run_id
    assert set(read_table(_db(work), "latest_forecasts").get_column("run_id")) == {
        may.mlflow_run_id
    }
    alias = _alias(work)

    march = _run(work, "2022-03")  # an older as-of, without --backfill
    assert not march.alias_moved and _alias(work) == alias
    assert _last_parent(work).info.status == "FINISHED"
    assert [r[0] for r in _published(work)] == [date(2022, m, 1) for m in (3, 4, 5)]
    latest = read_table(_db(work), "latest_run").row(0, named=True)
    assert latest["as_of"] == date(2022, 5, 1) and latest["run_id"] == may.mlflow_run_id
