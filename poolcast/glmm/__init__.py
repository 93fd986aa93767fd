"""GLMM engine: lme4-style generalized linear mixed models (Poisson, NB2, binomial)."""

from poolcast.glmm.control import GlmmControl
from poolcast.glmm.families import get_family
from poolcast.glmm.terms import (
    GlmmDesign,
    NewBlock,
    NewDesign,
    build_design,
    design_for_newdata,
)

__all__ = [
    "GlmmControl",
    "GlmmDesign",
    "NewBlock",
    "NewDesign",
    "build_design",
    "design_for_newdata",
    "get_family",
]
