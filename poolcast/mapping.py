"""Column mappings: how a real source's columns become the data contract's columns.

A mapping is a small TOML file. Shipped mappings live in ``poolcast/mappings/`` and are
loaded by name (``"rossmann"``, ``"online_retail"``, ``"carparts"``, ``"contract"``);
any other mapping is loaded from its path. The format::

    name = "rossmann"
    description = "..."
    gap_policy = "missing"          # optional per-source default; the config may override it

    [columns]                       # contract column = source column; must be in the source
    sku = "Store"
    month = "Month"
    sales = "Sales"

    [optional_columns]              # used when the source has them, else treated as absent
    category = "category"

    [binarise]                      # contract column -> threshold: 1 if value >= threshold else 0
    promo = 12

    [plan_columns]                  # plan column = source column: numeric, known in advance
    open_days = "OpenDays"          # (used when the source has them; may reuse a source
    promo_days = "PromoDays"        #  column already mapped, e.g. PromoDays -> promo too)

    [plan_transforms]               # plan column = how the covariate models enter it
    open_days = "log1p"             # (default "identity"; see PLAN_TRANSFORMS)

    [source]                        # how to read the source
    separator = ","                 # CSV field separator
    table = "sales"                 # SQL: a table name ...
    query = "SELECT ..."            # ... or a query (not both)

``sku``, ``month`` and ``sales`` are required in every mapping. ``customer_count`` may be
left out: the contract then has no customer column, and ``poolcast.features`` omits all
customer features (``FeatureSpec.customer_columns`` is empty).

Plan columns are numeric values known in advance for the months being forecast (promotion
days, open days, holiday days, a planned price). In the history they travel in the panel;
for the months after the as-of they come from a separate plan source
(``poolcast run --plan``, read through the same mapping; see :mod:`poolcast.plan`). Their
names must be lower-case identifiers that are not contract or feature names. ``promo``
(the contract's 0/1 flag) is a plan column as well.

``[plan_transforms]`` says how the covariate models (GLM, GEE, GLMM) enter a plan column:
``"identity"`` (the default, centred at its training mean) or ``"log1p"``, log(1 + x), for
an exposure such as open days, to which a month's sales are proportional rather than
exponential in (the design term is then ``log1p_<name>``; the data, the plan file and the
published tables keep the value as it is).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from poolcast.errors import InvalidParameterError

__all__ = [
    "CONTRACT_COLUMNS",
    "OPTIONAL_CONTRACT_COLUMNS",
    "PLAN_TRANSFORMS",
    "REQUIRED_CONTRACT_COLUMNS",
    "RESERVED_PLAN_NAMES",
    "Mapping",
    "load_mapping",
    "shipped_mappings",
]

REQUIRED_CONTRACT_COLUMNS: tuple[str, ...] = ("sku", "month", "sales")
OPTIONAL_CONTRACT_COLUMNS: tuple[str, ...] = ("customer_count", "category", "promo", "on_hand")
CONTRACT_COLUMNS: tuple[str, ...] = REQUIRED_CONTRACT_COLUMNS + OPTIONAL_CONTRACT_COLUMNS

#: Names a plan column may not take (contract columns and the feature table's columns).
RESERVED_PLAN_NAMES: frozenset[str] = frozenset(
    {*CONTRACT_COLUMNS, "is_gap", "origin", "horizon", "t", "month_of_year", "n_history", "_row"}
)
_PLAN_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_PLAN_NAME_PREFIXES = ("fourier_", "sales_", "cust_", "log_customers", "log1p_", "_")

#: The transforms ``[plan_transforms]`` may name (see :mod:`poolcast.models._design`).
PLAN_TRANSFORMS: tuple[str, ...] = ("identity", "log1p")

_TOP_KEYS = {
    "plan_columns",
    "plan_transforms",
    "name",
    "description",
    "gap_policy",
    "columns",
    "optional_columns",
    "binarise",
    "source",
}
_SOURCE_KEYS = {"separator", "table", "query"}
_GAP_POLICIES = ("missing", "zero")
_BINARISABLE = ("promo",)


@dataclass(frozen=True)
class Mapping:
    """A source-to-contract column mapping with per-source reading defaults.

    Fields
    ------
    name : str
        The mapping's name (the file stem when loaded from a path without a name).
    columns : dict of str to str
        Contract column -> source column; each must exist in the source (else SourceError).
    optional_columns : dict of str to str
        Contract column -> source column, used only when the source has it.
    binarise : dict of str to float
        Contract column -> threshold t: the source value v becomes 1 if v >= t else 0.
        Only ``promo`` may be binarised.
    separator : str
        CSV field separator.
    table, query : str or None
        For SQL sources: the table to read, or the query to run (at most one).
    gap_policy : {"missing", "zero"} or None
        The per-source default for months absent inside a SKU's history; a config's
        ``[validation] gap_policy`` overrides it. None: "missing".
    plan_columns : dict of str to str
        Plan column -> source column: numeric values known in advance for the forecast
        months (used when the source has them). A source column already mapped in
        ``columns`` may be reused (Rossmann: PromoDays -> promo and -> promo_days).
    plan_transforms : dict of str to str
        Plan column -> how the covariate models enter it (:data:`PLAN_TRANSFORMS`; a plan
        column left out is ``"identity"``).
    description : str
        Free text (where the source comes from, why the choices).
    path : Path or None
        The TOML file it was read from.
    """

    name: str
    columns: dict[str, str]
    optional_columns: dict[str, str] = field(default_factory=dict)
    binarise: dict[str, float] = field(default_factory=dict)
    separator: str = ","
    table: str | None = None
    query: str | None = None
    gap_policy: Literal["missing", "zero"] | None = None
    description: str = ""
    path: Path | None = None
    plan_columns: dict[str, str] = field(default_factory=dict)
    plan_transforms: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"mapping {self.name!r}"
        missing = [c for c in REQUIRED_CONTRACT_COLUMNS if c not in self.columns]
        if missing:
            raise InvalidParameterError(
                f"{where}: [columns] must map the required contract column(s) {missing} "
                f'(e.g. sku = "YourSkuColumn")'
            )
        for table_name, cols in (
            ("columns", self.columns),
            ("optional_columns", self.optional_columns),
        ):
            unknown = sorted(set(cols) - set(CONTRACT_COLUMNS))
            if unknown:
                raise InvalidParameterError(
                    f"{where}: [{table_name}] has unknown contract column(s) {unknown}; "
                    f"allowed are {list(CONTRACT_COLUMNS)}"
                )
            bad = {k: v for k, v in cols.items() if not isinstance(v, str) or not v}
            if bad:
                raise InvalidParameterError(
                    f"{where}: [{table_name}] values must be non-empty source column names, got {bad}"
                )
        both = sorted(set(self.columns) & set(self.optional_columns))
        if both:
            raise InvalidParameterError(
                f"{where}: {both} appear in both [columns] and [optional_columns]; keep one"
            )
        sources = list(self.columns.values()) + list(self.optional_columns.values())
        dupes = sorted({s for s in sources if sources.count(s) > 1})
        if dupes:
            raise InvalidParameterError(
                f"{where}: source column(s) {dupes} are mapped to more than one contract column"
            )
        for col, threshold in self.binarise.items():
            if col not in _BINARISABLE:
                raise InvalidParameterError(
                    f"{where}: [binarise] may only hold {list(_BINARISABLE)}, got {col!r}"
                )
            if col not in self.columns and col not in self.optional_columns:
                raise InvalidParameterError(
                    f"{where}: [binarise] {col!r} is not mapped in [columns] or [optional_columns]"
                )
            if isinstance(threshold, bool) or not isinstance(threshold, int | float):
                raise InvalidParameterError(
                    f"{where}: [binarise] {col} threshold must be a number, got {threshold!r}"
                )
        for plan_name, src in self.plan_columns.items():
            if (
                not isinstance(plan_name, str)
                or not _PLAN_NAME_RE.match(plan_name)
                or plan_name in RESERVED_PLAN_NAMES
                or plan_name.startswith(_PLAN_NAME_PREFIXES)
            ):
                raise InvalidParameterError(
                    f"{where}: [plan_columns] name {plan_name!r} must be a lower-case identifier "
                    f"(a-z, 0-9, _) that is not a contract or feature column "
                    f"{sorted(RESERVED_PLAN_NAMES)} and does not start with {list(_PLAN_NAME_PREFIXES)}; "
                    f'e.g. open_days = "OpenDays"'
                )
            if not isinstance(src, str) or not src:
                raise InvalidParameterError(
                    f"{where}: [plan_columns] {plan_name} must name a source column, got {src!r}"
                )
        plan_sources = list(self.plan_columns.values())
        dupes = sorted({s for s in plan_sources if plan_sources.count(s) > 1})
        if dupes:
            raise InvalidParameterError(
                f"{where}: [plan_columns] map source column(s) {dupes} more than once"
            )
        for plan_name, transform in self.plan_transforms.items():
            if plan_name not in self.plan_columns:
                raise InvalidParameterError(
                    f"{where}: [plan_transforms] {plan_name!r} is not a [plan_columns] name "
                    f"({sorted(self.plan_columns)})"
                )
            if transform not in PLAN_TRANSFORMS:
                raise InvalidParameterError(
                    f"{where}: [plan_transforms] {plan_name} = {transform!r}; use one of "
                    f"{list(PLAN_TRANSFORMS)}"
                )
        if self.gap_policy is not None and self.gap_policy not in _GAP_POLICIES:
            raise InvalidParameterError(
                f"{where}: gap_policy must be one of {list(_GAP_POLICIES)}, got {self.gap_policy!r}"
            )
        if self.table is not None and self.query is not None:
            raise InvalidParameterError(f"{where}: [source] give table or query, not both")
        if not isinstance(self.separator, str) or len(self.separator) != 1:
            raise InvalidParameterError(
                f"{where}: [source] separator must be one character, got {self.separator!r}"
            )

    def source_columns(self, available: list[str] | tuple[str, ...]) -> dict[str, str]:
        """Contract column -> source column for the columns this source will supply.

        Required ``columns`` are always included (their absence is checked by the loader);
        ``optional_columns`` only when ``available`` has them.
        """
        out = dict(self.columns)
        out.update({k: v for k, v in self.optional_columns.items() if v in available})
        return out

    def plan_source_columns(self, available: list[str] | tuple[str, ...]) -> dict[str, str]:
        """Plan column -> source column for the plan columns this source supplies."""
        return {k: v for k, v in self.plan_columns.items() if v in available}


def shipped_mappings() -> list[str]:
    """Names of the mappings shipped in ``poolcast/mappings/``."""
    folder = resources.files("poolcast") / "mappings"
    return sorted(
        p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml")
    )


def load_mapping(mapping: str | Path | Mapping) -> Mapping:
    """Load a mapping by shipped name or TOML path (a Mapping is returned unchanged).

    Parameters
    ----------
    mapping : str, Path or Mapping
        A shipped name (see :func:`shipped_mappings`) or a path to a TOML file.

    Raises
    ------
    InvalidParameterError
        Unknown name, missing file, invalid TOML or an invalid mapping.
    """
    if isinstance(mapping, Mapping):
        return mapping
    text = str(mapping)
    path = Path(text)
    if text in shipped_mappings() and not path.suffix:
        resource = resources.files("poolcast") / "mappings" / f"{text}.toml"
        return _from_toml(
            resource.read_text(), where=f"shipped mapping {text!r}", path=None, stem=text
        )
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise InvalidParameterError(f"mapping file {text!r} does not exist")
        return _from_toml(
            path.read_text(), where=f"mapping file {text!r}", path=path, stem=path.stem
        )
    raise InvalidParameterError(
        f"mapping {text!r} is neither a shipped mapping {shipped_mappings()} nor a TOML file path"
    )


def _from_toml(text: str, *, where: str, path: Path | None, stem: str) -> Mapping:
    try:
        raw: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidParameterError(f"{where} is not valid TOML: {exc}") from exc
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise InvalidParameterError(
            f"{where}: unknown key(s) {unknown}; allowed are {sorted(_TOP_KEYS)}"
        )
    source = raw.get("source", {})
    unknown = sorted(set(source) - _SOURCE_KEYS)
    if unknown:
        raise InvalidParameterError(
            f"{where}: unknown [source] key(s) {unknown}; allowed are {sorted(_SOURCE_KEYS)}"
        )
    if "columns" not in raw:
        raise InvalidParameterError(f"{where}: a [columns] table is required")
    return Mapping(
        name=str(raw.get("name", stem)),
        columns=dict(raw["columns"]),
        optional_columns=dict(raw.get("optional_columns", {})),
        binarise=dict(raw.get("binarise", {})),
        separator=source.get("separator", ","),
        table=source.get("table"),
        query=source.get("query"),
        gap_policy=raw.get("gap_policy"),
        description=str(raw.get("description", "")),
        path=path,
        plan_columns=dict(raw.get("plan_columns", {})),
        plan_transforms=dict(raw.get("plan_transforms", {})),
    )
