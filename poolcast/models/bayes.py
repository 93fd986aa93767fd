"""Bayesian hierarchical GLMM in PyMC: observations in SKUs in categories.

Model (per fitted horizon; the maths of the levels is in :mod:`poolcast.models._bayes_core`),
for month t of SKU i in category c = c(i):

.. math::
   y_{it} \\sim \\text{NB2}(\\mu_{it}, \\alpha)\\ (\\text{or Poisson}),\\qquad
   \\log\\mu_{it} = \\beta_0 + x_{it}^\\top\\beta
     + (a_{c0} + b_{i0}) + (a_{c1} + b_{i1})\\,\\text{promo}_{it},

with the shared covariates of :mod:`poolcast.models._design` in :math:`x` (trend, Fourier
seasonality, customer features, promo: the same spec as the GLMM candidates), SKU effects
:math:`b_i \\sim N(0, \\Sigma)` with an LKJ prior on the correlation of :math:`\\Sigma`, and
category effects :math:`a_c \\sim N(0, \\operatorname{diag}(\\tau^2))` with the category-level
scale :math:`\\tau`. The random promo slope is used only when promo varies in the training
frame (else k = 1, a random intercept per SKU and per category). **Two levels when the data
has no category** (the ``category`` column absent or all null): :math:`a_c` is dropped and
``describe()`` says so (``levels = 2``, ``category_level`` = the reason).

Priors (weakly informative, on the log scale of the mean) and why:

* :math:`\\beta_0 \\sim N(\\log\\bar y, 2^2)`: centred at the log of the mean count (the
  continuous covariates are centred, so :math:`\\beta_0` is the log mean at average
  covariates); SD 2 allows a factor :math:`e^{\\pm 4}` around it.
* :math:`\\beta_j \\sim N(0, 1)`: a unit change of a covariate (one year of trend, one unit
  of log customers, a promo month) multiplying the mean by more than :math:`e^2 \\approx 7.4`
  is implausible in monthly retail demand; the data overrule it easily.
* SKU SDs :math:`\\sigma_j \\sim \\text{HalfNormal}(1)`: SKU levels within a factor of about
  :math:`e^{2}` of their category are typical; heavier tails are allowed.
* LKJ(:math:`\\eta = 2`) on the SKU correlation: mildly favours small correlations and keeps
  the posterior away from the singular :math:`\\rho = \\pm 1` (lme4's boundary fits).
* Category scale :math:`\\tau_j \\sim \\text{HalfNormal}(0.5)`: categories differ less than SKUs
  and there are few of them, so their scale needs a tighter prior to stay identified.
* NB2: :math:`\\sqrt{\\alpha} \\sim \\text{HalfNormal}(1)` (Var = :math:`\\mu + \\alpha\\mu^2`),
  the prior on :math:`1/\\sqrt{\\theta}` recommended by the Stan prior-choice notes: it
  shrinks towards Poisson (:math:`\\alpha = 0`) without excluding strong overdispersion.

Parameterisation: ``parameterization="auto"`` (default) picks ``"noncentred"`` when the
median SKU has fewer than 12 training rows (``CENTRED_MIN_ROWS_PER_SKU``), else ``"centred"``
when the median category has at least 10 SKUs, else ``"centred_sku"`` (the SKU level centred,
the category level non-centred: small categories are thin groups); a centred choice becomes
``"noncentred"`` when a Laplace pilot's median pooling factor of the SKU intercepts is at least
0.5 (intermittent SKUs: the prior, not the data, pins their levels;
:func:`~poolcast.models._bayes_core.resolve_parameterization`); the choice is in
``describe()`` (``parameterization``). ``"noncentred"`` samples
:math:`b_i = L v_i`, :math:`a_c = \\tau\\circ u_c` with standard-normal :math:`v, u` and a
separate intercept (removes the funnel of thin groups). ``"centred"`` is hierarchical
centring: the sampler sees each SKU's total coefficients :math:`\\theta_i = m_{c(i)} + b_i`
and each category's total intercept :math:`m_{c0}` (the category promo slopes stay
non-centred, their scale is often near 0). Measured on 1k SKUs x 36 months (2 x 500 + 500):
the non-centred model fails the gate (R-hat 1.26, bulk ESS 7) on the trade-off between the
intercept and the eight category effects, which centring removes (``benchmarks/README.md``).

Sampling: nutpie (NUTS, numba backend), ``chains`` x (``tune`` + ``draws``) with the fixed
``seed``; defaults 2 x (1000 + 3000): 500 + 500 per chain left the slow scales near 0 (category
and SKU promo SDs) at a bulk ESS of 160-270 and a max R-hat over the SKU effects of 1.015-1.02
(2 chains), short of the gate (``benchmarks/README.md``). In the centred forms the covariates
enter centred within SKU (``within_sku_covariates``: the same model, the covariate slope vs
SKU level trade-off out of the sampled space) and the SKU promo slopes are sampled centred or
non-centred given the intercepts by a Laplace pilot's pooling factor
(``centre_sku_slope="auto"``, :func:`~poolcast.models._bayes_core.choose_sku_slope_form`);
every sampled level carries the covariates' mean contribution (``levels_at_covariate_mean``:
the covariates fully centred within SKU, so a common shift of the month dummies no longer
trades off against every level) and the fixed effects are sampled in a weighted-QR basis
(``fixed_basis="qr"``, :func:`~poolcast.models._bayes_core.fixed_effects_rotation`); all
the same model, recorded as ``sampling_options`` in ``describe()``. Above ``advi_threshold`` training rows the candidate uses mean-field ADVI instead
(``method="auto"``): an approximation, labelled ``sampler = "advi"`` in ``describe()`` and in
the child run. ``fit_horizons="first"`` (default) fits one posterior per origin, on the
horizon-1 rows, and forecasts every horizon with it (a third of the cost of ``"all"``).

Diagnostics (ArviZ): ``rhat_max``, ``ess_bulk_min``, ``ess_tail_min``, ``divergences``,
``bfmi_min``. R-hat > 1.01, bulk ESS < 400 or any divergence sets ``ineligible_reason_``:
the leaderboard marks the candidate ``ineligible`` (it keeps its metrics, it cannot become
champion) and the month goes on.

Forecasts: posterior predictive. For each predictive draw a posterior draw s is taken and
:math:`\\mu = \\exp(\\beta_0^s + x^\\top\\beta^s + z^\\top(a_c^s + b_i^s))`, then NB2 / Poisson
noise. A SKU unseen in training gets :math:`b \\sim N(0, \\Sigma^s)` (its category's
distribution); a category unseen too gets :math:`a \\sim N(0, \\operatorname{diag}(\\tau^{s2}))`
(the population's). The fitted candidate holds only numpy draws (and the ArviZ posterior for
the MLflow artifact), never the compiled model, so the pickled champion forecasts without PyMC
compiling anything.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import numpy as np
import polars as pl

from poolcast.errors import PoolcastError
from poolcast.models._bayes_core import (
    DIAGNOSTIC_THRESHOLDS,
    FIXED_BASES,
    HierData,
    Posterior,
    fit_posterior,
    ineligibility,
)
from poolcast.models._design import CovariateSpec, build_covariates
from poolcast.models._validation import Interval, Options
from poolcast.models.base import (
    CandidateReport,
    CovariateCandidate,
    HorizonReport,
    record_warnings,
)

__all__ = ["DIAGNOSTIC_NAMES", "BayesHierarchical", "BayesNegBinHierarchical", "BayesReport"]

DIAGNOSTIC_NAMES: tuple[str, ...] = (
    "rhat_max",
    "ess_bulk_min",
    "ess_tail_min",
    "divergences",
    "bfmi_min",
)

#: Training rows above which ``method="auto"`` uses ADVI: provisional, just above the largest
#: NUTS fit measured (1k SKUs x 36 months = 36,000 rows; README, "The Bayesian hierarchical GLMM").
ADVI_THRESHOLD = 40_000


@dataclass(frozen=True)
class BayesReport(CandidateReport):
    """:class:`CandidateReport` plus what the Bayesian child run logs.

    Fields (besides the base ones)
    ------------------------------
    diagnostics : dict of str to float
        Worst ``rhat_max, ess_bulk_min, ess_tail_min, divergences, bfmi_min`` over the fitted
        horizons (MLflow metrics of the child run).
    ineligible_reason : str or None
        Why the fit may not become champion.
    posterior : object
        ArviZ DataTree of the first fitted horizon (saved as the zarr artifact).
    draws : Posterior
        Draws of the first fitted horizon (for the plots).
    sampler : str
        ``nuts`` / ``advi`` / ``nuts_pymc``.
    """

    diagnostics: dict[str, float] = field(default_factory=dict)
    ineligible_reason: str | None = None
    posterior: Any = field(default=None, repr=False)
    draws: Any = field(default=None, repr=False)
    sampler: str = "nuts"
    category_levels: tuple[str, ...] = ()
    category_shrinkage: pl.DataFrame | None = None


@dataclass
class _BayesModel:
    spec: CovariateSpec
    data_terms: tuple[str, ...]
    slope: bool
    sku_index: dict[str, int]
    category_index: dict[str, int]
    sku_category: dict[str, str | None]
    posterior: Posterior
    levels: int
    category_note: str | None
    n_obs: int
    raw: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    ineligible_reason: str | None = None

    @property
    def beta(self) -> np.ndarray:
        return self.posterior.beta.mean(axis=0)


def _codes(values: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    levels, idx = np.unique(values.astype(str), return_inverse=True)
    return idx.astype(np.int64), tuple(str(v) for v in levels)


class BayesHierarchical(CovariateCandidate):
    """Bayesian hierarchical GLMM (SKU in category), sampled with nutpie; see module notes.

    Parameters
    ----------
    customer_terms : {"log", "spline", "none"}
    include_promo : bool
        Use promo as a fixed effect and as the random slope (when it varies).
    family : {"negbin", "poisson"}
    chains, tune, draws : int
        NUTS chains, warm-up and kept draws per chain.
    seed : int
        Sampler seed (the fit is reproducible for a given seed).
    method : {"auto", "nuts", "advi", "nuts_pymc"}
        ``"auto"``: nutpie NUTS up to ``advi_threshold`` training rows, ADVI above.
    advi_threshold : int
        Training rows per fit above which ``"auto"`` falls back to ADVI.
    parameterization : {"auto", "centred", "centred_sku", "noncentred"}
        ``"auto"``: :func:`~poolcast.models._bayes_core.choose_parameterization` (by training
        rows per SKU and SKUs per category); the choice is recorded in the report
        (``parameterization``).
    fit_horizons : {"first", "all"}
        ``"first"``: one posterior per origin (horizon 1) serves every horizon.
    max_stored_draws : int
        Posterior draws kept for forecasting (thinned evenly).
    adaptation : {"diag", "draw_diag", "low_rank"}
        nutpie's mass-matrix adaptation. ``"low_rank"`` fitted Rossmann's correlated month
        dummies where ``"diag"`` missed the gate on bulk ESS (``benchmarks/README.md``), but
        it is not measured on the 1k-SKU panel, so the default stays ``"diag"``.
    fixed_basis : {"qr", "raw"}
        How the sampler sees the fixed effects: ``"qr"`` (default) in the weighted-QR basis
        of :func:`~poolcast.models._bayes_core.fixed_effects_rotation`, where their
        approximate posterior is uncorrelated (the same model); ``"raw"`` as coefficients.
    target_accept : float
        NUTS's target acceptance rate (nutpie's default 0.8).

    Attributes
    ----------
    ineligible_reason_ : str or None
        Why the fit may not become champion (failed diagnostics), None when eligible.
    posteriors_ : dict of int to Posterior
        Draws and diagnostics per fitted horizon.
    """

    name: ClassVar[str] = "bayes_hier"
    _family: ClassVar[str] = "negbin"
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "customer_terms": CovariateCandidate._parameter_constraints["customer_terms"],
        "include_promo": [bool],
        "family": [Options(frozenset({"negbin", "poisson"}))],
        "chains": [Interval(int, 1, 16)],
        "tune": [Interval(int, 10, None)],
        "draws": [Interval(int, 10, None)],
        "seed": [Interval(int, 0, None)],
        "method": [Options(frozenset({"auto", "nuts", "advi", "nuts_pymc"}))],
        "advi_threshold": [Interval(int, 1, None)],
        "parameterization": [Options(frozenset({"auto", "centred", "centred_sku", "noncentred"}))],
        "fit_horizons": [Options(frozenset({"first", "all"}))],
        "max_stored_draws": [Interval(int, 10, None)],
        "adaptation": [Options(frozenset({"diag", "draw_diag", "low_rank"}))],
        "fixed_basis": [Options(frozenset(FIXED_BASES))],
        "target_accept": [Interval(float, 0.5, 0.999)],
    }

    ineligible_reason_: str | None = None

    def __init__(
        self,
        *,
        customer_terms: str = "log",
        include_promo: bool = True,
        family: str | None = None,
        chains: int = 2,
        tune: int = 1000,
        draws: int = 3000,
        seed: int = 0,
        method: str = "auto",
        advi_threshold: int = ADVI_THRESHOLD,
        parameterization: str = "auto",
        fit_horizons: str = "first",
        max_stored_draws: int = 1000,
        adaptation: str = "diag",
        fixed_basis: str = "qr",
        target_accept: float = 0.8,
    ) -> None:
        self.customer_terms = customer_terms
        self.include_promo = include_promo
        self.family = family if family is not None else self._family
        self.chains = chains
        self.tune = tune
        self.draws = draws
        self.seed = seed
        self.method = method
        self.advi_threshold = advi_threshold
        self.parameterization = parameterization
        self.fit_horizons = fit_horizons
        self.max_stored_draws = max_stored_draws
        self.adaptation = adaptation
        self.fixed_basis = fixed_basis
        self.target_accept = target_accept

    # -- fit --------------------------------------------------------------------------
    def fit(self, train: pl.DataFrame, *, history: pl.DataFrame | None = None) -> Self:
        """Fit the posterior per horizon (only horizon 1 with ``fit_horizons="first"``)."""
        if self.fit_horizons == "first" and "horizon" in train.columns:
            h_min = train.get_column("horizon").min()
            train = train.filter(pl.col("horizon") == h_min)
        super().fit(train, history=history)
        reasons = [
            f"h={h}: {m.ineligible_reason}"
            for h, m in self.models_.items()
            if m.ineligible_reason is not None
        ]
        self.ineligible_reason_ = (
            f"{self.name} failed its MCMC diagnostics ({'; '.join(reasons)})" if reasons else None
        )
        return self

    def _resolve_method(self, n_obs: int) -> str:
        if self.method != "auto":
            return self.method
        return "advi" if n_obs > self.advi_threshold else "nuts"

    def _fit_horizon(self, train_h: pl.DataFrame, horizon: int) -> _BayesModel:
        spec = self._covariate_spec(train_h)
        X = build_covariates(spec, train_h)
        sku_idx, sku_levels = _codes(train_h.get_column("sku").cast(pl.String).to_numpy())
        slope = None
        if self.include_promo and "promo" in spec.terms:
            slope = train_h.get_column("promo").cast(pl.Float64).fill_null(0.0).to_numpy()
        cats = (
            train_h.group_by("sku", maintain_order=True)
            .agg(pl.col("category").drop_nulls().last())
            .with_columns(pl.col("sku").cast(pl.String))
            if "category" in train_h.columns
            else None
        )
        sku_category: dict[str, str | None] = dict.fromkeys(sku_levels)
        sku_cat_codes = None
        cat_levels: tuple[str, ...] = ()
        note = None
        if cats is None or cats.get_column("category").null_count() == cats.height:
            note = "no category in the data: two levels (observations in SKUs)"
        else:
            mapping = dict(cats.iter_rows())
            names = np.array(
                [mapping.get(s) if mapping.get(s) is not None else "(none)" for s in sku_levels]
            )
            sku_cat_codes, cat_levels = _codes(names)
            sku_category = {s: str(c) for s, c in zip(sku_levels, names, strict=True)}
        data = HierData(
            y=train_h.get_column("sales").cast(pl.Int64).to_numpy(),
            X=X,
            terms=spec.terms,
            sku_idx=sku_idx,
            sku_levels=sku_levels,
            sku_category=sku_cat_codes,
            category_levels=cat_levels,
            slope=slope,
        )
        method = self._resolve_method(train_h.height)
        raw = _raw_levels(data)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                post = fit_posterior(
                    data,
                    family=self.family,
                    method=method,
                    chains=self.chains,
                    tune=self.tune,
                    draws=self.draws,
                    seed=self.seed + horizon,
                    parameterization=self.parameterization,
                    adaptation=self.adaptation,
                    fixed_basis=self.fixed_basis,
                    target_accept=self.target_accept,
                )
            except (ValueError, FloatingPointError, np.linalg.LinAlgError, RuntimeError) as exc:
                raise PoolcastError(
                    f"{self.name}: horizon {horizon}: posterior sampling failed "
                    f"({type(exc).__name__}: {exc})"
                ) from exc
        post = _thin(post, self.max_stored_draws)
        return _BayesModel(
            spec=spec,
            data_terms=spec.terms,
            slope=slope is not None,
            sku_index={s: i for i, s in enumerate(sku_levels)},
            category_index={c: i for i, c in enumerate(cat_levels)},
            sku_category=sku_category,
            posterior=post,
            levels=3 if data.has_categories else 2,
            category_note=note,
            n_obs=train_h.height,
            raw=raw,
            warnings=[w for w in record_warnings(caught) if "BLAS" not in w][:20],
            ineligible_reason=ineligibility(post.diagnostics, method=post.method),
        )

    @property
    def posteriors_(self) -> dict[int, Posterior]:
        self._check_is_fitted()
        return {h: m.posterior for h, m in self.models_.items()}

    @property
    def diagnostics_(self) -> dict[str, float]:
        """Worst diagnostics over the fitted horizons (max R-hat, min ESS, total divergences...)."""
        self._check_is_fitted()
        diags = [m.posterior.diagnostics for m in self.models_.values()]
        out: dict[str, float] = {}
        for key in DIAGNOSTIC_NAMES:
            vals = np.array([d[key] for d in diags], dtype=float)
            if np.all(np.isnan(vals)):
                out[key] = float("nan")
            elif key == "rhat_max":
                out[key] = float(np.nanmax(vals))
            elif key == "divergences":
                out[key] = float(np.nansum(vals))
            else:
                out[key] = float(np.nanmin(vals))
        return out

    def describe(self) -> BayesReport:
        """The base report plus diagnostics, the posterior and its draws (first horizon)."""
        base = super().describe()
        first = self.models_[min(self.horizons_)]
        inv_cat = sorted(first.category_index, key=first.category_index.get)
        return BayesReport(
            **{f: getattr(base, f) for f in CandidateReport.__dataclass_fields__},
            diagnostics=self.diagnostics_,
            ineligible_reason=self.ineligible_reason_,
            posterior=first.posterior.idata,
            draws=first.posterior,
            sampler=first.posterior.method,
            category_levels=tuple(inv_cat),
            category_shrinkage=category_shrinkage(first),
        )

    # -- predict ------------------------------------------------------------------------
    def _predict_horizon(
        self, model: _BayesModel, rows_h: pl.DataFrame, n_samples: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        post = model.posterior
        X = build_covariates(model.spec, rows_h)
        n = rows_h.height
        S = post.n_draws
        k = post.sku_chol.shape[1]
        draw = rng.integers(0, S, size=n_samples)  # posterior draw per predictive draw
        eta = post.beta[draw, :1].T + X @ post.beta[draw, 1:].T  # (n, n_samples)
        z = np.ones((n, k))
        if k == 2:
            z[:, 1] = rows_h.get_column("promo").cast(pl.Float64).fill_null(0.0).to_numpy()
        skus = rows_h.get_column("sku").cast(pl.String).to_list()
        row_cat = (
            rows_h.get_column("category").cast(pl.String).to_list()
            if "category" in rows_h.columns
            else [None] * n
        )
        sku_codes = np.array([model.sku_index.get(s, -1) for s in skus])
        coef = np.zeros((n, n_samples, k))
        known = sku_codes >= 0
        if known.any():
            coef[known] = np.swapaxes(post.sku_effects[draw][:, sku_codes[known], :], 0, 1)
        new = np.flatnonzero(~known)
        if new.size:  # new SKUs: b ~ N(0, Sigma^s), one draw per new SKU and predictive draw
            unique_new, inverse = np.unique(np.array(skus)[new], return_inverse=True)
            v = rng.standard_normal((unique_new.size, n_samples, k))
            b_new = np.einsum("sij,usj->usi", post.sku_chol[draw], v)
            coef[new] = b_new[inverse]
        if post.category_effects is not None:
            cat_of = [
                model.sku_category.get(s) if s in model.sku_index else c
                for s, c in zip(skus, row_cat, strict=True)
            ]
            cat_codes = np.array(
                [model.category_index.get(c, -1) if c is not None else -1 for c in cat_of]
            )
            has = cat_codes >= 0
            if has.any():
                coef[has] += np.swapaxes(post.category_effects[draw][:, cat_codes[has], :], 0, 1)
            unseen = np.flatnonzero(~has)
            if unseen.size:  # new category (or none): a ~ N(0, diag(tau^s)^2), per category
                labels = np.array([str(cat_of[i]) for i in unseen])
                unique_cat, inverse = np.unique(labels, return_inverse=True)
                u = rng.standard_normal((unique_cat.size, n_samples, k))
                coef[unseen] += (u * post.category_sd[draw][None, :, :])[inverse]
        eta = eta + np.einsum("nsk,nk->ns", coef, z)
        mu = np.exp(np.clip(eta, -30.0, 30.0))
        if post.alpha is not None:
            alpha = post.alpha[draw][None, :]
            lam = rng.gamma(1.0 / alpha, mu * alpha)
            samples = rng.poisson(lam)
        else:
            samples = rng.poisson(mu)
        return mu.mean(axis=1), samples.astype(np.int64)

    # -- report -------------------------------------------------------------------------
    def _report_horizon(self, model: _BayesModel) -> HorizonReport:
        post = model.posterior
        terms = ["(Intercept)", *model.data_terms]
        coefs = pl.DataFrame(
            {
                "term": terms,
                "estimate": post.beta.mean(axis=0),
                "std_error": post.beta.std(axis=0, ddof=1),
                "q05": np.quantile(post.beta, 0.05, axis=0),
                "q95": np.quantile(post.beta, 0.95, axis=0),
            }
        )
        effects = ["(Intercept)", "promo"][: post.sku_chol.shape[1]]
        inv = {i: s for s, i in model.sku_index.items()}
        n_sku = post.sku_effects.shape[1]
        ranef = pl.concat(
            [
                pl.DataFrame(
                    {
                        "sku": [inv[i] for i in range(n_sku)],
                        "term": [e] * n_sku,
                        "mode": post.sku_effects[:, :, j].mean(axis=0),
                        "cond_sd": post.sku_effects[:, :, j].std(axis=0, ddof=1),
                    }
                )
                for j, e in enumerate(effects)
            ]
        )
        sd = post.sku_sd()
        conv: dict[str, Any] = {
            "sampler": post.method,
            "approximate": post.method == "advi",
            "parameterization": post.parameterization,
            "parameterization_requested": self.parameterization,
            "sampling_options": dict(post.options),
            "levels": model.levels,
            "category_level": model.category_note or f"{len(model.category_index)} categories",
            "family": self.family,
            "chains": self.chains,
            "tune": self.tune,
            "draws": self.draws,
            "stored_draws": post.n_draws,
            "seconds": post.seconds,
            "diagnostics": dict(post.diagnostics),
            "thresholds": DIAGNOSTIC_THRESHOLDS,
            "ineligible_reason": model.ineligible_reason,
            "sd": {"sku": {e: float(sd[:, j].mean()) for j, e in enumerate(effects)}},
            "corr": {"sku": [float(post.sku_corr().mean())]} if post.sku_corr() is not None else {},
            "nb2_alpha": None if post.alpha is None else float(post.alpha.mean()),
            "dropped_covariates": model.spec.dropped,
            "warnings": model.warnings,
        }
        if post.category_sd is not None:
            conv["sd"]["category"] = {
                e: float(post.category_sd[:, j].mean()) for j, e in enumerate(effects)
            }
        return HorizonReport(
            formula=model.spec.formula(
                random=("(1 + promo | category/sku)" if model.slope else "(1 | category/sku)")
                if model.levels == 3
                else ("(1 + promo | sku)" if model.slope else "(1 | sku)")
            ),
            coefficients=coefs,
            random_effects=ranef,
            shrinkage=_shrinkage(model),
            convergence=conv,
        )


def _raw_levels(data: HierData) -> dict[str, Any]:
    """No-pooling estimates of each SKU's and category's level: log of its mean count over the
    overall mean (+0.5 so an all-zero SKU stays finite), with its number of rows."""
    y = data.y.astype(float)
    base = np.log(y.mean() + 0.5)
    n_sku = np.bincount(data.sku_idx, minlength=len(data.sku_levels)).astype(float)
    sku_raw = (
        np.log(np.bincount(data.sku_idx, weights=y, minlength=n_sku.size) / n_sku + 0.5) - base
    )
    out: dict[str, Any] = {"sku_n": n_sku, "sku_raw": sku_raw}
    if data.has_categories:
        cat_row = np.asarray(data.sku_category)[data.sku_idx]
        n_cat = np.bincount(cat_row, minlength=len(data.category_levels)).astype(float)
        tot = np.bincount(cat_row, weights=y, minlength=n_cat.size)
        out |= {
            "category_n": n_cat,
            "category_raw": np.log(tot / np.maximum(n_cat, 1) + 0.5) - base,
        }
    return out


def _shrinkage(model: _BayesModel) -> pl.DataFrame | None:
    """Per SKU (``sku, n_obs, raw, pooled``): raw = its no-pooling log level relative to the
    overall mean, pooled = the posterior mean of its total level effect (category + SKU +
    the intercept's offset from the overall log mean), for the shrinkage plot."""
    post = model.posterior
    if "sku_raw" not in model.raw:
        return None
    inv = {i: s for s, i in model.sku_index.items()}
    n_sku = post.sku_effects.shape[1]
    total = post.sku_effects[:, :, 0].mean(axis=0)
    if post.category_effects is not None:
        cat_mean = post.category_effects[:, :, 0].mean(axis=0)
        total = total + np.array(
            [cat_mean[model.category_index[model.sku_category[inv[i]]]] for i in range(n_sku)]
        )
    return pl.DataFrame(
        {
            "sku": [inv[i] for i in range(n_sku)],
            "n_obs": model.raw["sku_n"],
            "raw": model.raw["sku_raw"],
            "pooled": total - total.mean() + model.raw["sku_raw"].mean(),
        }
    )


def category_shrinkage(model: _BayesModel) -> pl.DataFrame | None:
    """Per category (``level, n_obs, raw, pooled``): no-pooling log level against the
    posterior mean of the category effect (both centred at the mean raw level)."""
    post = model.posterior
    if post.category_effects is None or "category_raw" not in model.raw:
        return None
    levels = sorted(model.category_index, key=model.category_index.get)
    pooled = post.category_effects[:, :, 0].mean(axis=0)
    raw = model.raw["category_raw"]
    return pl.DataFrame(
        {
            "level": levels,
            "n_obs": model.raw["category_n"],
            "raw": raw,
            "pooled": pooled - pooled.mean() + raw.mean(),
        }
    )


def _thin(post: Posterior, keep: int) -> Posterior:
    S = post.n_draws
    if S <= keep:
        return post
    idx = np.linspace(0, S - 1, keep).round().astype(int)

    def sel(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a[idx]

    return Posterior(
        beta=post.beta[idx],
        sku_effects=post.sku_effects[idx],
        category_effects=sel(post.category_effects),
        sku_chol=post.sku_chol[idx],
        category_sd=sel(post.category_sd),
        alpha=sel(post.alpha),
        method=post.method,
        diagnostics=post.diagnostics,
        idata=post.idata,
        seconds=post.seconds,
        parameterization=post.parameterization,
        options=post.options,
    )


class BayesNegBinHierarchical(BayesHierarchical):
    """NB2 hierarchical GLMM (SKU in category), nutpie NUTS; see the module notes."""

    name: ClassVar[str] = "bayes_nb2_hier"
    _family: ClassVar[str] = "negbin"
