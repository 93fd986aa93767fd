"""Shared test fixtures: where the real data sets and GLMM reference fits live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    env = os.environ.get("POOLCAST_SHARED_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared"


SHARED_DIR = _shared_dir()


def _require(path: Path) -> Path:
    """Return path, or skip when the shared folder is absent (a user's clone).

    CI always has ../shared; there (CI=true) a missing folder is an error, not a skip.
    """
    if path.exists():
        return path
    if os.environ.get("CI"):
        pytest.fail(f"{path} is missing; CI must run with ../shared beside the clone")
    pytest.skip(f"{path} is absent (no ../shared beside this clone)")


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """../shared/data: the real data sets (Rossmann, Online Retail, car parts)."""
    return _require(SHARED_DIR / "data")


@pytest.fixture(scope="session")
def glmm_reference_dir() -> Path:
    """../shared/reference/glmm: lme4 / glmmTMB reference fits and their data."""
    return _require(SHARED_DIR / "reference" / "glmm")


@pytest.fixture(scope="session")
def example_data_path() -> Path:
    """The bundled example data (Online Retail monthly SKU panel)."""
    return REPO_ROOT / "data" / "example" / "online_retail_sku_monthly.csv.gz"
