"""The monthly retrain: load -> validate -> features/backtest -> compete -> select -> refit +
forecast -> track (MLflow) -> publish (DuckDB) -> report (Prefect artifacts).

Run it with ``poolcast run SOURCE --mapping online_retail``, or directly::

    python -m flows.monthly_retrain data/example/online_retail_sku_monthly.csv.gz online_retail

Candidates compete in parallel on Prefect's thread-pool task runner (2 workers, or
``POOLCAST_COMPETE_WORKERS``); each child run is logged from the flow's thread as soon as its
candidate finishes (plots are drawn in one thread only). A candidate that raises is recorded
(leaderboard row and FAILED child run) and the others go on.
Schedules, work pools and default parameters live in ``deployments/``.
"""

from __future__ import annotations

import os
import sys

from prefect import flow
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from poolcast.reporting import RetrainSummary
from tasks import compete, data, forecast, preflight, publish, report, tracking

__all__ = ["monthly_retrain"]


#: Candidates fitted at once; ``POOLCAST_COMPETE_WORKERS`` (set by the deployment) scales it out.
COMPETE_WORKERS = int(os.environ.get("POOLCAST_COMPETE_WORKERS", "2"))


@flow(
    name="monthly-retrain",
    task_runner=ThreadPoolTaskRunner(max_workers=COMPETE_WORKERS),
    log_prints=True,
    on_failure=[tracking.fail_parent_run],
    on_crashed=[tracking.fail_parent_run],
)
def monthly_retrain(
    source: str,
    mapping: str = "contract",
    as_of: str | None = None,
    config_path: str | None = None,
    work_dir: str = ".poolcast",
    plan: str | None = None,
    backfill: bool = False,
) -> RetrainSummary:
    """Retrain, select and publish this month's demand forecasts.

    Parameters
    ----------
    source : str
        CSV / Parquet path or SQL URL of the monthly SKU sales.
    mapping : str
        Shipped mapping name or TOML path renaming the source's columns to the contract.
    as_of : str, optional
        Last month the run may see (``YYYY-MM``); later rows are quarantined.
    config_path : str, optional
        TOML run configuration (see ``poolcast.config.load_config``).
    work_dir : str
        Where the MLflow store, the outputs database and the quarantine file go.
    plan : str, optional
        CSV / Parquet path or SQL URL of the plan (known-future covariates such as open or
        promotion days) for the months after the as-of, read through the same mapping.
        Without it, candidates that need plan columns are ineligible this month.
    backfill : bool
        Let a run whose as-of is older than the latest published one move the registry
        alias (by the usual rule); without it a backfill publishes but the alias stays.

    The last steps run in this order: register the champion version (alias untouched) ->
    publish every table in one transaction -> move the alias (rule + backfill guard) ->
    report -> finish the MLflow parent run. A failure anywhere after registering leaves the
    alias where it was and the parent run FAILED (``on_failure`` hook).
    """
    config = data.resolve_config(
        config_path, source=source, mapping=mapping, as_of=as_of, work_dir=work_dir
    )
    preflight.preflight(config)  # every store writable, the tracking server up: before any fit
    validated = data.validate(data.load(config), config)
    quarantine_path = data.save_quarantine(validated, config.work_dir)
    run = tracking.start_run(config, run_name=f"retrain-{validated.counts.last_month}")
    tracking.log_data_quality(run, validated, quarantine_path)
    report.data_quality_artifact(validated)

    splits = data.build_backtest(validated.panel, config)
    coverage = data.coverage(splits, config)
    planned = data.load_plan(plan, validated, config)
    lineup = compete.candidate_lineup(config, validated)
    factories, ineligible = compete.eligibility(lineup, validated.panel, planned, config)
    futures = [compete.compete.submit(name, f, splits, config) for name, f in factories.items()]
    outcomes = []
    for future in as_completed(futures):  # log each child run while the others still fit
        outcomes.append(future.result())
        tracking.log_candidate(run, outcomes[-1], validated.panel)
    board = compete.leaderboard(outcomes, config, ineligible)
    report.leaderboard_artifact(board, config.backtest.selection_metric)

    champion = compete.select(board, config)
    forecaster = forecast.refit(champion, factories, validated.panel, config, outcomes)
    distribution = forecast.forecast(forecaster, validated.panel, planned)
    predicted = distribution.frame
    inventory_plan = publish.inventory(forecaster, distribution, validated, config)
    registration = tracking.register(
        run,
        forecaster,
        splits[-1].test,
        config=config,
        score=forecast.score_of(board, champion, config),
        fingerprint=forecast.fingerprint(validated.panel, splits, config),
        rescore=forecast.rescorer(board, factories, splits, config),
        board=board,  # the champion's backtest metrics go on the logged model
    )
    tracking.log_outputs(run, predicted, board, config.backtest.selection_metric)
    published = publish.publish(
        config, run.run_id, validated, predicted, board, champion, inventory_plan, registration
    )
    registration = tracking.promote(run, registration, published, backfill=backfill)

    summary = report.summarize(
        validated, board, champion, registration, run, published, quarantine_path, coverage
    )
    report.summary_artifacts(summary)
    tracking.finish(run)
    return summary


if __name__ == "__main__":
    monthly_retrain(*sys.argv[1:3])
