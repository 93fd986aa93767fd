"""Small simulated panels with a known truth, shared by the GLMM engine tests."""

from __future__ import annotations

import numpy as np
import polars as pl


def simulate_panel(
    n_groups: int = 40,
    n_per: int = 10,
    *,
    family: str = "poisson",
    sd: tuple[float, float] = (0.6, 0.3),
    rho: float = 0.0,
    seed: int = 1,
) -> pl.DataFrame:
    """y ~ 0.5 + 0.4 x + (1 + x | g) with SDs ``sd`` and correlation ``rho``."""
    rng = np.random.default_rng(seed)
    n = n_groups * n_per
    g = np.repeat(np.arange(n_groups), n_per)
    x = rng.normal(size=n)
    cov = np.array([[sd[0] ** 2, rho * sd[0] * sd[1]], [rho * sd[0] * sd[1], sd[1] ** 2]])
    b = rng.multivariate_normal(np.zeros(2), cov, size=n_groups)
    eta = 0.5 + 0.4 * x + b[g, 0] + b[g, 1] * x
    m = np.full(n, 6)
    if family == "binomial":
        y = rng.binomial(m, 1 / (1 + np.exp(-(eta - 0.5))))
    elif family == "negbin":
        mu = np.exp(eta)
        y = rng.negative_binomial(3.0, 3.0 / (3.0 + mu))
    else:
        y = rng.poisson(np.exp(eta))
    return pl.DataFrame(
        {"y": y, "x": x, "g": [f"g{i:03d}" for i in g], "m": m, "row": np.arange(n)}
    )
