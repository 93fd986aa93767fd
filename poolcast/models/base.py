"""The candidate interface: fit on the feature table, predict a distribution for future rows.

Every candidate follows scikit-learn's estimator conventions: a keyword-only ``__init__``
that stores its arguments unchanged, allowed values in the class dict
``_parameter_constraints`` checked when ``fit`` starts, ``fit`` returning ``self``, learned
state in attributes ending in ``_`` and :class:`~poolcast.errors.NotFittedError` before fit.

The direct multi-horizon strategy lives here, once: ``fit`` fits one model per horizon h on
``train.filter(horizon == h)`` (each (sku, month) appears once per fit) through the hook
``_fit_horizon``, and ``predict_distribution`` predicts the rows of horizon h with that
model through ``_predict_horizon``. Quantiles come from the predictive draws.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import numpy as np
import polars as pl

from poolcast.errors import (
    ConvergenceWarning,
    DataContractError,
    InvalidParameterError,
    NotFittedError,
    PoolcastError,
)
from poolcast.models._design import CovariateSpec, make_covariate_spec, required_plan_columns
from poolcast.models._validation import Interval, Options, validate_parameters
from poolcast.models.forecast import KEY_COLUMNS, Forecast, quantiles_from_samples

__all__ = ["Candidate", "CandidateReport", "CovariateCandidate", "HorizonReport"]


@dataclass(frozen=True)
class HorizonReport:
    """What one per-horizon fit reports (tables without the ``horizon`` column).

    Fields
    ------
    formula : str or None
        The model formula, built from the covariates the training frame supports.
    coefficients : pl.DataFrame or None
        ``term, estimate, std_error``.
    random_effects : pl.DataFrame or None
        ``sku, term, mode, cond_sd`` (GLMMs).
    shrinkage : pl.DataFrame or None
        Per-SKU raw vs pooled estimates (GLMMs).
    sku_effects : pl.DataFrame or None
        ``sku, estimate, std_error`` of SKU fixed effects (no-pooling GLM).
    convergence : dict
        Iterations, converged flag, warnings, dispersion, ...
    """

    formula: str | None = None
    coefficients: pl.DataFrame | None = None
    random_effects: pl.DataFrame | None = None
    shrinkage: pl.DataFrame | None = None
    sku_effects: pl.DataFrame | None = None
    convergence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CandidateReport:
    """What a fitted candidate tells the tracker (MLflow params, tables and plots).

    Fields
    ------
    name : str
        The candidate's stable name (the MLflow child run name).
    params : dict
        Constructor parameters.
    formulas : dict of int to str
        Model formula per horizon (empty for the baselines).
    coefficients : pl.DataFrame or None
        ``term, estimate, std_error, horizon``.
    random_effects : pl.DataFrame or None
        ``sku, term, mode, cond_sd, horizon`` (GLMMs only).
    shrinkage : pl.DataFrame or None
        Per-SKU raw vs partially pooled estimates with ``horizon`` (GLMMs only).
    sku_effects : pl.DataFrame or None
        ``sku, estimate, std_error, horizon``: SKU fixed effects (no-pooling GLM only).
    convergence : dict
        Per horizon (key ``"h=<h>"``): iterations, converged, recorded warnings, dispersion.
    """

    name: str
    params: dict[str, Any]
    formulas: dict[int, str]
    coefficients: pl.DataFrame | None
    random_effects: pl.DataFrame | None
    shrinkage: pl.DataFrame | None
    sku_effects: pl.DataFrame | None
    convergence: dict[str, Any]


def _stack(tables: list[tuple[int, pl.DataFrame | None]]) -> pl.DataFrame | None:
    parts = [
        t.with_columns(pl.lit(h, dtype=pl.Int32).alias("horizon"))
        for h, t in tables
        if t is not None
    ]
    return pl.concat(parts, how="diagonal_relaxed") if parts else None


class Candidate:
    """Base class of the competing models.

    Subclasses set the class attribute ``name``, extend ``_parameter_constraints`` and
    implement the hooks ``_fit_horizon(train_h, horizon) -> model`` and
    ``_predict_horizon(model, rows_h, n_samples, rng) -> (mean, samples)``; optionally
    ``_report_horizon(model) -> HorizonReport``.

    Attributes (after fit)
    ----------------------
    models_ : dict of int to object
        The fitted model of each horizon.
    horizons_ : tuple of int
        Horizons seen in the training frame.
    n_iter_ : dict of int to int
        Iterations of each horizon's fit (0 for closed-form candidates).
    n_train_rows_ : dict of int to int
        Training rows of each horizon.
    """

    name: ClassVar[str] = "candidate"
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {}
    _required_columns: ClassVar[tuple[str, ...]] = ("sku", "horizon", "sales")
    #: True for candidates fitted on the monthly panel (``fit(train, history=panel)``).
    needs_history: ClassVar[bool] = False
    #: Plan columns the candidate needs at the target months (known-future covariates such as
    #: ``promo`` or ``open_days``); a run without them for the forecast months makes the
    #: candidate ineligible (see :func:`poolcast.plan.ineligibility_reason`).
    required_plan_columns: tuple[str, ...] = ()

    # -- sklearn-style parameter handling -------------------------------------------------
    @classmethod
    def _get_param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return sorted(
            p.name for p in sig.parameters.values() if p.name != "self" and p.kind == p.KEYWORD_ONLY
        )

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters and their current values."""
        return {k: getattr(self, k) for k in self._get_param_names()}

    def set_params(self, **params: Any) -> Self:
        """Set constructor parameters (validated at the next ``fit``)."""
        valid = set(self._get_param_names())
        for key, value in params.items():
            if key not in valid:
                raise InvalidParameterError(
                    f"{self.name}: unknown parameter {key!r}; valid are {sorted(valid)}"
                )
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def _validate_params(self) -> None:
        validate_parameters(self._parameter_constraints, self.get_params(), caller=self.name)

    # -- fit / predict ------------------------------------------------------------------
    def _check_columns(self, frame: pl.DataFrame, columns: Sequence[str], what: str) -> None:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise DataContractError(
                f"{self.name}: the {what} frame lacks column(s) {missing}; build it with "
                "poolcast.features (build_training_frame / build_forecast_frame)"
            )

    def fit(self, train: pl.DataFrame, *, history: pl.DataFrame | None = None) -> Self:
        """Fit one model per horizon on ``train.filter(horizon == h)``.

        Parameters
        ----------
        train : pl.DataFrame
            Output of ``poolcast.features.build_training_frame`` (target observed). Rows
            with a null ``sales`` are ignored.
        history : pl.DataFrame, optional
            The validated monthly panel up to the origin (one row per SKU and month,
            completed to the origin). Direct per-horizon candidates ignore it; series
            candidates (``needs_history = True``: fitted once on the monthly panel and
            projected h months ahead, e.g. ETS or a latent AR(1) GLMM) override ``fit`` and
            require it. The backtest and the champion refit always pass it.

        Returns
        -------
        self
        """
        self._validate_params()
        self._check_columns(train, self._required_columns, "training")
        train = train.filter(pl.col("sales").is_not_null())
        if train.height == 0:
            raise DataContractError(
                f"{self.name}: the training frame has no rows with observed sales"
            )
        horizons = tuple(sorted(int(h) for h in train.get_column("horizon").unique().to_list()))
        models: dict[int, Any] = {}
        n_iter: dict[int, int] = {}
        n_rows: dict[int, int] = {}
        for h in horizons:
            train_h = train.filter(pl.col("horizon") == h).sort(
                ["sku", "month"] if "month" in train.columns else ["sku"]
            )
            self._check_horizon_frame(train_h, h)
            models[h] = self._fit_horizon(train_h, h)
            n_iter[h] = int(getattr(models[h], "n_iter", 0))
            n_rows[h] = train_h.height
        self.models_ = models
        self.horizons_ = horizons
        self.n_iter_ = n_iter
        self.n_train_rows_ = n_rows
        return self

    def _check_is_fitted(self) -> None:
        if not hasattr(self, "models_"):
            raise NotFittedError(
                f"{self.name} is not fitted yet; call fit(train) before predict_distribution or describe"
            )

    def _model_for(self, h: int) -> Any:
        if h in self.models_:
            return self.models_[h]
        nearest = min(self.horizons_, key=lambda k: (abs(k - h), -k))
        return self.models_[nearest]

    def _check_predict_arguments(
        self, rows: pl.DataFrame, quantiles: Sequence[float], n_samples: Any, rng: Any
    ) -> list[float]:
        """The checks every ``predict_distribution`` makes (fitted, levels in (0, 1), an int
        number of draws >= 1, a numpy Generator, the key columns); returns the levels."""
        self._check_is_fitted()
        levels = [float(q) for q in quantiles]
        if not levels or any(not 0.0 < q < 1.0 for q in levels):
            raise InvalidParameterError(
                f"{self.name}: quantiles={list(quantiles)!r} must be a non-empty list of levels in (0, 1)"
            )
        if (
            isinstance(n_samples, bool)
            or not isinstance(n_samples, int | np.integer)
            or n_samples < 1
        ):
            raise InvalidParameterError(f"{self.name}: n_samples={n_samples!r} must be an int >= 1")
        if not isinstance(rng, np.random.Generator):
            raise InvalidParameterError(
                f"{self.name}: rng={rng!r} must be a numpy.random.Generator (np.random.default_rng(seed))"
            )
        self._check_columns(rows, [*KEY_COLUMNS], "forecast")
        return levels

    def predict_distribution(
        self,
        rows: pl.DataFrame,
        *,
        quantiles: Sequence[float],
        n_samples: int,
        rng: np.random.Generator,
    ) -> Forecast:
        """Predictive mean, quantiles and draws for forecast rows.

        Rows of horizon h are predicted by the model fitted on horizon h (a horizon not seen
        in training uses the nearest fitted horizon).

        Parameters
        ----------
        rows : pl.DataFrame
            Output of ``poolcast.features.build_forecast_frame``.
        quantiles : sequence of float
            Levels in (0, 1).
        n_samples : int
            Predictive draws per row (>= 1).
        rng : numpy.random.Generator
            The only source of randomness.
        """
        levels = self._check_predict_arguments(rows, quantiles, n_samples, rng)
        n = rows.height
        mean = np.zeros(n)
        samples = np.zeros((n, int(n_samples)), dtype=np.int64)
        horizon = rows.get_column("horizon").to_numpy()
        for h in sorted(set(horizon.tolist())):
            idx = np.flatnonzero(horizon == h)
            rows_h = rows[idx]
            m, s = self._predict_horizon(self._model_for(int(h)), rows_h, int(n_samples), rng)
            if not np.all(np.isfinite(m)):
                raise PoolcastError(
                    f"{self.name}: non-finite predictive mean for horizon {h}; the fit is degenerate"
                )
            mean[idx] = m
            samples[idx] = s
        return Forecast(
            keys=rows.select(KEY_COLUMNS),
            mean=mean,
            quantiles=quantiles_from_samples(samples, levels),
            samples=samples,
        )

    def describe(self) -> CandidateReport:
        """Parameters, per-horizon formulas, coefficient / random-effect tables, convergence."""
        self._check_is_fitted()
        reports = {h: self._report_horizon(self.models_[h]) for h in self.horizons_}
        convergence = {
            f"h={h}": {
                "n_train_rows": self.n_train_rows_[h],
                "n_iter": self.n_iter_[h],
                **r.convergence,
            }
            for h, r in reports.items()
        }
        return CandidateReport(
            name=self.name,
            params=self.get_params(),
            formulas={h: r.formula for h, r in reports.items() if r.formula},
            coefficients=_stack([(h, r.coefficients) for h, r in reports.items()]),
            random_effects=_stack([(h, r.random_effects) for h, r in reports.items()]),
            shrinkage=_stack([(h, r.shrinkage) for h, r in reports.items()]),
            sku_effects=_stack([(h, r.sku_effects) for h, r in reports.items()]),
            convergence=convergence,
        )

    # -- hooks ----------------------------------------------------------------------------
    def _check_horizon_frame(self, train_h: pl.DataFrame, horizon: int) -> None:
        """Hook: reject a training frame the model cannot be estimated from (default: accept)."""

    def _fit_horizon(self, train_h: pl.DataFrame, horizon: int) -> Any:  # pragma: no cover
        raise NotImplementedError

    def _predict_horizon(
        self, model: Any, rows_h: pl.DataFrame, n_samples: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def _report_horizon(self, model: Any) -> HorizonReport:
        return HorizonReport()


def check_finite_coefficients(
    name: str, horizon: int, values: np.ndarray, terms: Sequence[str]
) -> None:
    """Raise :class:`PoolcastError` naming the candidate when a fit gave NaN/inf coefficients."""
    bad = [t for t, v in zip(terms, np.atleast_1d(values), strict=False) if not np.isfinite(v)]
    if bad:
        raise PoolcastError(
            f"{name}: horizon {horizon} fit gave non-finite coefficient(s) for {bad} "
            "(perfect separation or a degenerate design); the candidate is skipped this run"
        )


def record_warnings(caught: Sequence[warnings.WarningMessage]) -> list[str]:
    """Text of warnings caught during a fit, for ``describe().convergence``."""
    return [f"{w.category.__name__}: {w.message}" for w in caught]


def warn_not_converged(name: str, horizon: int, detail: str) -> None:
    """Emit a :class:`ConvergenceWarning` naming the candidate and horizon."""
    warnings.warn(
        f"{name}: horizon {horizon} fit did not converge ({detail})",
        ConvergenceWarning,
        stacklevel=3,
    )


class CovariateCandidate(Candidate):
    """Base of the models on the shared covariates (GLM, no-pooling GLM, GEE, GLMM).

    Adds the parameters ``customer_terms`` ({"log", "spline", "none"}) and ``include_promo``
    (bool) and the helper ``_covariate_spec(train_h)`` (see :mod:`poolcast.models._design`).
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "customer_terms": [Options(frozenset({"log", "spline", "none"}))],
        "include_promo": [bool],
        "max_iter": [Interval(int, 1, None)],
        "tol": [Interval(float, 0.0, None, closed="neither")],
    }
    _required_columns: ClassVar[tuple[str, ...]] = ("sku", "horizon", "month", "sales", "t")

    #: Further plan columns used as covariates (besides ``promo``); the registry sets them to
    #: the data's plan columns (``default_candidates(plan_columns=...)``).
    plan_terms: tuple[str, ...] = ()

    #: The seasonal covariates (:func:`poolcast.models._design.make_covariate_spec`):
    #: month-of-year indicators from 18 training months on, Fourier terms before.
    _seasonality: ClassVar[str] = "auto"

    @property
    def required_plan_columns(self) -> tuple[str, ...]:  # type: ignore[override]
        """``promo`` (when ``include_promo``) and the plan columns of the ``plan_terms``
        (``log1p_open_days`` needs ``open_days``)."""
        return required_plan_columns(getattr(self, "include_promo", False), tuple(self.plan_terms))

    @property
    def coef_(self) -> dict[int, np.ndarray]:
        """Fixed-effect coefficients per horizon (each fitted model exposes ``beta``)."""
        self._check_is_fitted()
        return {h: np.asarray(m.beta) for h, m in self.models_.items()}

    def _check_horizon_frame(self, train_h: pl.DataFrame, horizon: int) -> None:
        total = train_h.get_column("sales").sum()
        if not total:
            raise PoolcastError(
                f"{self.name}: horizon {horizon}: every one of the {train_h.height} training sales "
                "is 0; a log-link model has no finite estimate (the baselines forecast 0)"
            )

    def _covariate_spec(self, train_h: pl.DataFrame) -> CovariateSpec:
        return make_covariate_spec(
            train_h,
            customer_terms=self.customer_terms,
            include_promo=self.include_promo,
            plan_terms=tuple(self.plan_terms),
            seasonality=self._seasonality,
        )
