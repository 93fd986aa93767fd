"""Fixtures of the GLMM engine tests: the lme4/glmmTMB reference data sets, read as R reads them."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest


def load_reference_data(reference_dir: Path, name: str) -> pl.DataFrame:
    """A reference CSV with R's column types (factors as strings / ordered enums)."""
    df = pl.read_csv(reference_dir / f"{name}.csv")
    if name == "cbpp":
        return df.with_columns(pl.col("period").cast(pl.String), pl.col("herd").cast(pl.String))
    if name == "grouseticks":
        return df.with_columns(pl.col("YEAR").cast(pl.String), pl.col("LOCATION").cast(pl.String))
    if name == "salamanders":
        # R's factor levels of Salamanders$mined are c("yes", "no"): "yes" is the baseline
        return df.with_columns(pl.col("mined").cast(pl.Enum(["yes", "no"])))
    if name == "epil":
        # period is a number 1..4 for epil_rs_laplace (numeric in the CSV already)
        return df.with_columns(pl.col("period").cast(pl.Float64), pl.col("subject").cast(pl.String))
    return df


@pytest.fixture(scope="session")
def load_reference(glmm_reference_dir: Path):
    """Function name -> the reference data set as a polars DataFrame."""
    return lambda name: load_reference_data(glmm_reference_dir, name)


@pytest.fixture(scope="session")
def glmm_references(glmm_reference_dir: Path) -> dict:
    """reference.json: one entry per lme4 / glmmTMB fit."""
    return json.loads((glmm_reference_dir / "reference.json").read_text())
