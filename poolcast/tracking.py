"""MLflow tracking of a retrain: one parent run, one child run per candidate, the champion model.

Every MLflow import is inside a function, so ``import poolcast`` never loads MLflow. Runs are
addressed by explicit run ids through :class:`mlflow.MlflowClient` (no fluent "active run"),
so child runs logged from worker threads keep their parent (tag ``mlflow.parentRunId``);
the one fluent call is ``mlflow.pyfunc.log_model`` inside ``mlflow.start_run(run_id=...)`` of
the parent run, in the flow's own thread.
Metrics, params and tags go in batches (:meth:`MlflowClient.log_batch`, at most 1000 metrics
per call) rather than one request per number.

The default store is MLflow's SQLite store ``sqlite:///<work_dir>/mlflow.db`` with artifacts
under ``<work_dir>/mlartifacts`` (``PipelineConfig.mlflow_tracking_uri``); any tracking URL
works instead.
"""

from __future__ import annotations

import json
import math
import re
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

from poolcast.champion import (
    TAG_CANDIDATE,
    TAG_FINGERPRINT,
    TAG_METRIC,
    TAG_SCORE,
    AliasDecision,
    ChampionForecaster,
    ChampionRecord,
    decide_alias,
)
from poolcast.config import PipelineConfig

__all__ = [
    "CHAMPION_ALIAS",
    "Registration",
    "RetrainRun",
    "current_champion",
    "ensure_experiment",
    "fail_running_runs",
    "finish_run",
    "log_candidate_outcome",
    "log_candidate_run",
    "log_champion_model",
    "log_data_quality",
    "log_frame",
    "log_input_dataset",
    "log_run_outputs",
    "log_values",
    "register_champion",
    "run_url",
    "set_champion_alias",
    "start_parent_run",
    "start_retrain",
]

CHAMPION_ALIAS = "champion"
_MAX_METRICS = 1000
_MAX_PARAMS = 100
_MAX_PARAM_CHARS = 6000
_BAD_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")


def _client(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _key(name: str) -> str:
    """An MLflow-legal metric / param key (alphanumerics, ``_ - . /`` and space)."""
    return _BAD_KEY.sub("_", str(name))


def ensure_experiment(tracking_uri: str, name: str, *, artifact_dir: Path | None = None) -> str:
    """The id of experiment `name`, created (artifacts under `artifact_dir`) when absent."""
    client = _client(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = Path(artifact_dir).resolve().as_uri() if artifact_dir is not None else None
    return client.create_experiment(name, artifact_location=location)


def log_values(
    tracking_uri: str,
    run_id: str,
    *,
    metrics: Mapping[str, float] | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> None:
    """Log metrics, params and tags in as few ``log_batch`` calls as MLflow allows.

    Non-finite metrics are skipped (MLflow stores NaN, but it breaks sorting in the UI);
    params longer than 6000 characters are truncated.
    """
    from mlflow.entities import Metric, Param, RunTag

    client = _client(tracking_uri)
    now = int(time.time() * 1000)
    metric_list = [
        Metric(_key(k), float(v), now, 0)
        for k, v in (metrics or {}).items()
        if v is not None and math.isfinite(float(v))
    ]
    param_list = [Param(_key(k), str(v)[:_MAX_PARAM_CHARS]) for k, v in (params or {}).items()]
    tag_list = [RunTag(str(k), str(v)[:_MAX_PARAM_CHARS]) for k, v in (tags or {}).items()]
    client.log_batch(run_id, params=param_list[:_MAX_PARAMS], tags=tag_list)
    for start in range(_MAX_PARAMS, len(param_list), _MAX_PARAMS):
        client.log_batch(run_id, params=param_list[start : start + _MAX_PARAMS])
    for start in range(0, len(metric_list), _MAX_METRICS):
        client.log_batch(run_id, metrics=metric_list[start : start + _MAX_METRICS])


def start_parent_run(
    tracking_uri: str,
    experiment_id: str,
    *,
    run_name: str,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> str:
    """Create the retrain's parent run and return its id (it stays RUNNING until :func:`finish_run`)."""
    run = _client(tracking_uri).create_run(experiment_id, run_name=run_name)
    log_values(tracking_uri, run.info.run_id, params=params, tags=tags)
    return run.info.run_id


def finish_run(tracking_uri: str, run_id: str, *, failed: bool = False) -> None:
    """Mark a run FINISHED (or FAILED)."""
    _client(tracking_uri).set_terminated(run_id, status="FAILED" if failed else "FINISHED")


def fail_running_runs(
    tracking_uri: str, experiment_name: str, *, tag: str, value: str
) -> list[str]:
    """Mark FAILED every RUNNING run of the experiment whose `tag` equals `value`; returns their ids.

    Used when a flow run fails after its parent run started, so no run is left RUNNING.
    """
    client = _client(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{tag}` = '{value}' and attributes.status = 'RUNNING'",
    )
    for run in runs:
        client.set_terminated(run.info.run_id, status="FAILED")
    return [run.info.run_id for run in runs]


def _pandas_ready(frame: pl.DataFrame):
    """pandas copy with temporal columns as ISO strings (MLflow's JSON tables need them)."""
    temporal = [c for c, t in frame.schema.items() if t.is_temporal()]
    return frame.with_columns(pl.col(temporal).cast(pl.String)).to_pandas()


def log_frame(tracking_uri: str, run_id: str, frame: pl.DataFrame, artifact_file: str) -> None:
    """Log a polars frame as an MLflow table artifact (``artifact_file`` ends in ``.json``)."""
    _client(tracking_uri).log_table(run_id, data=_pandas_ready(frame), artifact_file=artifact_file)


def log_data_quality(
    tracking_uri: str,
    run_id: str,
    counts: Mapping[str, int],
    *,
    quarantine_path: Path | None = None,
) -> None:
    """Log the data-quality counts as metrics and the quarantine file as an artifact."""
    log_values(tracking_uri, run_id, metrics={f"dq_{k}": float(v) for k, v in counts.items()})
    if quarantine_path is not None and Path(quarantine_path).exists():
        _client(tracking_uri).log_artifact(
            run_id, str(quarantine_path), artifact_path="data_quality"
        )


def log_input_dataset(
    tracking_uri: str, run_id: str, panel: pl.DataFrame, *, source: str, name: str
) -> str:
    """Log the validated panel as an MLflow dataset input (context ``training``); returns its digest."""
    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag

    with warnings.catch_warnings():  # "source can be interpreted in multiple ways": a local file
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(
            panel.to_pandas(), source=source, name=name, targets="sales"
        )
    entity = dataset._to_mlflow_entity()
    _client(tracking_uri).log_inputs(
        run_id,
        datasets=[DatasetInput(entity, tags=[InputTag("mlflow.data.context", "training")])],
    )
    return dataset.digest


def log_candidate_run(
    tracking_uri: str,
    experiment_id: str,
    parent_run_id: str,
    *,
    name: str,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    tables: Mapping[str, pl.DataFrame | None] | None = None,
    figures: Mapping[str, Any] | None = None,
    documents: Mapping[str, Any] | None = None,
    error: str | None = None,
) -> str:
    """One child run for a candidate: params, batched metrics, tables, figures; FAILED if `error`.

    Parameters
    ----------
    tables : mapping of str to pl.DataFrame or None
        Artifact name (without extension) to table; None entries are skipped.
    figures : mapping of str to matplotlib Figure
        Artifact name (without extension) to figure, saved as PNG under ``plots/``.
    documents : mapping of str to JSON-like
        Artifact name (without extension) to a dict, saved as JSON (e.g. convergence info).
    error : str, optional
        "ErrorType: message" of a failed candidate; tagged and the run ends FAILED.
    """
    client = _client(tracking_uri)
    tags = {"mlflow.parentRunId": parent_run_id, "poolcast.candidate": name}
    if error is not None:
        tags["poolcast.error"] = error
    run_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
    log_values(tracking_uri, run_id, metrics=metrics, params=params)
    for artifact, table in (tables or {}).items():
        if table is not None and table.height:
            log_frame(tracking_uri, run_id, table, f"tables/{artifact}.json")
    for artifact, figure in (figures or {}).items():
        client.log_figure(run_id, figure, f"plots/{artifact}.png")
    for artifact, document in (documents or {}).items():
        client.log_text(run_id, json.dumps(document, indent=2, default=str), f"{artifact}.json")
    client.set_terminated(run_id, status="FAILED" if error is not None else "FINISHED")
    return run_id


def _pyfunc_model(forecaster: ChampionForecaster):
    import mlflow.pyfunc

    class ChampionPyfunc(mlflow.pyfunc.PythonModel):
        """pyfunc wrapper: ``predict(feature frame) -> forecast frame`` via ChampionForecaster."""

        def __init__(self, forecaster: ChampionForecaster) -> None:
            self.forecaster = forecaster

        def predict(self, context, model_input, params=None):
            return self.forecaster.predict(context, model_input, params)

    return ChampionPyfunc(forecaster)


def log_champion_model(
    tracking_uri: str,
    run_id: str,
    forecaster: ChampionForecaster,
    *,
    registered_model_name: str,
    example: pl.DataFrame,
    score: float,
    fingerprint: str,
    metric: str,
) -> str:
    """Log the champion as a pyfunc model in `run_id`, register it, tag the version; returns the version.

    The version tags record the candidate class, its backtest score, the backtest
    fingerprint and the metric: what the alias rule in ``poolcast.champion`` compares.
    """
    import mlflow
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    if "sales" in example.columns:  # the model's input is a forecast frame: target unknown
        example = example.with_columns(pl.lit(None, pl.Int64).alias("sales"))
    example_pd = example.to_pandas()
    with warnings.catch_warnings():  # integer columns: the feature frame has no missing ints
        warnings.simplefilter("ignore", UserWarning)
        signature = infer_signature(example_pd, forecaster.predict(None, example))
    requirements = [f"{m}=={_version(m)}" for m in ("mlflow", "numpy", "polars", "pandas", "scipy")]
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    with mlflow.start_run(run_id=run_id), warnings.catch_warnings():
        # MLflow's advice (type hints, input example, models-from-code) does not apply: the
        # signature is given, and the wrapper is pickled on purpose.
        warnings.simplefilter("ignore", UserWarning)
        info = mlflow.pyfunc.log_model(
            name="champion_model",
            python_model=_pyfunc_model(forecaster),
            registered_model_name=registered_model_name,
            signature=signature,
            pip_requirements=requirements,
        )
    version = str(info.registered_model_version)
    client = _client(tracking_uri)
    tags = {
        TAG_CANDIDATE: forecaster.name,
        TAG_SCORE: repr(float(score)),
        TAG_FINGERPRINT: fingerprint,
        TAG_METRIC: metric,
    }
    for key, value in tags.items():
        client.set_model_version_tag(registered_model_name, version, key, value)
    return version


def _version(module: str) -> str:
    from importlib.metadata import version

    return version(module)


def current_champion(
    tracking_uri: str, registered_model_name: str, *, alias: str = CHAMPION_ALIAS
) -> ChampionRecord | None:
    """The version holding `alias` and its tags, or None when the model or alias does not exist."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        version = client.get_model_version_by_alias(registered_model_name, alias)
    except MlflowException:
        return None
    return ChampionRecord.from_tags(version.version, version.tags)


def set_champion_alias(
    tracking_uri: str,
    registered_model_name: str,
    version: str,
    *,
    reason: str,
    alias: str = CHAMPION_ALIAS,
) -> None:
    """Point `alias` at `version` and record why on the version."""
    client = _client(tracking_uri)
    client.set_registered_model_alias(registered_model_name, alias, version)
    client.set_model_version_tag(registered_model_name, version, "poolcast.alias_reason", reason)


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """A browser URL of the run: the server's UI for http(s) URIs, else a local ``mlflow ui``."""
    base = (
        tracking_uri.rstrip("/")
        if tracking_uri.startswith(("http://", "https://"))
        else "http://127.0.0.1:5000"
    )
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


@dataclass(frozen=True)
class RetrainRun:
    """The MLflow parent run of one retrain.

    Fields
    ------
    tracking_uri : str
        MLflow tracking URI.
    experiment_id : str
        Experiment of the run.
    run_id : str
        The parent run.
    """

    tracking_uri: str
    experiment_id: str
    run_id: str

    @property
    def url(self) -> str:
        """Browser URL of the run (see :func:`run_url`)."""
        return run_url(self.tracking_uri, self.experiment_id, self.run_id)


@dataclass(frozen=True)
class Registration:
    """The registered champion version and the alias decision.

    Fields
    ------
    version : str
        New registry version of the champion model.
    decision : AliasDecision
        Whether the alias ``champion`` moved to it, and why.
    """

    version: str
    decision: AliasDecision


def start_retrain(
    config: PipelineConfig, *, run_name: str, tags: Mapping[str, Any] | None = None
) -> RetrainRun:
    """Create (if needed) the experiment and start the retrain's parent run with the config as params."""
    uri = config.mlflow_tracking_uri
    experiment_id = ensure_experiment(
        uri, config.tracking.experiment_name, artifact_dir=Path(config.work_dir) / "mlartifacts"
    )
    params = {
        "source": config.source,
        "mapping": config.mapping,
        "as_of": config.as_of,
        **{f"features.{k}": v for k, v in asdict(config.features).items()},
        **{f"backtest.{k}": v for k, v in asdict(config.backtest).items()},
        **{f"validation.{k}": v for k, v in asdict(config.validation).items()},
    }
    run_id = start_parent_run(
        uri,
        experiment_id,
        run_name=run_name,
        params=params,
        tags={"poolcast.kind": "retrain", **(tags or {})},
    )
    return RetrainRun(uri, experiment_id, run_id)


def log_candidate_outcome(run: RetrainRun, outcome: Any, history: pl.DataFrame) -> str:
    """Child run of one compete outcome: metrics, params, tables and plots, or the failure."""
    from poolcast.reporting import (
        CandidateFailure,
        candidate_figures,
        candidate_metrics,
        candidate_params,
        candidate_tables,
    )

    common = {
        "tracking_uri": run.tracking_uri,
        "experiment_id": run.experiment_id,
        "parent_run_id": run.run_id,
    }
    if isinstance(outcome, CandidateFailure):
        return log_candidate_run(**common, name=outcome.name, error=outcome.error)
    diagnostics = getattr(outcome.report, "diagnostics", None) or {}
    run_id = log_candidate_run(
        **common,
        name=outcome.name,
        params=candidate_params(outcome.report),
        metrics=candidate_metrics(outcome.result)
        | {k: float(v) for k, v in diagnostics.items() if v is not None},
        tables=candidate_tables(outcome.result, outcome.report),
        figures=candidate_figures(outcome.result, history, outcome.report),
        documents={"convergence": outcome.report.convergence}
        if outcome.report is not None
        else None,
    )
    client = _client(run.tracking_uri)
    reason = getattr(outcome, "ineligible_reason", None)
    client.set_tag(run_id, "poolcast.status", "ineligible" if reason else "ok")
    if reason:
        client.set_tag(run_id, "poolcast.ineligible_reason", reason[:5000])
    if getattr(outcome.report, "posterior", None) is not None:
        log_posterior(run.tracking_uri, run_id, outcome.report)
    return run_id


def log_posterior(tracking_uri: str, run_id: str, report: Any) -> int:
    """Save a Bayesian report's posterior (ArviZ DataTree: posterior and sample stats) as the
    zipped zarr artifact ``posterior/posterior.zarr.zip``; tag the sampler; returns its bytes.

    zarr, not netCDF: this environment has no netCDF4 / h5netcdf writer, and the scipy
    netCDF3 writer cannot hold the DataTree's groups.
    """
    import shutil
    import tempfile

    client = _client(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "posterior.zarr"
        import xarray as xr

        tree = report.posterior
        groups = {
            g: tree[g].to_dataset() for g in ("posterior", "sample_stats") if g in tree.children
        }
        xr.DataTree.from_dict(groups).to_zarr(store, mode="w")
        archive = shutil.make_archive(str(store), "zip", root_dir=store)
        size = Path(archive).stat().st_size
        client.log_artifact(run_id, archive, "posterior")
    client.set_tag(run_id, "poolcast.sampler", getattr(report, "sampler", ""))
    client.log_metric(run_id, "posterior_artifact_bytes", float(size))
    return size


def log_run_outputs(
    run: RetrainRun, forecast: pl.DataFrame, leaderboard: pl.DataFrame, *, metric: str
) -> None:
    """On the parent run: the published forecast, the leaderboard table and its plot."""
    from poolcast.plots import leaderboard_plot

    log_frame(run.tracking_uri, run.run_id, forecast, "forecast/forecast.json")
    log_frame(run.tracking_uri, run.run_id, leaderboard, "leaderboard.json")
    figure = leaderboard_plot(leaderboard, metric=metric)
    _client(run.tracking_uri).log_figure(run.run_id, figure, "plots/leaderboard.png")


def register_champion(
    run: RetrainRun,
    forecaster: ChampionForecaster,
    *,
    registered_model_name: str,
    example: pl.DataFrame,
    score: float,
    fingerprint: str,
    metric: str,
    rescore: Callable[[str], float | None],
) -> Registration:
    """Register the champion model and apply the alias rule of ``poolcast.champion``.

    The current champion is read *before* the new version is registered; the alias moves
    only when :func:`poolcast.champion.decide_alias` says so. The decision is logged on the
    parent run (tags ``poolcast.alias_moved`` / ``poolcast.alias_reason``).
    """
    current = current_champion(run.tracking_uri, registered_model_name)
    decision = decide_alias(
        new_score=score, fingerprint=fingerprint, current=current, rescore=rescore
    )
    version = log_champion_model(
        run.tracking_uri,
        run.run_id,
        forecaster,
        registered_model_name=registered_model_name,
        example=example,
        score=score,
        fingerprint=fingerprint,
        metric=metric,
    )
    if decision.move:
        set_champion_alias(run.tracking_uri, registered_model_name, version, reason=decision.reason)
    log_values(
        run.tracking_uri,
        run.run_id,
        metrics={"champion_score": score},
        tags={
            "poolcast.champion": forecaster.name,
            "poolcast.champion_version": version,
            "poolcast.alias_moved": decision.move,
            "poolcast.alias_reason": decision.reason,
        },
    )
    return Registration(version, decision)
