"""Hand-built feature tables in the long direct-horizon layout (the columns of poolcast.features).

The panel is simulated from a known model,
log mu = beta0 + a_sku + b_sku * promo + beta_t * t + Fourier + beta_c * log_customers,
with Poisson or NB2 noise, then laid out as one row per (sku, origin, horizon).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl

TRUE_FOURIER = (0.3, -0.2, 0.1, 0.05)


@dataclass(frozen=True)
class SimulatedPanel:
    frame: pl.DataFrame  # long direct-horizon feature frame (all months with a seasonal lag)
    a: np.ndarray  # true SKU intercept deviations
    beta0: float
    alpha: float  # NB2 dispersion (0 = Poisson)
    skus: list[str]
    months: list[date]


def _month(i: int, start: date = date(2020, 1, 1)) -> date:
    y, m = divmod(start.month - 1 + i, 12)
    return date(start.year + y, m + 1, 1)


def simulate_feature_frame(
    *,
    n_sku: int = 60,
    n_months: int = 36,
    horizons: tuple[int, ...] = (1, 2, 3),
    beta0: float = 1.5,
    sd_sku: float = 0.6,
    sd_promo: float = 0.0,
    beta_t: float = 0.05,
    beta_promo: float = 0.4,
    beta_cust: float = 0.0,
    alpha: float = 0.0,
    promo_rate: float = 0.0,
    customers: bool = False,
    level_ar: float = 0.0,
    sd_level: float = 0.0,
    sd_sku_seasonal: float = 0.0,
    seed: int = 0,
) -> SimulatedPanel:
    """Simulate the panel; ``sd_level > 0`` adds a persistent SKU level
    l_it = level_ar * l_i,t-1 + N(0, sd_level^2) (stationary start), and
    ``sd_sku_seasonal > 0`` a SKU-specific annual cycle A_i sin(2 pi m / 12 + phi_i) with
    A_i ~ |N(0, sd_sku_seasonal^2)|, phi_i ~ U(0, 2 pi), both added to log mu. Off by default
    (then no extra random numbers are drawn)."""
    rng = np.random.default_rng(seed)
    skus = [f"S{i:04d}" for i in range(n_sku)]
    a = rng.normal(0.0, sd_sku, n_sku)
    b = rng.normal(0.0, sd_promo, n_sku) if sd_promo > 0 else np.zeros(n_sku)
    months = [_month(i) for i in range(n_months)]
    t = np.arange(n_months) / 12.0
    moy = np.array([m.month for m in months])
    four = np.stack(
        [
            np.sin(2 * np.pi * moy / 12),
            np.cos(2 * np.pi * moy / 12),
            np.sin(4 * np.pi * moy / 12),
            np.cos(4 * np.pi * moy / 12),
        ]
    )  # (4, n_months)
    seas = np.asarray(TRUE_FOURIER) @ four
    promo = (rng.random((n_sku, n_months)) < promo_rate).astype(np.int8)
    cust = rng.normal(4.0, 0.5, (n_sku, 1)) + rng.normal(0, 0.1, (n_sku, n_months))
    eta = (
        beta0 + a[:, None] + beta_t * t[None, :] + seas[None, :] + (beta_promo + b[:, None]) * promo
    )
    if customers:
        eta = eta + beta_cust * (cust - 4.0)
    if sd_level > 0:
        level = np.empty((n_sku, n_months))
        level[:, 0] = rng.normal(0.0, sd_level / np.sqrt(1.0 - level_ar**2), n_sku)
        for k in range(1, n_months):
            level[:, k] = level_ar * level[:, k - 1] + rng.normal(0.0, sd_level, n_sku)
        eta = eta + level
    if sd_sku_seasonal > 0:
        amp = np.abs(rng.normal(0.0, sd_sku_seasonal, n_sku))
        phase = rng.uniform(0.0, 2 * np.pi, n_sku)
        eta = eta + amp[:, None] * np.sin(2 * np.pi * moy[None, :] / 12 + phase[:, None])
    mu = np.exp(eta)
    if alpha > 0:
        mu = mu * rng.gamma(1 / alpha, alpha, mu.shape)
    y = rng.poisson(mu)
    frames = []
    for h in horizons:
        T = np.arange(12, n_months)  # target months with a seasonal lag (T-12 <= origin)
        o = T - h
        rm3 = np.stack([y[:, max(0, k - 2) : k + 1].mean(axis=1) for k in o], axis=1)
        rm12 = np.stack([y[:, max(0, k - 11) : k + 1].mean(axis=1) for k in o], axis=1)
        n_t = T.size
        d = {
            "sku": np.repeat(skus, n_t),
            "origin": [months[k] for _ in range(n_sku) for k in o],
            "horizon": np.full(n_sku * n_t, h, dtype=np.int32),
            "month": [months[k] for _ in range(n_sku) for k in T],
            "sales": y[:, T].ravel(),
            "category": np.repeat([f"C{i % 3}" for i in range(n_sku)], n_t),
            "promo": promo[:, T].ravel(),
            "t": np.tile(t[T], n_sku),
            "month_of_year": np.tile(moy[T], n_sku).astype(np.int8),
            "fourier_s1": np.tile(four[0, T], n_sku),
            "fourier_c1": np.tile(four[1, T], n_sku),
            "fourier_s2": np.tile(four[2, T], n_sku),
            "fourier_c2": np.tile(four[3, T], n_sku),
            "sales_lag_0": y[:, o].ravel(),
            "sales_lag_1": y[:, o - 1].ravel(),
            "sales_lag_2": y[:, o - 2].ravel(),
            "sales_rm_3": rm3.ravel(),
            "sales_rm_12": rm12.ravel(),
            "sales_lag_seasonal": y[:, T - 12].ravel(),
            "n_history": np.tile(o + 1, n_sku),
        }
        if customers:
            d["log_customers"] = cust[:, T].ravel()  # treated as known (exact signal for tests)
        frames.append(pl.DataFrame(d))
    frame = (
        pl.concat(frames)
        .with_columns(
            pl.col("sales").cast(pl.Int64),
            pl.col("promo").cast(pl.Int8),
            pl.col("sales_lag_0", "sales_lag_1", "sales_lag_2", "sales_lag_seasonal").cast(
                pl.Int64
            ),
            pl.col("n_history").cast(pl.Int32),
        )
        .sort(["sku", "origin", "horizon"])
    )
    return SimulatedPanel(frame=frame, a=a, beta0=beta0, alpha=alpha, skus=skus, months=months)


def split_last_month(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Train on targets before the last month; forecast rows = the last month's targets."""
    last = frame.get_column("month").max()
    return frame.filter(pl.col("month") < last), frame.filter(pl.col("month") == last)
