"""Per-variable MCMC diagnostics of ``bayes_nb2_hier`` at one backtest origin of a real cut.

Rebuilds the run's backtest splits (``--config``'s features and ``n_origins``) from a cut file
(e.g. the one ``benchmarks/heldout.py --skus 100`` writes under its work dir), fits the
candidate on one origin's horizon-1 rows with each parameterisation named, and records the
gate's figures, the worst R-hat / least bulk ESS per variable and per fixed term, and the load.
A name is a parameterisation (``auto``, ``centred``, ...) followed by ``+``-separated
variants of :func:`~poolcast.models._bayes_core.fit_posterior`'s options (default: what the
candidate uses, ``centre_sku_slope="auto"``, ``within_sku_covariates=True``, nutpie's
``diag`` adaptation): ``slope_nc`` / ``slope_c`` force the SKU slopes non-centred given the
intercepts / centred, ``nowithin`` turns off the within-SKU centring of the covariates (the
form before it), ``lowrank`` uses nutpie's low-rank mass-matrix adaptation. E.g.
``centred+slope_c+nowithin`` is the old default.

Run (Rossmann's first 100 stores, cut at 2015-04, last of 3 origins)::

    PYTHONPATH=. .venv/bin/python benchmarks/bayes_real_diagnosis.py \\
        --cut /tmp/bayes3/ross100/input/rossmann_cut_2015-04.csv --mapping rossmann \\
        --as-of 2015-04 --config benchmarks/bayes_subset.toml \\
        --param centred,noncentred,centred+slope_nc --key rossmann_100_diagnosis

``--tune`` / ``--draws`` per chain (default: the candidate's defaults).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from pathlib import Path

import numpy as np

import poolcast.models.bayes as bayes_module
from poolcast.backtest import prepare_splits
from poolcast.config import ValidationConfig, load_config, parse_month
from poolcast.features import panel_plan_columns
from poolcast.io import load_source
from poolcast.models import default_candidates, make_candidate
from poolcast.models._bayes_core import fit_posterior
from poolcast.validation import validate_panel

OUT = Path(__file__).with_name("bayes_results.json")


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def per_variable(idata) -> tuple[dict, dict]:
    import arviz as az

    post = idata["posterior"]
    post = post.to_dataset() if hasattr(post, "to_dataset") else post
    names = [v for v in post.data_vars if not v.endswith("_corr") and v != "alpha"]
    rh, ess = az.rhat(post[names]), az.ess(post[names], method="bulk")
    worst = {
        v: [round(float(np.nanmax(np.asarray(rh[v]))), 4), round(float(np.nanmin(ess[v])), 1)]
        for v in names
    }
    terms = {}
    if "beta" in rh:
        labels = rh["beta"][rh["beta"].dims[0]].values
        terms = {
            str(t): [round(float(a), 4), round(float(b), 1)]
            for t, a, b in zip(labels, np.asarray(rh["beta"]), np.asarray(ess["beta"]), strict=True)
        }
    return dict(sorted(worst.items(), key=lambda kv: -kv[1][0])), terms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cut", type=Path, required=True)
    ap.add_argument("--mapping", required=True)
    ap.add_argument("--as-of", required=True)
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--param", default="centred")
    ap.add_argument("--origin", type=int, default=-1, help="Index into the backtest origins.")
    ap.add_argument(
        "--n-origins", type=int, default=None, help="Backtest origins (default: --config's)."
    )
    ap.add_argument(
        "--no-plan",
        action="store_true",
        help="Leave out the plan covariates (what the script did before 2026-12-01 12:00).",
    )
    defaults = make_candidate("bayes_nb2_hier")
    ap.add_argument("--tune", type=int, default=defaults.tune)
    ap.add_argument("--draws", type=int, default=defaults.draws)
    ap.add_argument("--key", default=None, help="Save under this key in --out.")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    cfg = load_config(args.config)
    as_of = parse_month(args.as_of, what="--as-of")
    validated = validate_panel(
        load_source(args.cut, args.mapping), config=ValidationConfig(), as_of=as_of
    )
    panel = validated.panel
    n_origins = args.n_origins or cfg.backtest.n_origins
    split = prepare_splits(panel, feature_config=cfg.features, n_origins=n_origins)[args.origin]
    # the candidate as `poolcast run` builds it: the data's plan columns (Rossmann's open and
    # holiday days) as covariates, the mapping's transforms, the config's parameters
    plan_columns = panel_plan_columns(panel)
    lineup_kw = (
        {"plan_columns": plan_columns, "plan_transforms": dict(validated.plan_transforms)}
        if len(plan_columns) > 1 and not args.no_plan
        else {}
    )
    factory = default_candidates(
        has_customers=validated.has_customers,
        has_promo=bool(panel.get_column("promo").max() or 0),
        names=("bayes_nb2_hier",),
        params=cfg.backtest.params,
        **lineup_kw,
    )["bayes_nb2_hier"]
    rows = {}
    for name in args.param.split(","):
        param, *variants = name.split("+")
        kw: dict = {}
        for v in variants:
            kw |= {
                "slope_nc": {"centre_sku_slope": False},
                "slope_c": {"centre_sku_slope": True},
                "nowithin": {"within_sku_covariates": False},
                "lowrank": {"adaptation": "low_rank"},
                "qr": {"fixed_basis": "qr"},
                "raw": {"fixed_basis": "raw"},
                "atmean": {"levels_at_covariate_mean": True},
                "noatmean": {"levels_at_covariate_mean": False},
                "ta90": {"target_accept": 0.9},
                "ta95": {"target_accept": 0.95},
            }[v]
        # the candidate's own parameters (it passes them to fit_posterior explicitly)
        cand_kw = {
            key: kw.pop(key) for key in ("adaptation", "fixed_basis", "target_accept") if key in kw
        }
        bayes_module.fit_posterior = functools.partial(fit_posterior, **kw)
        load0 = _load()
        t0 = time.perf_counter()
        cand = factory().set_params(
            parameterization=param, tune=args.tune, draws=args.draws, **cand_kw
        )
        cand.fit(split.train, history=panel)
        wall = time.perf_counter() - t0
        model = next(iter(cand.models_.values()))
        post = model.posterior
        worst, terms = per_variable(post.idata)
        row = {
            "origin": str(split.origin),
            "n_obs": model.n_obs,
            "skus": len(model.sku_index),
            "terms": list(model.data_terms),
            "parameterization": post.parameterization,
            "variant": "+".join(variants) or None,
            "options": post.options,
            "tune": args.tune,
            "draws": args.draws,
            "wall_seconds": wall,
            "seconds": post.seconds,
            "diagnostics": post.diagnostics,
            "ineligible_reason": model.ineligible_reason,
            "alpha_mean": float(post.alpha.mean()) if post.alpha is not None else None,
            "sku_sd_mean": post.sku_sd().mean(axis=0).tolist(),
            "rhat_max_ess_bulk_min_per_variable": worst,
            "rhat_ess_bulk_per_fixed_term": terms,
            "load_before": load0,
            "load_after": _load(),
        }
        rows[name] = row
        print(name, json.dumps(row, default=float), flush=True)
    bayes_module.fit_posterior = fit_posterior
    if args.key:
        results = json.loads(args.out.read_text()) if args.out.exists() else {}
        results[args.key] = {"cut": args.cut.name, "as_of": args.as_of, "fits": rows}
        args.out.write_text(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
