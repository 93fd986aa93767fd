"""Run configuration: one frozen dataclass per concern, read from a TOML file.

Every setting has an embedded default, so ``poolcast run`` works with no file at all:
Prefect's local server, MLflow's SQLite store and a DuckDB file for outputs all live
under ``work_dir``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from datetime import date
from pathlib import Path
from typing import Any, Literal

from poolcast.errors import InvalidParameterError

__all__ = [
    "BacktestConfig",
    "FeatureConfig",
    "PipelineConfig",
    "TrackingConfig",
    "ValidationConfig",
    "load_config",
]

DEFAULT_QUANTILES: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95, 0.99)


@dataclass(frozen=True)
class ValidationConfig:
    """Rules for accepting input rows.

    Fields
    ------
    sales_cap : int
        Sales above this in one SKU-month are 'absurd' and quarantined.
    customer_cap : int
        Customer counts above this are quarantined.
    gap_policy : {"missing", "zero"} or None
        What a month absent inside a SKU's history means. "missing": unknown (not a
        zero); the month has no target and lags/rolling means skip it. "zero": the source
        omits months without sales (as Online Retail does), so the gap is filled with
        sales 0. Either way every gap is reported. None (the default): use the mapping's
        per-source default (``gap_policy`` in its TOML), else "missing"; a value set here
        overrides the mapping.
    """

    sales_cap: int = 10_000_000
    customer_cap: int = 100_000_000
    gap_policy: Literal["missing", "zero"] | None = None


@dataclass(frozen=True)
class FeatureConfig:
    """Feature engineering settings (see ``poolcast.features``).

    Fields
    ------
    horizons : int
        Forecast horizons 1..horizons months ahead of the origin.
    spline_df : int
        Degrees of freedom of the natural-spline basis of log customers.
    rolling_windows : tuple of int
        Windows (months) of the rolling means of sales and customers, ending at the origin.
    sales_lags : tuple of int
        Lags of sales counted back from the origin (lag 0 = the origin month).
    """

    horizons: int = 3
    spline_df: int = 4
    rolling_windows: tuple[int, ...] = (3, 12)
    sales_lags: tuple[int, ...] = (0, 1, 2)


@dataclass(frozen=True)
class BacktestConfig:
    """Rolling-origin backtest and champion selection.

    Fields
    ------
    n_origins : int
        Number of forecast origins K (the last K months that still leave a full horizon).
    quantiles : tuple of float
        Service quantiles scored by pinball loss and published.
    n_samples : int
        Predictive samples drawn per row by candidates that simulate.
    candidates : tuple of str or None
        Candidate names to run; None runs the default line-up.
    selection_metric : str
        Metric the champion minimises (ties broken by MASE).
    seed : int
        Seed of every random generator in the run.
    """

    n_origins: int = 6
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES
    n_samples: int = 500
    candidates: tuple[str, ...] | None = None
    selection_metric: str = "scaled_pinball"
    seed: int = 20261127


@dataclass(frozen=True)
class TrackingConfig:
    """Where the run is tracked and published. Empty URIs mean the embedded defaults under work_dir.

    Fields
    ------
    mlflow_tracking_uri : str
        MLflow tracking URI; default ``sqlite:///<work_dir>/mlflow.db``.
    experiment_name : str
        MLflow experiment of the retrain runs.
    registered_model_name : str
        Registry name of the champion model.
    outputs_db : str
        DuckDB file of published forecasts and data-quality tables.
    """

    mlflow_tracking_uri: str = ""
    experiment_name: str = "poolcast-monthly-retrain"
    registered_model_name: str = "poolcast-demand"
    outputs_db: str = ""


@dataclass(frozen=True)
class PipelineConfig:
    """Everything one monthly retrain needs.

    Fields
    ------
    source : str
        CSV or Parquet path, or a SQLAlchemy / ADBC URL.
    mapping : str
        A shipped mapping name ("online_retail", "rossmann", "carparts", "contract") or a TOML path.
    as_of : date or None
        The last month the run may see; rows after it are quarantined. None: the latest month in the data.
    work_dir : Path
        Where the embedded stores, quarantine files and artifacts go.
    """

    source: str = ""
    mapping: str = "contract"
    as_of: date | None = None
    work_dir: Path = Path(".poolcast")
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    backtest: BacktestConfig = field(default_factory=BacktestConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    @property
    def mlflow_tracking_uri(self) -> str:
        """The MLflow tracking URI: ``$MLFLOW_TRACKING_URI``, else ``[tracking]
        mlflow_tracking_uri``, else ``sqlite:///<work_dir>/mlflow.db``.

        The environment wins over the file: the file travels with the repository and is the
        same on every machine, the environment is what this machine's operator (or the
        deployment's job variables) chose for it, as for any other service URL.
        """
        uri = os.environ.get("MLFLOW_TRACKING_URI") or self.tracking.mlflow_tracking_uri
        return uri or f"sqlite:///{(self.work_dir / 'mlflow.db').resolve()}"

    @property
    def outputs_db(self) -> Path:
        return (
            Path(self.tracking.outputs_db)
            if self.tracking.outputs_db
            else self.work_dir / "outputs.duckdb"
        )

    def with_overrides(self, **overrides: Any) -> PipelineConfig:
        """A copy with top-level fields replaced; None values are ignored."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


_SECTIONS = {
    "validation": ValidationConfig,
    "features": FeatureConfig,
    "backtest": BacktestConfig,
    "tracking": TrackingConfig,
}


def _build_section(cls: type, values: dict[str, Any], where: str) -> Any:
    allowed = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise InvalidParameterError(
            f"{where}: unknown key(s) {unknown}; allowed keys are {sorted(allowed)}"
        )
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**converted)


def load_config(path: str | Path | None = None, **overrides: Any) -> PipelineConfig:
    """Read a TOML config (or none) and apply command-line overrides.

    The file has optional top-level keys ``source``, ``mapping``, ``as_of`` (YYYY-MM or
    YYYY-MM-DD), ``work_dir`` and the tables ``[validation]``, ``[features]``,
    ``[backtest]``, ``[tracking]`` whose keys are the fields of the dataclasses above.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise InvalidParameterError(f"config file {str(p)!r} does not exist")
        try:
            raw = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise InvalidParameterError(f"config file {str(p)!r} is not valid TOML: {exc}") from exc
    where = str(path) if path is not None else "config"
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _SECTIONS:
            kwargs[key] = _build_section(_SECTIONS[key], value, f"{where} [{key}]")
        elif key in {"source", "mapping"}:
            kwargs[key] = str(value)
        elif key == "work_dir":
            kwargs[key] = Path(value)
        elif key == "as_of":
            kwargs[key] = parse_month(str(value), what=f"{where}: as_of")
        else:
            raise InvalidParameterError(
                f"{where}: unknown key {key!r}; allowed are source, mapping, as_of, work_dir, "
                + ", ".join(f"[{s}]" for s in _SECTIONS)
            )
    if isinstance(overrides.get("as_of"), str):
        overrides["as_of"] = parse_month(overrides["as_of"], what="--as-of")
    if isinstance(overrides.get("work_dir"), str):
        overrides["work_dir"] = Path(overrides["work_dir"])
    return PipelineConfig(**kwargs).with_overrides(**overrides)


def parse_month(text: str, *, what: str) -> date:
    """Parse 'YYYY-MM' or 'YYYY-MM-01' into the first day of that month."""
    parts = text.strip().split("-")
    try:
        if len(parts) == 2:
            return date(int(parts[0]), int(parts[1]), 1)
        if len(parts) == 3:
            d = date(int(parts[0]), int(parts[1]), int(parts[2]))
            if d.day == 1:
                return d
    except ValueError:
        pass
    raise InvalidParameterError(f"{what}: {text!r} is not a month; write YYYY-MM or YYYY-MM-01")
