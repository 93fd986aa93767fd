"""The default line-up of candidates, by stable name (the MLflow child-run names)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from poolcast.errors import InvalidParameterError
from poolcast.models._design import plan_term
from poolcast.models.base import Candidate
from poolcast.models.baselines import MovingAverage, SeasonalNaive
from poolcast.models.bayes import BayesNegBinHierarchical
from poolcast.models.classical import Adida, AutoEts, Croston, Naive, Tsb
from poolcast.models.gee import GeePoissonAR1, GeePoissonExchangeable
from poolcast.models.glm import PooledNegBinGlm, PooledPoissonGlm, SkuFixedEffectsNegBinGlm
from poolcast.models.glmm import (
    GlmmHurdleNegBin,
    GlmmNegBinDynamic,
    GlmmNegBinDynamicDisp,
    GlmmNegBinRandomIntercept,
    GlmmNegBinRandomInterceptDisp,
    GlmmNegBinRandomInterceptSlope,
    GlmmNegBinSeasonal,
    GlmmPoissonRandomIntercept,
    GlmmPoissonRandomInterceptAgq,
    GlmmPoissonRandomInterceptSlope,
    GlmmTweedieRandomIntercept,
)
from poolcast.models.glmm_ar1 import GlmmNegBinAr1

__all__ = [
    "AGQ_MAX_SKUS",
    "CANDIDATE_CLASSES",
    "CANDIDATE_NAMES",
    "PlanFactory",
    "check_candidate_params",
    "default_candidates",
    "make_candidate",
]

CANDIDATE_CLASSES: dict[str, type[Candidate]] = {
    cls.name: cls
    for cls in (
        SeasonalNaive,
        MovingAverage,
        PooledPoissonGlm,
        PooledNegBinGlm,
        SkuFixedEffectsNegBinGlm,
        GeePoissonExchangeable,
        GeePoissonAR1,
        GlmmPoissonRandomIntercept,
        GlmmNegBinRandomIntercept,
        GlmmPoissonRandomInterceptSlope,
        GlmmNegBinRandomInterceptSlope,
        GlmmPoissonRandomInterceptAgq,
        GlmmNegBinDynamic,
        Naive,
        AutoEts,
        Croston,
        Tsb,
        Adida,
        GlmmTweedieRandomIntercept,
        GlmmHurdleNegBin,
        BayesNegBinHierarchical,
        GlmmNegBinSeasonal,
        GlmmNegBinAr1,
        GlmmNegBinRandomInterceptDisp,
        GlmmNegBinDynamicDisp,
    )
}
CANDIDATE_NAMES: tuple[str, ...] = tuple(CANDIDATE_CLASSES)
_PROMO_SLOPE = frozenset({"glmm_poisson_ri_slope", "glmm_nb2_ri_slope"})
_BASELINES = frozenset({"seasonal_naive", "moving_average"})
#: Series candidates (poolcast.models.classical): no customer / promo parameters.
_CLASSICAL = frozenset({"naive", "auto_ets", "croston", "tsb", "adida"})
#: In the default line-up only when the data are intermittent (classical.is_intermittent).
_INTERMITTENT = frozenset({"croston", "tsb", "adida"})
#: Fitted once on the monthly panel: promo and plan columns, no customer parameter.
_PANEL_ONLY = frozenset({"glmm_nb2_ar1"})
AGQ_MAX_SKUS = 3000
#: Named-only candidates: never in the default line-up, run when named in
#: ``[backtest] candidates`` (their cost on the bundled data is beyond the budget of
#: ``make run``: the Bayesian GLMM takes minutes per origin, the profiled Tweedie and the
#: uncorrelated seasonal GLMM tens of seconds per fit; benchmarks/README.md). The latent
#: AR(1) GLMM ``glmm_nb2_ar1`` is in the default line-up: one fit per origin, ~2.8 CPU-s per
#: origin on the bundled Online Retail data with one NB2 size (auto_ets: ~7.9); with its default
#: 5 dispersion classes (a second, warm-started fit) 58 CPU-s over 7 origins against
#: auto_ets's 54 (README, "NB2 dispersion classes"). The ``*_disp`` GLMMs (dispersion classes
#: on the random-intercept candidates) are named-only: mixed on Rossmann's backtest.
OPT_IN: frozenset[str] = frozenset(
    {
        "glmm_tweedie_ri",
        "glmm_hurdle_nb2",
        "bayes_nb2_hier",
        "glmm_nb2_seasonal",
        "glmm_nb2_ri_disp",
        "glmm_nb2_ri_dynamic_disp",
    }
)


@dataclass(frozen=True)
class PlanFactory:
    """A picklable factory: the candidate class with its parameters and its ``plan_terms``."""

    cls: type[Candidate]
    params: tuple[tuple[str, object], ...]
    plan_terms: tuple[str, ...]

    def __call__(self) -> Candidate:
        candidate = self.cls(**dict(self.params))
        candidate.plan_terms = self.plan_terms  # type: ignore[attr-defined]
        return candidate


def check_candidate_params(params: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse ``[backtest.params]`` that name an unknown candidate, a parameter its constructor
    does not take, or a value its parameter checks reject.

    Raises
    ------
    InvalidParameterError
        Naming the candidate and the key.
    """
    for name, kwargs in params.items():
        if name not in CANDIDATE_CLASSES:
            raise InvalidParameterError(
                f"[backtest.params] unknown candidate {name!r}; known candidates are "
                f"{list(CANDIDATE_NAMES)}"
            )
        cls = CANDIDATE_CLASSES[name]
        accepted = sorted(p for p in inspect.signature(cls.__init__).parameters if p != "self")
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise InvalidParameterError(
                f"[backtest.params.{name}] unknown parameter(s) {unknown}; {name} takes {accepted}"
            )
        try:
            candidate = cls(**kwargs)
            validate = getattr(candidate, "_validate_params", None)
            if validate is not None:
                validate()
        except (InvalidParameterError, TypeError, ValueError) as exc:
            raise InvalidParameterError(f"[backtest.params.{name}] {exc}") from None


def make_candidate(name: str, **params: object) -> Candidate:
    """A new, unfitted candidate by name (``params`` go to its constructor).

    >>> make_candidate("glm_nb2_pooled").name
    'glm_nb2_pooled'
    """
    try:
        cls = CANDIDATE_CLASSES[name]
    except KeyError:
        raise InvalidParameterError(
            f"unknown candidate {name!r}; known candidates are {list(CANDIDATE_NAMES)}"
        ) from None
    return cls(**params)


def default_candidates(
    *,
    has_customers: bool,
    has_promo: bool,
    names: tuple[str, ...] | None = None,
    n_skus: int | None = None,
    agq_max_skus: int = AGQ_MAX_SKUS,
    plan_columns: tuple[str, ...] = (),
    plan_transforms: dict[str, str] | None = None,
    intermittent: bool | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Callable[[], Candidate]]:
    """Factories of the default line-up, keyed by candidate name, in a stable order.

    Parameters
    ----------
    has_customers : bool
        The data have customer counts: the model candidates use ``log_customers``; without
        them they use no customer feature (``customer_terms="none"``).
    has_promo : bool
        The data have promo variation: adds the random promo-slope GLMMs
        (``glmm_poisson_ri_slope``, ``glmm_nb2_ri_slope``) and lets models use ``promo``.
    names : tuple of str or None
        Restrict to these candidates (``BacktestConfig.candidates``); None = the default line-up.
        Naming a promo-slope candidate runs it even without promo (it falls back to a random
        intercept and records why).

    n_skus : int or None
        Number of SKUs in the panel. When given and above ``agq_max_skus``, the default
        line-up leaves out ``glmm_poisson_ri_agq`` (about 1 CPU-minute per origin at 10k SKUs,
        15x the pooled GLM and 5x the Laplace fit of the same model; benchmarks/README.md).
        Naming it in ``names`` runs it anyway.
    agq_max_skus : int
        The SKU count above which AGQ leaves the default line-up.
    plan_columns : tuple of str
        The data's plan columns (``FeatureSpec.plan_columns``). The covariate candidates use
        those other than ``promo`` as ``plan_terms`` (known-future values at the target
        month, e.g. Rossmann's open and holiday days) and then need them for the forecast
        months (``required_plan_columns``).
    plan_transforms : dict of str to str, optional
        The mapping's ``[plan_transforms]``: a plan column named there enters the covariate
        candidates transformed (``{"open_days": "log1p"}``: the term ``log1p_open_days``;
        :func:`poolcast.models._design.plan_term`).
    intermittent : bool or None
        :func:`poolcast.models.classical.is_intermittent` of the panel (at least 30% of the
        observed SKU-months are zero). False leaves Croston, TSB and ADIDA out of the default
        line-up; True or None (not computed) keeps them (they are cheap: a few seconds per
        origin at 5k SKUs, benchmarks/README.md). ``naive`` and ``auto_ets`` are always in.
    params : mapping of str to mapping, optional
        ``[backtest] params``: constructor parameters per candidate name, applied over the
        line-up's own (:func:`check_candidate_params` checks them).

    Returns
    -------
    dict of str to callable
        ``factory()`` returns a new unfitted candidate.
    """
    if names is not None:
        unknown = [n for n in names if n not in CANDIDATE_CLASSES]
        if unknown:
            raise InvalidParameterError(
                f"unknown candidate name(s) {unknown}; known candidates are {list(CANDIDATE_NAMES)}"
            )
        chosen = list(names)
    else:
        chosen = [
            n for n in CANDIDATE_NAMES if (has_promo or n not in _PROMO_SLOPE) and n not in OPT_IN
        ]
        if n_skus is not None and n_skus > agq_max_skus:
            chosen.remove("glmm_poisson_ri_agq")
        if intermittent is False:
            chosen = [n for n in chosen if n not in _INTERMITTENT]
    customer_terms = "log" if has_customers else "none"
    transforms = plan_transforms or {}
    extra_plan = tuple(
        plan_term(c, transforms.get(c, "identity")) for c in plan_columns if c != "promo"
    )
    params = params or {}
    check_candidate_params(params)
    factories: dict[str, Callable[[], Candidate]] = {}
    for name in chosen:
        cls = CANDIDATE_CLASSES[name]
        extra = dict(params.get(name, {}))
        if name in _BASELINES or name in _CLASSICAL:
            factories[name] = partial(cls, **extra) if extra else cls
        elif name in _PANEL_ONLY:
            own = {"include_promo": has_promo, **extra}
            factories[name] = PlanFactory(cls, tuple(own.items()), extra_plan)
        elif extra_plan:
            own = {"customer_terms": customer_terms, "include_promo": has_promo, **extra}
            factories[name] = PlanFactory(cls, tuple(own.items()), extra_plan)
        else:
            own = {"customer_terms": customer_terms, "include_promo": has_promo, **extra}
            factories[name] = partial(cls, **own)
    return factories
