"""Fixed-effect covariates shared by the pooling comparison (GLM, no-pooling GLM, GEE, GLMM).

The candidate covariates are ``t``, the Fourier seasonality ``fourier_s1, fourier_c1,
fourier_s2, fourier_c2``, the customer features (``log_customers`` or the spline basis
``cust_spline_*``, when the feature table has them) and ``promo``. A covariate is kept only
when the training frame supports it: present, not all null and not constant (promo all 0,
no customers in car parts...); the reasons for dropping are recorded.

Transformations, frozen from the training frame and applied unchanged to forecast rows:

* missing values are explicit, never silently imputed: when a covariate has null values in
  the training frame (e.g. ``log_customers`` of a SKU without customer history, or a
  sales-history term of a SKU whose recent months are unknown under gap policy
  "missing"), the design gets a 0/1 indicator ``<name>_missing`` next to it, and the
  null value itself is set to the training mean of the observed values (so the centred
  covariate is 0 there and the indicator's coefficient carries the effect of being
  missing). A forecast row with a null in a covariate that was never missing in training
  gets the same documented mean fill (the covariate contributes its average effect);
  no model sees a median;
* the continuous covariates (``t``, the customer features and the plan columns other than
  ``promo``) are centred at their training mean, so the intercept is the log mean at
  average trend and customers and the IRLS / PIRLS problems are well conditioned. Fourier
  terms and ``promo`` are not centred. Slopes are unchanged by centring;
* a plan term ``log1p_<column>`` (the mapping's ``[plan_transforms]``, see
  :func:`plan_term`) is log(1 + x) of the plan column, derived from it wherever a design
  is built, so the forecast rows and the plan keep the column as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from poolcast.errors import DataContractError, InvalidParameterError

__all__ = [
    "FOURIER_COLUMNS",
    "MISSING_SUFFIX",
    "MONTH_COLUMNS",
    "SEASONALITY_MIN_MONTHS",
    "CovariateSpec",
    "add_covariate",
    "build_covariate_frame",
    "build_covariates",
    "build_design",
    "make_covariate_spec",
    "plan_term",
    "plan_term_column",
    "required_plan_columns",
]

FOURIER_COLUMNS: tuple[str, ...] = ("fourier_s1", "fourier_c1", "fourier_s2", "fourier_c2")


MONTH_COLUMNS: tuple[str, ...] = tuple(f"moy_{k}" for k in range(2, 13))
"""Month-of-year indicators (January is the baseline), derived from ``month_of_year``."""

SEASONALITY_MIN_MONTHS = 18
"""``seasonality="auto"`` uses :data:`MONTH_COLUMNS` from this many distinct target months."""


#: Prefix of a plan term derived as log(1 + x) from its plan column.
LOG1P_PREFIX = "log1p_"


def plan_term(column: str, transform: str = "identity") -> str:
    """The design term of a plan column under a ``[plan_transforms]`` transform.

    >>> plan_term("open_days", "log1p")
    'log1p_open_days'
    """
    if transform == "identity":
        return column
    if transform == "log1p":
        return LOG1P_PREFIX + column
    raise InvalidParameterError(
        f"plan transform {transform!r} of {column!r}: use 'identity' or 'log1p'"
    )


def plan_term_column(term: str) -> str:
    """The plan column a design term reads (``log1p_open_days`` -> ``open_days``)."""
    return term.removeprefix(LOG1P_PREFIX)


def required_plan_columns(include_promo: bool, plan_terms: tuple[str, ...]) -> tuple[str, ...]:
    """The plan columns a covariate candidate needs for the forecast months: ``promo`` (when
    it uses it) and the columns of its ``plan_terms`` (``log1p_open_days`` needs ``open_days``)."""
    promo = ("promo",) if include_promo else ()
    return promo + tuple(plan_term_column(c) for c in plan_terms if c != "promo")


def _with_derived_terms(frame: pl.DataFrame, terms: tuple[str, ...] | list[str]) -> pl.DataFrame:
    """``frame`` plus the ``log1p_<column>`` terms it lacks, from their plan columns (a
    negative value, which validation quarantines, gives null rather than NaN)."""
    derived = [
        t
        for t in terms
        if t.startswith(LOG1P_PREFIX)
        and t not in frame.columns
        and plan_term_column(t) in frame.columns
    ]
    if not derived:
        return frame
    return frame.with_columns(
        pl.when(pl.col(plan_term_column(t)) >= 0)
        .then(pl.col(plan_term_column(t)).cast(pl.Float64).log1p())
        .otherwise(None)
        .alias(t)
        for t in derived
    )


def _is_centred(name: str) -> bool:
    return name == "t" or name == "log_customers" or name.startswith("cust_")


@dataclass(frozen=True)
class CovariateSpec:
    """Frozen covariate layout of one fit.

    Fields
    ------
    terms : tuple of str
        Covariate columns in design order (the intercept is not listed).
    centres : tuple of float
        Value subtracted from each term (0 for terms that are not centred).
    fill_values : tuple of float
        Value used for a null of each term: the training mean of its observed values
        (0 for an indicator).
    dropped : dict of str to str
        Candidate covariates left out, with the reason.
    indicators : tuple of str
        Columns that had nulls in training and so have a ``<name>_missing`` term in
        ``terms`` (computed from the column's nulls by :func:`build_covariates`).
    """

    terms: tuple[str, ...]
    centres: tuple[float, ...]
    fill_values: tuple[float, ...]
    dropped: dict[str, str] = field(default_factory=dict)
    indicators: tuple[str, ...] = ()

    def formula(self, response: str = "sales", random: str | None = None) -> str:
        """Formula string of the fixed part (plus a random part such as ``"(1 | sku)"``)."""
        rhs = " + ".join(self.terms) if self.terms else "1"
        if random:
            rhs = f"{rhs} + {random}"
        return f"{response} ~ {rhs}"


def make_covariate_spec(
    train: pl.DataFrame,
    *,
    customer_terms: str = "log",
    include_promo: bool = True,
    plan_terms: tuple[str, ...] = (),
    seasonality: str = "auto",
) -> CovariateSpec:
    """Choose the covariates the training frame supports and freeze their transformations.

    Parameters
    ----------
    train : pl.DataFrame
        Training rows of one horizon (feature-table columns).
    customer_terms : {"log", "spline", "none"}
        ``"log"``: ``log_customers``; ``"spline"``: the ``cust_spline_*`` basis (falls back to
        ``log_customers`` when the basis is absent); ``"none"``: no customer feature.
    include_promo : bool
        Use ``promo`` when it varies in the training frame.
    plan_terms : tuple of str
        Further plan columns at the target month (``open_days``, ``promo_days``, ...; see
        ``poolcast.features.FeatureSpec.plan_columns``), used when they vary; centred at
        their training mean. ``log1p_<column>`` enters log(1 + column) (:func:`plan_term`).
    seasonality : {"auto", "fourier", "month", "none"}
        ``"fourier"``: the two-harmonic Fourier terms (a smooth yearly shape);
        ``"month"``: month-of-year indicators ``moy_2..moy_12`` (any shape, e.g. a December
        peak); ``"auto"``: months when the training rows cover at least
        :data:`SEASONALITY_MIN_MONTHS` distinct target months (half the months of the year
        seen twice; with 13 the indicators, intercept and trend are rank-deficient), else
        Fourier. Measured
        on Rossmann's last four backtest origins: the NB2 GLMM's WAPE went from 0.094 to
        0.069 with months (the December peak); no change on car parts. ``"none"``: no
        seasonal terms.
    """
    if seasonality not in ("auto", "fourier", "month", "none"):
        raise InvalidParameterError(
            f"seasonality={seasonality!r}: must be one of ['auto', 'fourier', 'month', 'none']"
        )
    use_months = "month_of_year" in train.columns and (
        seasonality == "month"
        or (
            seasonality == "auto"
            and "month" in train.columns
            and train.get_column("month").n_unique() >= SEASONALITY_MIN_MONTHS
        )
    )
    if seasonality == "none":
        wanted: list[str] = ["t"]
    elif use_months:
        moy = train.get_column("month_of_year")
        train = train.with_columns(
            (moy == int(c.split("_")[1])).cast(pl.Float64).alias(c) for c in MONTH_COLUMNS
        )
        wanted = ["t", *MONTH_COLUMNS]
    else:
        wanted = ["t", *FOURIER_COLUMNS]
    if customer_terms == "spline":
        spline = sorted(
            (c for c in train.columns if c.startswith("cust_spline_")),
            key=lambda c: int(c.rsplit("_", 1)[1]) if c.rsplit("_", 1)[1].isdigit() else 0,
        )
        wanted += spline if spline else ["log_customers"]
    elif customer_terms == "log":
        wanted.append("log_customers")
    if include_promo:
        wanted.append("promo")
    wanted += [c for c in plan_terms if c != "promo" and c not in wanted]
    train = _with_derived_terms(train, plan_terms)
    dropped: dict[str, str] = {}
    if not include_promo:
        dropped["promo"] = "excluded by include_promo=False"
    terms: list[str] = []
    centres: list[float] = []
    fills: list[float] = []
    indicators: list[str] = []
    for name in wanted:
        if name not in train.columns:
            dropped[name] = "absent from the training frame"
            continue
        add_covariate(
            train.get_column(name),
            name,
            centred=_is_centred(name) or (name in plan_terms and name != "promo"),
            terms=terms,
            centres=centres,
            fills=fills,
            indicators=indicators,
            dropped=dropped,
        )
    return CovariateSpec(tuple(terms), tuple(centres), tuple(fills), dropped, tuple(indicators))


MISSING_SUFFIX = "_missing"


def add_covariate(
    column: pl.Series,
    name: str,
    *,
    centred: bool,
    terms: list[str],
    centres: list[float],
    fills: list[float],
    indicators: list[str],
    dropped: dict[str, str],
) -> None:
    """Append ``name`` (and its ``<name>_missing`` indicator when it has nulls) to a layout.

    The term is dropped (with the reason) when all null or constant; its fill is the mean
    of its observed values; when some values are null and some not, the indicator is
    added (unless the nulls would make it constant, which they cannot here).
    """
    col = column.cast(pl.Float64).fill_nan(None)
    values = col.drop_nulls().to_numpy()
    if values.size == 0:
        dropped[name] = "all null in the training frame"
        return
    if np.ptp(values) <= 1e-12 * max(1.0, float(np.abs(values).max())):
        dropped[name] = f"constant ({values[0]:g}) in the training frame"
        return
    fill = float(values.mean())
    terms.append(name)
    fills.append(fill)
    centres.append(fill if centred else 0.0)
    if col.null_count():
        indicators.append(name)
        terms.append(name + MISSING_SUFFIX)
        fills.append(0.0)
        centres.append(0.0)


def build_covariates(spec: CovariateSpec, frame: pl.DataFrame) -> np.ndarray:
    """Covariate matrix (n, len(spec.terms)): indicators of missing values, nulls set to the
    documented fill, continuous terms centred."""
    derived = {f"{c}{MISSING_SUFFIX}": c for c in spec.indicators}
    frame = _with_derived_terms(frame, spec.terms)
    months = [t for t in spec.terms if t in MONTH_COLUMNS and t not in frame.columns]
    if months and "month_of_year" in frame.columns:
        moy = frame.get_column("month_of_year")
        frame = frame.with_columns(
            (moy == int(c.split("_")[1])).cast(pl.Float64).alias(c) for c in months
        )
    missing = [t for t in spec.terms if t not in frame.columns and t not in derived]
    if missing:
        raise DataContractError(
            f"forecast rows lack covariate column(s) {missing} the model was fitted with; "
            "build them with poolcast.features.build_forecast_frame from the same FeatureSpec"
        )
    out = np.empty((frame.height, len(spec.terms)), dtype=float)
    for j, (name, centre, fill) in enumerate(
        zip(spec.terms, spec.centres, spec.fill_values, strict=True)
    ):
        if name in derived:
            base = frame.get_column(derived[name]).cast(pl.Float64).fill_nan(None)
            out[:, j] = base.is_null().cast(pl.Float64).to_numpy()
            continue
        col = frame.get_column(name).cast(pl.Float64).fill_null(fill).fill_nan(fill)
        out[:, j] = col.to_numpy() - centre
    return out


def build_design(spec: CovariateSpec, frame: pl.DataFrame) -> np.ndarray:
    """Design matrix with a leading intercept column: (n, 1 + len(spec.terms))."""
    return np.column_stack([np.ones(frame.height), build_covariates(spec, frame)])


def build_covariate_frame(spec: CovariateSpec, frame: pl.DataFrame) -> pl.DataFrame:
    """``sku``, ``sales`` (when present) and the transformed covariates under their own names."""
    x = build_covariates(spec, frame)
    cols = [pl.Series(name, x[:, j]) for j, name in enumerate(spec.terms)]
    keep = [c for c in ("sku", "sales") if c in frame.columns]
    return frame.select(keep).with_columns(cols)
