"""Synthetic SKU panels with a known GLMM truth (for tests, benchmarks and model checks).

The generative model, for SKU i in category c(i) and month t (``t_years`` = years since the
first month, ``moy`` = month of year 1..12):

.. math::

    \\log \\mu_{it} = \\beta_0 + b_{0i} + \\gamma_{c(i)}
        + (\\beta_p + b_{1i})\\,\\mathrm{promo}_{it}
        + \\beta_x \\log(1 + \\mathrm{customer\\_count}_{it})
        + \\beta_t\\, t_{years}
        + \\beta_{s1} \\sin(2\\pi\\,moy/12) + \\beta_{c1} \\cos(2\\pi\\,moy/12)

with :math:`(b_{0i}, b_{1i}) \\sim N(0, \\Sigma)`,
:math:`\\Sigma = \\begin{pmatrix}\\sigma_0^2 & \\rho\\sigma_0\\sigma_1\\\\ \\rho\\sigma_0\\sigma_1 & \\sigma_1^2\\end{pmatrix}`,
category effects :math:`\\gamma_c \\sim N(0, \\sigma_c^2)` (drawn once and recorded),
``promo`` ~ Bernoulli(promo_rate) per SKU-month, and customer counts
:math:`\\mathrm{customer\\_count}_{it} \\sim \\mathrm{Poisson}(\\exp(a_i + 0.15\\sin(2\\pi\\,moy/12) + e_{it}))`,
:math:`a_i \\sim N(\\log 50, 0.5^2)`, :math:`e_{it} \\sim N(0, 0.2^2)`.
Sales are Poisson(:math:`\\mu`) or NB2 with size :math:`\\theta`
(:math:`\\mathrm{Var} = \\mu + \\mu^2/\\theta`), drawn as a gamma-Poisson mixture.

Everything is vectorised numpy: 100k SKUs x 36 months take a few seconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from poolcast.errors import InvalidParameterError

__all__ = ["SimulatedPanel", "SimulationTruth", "simulate_panel", "write_simulation"]

_FAMILIES = ("poisson", "negbin")


@dataclass(frozen=True)
class SimulationTruth:
    """The parameters a simulated panel was drawn from.

    Fields
    ------
    family : {"poisson", "negbin"}
    theta : float or None
        NB2 size (None for Poisson).
    fixed : dict of str to float
        ``intercept``, ``promo``, ``log1p_customers``, ``t`` (per year), ``fourier_s1``,
        ``fourier_c1``: the coefficients of the linear predictor in the module docstring.
    category_effects : dict of str to float
        gamma_c per category (absolute, not contrasts; a model with a reference category
        estimates gamma_c - gamma_ref, with the intercept absorbing gamma_ref).
    sd : dict of str to float
        ``intercept`` and ``promo``: SDs of the SKU random intercept and promo slope;
        ``category``: SD the category effects were drawn from.
    corr : float
        Correlation of the SKU random intercept and promo slope.
    sku_effects : pl.DataFrame
        sku, category, intercept (b0_i), promo (b1_i): the drawn random effects.
    linear_predictor : str
        The model in words.
    """

    family: str
    theta: float | None
    fixed: dict[str, float]
    category_effects: dict[str, float]
    sd: dict[str, float]
    corr: float
    sku_effects: pl.DataFrame = field(repr=False)
    linear_predictor: str = (
        "log mu = intercept + b0[sku] + category_effect[category] + (promo + b1[sku]) * promo"
        " + log1p_customers * log(1 + customer_count) + t * years_since_first_month"
        " + fourier_s1 * sin(2 pi moy / 12) + fourier_c1 * cos(2 pi moy / 12)"
    )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; sku_effects as column lists."""
        return {
            "family": self.family,
            "theta": self.theta,
            "fixed": self.fixed,
            "category_effects": self.category_effects,
            "sd": self.sd,
            "corr": self.corr,
            "linear_predictor": self.linear_predictor,
            "sku_effects": self.sku_effects.to_dict(as_series=False),
        }


@dataclass(frozen=True)
class SimulatedPanel:
    """A simulated panel and its truth.

    Fields
    ------
    frame : pl.DataFrame
        sku (String), month (Date), sales (Int64), customer_count (Int64), category
        (String), promo (Int8): the contract columns, complete grid, sorted by (sku, month).
    truth : SimulationTruth
    """

    frame: pl.DataFrame
    truth: SimulationTruth


def simulate_panel(
    n_skus: int,
    n_months: int,
    *,
    family: Literal["poisson", "negbin"] = "poisson",
    seed: int = 0,
    n_categories: int = 8,
    start: date = date(2020, 1, 1),
    intercept: float = -1.0,
    beta_promo: float = 0.4,
    beta_customers: float = 0.6,
    beta_trend: float = 0.05,
    seasonal: tuple[float, float] = (0.3, -0.2),
    sd_intercept: float = 0.5,
    sd_promo: float = 0.3,
    corr: float = -0.4,
    sd_category: float = 0.3,
    theta: float = 5.0,
    promo_rate: float = 0.2,
) -> SimulatedPanel:
    """Draw a SKU x month panel from a Poisson or NB2 GLMM with correlated SKU effects.

    Parameters
    ----------
    n_skus, n_months : int
        Panel size (n_skus * n_months rows, no gaps).
    family : {"poisson", "negbin"}
        Noise distribution; "negbin" is NB2 with size ``theta``.
    seed : int
        Seed of the one ``numpy.random.Generator`` used.
    n_categories : int
        Number of categories; SKUs are assigned uniformly at random.
    start : date
        First month (any day; the month's first day is used).
    intercept, beta_promo, beta_customers, beta_trend : float
        Fixed effects (see the module docstring for the model).
    seasonal : (float, float)
        Coefficients of sin and cos of 2 pi moy / 12.
    sd_intercept, sd_promo, corr : float
        SDs and correlation of the SKU random intercept and promo slope.
    sd_category : float
        SD of the category effects.
    theta : float
        NB2 size (ignored for Poisson).
    promo_rate : float
        Probability a SKU-month is on promotion.

    Returns
    -------
    SimulatedPanel
    """
    _check(n_skus >= 1, "n_skus", n_skus, ">= 1")
    _check(n_months >= 1, "n_months", n_months, ">= 1")
    _check(family in _FAMILIES, "family", family, f"one of {list(_FAMILIES)}")
    _check(n_categories >= 1, "n_categories", n_categories, ">= 1")
    _check(
        sd_intercept >= 0 and sd_promo >= 0 and sd_category >= 0,
        "sd_*",
        (sd_intercept, sd_promo, sd_category),
        ">= 0",
    )
    _check(-1.0 <= corr <= 1.0, "corr", corr, "in [-1, 1]")
    _check(theta > 0, "theta", theta, "> 0")
    _check(0.0 <= promo_rate <= 1.0, "promo_rate", promo_rate, "in [0, 1]")

    rng = np.random.default_rng(seed)
    n = n_skus * n_months
    width = max(6, len(str(n_skus)))
    cat_width = max(2, len(str(n_categories)))

    # SKU-level draws
    category_idx = rng.integers(0, n_categories, size=n_skus)
    category_effect = rng.normal(0.0, sd_category, size=n_categories)
    z = rng.standard_normal((n_skus, 2))
    b0 = sd_intercept * z[:, 0]
    b1 = sd_promo * (corr * z[:, 0] + np.sqrt(1.0 - corr**2) * z[:, 1])
    cust_level = rng.normal(np.log(50.0), 0.5, size=n_skus)

    # month-level terms
    first = date(start.year, start.month, 1)
    month_index = np.arange(n_months)
    moy = (first.month - 1 + month_index) % 12 + 1
    angle = 2.0 * np.pi * moy / 12.0
    sin1, cos1 = np.sin(angle), np.cos(angle)
    t_years = month_index / 12.0

    # SKU x month draws, (n_skus, n_months)
    promo = (rng.random((n_skus, n_months)) < promo_rate).astype(np.int8)
    log_traffic = (
        cust_level[:, None] + 0.15 * sin1[None, :] + rng.normal(0.0, 0.2, (n_skus, n_months))
    )
    customers = rng.poisson(np.exp(log_traffic))
    eta = (
        intercept
        + b0[:, None]
        + category_effect[category_idx][:, None]
        + (beta_promo + b1[:, None]) * promo
        + beta_customers * np.log1p(customers)
        + beta_trend * t_years[None, :]
        + seasonal[0] * sin1[None, :]
        + seasonal[1] * cos1[None, :]
    )
    mu = np.exp(eta)
    if family == "negbin":
        sales = rng.poisson(rng.gamma(theta, mu / theta))
    else:
        sales = rng.poisson(mu)

    sku_names = pl.int_range(1, n_skus + 1, eager=True).cast(pl.String).str.zfill(width)
    sku_names = ("SKU" + sku_names).alias("sku")
    cat_names = [f"C{k + 1:0{cat_width}d}" for k in range(n_categories)]
    months = pl.date_range(first, _add_months(first, n_months - 1), "1mo", eager=True)
    sku_cats = pl.Series("category", cat_names, dtype=pl.String).gather(category_idx)
    frame = pl.DataFrame(
        {
            "sku": sku_names.gather(np.repeat(np.arange(n_skus), n_months)),
            "month": months.gather(np.tile(np.arange(n_months), n_skus)),
            "sales": sales.reshape(n).astype(np.int64),
            "customer_count": customers.reshape(n).astype(np.int64),
            "category": sku_cats.gather(np.repeat(np.arange(n_skus), n_months)),
            "promo": promo.reshape(n),
        }
    )
    truth = SimulationTruth(
        family=family,
        theta=float(theta) if family == "negbin" else None,
        fixed={
            "intercept": float(intercept),
            "promo": float(beta_promo),
            "log1p_customers": float(beta_customers),
            "t": float(beta_trend),
            "fourier_s1": float(seasonal[0]),
            "fourier_c1": float(seasonal[1]),
        },
        category_effects={
            name: float(v) for name, v in zip(cat_names, category_effect, strict=True)
        },
        sd={
            "intercept": float(sd_intercept),
            "promo": float(sd_promo),
            "category": float(sd_category),
        },
        corr=float(corr),
        sku_effects=pl.DataFrame(
            {"sku": sku_names, "category": sku_cats, "intercept": b0, "promo": b1}
        ),
    )
    return SimulatedPanel(frame=frame, truth=truth)


def write_simulation(panel: SimulatedPanel, out: str | Path) -> tuple[Path, Path]:
    """Write the panel (``.csv`` or ``.parquet``) and its truth as JSON beside it.

    The truth goes to ``<out stem>.truth.json`` in the same folder. Returns both paths.
    """
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise InvalidParameterError(f"--out {str(out)!r} must end in .csv, .parquet or .pq")
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        panel.frame.write_csv(out)
    else:
        panel.frame.write_parquet(out)
    truth_path = out.with_name(f"{out.stem}.truth.json")
    truth_path.write_text(json.dumps(panel.truth.to_dict(), indent=1))
    return out, truth_path


def _add_months(d: date, k: int) -> date:
    m = d.month - 1 + k
    return date(d.year + m // 12, m % 12 + 1, 1)


def _check(ok: bool, name: str, value: object, allowed: str) -> None:
    if not ok:
        raise InvalidParameterError(
            f"simulate_panel: {name}={value!r} is not allowed; it must be {allowed}"
        )
