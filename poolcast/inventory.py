r"""Inventory policy from the champion's predictive samples: safety stock, order-up-to, order quantity.

A periodic-review order-up-to policy :math:`(R, S)` per SKU, decided at the forecast origin
(the run's as-of month). An order placed now arrives after the lead time :math:`L` months;
the next order is placed after the review period :math:`R` months, so the stock position
set now must cover demand over the *protection interval* :math:`P = L + R` months
(with :math:`R = 0`, continuous review, that is the lead-time demand alone).

From the samples (rows = SKU x horizon, columns = draws) the demand over the first
:math:`k` months is, draw by draw,

.. math::  D_k^{(j)} = \sum_{h=1}^{k} y_{h}^{(j)},

summing **draw j of every horizon of the same SKU**: where a candidate simulates a SKU's
months jointly, column j is one simulated path and the sum keeps the dependence between
months (perfectly correlated months give :math:`D_k = k\,y_1` and a quantile k times a
month's; independent ones give the convolution, a narrower relative spread). Then, at
the service level :math:`\alpha` (the probability of no stock-out in a cycle):

* ``lead_time_demand_mean`` :math:`= \overline{D_L}`, ``lead_time_demand_q``
  :math:`= \hat Q_\alpha(D_L)` (the newsvendor quantile over the lead time);
* ``order_up_to`` :math:`S = \hat Q_\alpha(D_P)`, the newsvendor quantile of the
  protection-interval demand;
* ``safety_stock`` :math:`= \max(0, S - \overline{D_P})`: stock held above the mean demand
  of the protection interval (:math:`P = L` when :math:`R = 0`, i.e. the lead-time demand
  quantile minus its mean). It is clipped at 0 because a level under mean demand is not a
  safety stock (only possible for :math:`\alpha < 0.5` or a strongly skewed sample);
* ``order_quantity`` :math:`= \max(0, S - \text{on\_hand})` when on hand stock at the origin
  is known, else NULL;
* ``expected_units_short`` :math:`= \overline{(D_P - S)^+}` per cycle and
  ``fill_rate`` :math:`= 1 - E[(D_P - S)^+] / E[D_R]` (units short over the demand of one
  review cycle, :math:`E[D_L]` when :math:`R = 0`), clipped to [0, 1].

Quantiles are empirical, numpy's ``inverted_cdf`` (the smallest draw x with
:math:`\hat F(x) \ge \alpha`), so count demand gives whole units. Pure numpy / polars.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from poolcast.errors import InvalidParameterError

__all__ = [
    "InventoryPolicy",
    "demand_over",
    "inventory_plan",
    "read_lead_times",
    "sample_quantile",
    "sku_attributes",
    "sku_policy",
]


@dataclass(frozen=True)
class InventoryPolicy:
    """Lead time, review period and service levels of the plan.

    Fields
    ------
    lead_time_months : int
        Months from order to arrival (>= 0), for SKUs without their own.
    review_period_months : int
        Months between two orders (>= 0).
    service_level : float
        Cycle service level in (0, 1) for SKUs whose category has none of its own.
    service_level_by_category : mapping of str to float
        Service level per category (overrides ``service_level``).
    """

    lead_time_months: int = 1
    review_period_months: int = 1
    service_level: float = 0.95
    service_level_by_category: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("lead_time_months", "review_period_months"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
                raise InvalidParameterError(
                    f"[inventory] {name}={value!r} must be an integer >= 0 (months)"
                )
        if self.lead_time_months + self.review_period_months < 1:
            raise InvalidParameterError(
                "[inventory] lead_time_months + review_period_months is 0; at least one month "
                "must be protected"
            )
        levels = {"service_level": self.service_level} | {
            f"service_level_by_category.{k}": v for k, v in self.service_level_by_category.items()
        }
        for name, level in levels.items():
            if not isinstance(level, int | float) or not 0.0 < float(level) < 1.0:
                raise InvalidParameterError(
                    f"[inventory] {name}={level!r} must be a probability in (0, 1), e.g. 0.95"
                )

    def level_for(self, category: str | None) -> float:
        """Service level of a category (the global one when it has none)."""
        if category is not None and category in self.service_level_by_category:
            return float(self.service_level_by_category[category])
        return float(self.service_level)


def sample_quantile(draws: np.ndarray, level: float) -> float:
    """Empirical quantile, inverted CDF: the smallest draw x with :math:`\\hat F(x) \\ge` level.

    Parameters
    ----------
    draws : ndarray of shape (n,)
    level : float in (0, 1)
    """
    d = np.sort(np.asarray(draws, dtype=float))
    if d.size == 0:
        raise InvalidParameterError("sample_quantile: no draws")
    k = min(d.size - 1, max(0, int(np.ceil(float(level) * d.size - 1e-9)) - 1))
    return float(d[k])


def demand_over(samples: np.ndarray, months: int) -> np.ndarray:
    """Demand over the first `months` horizons, draw by draw (column j summed over rows).

    Parameters
    ----------
    samples : ndarray of shape (horizons, n_samples)
        One SKU's draws, rows in horizon order 1, 2, ...
    months : int
        How many leading horizons to sum (0 gives zeros).
    """
    if months > samples.shape[0]:
        raise InvalidParameterError(
            f"demand over {months} months needs {months} forecast horizons, the forecast has "
            f"{samples.shape[0]}; raise [features] horizons or lower the lead time / review period"
        )
    return samples[:months].sum(axis=0).astype(float)


def sku_policy(
    samples: np.ndarray,
    *,
    lead_time: int,
    review_period: int,
    service_level: float,
    on_hand: float | None = None,
) -> dict[str, float | None]:
    """The policy numbers of one SKU from its (horizons x draws) samples (see the module doc)."""
    protect = lead_time + review_period
    d_lead = demand_over(samples, lead_time)
    d_protect = demand_over(samples, protect)
    d_cycle = demand_over(samples, review_period) if review_period > 0 else d_lead
    order_up_to = sample_quantile(d_protect, service_level)
    mean_protect = float(d_protect.mean())
    short = float(np.maximum(d_protect - order_up_to, 0.0).mean())
    cycle_mean = float(d_cycle.mean())
    fill = 1.0 if cycle_mean <= 0 else float(np.clip(1.0 - short / cycle_mean, 0.0, 1.0))
    return {
        "lead_time_demand_mean": float(d_lead.mean()),
        "lead_time_demand_q": sample_quantile(d_lead, service_level) if lead_time else 0.0,
        "protection_demand_mean": mean_protect,
        "safety_stock": max(0.0, order_up_to - mean_protect),
        "order_up_to": order_up_to,
        "on_hand": None if on_hand is None else float(on_hand),
        "order_quantity": None if on_hand is None else max(0.0, order_up_to - float(on_hand)),
        "expected_units_short": short,
        "fill_rate": fill,
    }


_PLAN_SCHEMA = {
    "sku": pl.String,
    "category": pl.String,
    "service_level": pl.Float64,
    "lead_time_months": pl.Int64,
    "review_period_months": pl.Int64,
    "lead_time_demand_mean": pl.Float64,
    "lead_time_demand_q": pl.Float64,
    "protection_demand_mean": pl.Float64,
    "safety_stock": pl.Float64,
    "order_up_to": pl.Float64,
    "on_hand": pl.Float64,
    "order_quantity": pl.Float64,
    "expected_units_short": pl.Float64,
    "fill_rate": pl.Float64,
}


def inventory_plan(
    keys: pl.DataFrame,
    samples: np.ndarray,
    *,
    policy: InventoryPolicy | None = None,
    skus: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """The inventory plan of every SKU from a forecast's keys and predictive samples.

    Parameters
    ----------
    keys : pl.DataFrame
        ``Forecast.keys``: columns ``sku`` and ``horizon`` (row i describes ``samples[i]``).
    samples : ndarray of shape (n_rows, n_samples)
        ``Forecast.samples``.
    policy : InventoryPolicy, optional
        Defaults: L = 1, R = 1, service level 0.95.
    skus : pl.DataFrame, optional
        Per-SKU attributes at the origin, any of ``category`` (picks the service level),
        ``on_hand`` (stock at the origin; NULL = unknown), ``lead_time_months`` (overrides
        the policy's; NULL = the policy's). One row per ``sku``.

    Returns
    -------
    pl.DataFrame
        One row per SKU: ``sku, category, service_level, lead_time_months,
        review_period_months, lead_time_demand_mean, lead_time_demand_q,
        protection_demand_mean, safety_stock, order_up_to, on_hand, order_quantity,
        expected_units_short, fill_rate``, sorted by sku.
    """
    policy = policy or InventoryPolicy()
    samples = np.asarray(samples)
    if samples.ndim != 2 or samples.shape[0] != keys.height:
        raise InvalidParameterError(
            f"inventory_plan: samples have shape {samples.shape}; expected ({keys.height}, n_samples) "
            "matching the forecast keys"
        )
    missing = [c for c in ("sku", "horizon") if c not in keys.columns]
    if missing:
        raise InvalidParameterError(f"inventory_plan: keys lack column(s) {missing}")
    attrs: dict[str, dict] = {}
    if skus is not None and skus.height:
        if skus.get_column("sku").is_duplicated().any():
            raise InvalidParameterError("inventory_plan: skus has several rows for one sku")
        attrs = {row["sku"]: row for row in skus.iter_rows(named=True)}
    indexed = keys.select("sku", "horizon").with_row_index("_i").sort("sku", "horizon")
    rows = []
    for (sku,), group in indexed.group_by(["sku"], maintain_order=True):
        a = attrs.get(sku, {})
        lead = a.get("lead_time_months")
        lead = policy.lead_time_months if lead is None else int(lead)
        if lead < 0:
            raise InvalidParameterError(
                f"inventory_plan: SKU {sku!r} has lead_time_months={lead}; it must be >= 0"
            )
        category = a.get("category")
        level = policy.level_for(category)
        numbers = sku_policy(
            samples[group.get_column("_i").to_numpy()],
            lead_time=lead,
            review_period=policy.review_period_months,
            service_level=level,
            on_hand=a.get("on_hand"),
        )
        rows.append(
            {
                "sku": sku,
                "category": category,
                "service_level": level,
                "lead_time_months": lead,
                "review_period_months": policy.review_period_months,
                **numbers,
            }
        )
    return (
        pl.DataFrame(rows, schema=_PLAN_SCHEMA, orient="row")
        if rows
        else pl.DataFrame(schema=_PLAN_SCHEMA)
    )


def sku_attributes(panel: pl.DataFrame, lead_times: pl.DataFrame | None = None) -> pl.DataFrame:
    """Per-SKU ``category``, ``on_hand`` and ``lead_time_months`` at the end of a validated panel.

    ``on_hand`` is the value at the SKU's last month (the origin) or NULL; a panel or plan
    column ``lead_time_months`` gives the SKU's lead time (its last non-null value), and a
    ``lead_times`` table ``(sku, lead_time_months)`` overrides it.
    """
    cols = [c for c in ("category", "on_hand", "lead_time_months") if c in panel.columns]
    last = (
        panel.sort("sku", "month")
        .group_by("sku", maintain_order=True)
        .agg(
            *[pl.col(c).last() for c in cols if c != "lead_time_months"],
            *[pl.col(c).drop_nulls().last() for c in cols if c == "lead_time_months"],
        )
    )
    if lead_times is not None:
        table = lead_times.select(
            pl.col("sku").cast(pl.String), pl.col("lead_time_months").cast(pl.Int64)
        )
        last = last.drop("lead_time_months", strict=False).join(table, on="sku", how="left")
        if "lead_time_months" in cols:
            own = panel.group_by("sku").agg(pl.col("lead_time_months").drop_nulls().last())
            last = last.join(own.rename({"lead_time_months": "_own"}), on="sku", how="left")
            last = last.with_columns(
                pl.coalesce("lead_time_months", "_own").alias("lead_time_months")
            ).drop("_own")
    return last


def read_lead_times(path: str) -> pl.DataFrame:
    """A lead-time table from CSV or Parquet with columns ``sku, lead_time_months``."""
    try:
        frame = pl.read_parquet(path) if path.endswith((".parquet", ".pq")) else pl.read_csv(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise InvalidParameterError(
            f"[inventory] lead_times_path {path!r} cannot be read: {exc}"
        ) from exc
    missing = [c for c in ("sku", "lead_time_months") if c not in frame.columns]
    if missing:
        raise InvalidParameterError(
            f"[inventory] lead_times_path {path!r} lacks column(s) {missing}; "
            "it needs sku, lead_time_months"
        )
    if frame.get_column("lead_time_months").drop_nulls().lt(0).any():
        raise InvalidParameterError(
            f"[inventory] lead_times_path {path!r}: lead_time_months has negative values"
        )
    return frame.select(pl.col("sku").cast(pl.String), pl.col("lead_time_months").cast(pl.Int64))
