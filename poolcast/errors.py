"""Every exception and warning poolcast raises, in one hierarchy.

A message names the argument, the value, the valid range and the fix.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConvergenceWarning",
    "DataContractError",
    "FormulaError",
    "InvalidParameterError",
    "ModelSpecificationError",
    "NotFittedError",
    "PoolcastError",
    "PoolcastWarning",
    "PreflightError",
    "PublishError",
    "SingularFitWarning",
    "SourceError",
]


class PoolcastError(Exception):
    """Root of every poolcast error."""


class SourceError(PoolcastError):
    """A data source cannot be used at all (missing, empty, unreadable, a required column absent).

    Attributes
    ----------
    source : str
        The file path or database URL.
    column : str or None
        The column at fault, when one is.
    """

    def __init__(self, message: str, *, source: str, column: str | None = None) -> None:
        super().__init__(message)
        self.source = source
        self.column = column


class PreflightError(PoolcastError):
    """A resource the run needs is unusable (not writable, unreachable); found before any fitting.

    Attributes
    ----------
    resource : str
        What failed, e.g. ``"work dir /srv/poolcast"`` or ``"MLflow tracking server http://..."``.
    cause : str
        Why, in one line.
    """

    def __init__(self, resource: str, cause: str) -> None:
        super().__init__(f"pre-flight: {resource}: {cause}")
        self.resource = resource
        self.cause = cause


class DataContractError(PoolcastError):
    """Rows break the data contract and cannot be quarantined away.

    Attributes
    ----------
    rows : Any
        The offending rows (a polars DataFrame), when there are any.
    """

    def __init__(self, message: str, *, rows: Any = None) -> None:
        super().__init__(message)
        self.rows = rows


class FormulaError(PoolcastError):
    """A model formula cannot be parsed or names a column the data does not have."""


class ModelSpecificationError(PoolcastError):
    """The model cannot be estimated from these data (levels >= observations, rank-deficient X...)."""


class NotFittedError(PoolcastError, AttributeError):
    """A fitted quantity was asked of an estimator before ``fit``."""


class InvalidParameterError(PoolcastError, ValueError, TypeError):
    """A parameter is outside its allowed values."""


class PublishError(PoolcastError):
    """The run's outputs could not be published; nothing of that publish is visible."""


class PoolcastWarning(UserWarning):
    """Root of every poolcast warning."""


class ConvergenceWarning(PoolcastWarning):
    """An optimiser stopped without meeting its convergence criteria."""


class SingularFitWarning(PoolcastWarning):
    """A random-effect covariance estimate is on the boundary (a variance of 0 or |correlation| of 1)."""
