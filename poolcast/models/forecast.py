"""The predictive distribution a candidate returns for a set of (sku, origin, horizon, month) rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from poolcast.errors import InvalidParameterError

__all__ = ["KEY_COLUMNS", "Forecast", "quantile_column", "quantiles_from_samples"]

KEY_COLUMNS: tuple[str, ...] = ("sku", "origin", "horizon", "month")


def quantile_column(level: float) -> str:
    """Column name of a quantile level in :meth:`Forecast.to_frame` (``0.8 -> "q_0.8"``).

    >>> quantile_column(0.95)
    'q_0.95'
    """
    return f"q_{float(level):g}"


def quantiles_from_samples(samples: np.ndarray, levels: Sequence[float]) -> dict[float, np.ndarray]:
    r"""Empirical quantiles of each row of ``samples``: numpy's ``method="inverted_cdf"``, i.e. the
    smallest draw x with :math:`\hat F(x)\ge q` (so count draws give counts), by one partial sort.

    Parameters
    ----------
    samples : ndarray of shape (n, n_samples)
        Predictive draws, one row per forecast row.
    levels : sequence of float
        Quantile levels in (0, 1).

    Returns
    -------
    dict of float to ndarray of shape (n,)
        Non-decreasing in the level for every row.
    """
    levels = [float(q) for q in levels]
    n, n_draws = samples.shape
    if n == 0 or n_draws == 0:
        return {q: np.zeros(n) for q in levels}
    # inverted CDF: the k-th smallest draw, k = ceil(q * S) (1-based); one partial sort for all
    kth = [min(n_draws - 1, max(0, int(np.ceil(q * n_draws - 1e-9)) - 1)) for q in levels]
    part = np.partition(samples, sorted(set(kth)), axis=1)
    return {q: part[:, k].astype(float) for q, k in zip(levels, kth, strict=True)}


@dataclass(frozen=True)
class Forecast:
    """Predictive distribution of future demand, one row per forecast row.

    Fields
    ------
    keys : pl.DataFrame
        Columns ``sku``, ``origin``, ``horizon``, ``month``; row i describes element i of every array.
    mean : ndarray of shape (n,)
        Predictive mean :math:`E[y]`.
    quantiles : dict of float to ndarray of shape (n,)
        Predictive quantiles by level, non-decreasing in the level.
    samples : ndarray of shape (n, n_samples) or None
        Predictive draws (non-negative integers for count models), or None when the
        candidate gives quantiles in closed form.
    """

    keys: pl.DataFrame
    mean: np.ndarray
    quantiles: dict[float, np.ndarray]
    samples: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.keys.height
        missing = [c for c in KEY_COLUMNS if c not in self.keys.columns]
        if missing:
            raise InvalidParameterError(
                f"Forecast.keys lacks column(s) {missing}; it needs {list(KEY_COLUMNS)}"
            )
        if np.shape(self.mean) != (n,):
            raise InvalidParameterError(
                f"Forecast.mean has shape {np.shape(self.mean)}; expected ({n},) to match keys"
            )
        for level, values in self.quantiles.items():
            if not 0.0 < float(level) < 1.0:
                raise InvalidParameterError(f"Forecast quantile level {level} is not in (0, 1)")
            if np.shape(values) != (n,):
                raise InvalidParameterError(
                    f"Forecast quantile {level} has shape {np.shape(values)}; expected ({n},)"
                )
        if self.samples is not None and (self.samples.ndim != 2 or self.samples.shape[0] != n):
            raise InvalidParameterError(
                f"Forecast.samples has shape {self.samples.shape}; expected ({n}, n_samples)"
            )

    @property
    def levels(self) -> tuple[float, ...]:
        """Quantile levels, ascending."""
        return tuple(sorted(self.quantiles))

    def __len__(self) -> int:
        return self.keys.height

    def to_frame(self) -> pl.DataFrame:
        """Keys, ``mean`` and one ``q_<level>`` column per quantile level (ascending)."""
        cols = [pl.Series("mean", np.asarray(self.mean, dtype=float))]
        cols += [
            pl.Series(quantile_column(q), np.asarray(self.quantiles[q], dtype=float))
            for q in self.levels
        ]
        return self.keys.select(KEY_COLUMNS).with_columns(cols)
