"""Load, validate and prepare the backtest: each task one call into poolcast."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from poolcast import secrets
from poolcast.backtest import OriginSplit, backtest_coverage, prepare_splits
from poolcast.config import PipelineConfig, load_config
from poolcast.errors import SourceError
from poolcast.features import panel_plan_columns
from poolcast.io import LoadedSource, load_plan_source, load_source
from poolcast.plan import PlanResult, validate_plan
from poolcast.validation import ValidationResult, validate_panel, write_quarantine
from tasks._retry import retry_if_transient

__all__ = [
    "build_backtest",
    "coverage",
    "load",
    "load_plan",
    "resolve_config",
    "save_quarantine",
    "validate",
]


@task(cache_policy=NO_CACHE)
def resolve_config(
    config_path: str | None, *, source: str, mapping: str, as_of: str | None, work_dir: str
) -> PipelineConfig:
    """The run's configuration: the TOML file (if any) overridden by the flow parameters.

    A source URL with a clear password is masked here (see ``poolcast.secrets``): the full
    URL moves to ``$POOLCAST_SOURCE_URL`` of this process and the flow run's stored
    parameters are rewritten with the masked URL, so nothing downstream sees the secret.
    """
    masked, full = secrets.split(source)
    if full is not None:
        os.environ[secrets.SOURCE_URL_ENV] = full
        _mask_flow_run_parameters(masked)
    return load_config(config_path, source=masked, mapping=mapping, as_of=as_of, work_dir=work_dir)


def _mask_flow_run_parameters(masked_source: str) -> None:
    """Replace ``source`` in the current flow run's stored parameters with its masked form."""
    from prefect import runtime
    from prefect.client.orchestration import get_client

    flow_run_id = runtime.flow_run.get_id()
    if flow_run_id is None:
        return
    with get_client(sync_client=True) as client:
        parameters = dict(client.read_flow_run(flow_run_id).parameters)
        parameters["source"] = masked_source
        client.update_flow_run(flow_run_id, parameters=parameters)
    get_run_logger().warning(
        "the source URL held a clear password: stored the masked URL as the flow run's "
        "parameter; pass the masked URL and set %s instead",
        secrets.SOURCE_URL_ENV,
    )


@task(
    cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10, retry_condition_fn=retry_if_transient
)
def load(config: PipelineConfig) -> LoadedSource:
    """Read the source through the mapping (retried only on transient I/O errors)."""
    try:
        loaded = load_source(secrets.reveal(config.source), config.mapping)
    except SourceError as exc:  # driver messages may echo the URL: mask before Prefect logs it
        masked = SourceError(secrets.mask(str(exc)), source=secrets.mask(exc.source))
        masked.column = exc.column
        raise masked from None
    loaded = replace(loaded, source=secrets.mask(loaded.source))
    get_run_logger().info("loaded %d rows from %s", loaded.frame.height, loaded.source)
    return loaded


@task(cache_policy=NO_CACHE)
def validate(loaded: LoadedSource, config: PipelineConfig) -> ValidationResult:
    """Quarantine bad rows and build the validated panel."""
    result = validate_panel(loaded, config=config.validation, as_of=config.as_of)
    c = result.counts
    get_run_logger().info(
        "rows in %d = accepted %d + quarantined %d; %d SKUs, %d gap months",
        c.rows_in,
        c.rows_accepted,
        c.rows_quarantined,
        c.skus,
        c.gaps,
    )
    get_run_logger().info("%s", result.as_of_note)
    return result


@task(cache_policy=NO_CACHE)
def save_quarantine(result: ValidationResult, work_dir: Path) -> Path:
    """Write the quarantine table to ``<work_dir>/quarantine.csv`` (header only when empty)."""
    return write_quarantine(result, Path(work_dir) / "quarantine.csv")


@task(cache_policy=NO_CACHE)
def build_backtest(panel, config: PipelineConfig) -> list[OriginSplit]:
    """Rolling-origin splits with leakage-safe features rebuilt at every origin."""
    b = config.backtest
    splits = prepare_splits(
        panel,
        feature_config=config.features,
        n_origins=b.n_origins,
        calibration_origins=0 if b.calibration == "none" else b.calibration_origins,
    )
    scored = [str(s.origin) for s in splits if s.scored]
    calibration = [str(s.origin) for s in splits if not s.scored]
    get_run_logger().info(
        "backtest origins (%d): %s; calibration origins (%d, forecast for recalibration only): %s",
        len(scored),
        ", ".join(scored),
        len(calibration),
        ", ".join(calibration) or "none",
    )
    return splits


@task(
    cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10, retry_condition_fn=retry_if_transient
)
def load_plan(
    plan: str | None, validated: ValidationResult, config: PipelineConfig
) -> PlanResult | None:
    """Read and validate the ``--plan`` source for the months after the as-of (None without
    one); its quarantine and coverage gaps go to ``<work_dir>/plan_quarantine.csv`` and
    ``plan_missing.csv``."""
    if plan is None:
        return None
    panel = validated.panel
    result = validate_plan(
        load_plan_source(plan, config.mapping),
        as_of=config.as_of or panel.get_column("month").max(),
        horizons=config.features.horizons,
        skus=panel.get_column("sku").unique().to_list(),
        plan_columns=panel_plan_columns(panel),
    )
    write_quarantine(result.quarantine, Path(config.work_dir) / "plan_quarantine.csv")
    result.missing.write_csv(Path(config.work_dir) / "plan_missing.csv")
    c = result.counts
    get_run_logger().info(
        "plan %s: rows in %d = accepted %d + quarantined %d; used %d, ignored %d at or before "
        "the as-of, %d after the horizon, %d of unknown SKUs; missing %s",
        result.source,
        c.rows_in,
        c.rows_accepted,
        c.rows_quarantined,
        c.rows_used,
        c.rows_at_or_before_as_of,
        c.rows_after_horizon,
        c.rows_unknown_sku,
        c.missing or "nothing",
    )
    return result


@task(cache_policy=NO_CACHE)
def coverage(splits: list[OriginSplit], config: PipelineConfig):
    """Per origin: SKUs and rows the backtest scores, unknown targets, inactive SKUs."""
    table = backtest_coverage(splits, inactive_months=config.backtest.inactive_months)
    log = get_run_logger()
    for r in table.iter_rows(named=True):
        log.info(
            "origin %s: %d SKUs, %d scored (%d rows), %d unknown-target rows, %d inactive SKUs",
            r["origin"], r["skus"], r["skus_scored"], r["rows_scored"],
            r["rows_unknown_target"], r["skus_inactive"],
        )  # fmt: skip
    return table
