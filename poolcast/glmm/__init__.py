"""GLMM engine: lme4-style generalized linear mixed models (Poisson, NB2, binomial).

Stages (one module each): :func:`build_design` (terms) -> :func:`make_objective` (objective,
with :func:`pirls`, Laplace and AGQ deviances) -> :func:`optimize` -> :func:`make_results`;
:func:`fit` chains them.
"""

from poolcast.glmm.control import GlmmControl
from poolcast.glmm.families import Family, get_family
from poolcast.glmm.fit import fit
from poolcast.glmm.laplace import laplace_deviance, laplace_gradient
from poolcast.glmm.objective import Objective, make_objective
from poolcast.glmm.optimize import OptSummary, optimize
from poolcast.glmm.pirls import PirlsResult, pirls
from poolcast.glmm.quadrature import agq_deviance, gauss_hermite
from poolcast.glmm.results import GlmmResults, GlmmSummary, make_results
from poolcast.glmm.terms import (
    GlmmDesign,
    NewBlock,
    NewDesign,
    ReBlock,
    build_design,
    design_for_newdata,
)

__all__ = [
    "Family",
    "GlmmControl",
    "GlmmDesign",
    "GlmmResults",
    "GlmmSummary",
    "NewBlock",
    "NewDesign",
    "Objective",
    "OptSummary",
    "PirlsResult",
    "ReBlock",
    "agq_deviance",
    "build_design",
    "design_for_newdata",
    "fit",
    "gauss_hermite",
    "get_family",
    "laplace_deviance",
    "laplace_gradient",
    "make_objective",
    "make_results",
    "optimize",
    "pirls",
]
