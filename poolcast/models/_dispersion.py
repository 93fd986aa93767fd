"""Dispersion classes of SKUs for the NB2 GLMM candidates (the engine's ``dispformula``).

One NB2 size pooled over all SKUs gives calm SKUs intervals far too wide and volatile ones
too narrow (Rossmann, cut 2015-04: ``glmm_nb2_ri`` covered its 80% interval 98.7% of the time on
the calmest fifth of the stores and 64.7% on the most volatile fifth). The candidates can
instead give each SKU a dispersion class and fit ``dispformula = "~ disp_class"``: one size per
class, estimated jointly with the rest of the model.

The class of a SKU comes from its training rows only (every backtest origin refits, so the
classes never see a month after the origin):

1. the candidate's model with one size is fitted first (it is needed anyway as the start);
2. per SKU, the moment estimate of the NB2 excess dispersion around that fit's conditional
   means :math:`\\hat\\mu_{it}` (random effects included),

   .. math:: \\hat\\alpha_i = \\frac{\\sum_t (y_{it} - \\hat\\mu_{it})^2 - \\hat\\mu_{it}}
             {\\sum_t \\hat\\mu_{it}^2}

   (the per-SKU version of the engine's start value of :math:`1/\\theta`; for large means
   it is the squared coefficient of variation of the SKU's residuals);
3. SKUs with at least ``min_rows`` training rows are cut into ``n_classes`` quantile classes of
   :math:`\\hat\\alpha_i`, ``d0`` (calmest) to ``d{K-1}``; a SKU with fewer rows, and a SKU
   first seen at forecast time, gets the middle class (``default_class``).

Why a fitted model and not a raw-data proxy (e.g. the coefficient of variation of sales): the
spread the NB2 size describes is the one left after the covariates and the SKU's level, and
on Rossmann most of a store's raw month-to-month variation is explained by open days,
holidays and promotions, which a raw proxy would count as volatility.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from poolcast.errors import InvalidParameterError, PoolcastError
from poolcast.glmm import GlmmControl
from poolcast.glmm import fit as glmm_fit

__all__ = [
    "DISPFORMULA",
    "DISP_COLUMN",
    "DispersionClasses",
    "dispersion_classes",
    "finite_or_none",
    "n_classes_of",
    "refit_with_dispersion_classes",
    "sku_excess_dispersion",
]

#: Name of the class column in the engine's frame (``dispformula = "~ disp_class"``).
DISP_COLUMN = "disp_class"
#: One log NB2 size per class (full dummy coding: each coefficient bounded like the scalar size).
DISPFORMULA = f"~ 0 + {DISP_COLUMN}"


@dataclass(frozen=True)
class DispersionClasses:
    """The class of each SKU, built from training rows (see the module notes).

    Attributes
    ----------
    classes : dict of str to str
        SKU -> class label (``d0`` calmest ... ``d{K-1}`` most volatile).
    default_class : str
        Class of a SKU with too few training rows or unseen in training (the middle one).
    edges : tuple of float
        The K-1 quantiles of the per-SKU excess dispersion that separate the classes.
    n_classes : int
        K.
    min_rows : int
        Training rows a SKU needs for its own class.
    counts : dict of str to int
        SKUs per class (the default class includes the short ones).
    """

    classes: dict[str, str]
    default_class: str
    edges: tuple[float, ...]
    n_classes: int
    min_rows: int
    counts: dict[str, int] = field(default_factory=dict)

    def assign(self, sku: pl.Series) -> pl.Series:
        """The class of each SKU of ``sku`` (the default class for one not in the map)."""
        return (
            sku.cast(pl.String)
            .replace_strict(self.classes, default=self.default_class, return_dtype=pl.String)
            .alias(DISP_COLUMN)
        )

    def describe(self) -> dict:
        """A JSON-friendly summary for ``describe()``."""
        return {
            "n_classes": self.n_classes,
            "min_rows": self.min_rows,
            "default_class": self.default_class,
            "alpha_edges": [float(e) for e in self.edges],
            "skus_per_class": dict(self.counts),
        }


def sku_excess_dispersion(sku: pl.Series, y: np.ndarray, mu: np.ndarray) -> pl.DataFrame:
    """Per SKU: training rows ``n`` and the moment estimate ``alpha`` (module notes, step 2)."""
    frame = pl.DataFrame(
        {
            "sku": sku.cast(pl.String),
            "y": np.asarray(y, dtype=float),
            "mu": np.asarray(mu, dtype=float),
        }
    )
    return (
        frame.group_by("sku", maintain_order=True)
        .agg(
            pl.len().alias("n"),
            ((pl.col("y") - pl.col("mu")) ** 2 - pl.col("mu")).sum().alias("num"),
            (pl.col("mu") ** 2).sum().alias("den"),
        )
        .with_columns(
            pl.when(pl.col("den") > 0)
            .then(pl.col("num") / pl.col("den"))
            .otherwise(None)
            .alias("alpha")
        )
        .select("sku", "n", "alpha")
    )


def dispersion_classes(
    sku: pl.Series, y: np.ndarray, mu: np.ndarray, *, n_classes: int, min_rows: int
) -> DispersionClasses:
    """Quantile classes of the per-SKU excess dispersion of training rows (module notes).

    Parameters
    ----------
    sku : pl.Series
        SKU of each training row.
    y, mu : np.ndarray
        Observed sales and the one-size fit's conditional means of the same rows.
    n_classes : int
        K >= 2.
    min_rows : int
        Training rows a SKU needs for its own class (others get the default class).

    Returns
    -------
    DispersionClasses
    """
    if n_classes < 2:
        raise InvalidParameterError(f"n_classes={n_classes!r}; dispersion classes need K >= 2.")
    per_sku = sku_excess_dispersion(sku, y, mu)
    default = f"d{n_classes // 2}"
    eligible = per_sku.filter((pl.col("n") >= min_rows) & pl.col("alpha").is_not_null())
    alpha = eligible.get_column("alpha").to_numpy()
    if alpha.size < n_classes:
        edges: tuple[float, ...] = ()
        classes: dict[str, str] = {}
    else:
        edges = tuple(float(e) for e in np.quantile(alpha, np.arange(1, n_classes) / n_classes))
        labels = np.searchsorted(np.asarray(edges), alpha, side="right")
        classes = {
            s: f"d{k}" for s, k in zip(eligible.get_column("sku").to_list(), labels, strict=True)
        }
    all_skus = per_sku.get_column("sku").to_list()
    assigned = [classes.get(s, default) for s in all_skus]
    counts = {f"d{k}": 0 for k in range(n_classes)}
    for c in assigned:
        counts[c] += 1
    return DispersionClasses(
        classes=classes,
        default_class=default,
        edges=edges,
        n_classes=n_classes,
        min_rows=min_rows,
        counts=counts,
    )


def refit_with_dispersion_classes(
    formula: str,
    data: pl.DataFrame,
    res: Any,
    *,
    n_classes: int,
    min_rows: int,
    control: GlmmControl | None,
    where: str,
) -> tuple[Any, DispersionClasses | None, dict[str, Any]]:
    """Classes from the one-size NB2 fit ``res`` of ``formula`` on ``data`` (the training rows:
    ``sku``, ``sales`` and the formula's columns), then the refit with
    ``dispformula = "~ 0 + disp_class"`` started at ``res``'s estimates.

    Returns ``(results, classes, notes)``: the refit and its classes, or ``res`` and None with
    the reason in ``notes["dispersion_fallback"]`` when fewer than ``n_classes`` SKUs have
    ``min_rows`` rows or the refit fails the engine's checks (``where`` names the fit).
    """
    mu = np.asarray(res.predict(data, level="conditional"), dtype=float)
    classes = dispersion_classes(
        data.get_column("sku"),
        data.get_column("sales").to_numpy(),
        mu,
        n_classes=n_classes,
        min_rows=min_rows,
    )
    notes: dict[str, Any] = {"dispersion_classes": classes.describe()}
    if not classes.edges:
        notes["dispersion_fallback"] = (
            f"{where}: fewer than {n_classes} SKUs with {min_rows}+ training rows; "
            "one NB2 size kept"
        )
        return res, None, notes
    opt = res.opt_summary
    start = {"theta": np.array(opt.theta), "beta": np.array(opt.beta)}
    frame = data.with_columns(classes.assign(data.get_column("sku")))
    try:
        res_d = glmm_fit(
            formula,
            frame,
            family="negbin",
            method="laplace",
            control=control,
            start=start,
            dispformula=DISPFORMULA,
        )
    except (PoolcastError, np.linalg.LinAlgError, ValueError, FloatingPointError) as exc:
        notes["dispersion_fallback"] = f"{where}: dispersion refit failed ({exc}); one size kept"
        return res, None, notes
    ok = (
        res_d.converged
        and np.isfinite(res_d.loglik)
        and bool(np.all(np.isfinite(res_d.beta)))
        and bool(np.all(np.isfinite(list(res_d.disp_coef.values()))))
    )
    if not ok:
        notes["dispersion_fallback"] = (
            f"{where}: the dispersion refit did not pass the checks "
            f"(converged={res_d.converged}, loglik={res_d.loglik}); one NB2 size kept"
        )
        return res, None, notes
    notes["dispersion_loglik_gain"] = float(res_d.loglik - res.loglik)
    return res_d, classes, notes


def n_classes_of(name: str, dispersion_classes: int | None, default: int) -> int:
    """A candidate's number of dispersion classes: its ``dispersion_classes`` parameter, or its
    default when None (0 = one NB2 size). Refuses 1, which is no class split."""
    k = default if dispersion_classes is None else int(dispersion_classes)
    if k == 1:
        raise InvalidParameterError(
            f"{name}: dispersion_classes=1; use 0 (one NB2 size) or K >= 2 classes"
        )
    return k


def finite_or_none(values: dict[str, float] | None) -> dict[str, float | None] | None:
    """``values`` with NaN / inf as None (a class size at its boundary has no SE), for JSON."""
    if values is None:
        return None
    return {k: (float(v) if np.isfinite(v) else None) for k, v in values.items()}
