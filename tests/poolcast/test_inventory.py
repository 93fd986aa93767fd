"""Inventory policy from predictive samples, checked against closed forms (scipy.stats)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import polars as pl
import pytest
from scipy import stats

from poolcast.errors import InvalidParameterError
from poolcast.inventory import (
    InventoryPolicy,
    inventory_plan,
    sample_quantile,
    sku_attributes,
    sku_policy,
)

N = 200_000


def _check_quantile(q: float, dist, level: float, n: int) -> None:
    """The empirical inverted-CDF quantile of n draws is the ppf up to sampling error: the true
    CDF at q is >= level and at q - 1 is < level, each within 4 binomial standard errors; where
    no CDF value lies within those 4 s.e. of the level, it is the ppf exactly."""
    se = math.sqrt(level * (1 - level) / n)
    assert dist.cdf(q) >= level - 4 * se
    assert dist.cdf(q - 1) <= level + 4 * se
    ppf = dist.ppf(level)
    if abs(dist.cdf(ppf) - level) > 4 * se and abs(dist.cdf(ppf - 1) - level) > 4 * se:
        assert q == ppf


@pytest.mark.parametrize("level", [0.5, 0.8, 0.9, 0.95, 0.99])
def test_newsvendor_quantile_of_poisson_lead_time_demand(level):
    rng = np.random.default_rng(1)
    months = np.vstack([rng.poisson(3.0, N), rng.poisson(5.0, N)])  # independent months
    got = sku_policy(months, lead_time=2, review_period=0, service_level=level)
    # sum of independent Poissons: Poisson(8)
    _check_quantile(got["lead_time_demand_q"], stats.poisson(8.0), level, N)
    assert got["order_up_to"] == got["lead_time_demand_q"]  # R = 0: S is the lead-time quantile
    assert got["lead_time_demand_mean"] == pytest.approx(8.0, abs=4 * math.sqrt(8.0 / N))


@pytest.mark.parametrize("level", [0.5, 0.9, 0.95, 0.99])
def test_newsvendor_quantile_of_negative_binomial_lead_time_demand(level):
    rng = np.random.default_rng(2)
    p = 0.25
    months = np.vstack([rng.negative_binomial(2.0, p, N), rng.negative_binomial(3.5, p, N)])
    got = sku_policy(months, lead_time=2, review_period=0, service_level=level)
    # NB(r1, p) + NB(r2, p) = NB(r1 + r2, p) for independent draws
    _check_quantile(got["lead_time_demand_q"], stats.nbinom(5.5, p), level, N)


def test_perfectly_correlated_months_scale_the_quantile_independent_ones_convolve():
    rng = np.random.default_rng(3)
    one = rng.poisson(4.0, N)
    correlated = np.vstack([one, one, one])  # the same draw every month
    independent = rng.poisson(4.0, (3, N))
    level = 0.95
    q_corr = sku_policy(correlated, lead_time=3, review_period=0, service_level=level)
    q_ind = sku_policy(independent, lead_time=3, review_period=0, service_level=level)
    # D = 3 Y: its quantile is 3 x a month's quantile
    _check_quantile(q_corr["lead_time_demand_q"] / 3, stats.poisson(4.0), level, N)
    assert q_corr["lead_time_demand_q"] == 3 * sample_quantile(one, level)
    # independent: D ~ Poisson(12)
    _check_quantile(q_ind["lead_time_demand_q"], stats.poisson(12.0), level, N)
    # same mean, but comonotone months need more stock (variance 9 x 4 against 3 x 4)
    assert q_corr["lead_time_demand_mean"] == pytest.approx(12.0, abs=0.1)
    assert q_corr["safety_stock"] > q_ind["safety_stock"] + 3


def test_expected_units_short_and_fill_rate_match_the_poisson_loss_function():
    rng = np.random.default_rng(4)
    lam = 6.0
    samples = np.vstack([rng.poisson(lam / 2, N), rng.poisson(lam / 2, N)])  # L=1, R=1
    got = sku_policy(samples, lead_time=1, review_period=1, service_level=0.9)
    s = got["order_up_to"]
    k = np.arange(0, 200)
    loss = float(np.sum(np.maximum(k - s, 0) * stats.poisson.pmf(k, lam)))  # E[(D - S)+]
    se = math.sqrt(
        float(np.sum(np.maximum(k - s, 0) ** 2 * stats.poisson.pmf(k, lam)))
    ) / math.sqrt(N)
    assert got["expected_units_short"] == pytest.approx(loss, abs=4 * se + 1e-12)
    # one review cycle (R = 1 month) has mean demand lam / 2
    assert got["fill_rate"] == pytest.approx(1 - loss / (lam / 2), abs=4 * se / (lam / 2) + 1e-3)
    assert got["safety_stock"] == pytest.approx(s - lam, abs=0.05)


def _skewed_panel(kind: str, n_skus: int = 4, horizons: int = 3, n: int = 4000):
    rng = np.random.default_rng(5)
    if kind == "symmetric":
        draws = np.rint(rng.normal(50.0, 5.0, (n_skus * horizons, n))).clip(0)
    else:  # right-skewed: NB2 with a small mean
        draws = rng.negative_binomial(0.7, 0.7 / (0.7 + 2.0), (n_skus * horizons, n))
    keys = pl.DataFrame(
        {
            "sku": [f"s{i}" for i in range(n_skus) for _ in range(horizons)],
            "horizon": [h for _ in range(n_skus) for h in range(1, horizons + 1)],
        }
    )
    return keys, draws


@pytest.mark.parametrize("kind", ["symmetric", "right_skewed"])
def test_plan_is_monotone_in_the_service_level_and_safety_stock_is_non_negative(kind):
    keys, draws = _skewed_panel(kind)
    levels = [0.5, 0.6, 0.75, 0.9, 0.95, 0.99]
    plans = [
        inventory_plan(keys, draws, policy=InventoryPolicy(service_level=a)).sort("sku")
        for a in levels
    ]
    for low, high in itertools.pairwise(plans):
        assert (high["order_up_to"] >= low["order_up_to"]).all()
        assert (high["safety_stock"] >= low["safety_stock"]).all()
        assert (high["expected_units_short"] <= low["expected_units_short"] + 1e-12).all()
        assert (high["fill_rate"] >= low["fill_rate"] - 1e-12).all()
    for plan in plans:
        assert (plan["safety_stock"] >= 0).all()
    # above the median the clip is inactive: S = mean + safety stock exactly
    top = plans[-1]
    assert np.allclose(top["order_up_to"], top["protection_demand_mean"] + top["safety_stock"])


def test_category_service_levels_sku_lead_times_and_on_hand():
    keys, draws = _skewed_panel("symmetric", n_skus=3)
    skus = pl.DataFrame(
        {
            "sku": ["s0", "s1", "s2"],
            "category": ["fast", "slow", None],
            "on_hand": [10.0, 1000.0, None],
            "lead_time_months": [2, None, 1],
        }
    )
    policy = InventoryPolicy(
        lead_time_months=1, review_period_months=1, service_level_by_category={"fast": 0.99}
    )
    plan = inventory_plan(keys, draws, policy=policy, skus=skus).sort("sku")
    assert plan["service_level"].to_list() == [0.99, 0.95, 0.95]
    assert plan["lead_time_months"].to_list() == [2, 1, 1]
    s0 = sku_policy(draws[0:3], lead_time=2, review_period=1, service_level=0.99, on_hand=10.0)
    assert plan.row(0, named=True)["order_up_to"] == s0["order_up_to"]
    assert plan["order_quantity"].to_list()[0] == s0["order_up_to"] - 10.0
    assert plan["order_quantity"].to_list()[1] == 0.0  # more on hand than the order-up-to level
    assert plan["order_quantity"].to_list()[2] is None  # on hand unknown


def test_sku_attributes_take_the_origin_values_and_a_lead_time_table_overrides():
    panel = pl.DataFrame(
        {
            "sku": ["a", "a", "b"],
            "month": [1, 2, 1],
            "category": ["x", "x", "y"],
            "on_hand": [5, 7, None],
        }
    )
    table = pl.DataFrame({"sku": ["b"], "lead_time_months": [3]})
    attrs = sku_attributes(panel, table).sort("sku")
    assert attrs.select("sku", "category", "on_hand", "lead_time_months").rows() == [
        ("a", "x", 7, None),
        ("b", "y", None, 3),
    ]


def test_too_few_horizons_and_bad_levels_are_explained():
    keys, draws = _skewed_panel("symmetric", horizons=2)
    with pytest.raises(InvalidParameterError, match="horizons"):
        inventory_plan(keys, draws, policy=InventoryPolicy(lead_time_months=2))
    with pytest.raises(InvalidParameterError, match=r"in \(0, 1\)"):
        InventoryPolicy(service_level=1.0)
    with pytest.raises(InvalidParameterError, match="integer >= 0"):
        InventoryPolicy(lead_time_months=-1)
