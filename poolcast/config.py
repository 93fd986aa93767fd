"""Run configuration: one frozen, typed dataclass per concern, read from a TOML file.

Every setting has an embedded default, so ``poolcast run`` works with no file at all:
Prefect's local server, MLflow's SQLite store and a DuckDB file for outputs all live
under ``work_dir``.

The dataclasses are pydantic dataclasses: every value is checked for its type and range
when a config is built (by :func:`load_config`, by hand, or by ``dataclasses.replace``), so
a bad setting fails before anything runs, with one :class:`InvalidParameterError` naming
the key, the value and the valid range. A new setting is one annotated line with its
default (and a line in the class's ``Fields`` docstring, which becomes its description in
``poolcast run --help`` and the README: :func:`settings_markdown`).
"""

from __future__ import annotations

import functools
import os
import tomllib
from collections.abc import Callable
from dataclasses import field, replace
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import pydantic.dataclasses
from pydantic import Field, field_validator
from pydantic_core import PydanticUndefined

from poolcast.errors import InvalidParameterError

__all__ = [
    "BacktestConfig",
    "FeatureConfig",
    "InventoryConfig",
    "PipelineConfig",
    "TrackingConfig",
    "ValidationConfig",
    "load_config",
    "settings",
    "settings_markdown",
]

DEFAULT_QUANTILES: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95, 0.99)
"""Service quantiles: scored by the pinball losses (the selection metric)."""

DEFAULT_PUBLISH_QUANTILES: tuple[float, ...] = (
    0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.8, 0.9, 0.95, 0.975, 0.99,
)  # fmt: skip
"""Quantile levels published per forecast row (with the service levels and interval bounds)."""

#: Leaderboard metrics a champion may be selected by (lower is better); ``pinball_<q>`` too.
SELECTION_METRICS: tuple[str, ...] = ("scaled_pinball", "mase", "mae", "rmse", "wape", "crps")

#: Types with ranges, shared by the sections below (strict: no "6" -> 6, no True -> 1).
PositiveInt = Annotated[int, Field(strict=True, ge=1)]
NonNegativeInt = Annotated[int, Field(strict=True, ge=0)]
Probability = Annotated[float, Field(gt=0, lt=1)]
Fraction = Annotated[float, Field(ge=0, le=1)]

_MODEL_CONFIG = pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=False)


def dataclass(*, frozen: bool = True) -> Callable[[type], type]:
    """A frozen pydantic dataclass whose validation errors are :class:`InvalidParameterError`.

    Unknown keys are refused; the message names the key, the value and the valid range.
    """

    def wrap(cls: type) -> type:
        cls = pydantic.dataclasses.dataclass(frozen=frozen, config=_MODEL_CONFIG)(cls)
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            try:
                init(self, *args, **kwargs)
            except pydantic.ValidationError as exc:
                raise InvalidParameterError(_describe_errors(exc, cls)) from None

        cls.__init__ = __init__  # type: ignore[misc]
        return cls

    return wrap


def _parse_month_value(value: Any, what: str) -> Any:
    """'YYYY-MM' / 'YYYY-MM-01' strings (TOML) -> date; a date must be a first of month."""
    if isinstance(value, str):
        try:
            return parse_month(value, what=what)
        except InvalidParameterError:
            raise ValueError(f"{value!r} is not a month; write YYYY-MM or YYYY-MM-01") from None
    if isinstance(value, date) and value.day != 1:
        raise ValueError(f"{value} is not the first of a month; write YYYY-MM or YYYY-MM-01")
    return value


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
    min_month : date
        Months before this (YYYY-MM) are implausible and quarantined (``month_out_of_range``).
    max_month : date or None
        Months after this are quarantined (``month_out_of_range``); None: the current
        calendar month (UTC) of the run.
    partial_month_ratio : float
        The data's last month is partial (quarantined as ``month_partial`` when no as-of is
        given) when its total sales or its active SKUs fall below this fraction of the median
        of the previous ``partial_month_window`` months, and below every earlier month's
        ratio too. 0 turns the check off.
    partial_month_window : int
        Months before the last one whose median the last month is compared with.
    partial_month_min_skus : int
        The check needs at least this many active SKUs (median over the window): a month
        total of fewer SKUs is too noisy to call a drop partial.
    """

    sales_cap: PositiveInt = 10_000_000
    customer_cap: PositiveInt = 100_000_000
    gap_policy: Literal["missing", "zero"] | None = None
    min_month: date = date(1990, 1, 1)
    max_month: date | None = None
    partial_month_ratio: Fraction = 0.6
    partial_month_window: PositiveInt = 3
    partial_month_min_skus: PositiveInt = 10

    @field_validator("min_month", "max_month", mode="before")
    @classmethod
    def _months(cls, value: Any) -> Any:
        return _parse_month_value(value, "month")


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

    horizons: Annotated[int, Field(strict=True, ge=1, le=12)] = 3
    spline_df: PositiveInt = 4
    rolling_windows: tuple[PositiveInt, ...] = (3, 12)
    sales_lags: tuple[NonNegativeInt, ...] = (0, 1, 2)


@dataclass(frozen=True)
class BacktestConfig:
    r"""Rolling-origin backtest and champion selection.

    Fields
    ------
    n_origins : int or None
        Number of forecast origins K in 1..12 (the last K months that still leave a full
        horizon). None (default): :func:`poolcast.backtest.default_n_origins`, enough
        origins for the backtest's target months to include the calendar months of the
        next H forecast months one year earlier: :math:`K = \min(12, \max(6, 13 - H))`
        (10 for H = 3), lowered when the panel is too short.
    quantiles : tuple of float
        Service quantiles scored by pinball loss (the selection metric); also published.
    publish_quantiles : tuple of float
        Further quantile levels forecast and published (``forecast_quantiles``); the
        published set is these plus the service levels plus the 80% / 95% interval bounds.
    inactive_months : int
        A SKU without a sale (sales > 0) in the last ``inactive_months`` months at an
        origin is inactive: forecast exactly 0 (reason ``inactive_<N>_months``), in the
        backtest and in the published forecast alike. 0 disables the rule.
    calibration : {"auto", "none", "conformal", "pit"}
        Quantile recalibration from the candidate's own earlier backtest errors (targets at
        or before each origin only): "conformal" always applies the scaled split-conformal
        shift of :func:`poolcast.backtest.conformal_shifts`; "auto" (default) applies it,
        widening only, to the levels whose one-sided hit rate on those earlier rows is off
        by more than 2.5 points (half the 5-point interval aim, one per end); "pit" remaps the levels instead
        (:func:`poolcast.backtest.pit_recalibrate`); "none" never.
    calibration_origins : int or None
        Origins in 0..12 before the scored ones whose forecasts only join the
        recalibration set, so the first scored origins are calibrated as the published
        forecast is (:func:`poolcast.backtest.prepare_splits`). None (default): up to H,
        each with 12 + H months of history like the default scored origins (none on a panel
        too short for that); unused (0) with ``calibration = "none"``.
    n_samples : int
        Predictive samples drawn per row by candidates that simulate.
    candidates : tuple of str or None
        Candidate names to run; None runs the default line-up.
    params : dict of str to dict
        Constructor parameters per candidate, e.g. ``[backtest.params.bayes_nb2_hier]`` with
        ``draws = 1000`` and ``adaptation = "low_rank"``; they override the line-up's own (a
        name must be a known candidate and each key one of its constructor parameters:
        :func:`poolcast.models.registry.check_candidate_params`).
    selection_metric : str
        Metric the champion minimises (ties broken by MASE): scaled_pinball, mase, mae, rmse,
        wape, crps or pinball_<q>.
    seed : int
        Seed of every random generator in the run.
    """

    n_origins: Annotated[int, Field(strict=True, ge=1, le=12)] | None = None
    quantiles: Annotated[tuple[Probability, ...], Field(min_length=1)] = DEFAULT_QUANTILES
    publish_quantiles: Annotated[tuple[Probability, ...], Field(min_length=1)] = (
        DEFAULT_PUBLISH_QUANTILES
    )
    inactive_months: NonNegativeInt = 12
    calibration: Literal["auto", "conformal", "pit", "none"] = "auto"
    calibration_origins: Annotated[int, Field(strict=True, ge=0, le=12)] | None = None
    n_samples: PositiveInt = 500
    candidates: tuple[str, ...] | None = None
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    selection_metric: str = "scaled_pinball"
    seed: NonNegativeInt = 20261127

    @field_validator("quantiles")
    @classmethod
    def _distinct(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if len(set(value)) != len(value):
            raise ValueError("quantile levels must be distinct")
        return value

    @field_validator("params")
    @classmethod
    def _known_params(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from poolcast.models.registry import check_candidate_params  # models do not import config

        try:
            check_candidate_params(value)
        except InvalidParameterError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("selection_metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value in SELECTION_METRICS or value.startswith("pinball_"):
            return value
        raise ValueError(
            f"unknown metric; use one of {', '.join(SELECTION_METRICS)} or pinball_<q>"
        )


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
        DuckDB file of the published tables (default ``<work_dir>/outputs.duckdb``), or a
        SQLAlchemy URL such as ``postgresql+psycopg://user@host:5432/db``.
    """

    mlflow_tracking_uri: str = ""
    experiment_name: str = "poolcast-monthly-retrain"
    registered_model_name: str = "poolcast-demand"
    outputs_db: str = ""


@dataclass(frozen=True)
class InventoryConfig:
    """The inventory policy of the published plan (see ``poolcast.inventory``).

    Fields
    ------
    lead_time_months : int
        Months from order to arrival, for SKUs without their own (plan column or table).
    review_period_months : int
        Months between two orders.
    service_level : float
        Cycle service level in (0, 1).
    service_level_by_category : dict of str to float
        ``[inventory.service_level_by_category]``: a level per category.
    lead_times_path : str
        Optional CSV / Parquet ``sku, lead_time_months`` of per-SKU lead times.
    """

    lead_time_months: int = 1
    review_period_months: int = 1
    service_level: float = 0.95
    service_level_by_category: dict[str, float] = field(default_factory=dict)
    lead_times_path: str = ""


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
        The last month the run may see; rows after it are quarantined. None: the latest
        complete month in the data, never after the current calendar month (see
        ``poolcast.validation.infer_as_of``).
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
    inventory: InventoryConfig = field(default_factory=InventoryConfig)

    @field_validator("as_of", mode="before")
    @classmethod
    def _as_of(cls, value: Any) -> Any:
        return _parse_month_value(value, "as_of")

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
    def outputs_db(self) -> Path | str:
        """The outputs DuckDB file, or the SQLAlchemy URL (``postgresql+psycopg://...``) as is."""
        db = self.tracking.outputs_db
        if "://" in db:
            return db
        return Path(db) if db else self.work_dir / "outputs.duckdb"

    def with_overrides(self, **overrides: Any) -> PipelineConfig:
        """A copy with top-level fields replaced; None values are ignored."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


_SECTIONS = {
    "validation": ValidationConfig,
    "features": FeatureConfig,
    "backtest": BacktestConfig,
    "tracking": TrackingConfig,
    "inventory": InventoryConfig,
}
_TOP_LEVEL = ("source", "mapping", "as_of", "work_dir")


def load_config(path: str | Path | None = None, **overrides: Any) -> PipelineConfig:
    """Read a TOML config (or none), apply command-line overrides and validate everything.

    The file has optional top-level keys ``source``, ``mapping``, ``as_of`` (YYYY-MM or
    YYYY-MM-DD), ``work_dir`` and the tables ``[validation]``, ``[features]``,
    ``[backtest]``, ``[tracking]`` whose keys are the fields of the dataclasses above
    (:func:`settings_markdown` lists them with types, ranges and defaults). Overrides
    with the value None keep the file's value.

    Raises
    ------
    InvalidParameterError
        The file is missing or not TOML, or a key is unknown, or a value has the wrong
        type or is out of range: one message naming every bad key, its value and the
        valid range (and the file).
    """
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise InvalidParameterError(f"config file {str(p)!r} does not exist")
        try:
            raw = tomllib.loads(p.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InvalidParameterError(f"config file {str(p)!r} is not valid TOML: {exc}") from exc
    where = str(path) if path is not None else "config"
    unknown = sorted(set(raw) - set(_TOP_LEVEL) - set(_SECTIONS))
    if unknown:
        raise InvalidParameterError(
            f"{where}: unknown key {unknown[0]!r}; allowed are {', '.join(_TOP_LEVEL)}, "
            + ", ".join(f"[{s}]" for s in _SECTIONS)
        )
    for name in _SECTIONS:
        if name in raw and not isinstance(raw[name], dict):
            raise InvalidParameterError(
                f"{where}: {name} = {raw[name]!r} must be a table: write [{name}] on its own line"
            )
    values = {**raw, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return PipelineConfig(**values)
    except InvalidParameterError as exc:
        raise InvalidParameterError(f"{where}: {exc}") from None


def _owner_and_key(cls: type, loc: tuple[Any, ...]) -> tuple[type, str, str]:
    """(dataclass owning the field, field name, readable key like '[backtest] quantiles[1]')."""
    section = next((n for n, c in _SECTIONS.items() if c is cls), None)
    owner, rest = cls, list(loc)
    if cls is PipelineConfig and rest and str(rest[0]) in _SECTIONS and len(rest) > 1:
        section = str(rest[0])
        owner, rest = _SECTIONS[section], rest[1:]
    name = str(rest[0]) if rest else ""
    key = name + "".join(f"[{i}]" for i in rest[1:])
    return owner, name, f"[{section}] {key}" if section else key


def _describe_errors(exc: pydantic.ValidationError, cls: type) -> str:
    """One line for every error: key = value: problem; valid: range (default)."""
    parts = []
    for err in exc.errors():
        owner, name, key = _owner_and_key(cls, tuple(err["loc"]))
        known = getattr(owner, "__pydantic_fields__", {})
        if err["type"] in ("unexpected_keyword_argument", "extra_forbidden") or name not in known:
            parts.append(f"{key}: unknown key; allowed keys are {sorted(known)}")
            continue
        info = known[name]
        msg = str(err["msg"]).removeprefix("Value error, ")
        text = f"{key} = {err['input']!r}: {msg}"
        valid = _valid_text(info)
        default = _default_of(info)
        hint = "; ".join(x for x in (f"valid: {valid}" if valid else "", f"default {default}") if x)
        parts.append(f"{text} ({hint})" if hint else text)
    return "; ".join(parts)


def _default_of(info: Any) -> str:
    if info.default_factory is not None:
        empty = info.default_factory()
        return _toml(empty) if empty in ({}, [], ()) else "see below"
    value = info.default
    if value is PydanticUndefined:
        return "required"
    return _toml(value)


def _toml(value: Any) -> str:
    """A default as it is written in the TOML file."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, date):
        return f'"{value:%Y-%m}"'
    if isinstance(value, (str, Path)):
        return f'"{value}"'
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def _valid_text(info: Any) -> str:
    """The valid values of a field in words, from its JSON schema (types and ranges)."""
    try:
        schema = pydantic.TypeAdapter(info.rebuild_annotation()).json_schema()
    except Exception:  # an arbitrary type without a schema: no range to state
        return ""
    return _schema_text(schema)


def _schema_text(s: dict[str, Any]) -> str:
    if "anyOf" in s:
        return " or ".join(t for t in (_schema_text(x) for x in s["anyOf"]) if t)
    if "enum" in s:
        return "one of " + ", ".join(_toml(v) for v in s["enum"])
    if "const" in s:
        return _toml(s["const"])
    kind = s.get("type")
    if kind == "null":
        return "none"
    if kind == "boolean":
        return "true or false"
    if kind == "array":
        text = f"a list of {_plural(_schema_text(s.get('items', {})))}"
        return text + (f" (at least {s['minItems']})" if s.get("minItems") else "")
    if kind in ("integer", "number"):
        noun = "an integer" if kind == "integer" else "a number"
        low = (
            f"{s['minimum']} <="
            if "minimum" in s
            else f"{s['exclusiveMinimum']} <"
            if "exclusiveMinimum" in s
            else ""
        )
        high = (
            f"<= {s['maximum']}"
            if "maximum" in s
            else f"< {s['exclusiveMaximum']}"
            if "exclusiveMaximum" in s
            else ""
        )
        if low and high:
            return f"{noun} with {low} x {high}"
        if low:
            return (
                f"{noun} >= {s['minimum']}"
                if "minimum" in s
                else f"{noun} > {s['exclusiveMinimum']}"
            )
        return f"{noun} {high}".strip()
    if kind == "string":
        return {"date": "a month YYYY-MM", "path": "a path"}.get(s.get("format", ""), "a string")
    if kind == "object":
        return "a table"
    return ""


def _plural(text: str) -> str:
    for article in ("an ", "a "):
        if text.startswith(article):
            noun, _, rest = text[len(article) :].partition(" ")
            return f"{noun}s {rest}".strip()
    return text


def _field_docs(cls: type) -> dict[str, str]:
    """Descriptions from the numpydoc ``Fields`` section of a config class's docstring."""
    docs: dict[str, str] = {}
    current: list[str] = []
    lines = (cls.__doc__ or "").splitlines()
    for line in lines:
        stripped = line.strip()
        if " : " in stripped and not line.startswith(" " * 8):
            current = [n.strip() for n in stripped.split(" : ")[0].split(",")]
            for n in current:
                docs[n] = ""
        elif current and stripped and line.startswith(" " * 8):
            for n in current:
                docs[n] = f"{docs[n]} {stripped}".strip()
        elif not stripped:
            current = []
    return docs


def settings() -> list[dict[str, str]]:
    """Every setting of a run: key (as in the TOML file), default, valid values, description.

    Built from the dataclasses themselves (types, ranges, defaults, docstrings), so the
    README's table and ``poolcast run --help`` cannot drift from the code.
    """
    rows = []
    for section, cls in [("", PipelineConfig), *_SECTIONS.items()]:
        docs = _field_docs(cls)
        for name, info in cls.__pydantic_fields__.items():  # type: ignore[attr-defined]
            if name in _SECTIONS:
                continue
            rows.append(
                {
                    "key": f"[{section}] {name}" if section else name,
                    "default": _default_of(info),
                    "valid": _valid_text(info),
                    "description": docs.get(name, ""),
                }
            )
    return rows


def settings_markdown() -> str:
    """The settings as a markdown table (README's configuration section)."""
    lines = ["| key | default | valid values | meaning |", "|---|---|---|---|"]
    for row in settings():
        meaning = row["description"].replace("``", "`")
        cells = [f"`{row['key']}`", f"`{row['default']}`", row["valid"], meaning]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


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


if __name__ == "__main__":  # ``python -m poolcast.config``: the README's settings table
    print(settings_markdown())
