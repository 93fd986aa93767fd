"""Fixtures of the candidate-model tests (simulated feature tables, see ``_frames.py``)."""

from __future__ import annotations

import pytest

from tests.poolcast.models._frames import SimulatedPanel, simulate_feature_frame


@pytest.fixture(scope="session")
def poisson_panel() -> SimulatedPanel:
    return simulate_feature_frame(n_sku=80, n_months=36, seed=1, promo_rate=0.2)


@pytest.fixture(scope="session")
def nb2_panel() -> SimulatedPanel:
    return simulate_feature_frame(
        n_sku=150, n_months=36, seed=2, alpha=0.5, promo_rate=0.2, customers=True, beta_cust=0.5
    )
