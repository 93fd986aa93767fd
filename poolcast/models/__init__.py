"""Competing candidate models behind one interface: fit on the feature table, predict a distribution.

Modules: :mod:`~poolcast.models.forecast` (the :class:`Forecast`), :mod:`~poolcast.models.base`
(the :class:`Candidate` interface, direct multi-horizon loop, :class:`CandidateReport`),
:mod:`~poolcast.models.baselines` (seasonal naive, moving average), :mod:`~poolcast.models.glm`
(complete and no pooling), :mod:`~poolcast.models.gee` (population average),
:mod:`~poolcast.models.glmm` (partial pooling), :mod:`~poolcast.models.bayes` (the Bayesian
hierarchical GLMM, SKUs in categories, PyMC + nutpie) and :mod:`~poolcast.models.registry`
(:func:`default_candidates`).
"""

from poolcast.models.base import Candidate, CandidateReport, CovariateCandidate, HorizonReport
from poolcast.models.baselines import MovingAverage, SeasonalNaive
from poolcast.models.bayes import BayesHierarchical, BayesNegBinHierarchical
from poolcast.models.classical import Adida, AutoEts, Croston, Naive, Tsb, is_intermittent
from poolcast.models.forecast import KEY_COLUMNS, Forecast, quantile_column, quantiles_from_samples
from poolcast.models.gee import GeePoisson, GeePoissonAR1, GeePoissonExchangeable
from poolcast.models.glm import (
    PooledGlm,
    PooledNegBinGlm,
    PooledPoissonGlm,
    SkuFixedEffectsNegBinGlm,
)
from poolcast.models.glmm import (
    GlmmCandidate,
    GlmmNegBinDynamic,
    GlmmNegBinDynamicDisp,
    GlmmNegBinRandomIntercept,
    GlmmNegBinRandomInterceptDisp,
    GlmmNegBinRandomInterceptSlope,
    GlmmPoissonRandomIntercept,
    GlmmPoissonRandomInterceptAgq,
    GlmmPoissonRandomInterceptSlope,
)
from poolcast.models.glmm_ar1 import GlmmNegBinAr1
from poolcast.models.registry import (
    CANDIDATE_CLASSES,
    CANDIDATE_NAMES,
    default_candidates,
    make_candidate,
)

__all__ = [
    "CANDIDATE_CLASSES",
    "CANDIDATE_NAMES",
    "KEY_COLUMNS",
    "Adida",
    "AutoEts",
    "BayesHierarchical",
    "BayesNegBinHierarchical",
    "Candidate",
    "CandidateReport",
    "CovariateCandidate",
    "Croston",
    "Forecast",
    "GeePoisson",
    "GeePoissonAR1",
    "GeePoissonExchangeable",
    "GlmmCandidate",
    "GlmmNegBinAr1",
    "GlmmNegBinDynamic",
    "GlmmNegBinDynamicDisp",
    "GlmmNegBinRandomIntercept",
    "GlmmNegBinRandomInterceptDisp",
    "GlmmNegBinRandomInterceptSlope",
    "GlmmPoissonRandomIntercept",
    "GlmmPoissonRandomInterceptAgq",
    "GlmmPoissonRandomInterceptSlope",
    "HorizonReport",
    "MovingAverage",
    "Naive",
    "PooledGlm",
    "PooledNegBinGlm",
    "PooledPoissonGlm",
    "SeasonalNaive",
    "SkuFixedEffectsNegBinGlm",
    "Tsb",
    "default_candidates",
    "is_intermittent",
    "make_candidate",
    "quantile_column",
    "quantiles_from_samples",
]
