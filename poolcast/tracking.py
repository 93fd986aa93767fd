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
import os
import re
import socket
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
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
from poolcast.secrets import mask

__all__ = [
    "CHAMPION_ALIAS",
    "Registration",
    "RetrainRun",
    "backfill_guard",
    "current_champion",
    "ensure_experiment",
    "fail_running_runs",
    "fail_stale_runs",
    "finish_run",
    "log_candidate_outcome",
    "log_candidate_run",
    "log_champion_model",
    "log_data_quality",
    "log_frame",
    "log_input_dataset",
    "log_run_outputs",
    "log_values",
    "promote_champion",
    "register_champion",
    "run_url",
    "set_champion_alias",
    "source_tags",
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


def _store_lock(tracking_uri: str):
    """A file lock beside a SQLite store (``<db>.lock``): MLflow migrates a fresh store on first
    use, and two processes doing it at once fail; with the lock the second one waits."""
    import contextlib

    from poolcast.publish import file_lock

    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return contextlib.nullcontext()
    return file_lock(Path(tracking_uri[len(prefix) :] + ".lock"))


def ensure_experiment(tracking_uri: str, name: str, *, artifact_dir: Path | None = None) -> str:
    """The id of experiment `name`, created (artifacts under `artifact_dir`) when absent.

    The first use of a SQLite store (its creation and migration) happens under a lock file,
    so two first runs at once into a fresh work dir take turns.
    """
    with _store_lock(tracking_uri):
        return _ensure_experiment(tracking_uri, name, artifact_dir=artifact_dir)


def _ensure_experiment(tracking_uri: str, name: str, *, artifact_dir: Path | None) -> str:
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
    params longer than 6000 characters are truncated; passwords in param and tag values are
    masked (``poolcast.secrets.mask``).
    """
    from mlflow.entities import Metric, Param, RunTag

    client = _client(tracking_uri)
    now = int(time.time() * 1000)
    metric_list = [
        Metric(_key(k), float(v), now, 0)
        for k, v in (metrics or {}).items()
        if v is not None and math.isfinite(float(v))
    ]
    param_list = [
        Param(_key(k), mask(str(v))[:_MAX_PARAM_CHARS]) for k, v in (params or {}).items()
    ]
    tag_list = [RunTag(str(k), mask(str(v))[:_MAX_PARAM_CHARS]) for k, v in (tags or {}).items()]
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


TAG_HOST = "poolcast.host"
TAG_PID = "poolcast.pid"
TAG_KIND = "poolcast.kind"


def _pid_alive(pid: int) -> bool:

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def fail_stale_runs(
    tracking_uri: str,
    experiment_name: str,
    *,
    host: str | None = None,
    alive: Callable[[int], bool] = _pid_alive,
) -> list[str]:
    """Mark FAILED the RUNNING retrain runs whose process on this host is gone (and their
    RUNNING child runs); returns the parent run ids. Called once, when the next run starts
    (``tasks.tracking.start_run``).

    A run killed with SIGKILL (or by a power cut) cannot mark itself; the next run does. A
    parent run records its host and process id (tags ``poolcast.host`` / ``poolcast.pid``);
    a RUNNING one from this host whose process no longer exists is stale. Runs from other
    hosts are left alone (this host cannot see their processes).
    """

    host = host or socket.gethostname()
    client = _client(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=(
            f"tags.`{TAG_KIND}` = 'retrain' and tags.`{TAG_HOST}` = '{host}' "
            "and attributes.status = 'RUNNING'"
        ),
    )
    stale = []
    for run in runs:
        pid = run.data.tags.get(TAG_PID, "")
        if pid.isdigit() and not alive(int(pid)):
            children = client.search_runs(
                [experiment.experiment_id],
                filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}' "
                "and attributes.status = 'RUNNING'",
            )
            for child in children:  # candidate runs the killed process left open
                client.set_terminated(child.info.run_id, status="FAILED")
            client.set_tag(
                run.info.run_id,
                "poolcast.failed_reason",
                f"process {pid} on {host} ended without finishing the run (killed)",
            )
            client.set_terminated(run.info.run_id, status="FAILED")
            stale.append(run.info.run_id)
    return stale


def _git_commit(path: Path) -> str | None:
    import subprocess

    try:
        out = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if re.fullmatch(r"[0-9a-f]{40}", commit) else None


def source_tags(source_name: str = "flows/monthly_retrain.py") -> dict[str, str]:
    """MLflow's source tags (``mlflow.source.name``/``type``/``git.commit``) plus host and pid.

    The git commit is the one of the checkout the ``poolcast`` package is imported from
    (absent when it is not a git checkout, e.g. an installed wheel).
    """
    import socket

    tags = {
        "mlflow.source.name": source_name,
        "mlflow.source.type": "JOB",
        TAG_HOST: socket.gethostname(),
        TAG_PID: str(os.getpid()),
    }
    commit = _git_commit(Path(__file__).resolve().parents[1])
    if commit is not None:
        tags["mlflow.source.git.commit"] = commit
    return tags


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
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.exceptions import MlflowException

    with warnings.catch_warnings():  # "source can be interpreted in multiple ways": a local file
        warnings.simplefilter("ignore", UserWarning)
        try:
            dataset = mlflow.data.from_pandas(
                panel.to_pandas(), source=mask(source), name=name, targets="sales"
            )
        except MlflowException:  # a database URL: MLflow has no resolver; record it as a URL
            dataset = mlflow.data.from_pandas(
                panel.to_pandas(),
                source=HTTPDatasetSource(mask(source)),
                name=name,
                targets="sales",
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
    metrics: Mapping[str, float] | None = None,
) -> str:
    """Log the champion as a pyfunc model in `run_id`, register it, tag the version; returns the version.

    The version tags record the candidate class, its backtest score, the backtest
    fingerprint and the metric: what the alias rule in ``poolcast.champion`` compares.

    The model loads wherever its own requirements install: the ``poolcast`` package is
    logged with it as code (``code_paths``), and its requirements pin every third-party
    package ``poolcast`` needs to unpickle and run a candidate (:data:`MODEL_REQUIREMENTS`).
    `metrics` (the champion's backtest metrics) are logged on the model itself, so the
    logged model carries its backtest scores and nothing else (no data-quality counts).
    """
    import mlflow
    import mlflow.pyfunc
    from mlflow.models import ModelSignature, infer_signature

    if "sales" in example.columns:  # the model's input is a forecast frame: target unknown
        example = example.with_columns(pl.lit(None, pl.Int64).alias("sales"))
    example_pd = example.to_pandas()
    with warnings.catch_warnings():  # integer columns: the feature frame has no missing ints
        warnings.simplefilter("ignore", UserWarning)
        full = infer_signature(example_pd, forecaster.predict(None, example))
    # Output schema only: MLflow enforces an input schema on pandas frames alone and would
    # refuse a polars frame, which ``ChampionForecaster.predict`` accepts (it validates and
    # converts either); the expected input columns are recorded as a model-version tag.
    signature = ModelSignature(inputs=None, outputs=full.outputs)
    input_columns = json.dumps(full.inputs.input_names())
    requirements = [f"{m}=={_version(m)}" for m in MODEL_REQUIREMENTS]
    mlflow.set_registry_uri(tracking_uri)
    with (
        _scoped_tracking_uri(tracking_uri),
        mlflow.start_run(run_id=run_id),
        warnings.catch_warnings(),
    ):
        # MLflow's advice (type hints, input example, models-from-code) does not apply: the
        # signature is given, and the wrapper is pickled on purpose.
        warnings.simplefilter("ignore", UserWarning)
        info = mlflow.pyfunc.log_model(
            name="champion_model",
            python_model=_pyfunc_model(forecaster),
            registered_model_name=registered_model_name,
            signature=signature,
            pip_requirements=requirements,
            # the package and the pandera schemas it imports (schemas/ beside poolcast/)
            code_paths=[
                str(Path(__file__).resolve().parent),
                str(Path(__file__).resolve().parents[1] / "schemas"),
            ],
            # MLflow links the run's metrics *of this step* to the model; the run's own
            # metrics (data-quality counts) are at step 0, the model's backtest metrics here.
            step=_MODEL_STEP,
        )
        backtest = {
            _key(k): float(v)
            for k, v in (metrics or {}).items()
            if v is not None and math.isfinite(float(v))
        }
        if backtest:
            mlflow.log_metrics(backtest, model_id=info.model_id, step=_MODEL_STEP)
    version = str(info.registered_model_version)
    client = _client(tracking_uri)
    # leaving ``mlflow.start_run`` ended the parent run FINISHED; it is not: publish and the
    # alias come next, and a failure there must leave it FAILED (the flow's hook looks for
    # RUNNING runs)
    client.update_run(run_id, status="RUNNING")
    tags = {
        TAG_CANDIDATE: forecaster.name,
        TAG_SCORE: repr(float(score)),
        TAG_FINGERPRINT: fingerprint,
        TAG_METRIC: metric,
        "poolcast.input_columns": input_columns,
    }
    for key, value in tags.items():
        client.set_model_version_tag(registered_model_name, version, key, value)
    return version


#: Distributions the logged champion needs besides ``poolcast`` itself (logged as code):
#: what ``poolcast.models`` imports (formulaic for the GLMM designs, statsmodels for GEE,
#: threadpoolctl), polars/pandas with pyarrow between them, and MLflow to load it.
MODEL_REQUIREMENTS = (
    "mlflow",
    "numpy",
    "polars",
    "pandas",
    "pyarrow",
    "scipy",
    "statsmodels",
    "formulaic",
    "threadpoolctl",
    "pandera",  # schemas/ (the panel contract the features import)
    "pydantic",  # poolcast.config (typed settings the features import)
)


_MODEL_STEP = 1


@contextmanager
def _scoped_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent tracking URI set to `uri` for the block, then put back as it was.

    ``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI``, which poolcast honours
    over the config file; left set, it would redirect the next run in this process.
    """

    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    saved = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved


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
        Whether the alias ``champion`` moves (after :func:`register_champion`: the pending
        decision) or moved (after :func:`promote_champion`) to it, and why.
    registered_model_name : str
        Registry name of the model.
    """

    version: str
    decision: AliasDecision
    registered_model_name: str = ""


def start_retrain(
    config: PipelineConfig, *, run_name: str, tags: Mapping[str, Any] | None = None
) -> RetrainRun:
    """Create (if needed) the experiment and start the retrain's parent run with the config as params."""
    uri = config.mlflow_tracking_uri
    experiment_id = ensure_experiment(
        uri, config.tracking.experiment_name, artifact_dir=Path(config.work_dir) / "mlartifacts"
    )
    params = {
        "source": mask(config.source),
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
        tags={TAG_KIND: "retrain", **source_tags(), **(tags or {})},
    )
    return RetrainRun(uri, experiment_id, run_id)


TAG_HOST = "poolcast.host"
TAG_PID = "poolcast.pid"


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
    metrics: Mapping[str, float] | None = None,
) -> Registration:
    """Register the champion model and decide (but do **not** apply) the alias rule.

    The current champion is read *before* the new version is registered and
    :func:`poolcast.champion.decide_alias` decides; the alias is moved later, by
    :func:`promote_champion`, only once the run's outputs are published. The version and the
    pending decision are tagged on the parent run.
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
        metrics=metrics,
    )
    log_values(
        run.tracking_uri,
        run.run_id,
        metrics={"champion_score": score},
        tags={
            "poolcast.champion": forecaster.name,
            "poolcast.champion_version": version,
            "poolcast.alias_moved": False,
            "poolcast.alias_reason": "pending: the alias moves only after the publish commits",
        },
    )
    return Registration(version, decision, registered_model_name)


def backfill_guard(
    decision: AliasDecision,
    *,
    as_of: Any,
    latest_published_as_of: Any,
    backfill: bool,
) -> AliasDecision:
    """Keep the alias when this run published an as-of older than the latest one, unless asked.

    A backfill (``as_of`` < the latest as-of published before this run) trains on older
    data than the current champion; it moves the alias only with ``backfill=True``
    (``poolcast run --backfill``), and then by the usual rule.
    """
    if not decision.move or latest_published_as_of is None or as_of >= latest_published_as_of:
        return decision
    if backfill:
        return AliasDecision(
            True,
            f"backfill of {as_of} allowed (--backfill): {decision.reason}",
            decision.current_version,
            decision.current_score,
        )
    return AliasDecision(
        False,
        f"as-of {as_of} is older than the latest published {latest_published_as_of}; the alias "
        f"stays (pass --backfill to let a backfill move it); rule said: {decision.reason}",
        decision.current_version,
        decision.current_score,
    )


def promote_champion(
    run: RetrainRun,
    registration: Registration,
    *,
    as_of: Any,
    latest_published_as_of: Any,
    backfill: bool = False,
) -> Registration:
    """After the publish committed: move the alias per the decision (and the backfill guard).

    Returns the registration with the final decision, also tagged on the parent run.
    """
    decision = backfill_guard(
        registration.decision,
        as_of=as_of,
        latest_published_as_of=latest_published_as_of,
        backfill=backfill,
    )
    if decision.move:
        set_champion_alias(
            run.tracking_uri,
            registration.registered_model_name,
            registration.version,
            reason=decision.reason,
        )
    log_values(
        run.tracking_uri,
        run.run_id,
        tags={"poolcast.alias_moved": decision.move, "poolcast.alias_reason": decision.reason},
    )
    return Registration(registration.version, decision, registration.registered_model_name)
