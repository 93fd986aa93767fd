"""Benchmark and checks of the Bayesian hierarchical GLMM (``poolcast.models.bayes``).

Parts, results to ``benchmarks/bayes_results.json`` (and ``benchmarks/README.md``):

``speed``     1k SKUs x 36 months (simulated NB2, promo slope, 8 categories), the
              candidate's default sampler settings (nutpie, 2 chains x ``TUNE`` + ``DRAWS``,
              the candidate's defaults, ``parameterization="auto"``, ``centre_sku_slope="auto"``,
              covariates centred within SKU; ``--tune`` / ``--draws`` override them): compile and sampling wall time, draws/s, min bulk
              ESS/s, the gate; the Laplace GLMM (``poolcast.glmm.fit``, two levels, the same
              covariates) on the same data in the same run; PyMC's own NUTS
              (``pm.sample(nuts_sampler="pymc")``) with ``--pymc``, by default with the same
              chains / tune / draws / seed and 2 cores (``--pymc-draws N``: N tune + N draws,
              one chain, the older cheap setting). ``--skus`` / ``--months`` set the panel
              (default 1000 x 36; other sizes are saved as ``speed_<skus>x<months>``). PyMC's
              compile is timed separately (its ``logp_dlogp_function``, cold then warm) and
              the warm re-compile that ``pm.sample`` repeats is subtracted from its wall time
              to get its sampling time.
``advi``      NUTS (defaults) against mean-field ADVI (the candidate's 20,000 iterations) at
              several panel sizes (``--rows 10000,36000,80000``: SKUs x 36 months): wall time,
              and how far ADVI's fixed-effect means are from NUTS's, in NUTS posterior SDs.
              A later run with other ``--rows`` adds its sizes to the saved ``advi``.
``recovery``  several seeds of a smaller panel: does the 90% posterior interval of each fixed
              effect and variance component contain the truth (nominal rate 0.9)?
``laplace``   a two-level NB2 panel (no category level): posterior means against
              ``poolcast.glmm.fit``'s ML estimates, in posterior SDs.

Every part records the load average next to its times (the machine is shared).

Run: ``PYTHONPATH=. python benchmarks/bayes_benchmark.py [speed|advi|recovery|laplace|all]
[--pymc] [--pymc-draws N] [--tune N] [--draws N] [--key NAME] [--seeds 5] [--skus 100] [--months 36] [--rows ...] [--out FILE]``
(``--skus`` defaults to 1000 for ``speed``, 100 for ``recovery`` / ``laplace``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from poolcast.models._bayes_core import HierData, fit_posterior, ineligibility
from poolcast.models.bayes import BayesNegBinHierarchical
from poolcast.simulate import simulate_panel

OUT = Path(__file__).with_name("bayes_results.json")
#: The candidate's sampler defaults (``--tune`` / ``--draws`` override them, see ``main``).
TUNE, DRAWS = BayesNegBinHierarchical().tune, BayesNegBinHierarchical().draws
TERMS = ("promo", "log1p_customers", "t", "fourier_s1", "fourier_c1")


def design(frame: pl.DataFrame, *, categories: bool) -> HierData:
    skus, sku_idx = np.unique(frame.get_column("sku").to_numpy(), return_inverse=True)
    month = frame.get_column("month")
    angle = 2 * np.pi * month.dt.month().to_numpy() / 12
    first = month.min()
    t = ((month.dt.year() - first.year) * 12 + month.dt.month() - first.month).to_numpy() / 12
    promo = frame.get_column("promo").to_numpy().astype(float)
    X = np.column_stack(
        [
            promo,
            np.log1p(frame.get_column("customer_count").to_numpy()),
            t,
            np.sin(angle),
            np.cos(angle),
        ]
    )
    codes, levels = None, ()
    if categories:
        per_sku = frame.group_by("sku").agg(pl.col("category").first()).sort("sku")
        lv, codes = np.unique(per_sku.get_column("category").to_numpy(), return_inverse=True)
        levels = tuple(lv)
    return HierData(
        y=frame.get_column("sales").to_numpy(),
        X=X - np.r_[0.0, X[:, 1:].mean(axis=0)],
        terms=TERMS,
        sku_idx=sku_idx,
        sku_levels=tuple(skus),
        sku_category=codes,
        category_levels=levels,
        slope=promo,
    )


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _timed_fit(data: HierData, **kw) -> tuple[dict, object]:
    load0 = _load()
    t0 = time.perf_counter()
    post = fit_posterior(data, **kw)
    wall = time.perf_counter() - t0
    sample_s = post.seconds.get("sample", wall)
    n_draws = kw.get("chains", 2) * kw.get("draws", DRAWS)
    row = {
        "method": post.method,
        "parameterization": post.parameterization,
        "chains": kw.get("chains", 2),
        "tune": kw.get("tune", TUNE),
        "draws": kw.get("draws", DRAWS),
        "options": post.options,
        "wall_seconds": wall,
        "seconds": post.seconds,
        "draws_per_second": n_draws / sample_s,
        "ess_bulk_min": post.diagnostics["ess_bulk_min"],
        "ess_bulk_min_per_second": post.diagnostics["ess_bulk_min"] / sample_s,
        "diagnostics": post.diagnostics,
        "ineligible_reason": ineligibility(post.diagnostics, method=post.method),
        "load_before": load0,
        "load_after": _load(),
    }
    return row, post


def _laplace(data: HierData) -> tuple[dict, object]:
    from poolcast.glmm import fit as glmm_fit

    frame = pl.DataFrame(
        {"sales": data.y, "sku": np.array(data.sku_levels)[data.sku_idx]}
    ).with_columns([pl.Series(n, data.X[:, j]) for j, n in enumerate(TERMS)])
    load0 = _load()
    t0 = time.perf_counter()
    res = glmm_fit(f"sales ~ {' + '.join(TERMS)} + (1 + promo | sku)", frame, family="negbin")
    return {
        "wall_seconds": time.perf_counter() - t0,
        "fixef": res.fixef,
        "sd": res.sd,
        "nb_theta": res.nb_theta,
        "load_before": load0,
        "load_after": _load(),
    }, res


def _pymc_compile(data: HierData, parameterization: str, centre_sku_slope: bool) -> dict:
    """Time PyMC's own NUTS compile (``logp_dlogp_function``, what ``pm.NUTS`` builds) cold
    and warm: ``pm.sample`` compiles it again inside its wall time, from the warm cache."""
    from poolcast.models._bayes_core import build_model

    out = {}
    for key in ("compile_cold", "compile_warm"):
        model = build_model(
            data,
            parameterization=parameterization,
            centre_sku_slope=centre_sku_slope,
            within_sku_covariates=True,
        )
        t0 = time.perf_counter()
        with model:
            model.logp_dlogp_function(ravel_inputs=True)
        out[key] = time.perf_counter() - t0
    return out


def speed(pymc: bool, pymc_draws: int | None, n_skus: int = 1000, n_months: int = 36) -> dict:
    sim = simulate_panel(n_skus, n_months, family="negbin", seed=1)
    data = design(sim.frame, categories=True)
    out: dict = {"skus": n_skus, "months": n_months, "rows": int(data.y.size)}
    row, post = _timed_fit(data, method="nuts", chains=2, tune=TUNE, draws=DRAWS, seed=1, cores=2)
    row |= {
        "sku_sd": post.sku_sd().mean(axis=0).tolist(),
        "category_sd": post.category_sd.mean(axis=0).tolist(),
        "beta_mean": post.beta.mean(axis=0).tolist(),
    }
    out["nutpie"] = row
    print("nutpie", json.dumps(row, default=float), flush=True)
    if pymc:
        chains, n = (2, DRAWS) if pymc_draws is None else (1, pymc_draws)
        compile_s = _pymc_compile(
            data, post.parameterization, post.options.get("centre_sku_slope", True)
        )
        row, post_p = _timed_fit(
            data,
            method="nuts_pymc",
            chains=chains,
            tune=n,
            draws=n,
            seed=1,
            cores=chains,
            parameterization=post.parameterization,
        )
        sample_s = row["seconds"]["sample"] - compile_s["compile_warm"]
        row |= {
            "seconds": row["seconds"] | compile_s | {"sample_minus_warm_compile": sample_s},
            "draws_per_second": chains * n / sample_s,
            "ess_bulk_min_per_second": row["ess_bulk_min"] / sample_s,
            "beta_mean": post_p.beta.mean(axis=0).tolist(),
        }
        out["pymc"] = row
        print("pymc", json.dumps(row, default=float), flush=True)
        nut = out["nutpie"]
        pymc_wall = row["wall_seconds"] + compile_s["compile_cold"]
        out["nutpie_speedup_over_pymc"] = {  # > 1: nutpie faster
            "wall": pymc_wall / nut["wall_seconds"],
            "sampling": sample_s / nut["seconds"]["sample"],
            "draws_per_second": nut["draws_per_second"] / row["draws_per_second"],
            "ess_bulk_min_per_second": nut["ess_bulk_min_per_second"]
            / row["ess_bulk_min_per_second"],
            "compile": compile_s["compile_cold"] / nut["seconds"]["compile"],
            "note": "> 1: nutpie faster; pymc wall = its separate cold compile + the pm.sample "
            "wall (which re-compiles from the warm cache); draws/s and ESS/s on sampling time",
        }
        print("speedup", out["nutpie_speedup_over_pymc"], flush=True)
    out["laplace_glmm"], _ = _laplace(data)
    print("laplace", out["laplace_glmm"], flush=True)
    return out


def advi(rows: list[int]) -> dict:
    out = {}
    for n in rows:
        skus = max(1, round(n / 36))
        sim = simulate_panel(skus, 36, family="negbin", seed=2)
        data = design(sim.frame, categories=True)
        nuts, post_n = _timed_fit(data, method="nuts", chains=2, tune=TUNE, draws=DRAWS, seed=2)
        print(n, "nuts", json.dumps(nuts, default=float), flush=True)
        vi, post_a = _timed_fit(data, method="advi", chains=2, tune=TUNE, draws=500, seed=2)
        sd = post_n.beta.std(axis=0)
        vi["fixef_gap_in_nuts_sd"] = (
            np.abs(post_a.beta.mean(axis=0) - post_n.beta.mean(axis=0)) / sd
        ).tolist()
        vi["fixef_sd_ratio_advi_over_nuts"] = (post_a.beta.std(axis=0) / sd).tolist()
        print(n, "advi", json.dumps(vi, default=float), flush=True)
        out[str(skus * 36)] = {"skus": skus, "months": 36, "nuts": nuts, "advi": vi}
    return out


def recovery(seeds: range, n_skus: int, n_months: int) -> dict:
    hits: dict[str, list[bool]] = {}
    per_seed = []
    for seed in seeds:
        sim = simulate_panel(n_skus, n_months, family="negbin", seed=seed)
        data = design(sim.frame, categories=True)
        row_fit, post = _timed_fit(data, chains=2, tune=TUNE, draws=DRAWS, seed=seed)
        truth = {n: sim.truth.fixed[n] for n in TERMS}
        draws = {n: post.beta[:, 1 + j] for j, n in enumerate(TERMS)}
        sd = post.sku_sd()
        truth |= {
            "sd_intercept": sim.truth.sd["intercept"],
            "sd_promo": sim.truth.sd["promo"],
            "corr": sim.truth.corr,
            "sd_category": sim.truth.sd["category"],
            "alpha": 1 / sim.truth.theta,
        }
        draws |= {
            "sd_intercept": sd[:, 0],
            "sd_promo": sd[:, 1],
            "corr": post.sku_corr(),
            "sd_category": post.category_sd[:, 0],
            "alpha": post.alpha,
        }
        row = {
            "seed": seed,
            "seconds": row_fit["wall_seconds"],
            "load": row_fit["load_after"],
            "parameterization": post.parameterization,
            "diagnostics": post.diagnostics,
            "ineligible_reason": row_fit["ineligible_reason"],
        }
        for name, value in truth.items():
            lo, hi = np.quantile(draws[name], [0.05, 0.95])
            hits.setdefault(name, []).append(bool(lo <= value <= hi))
            row[name] = [float(lo), float(value), float(hi)]
        per_seed.append(row)
        print(json.dumps(row, default=float), flush=True)
    total = [h for v in hits.values() for h in v]
    return {
        "panel": f"{n_skus} SKUs x {n_months} months, 8 categories, NB2 theta=5",
        "coverage_by_parameter": {k: float(np.mean(v)) for k, v in hits.items()},
        "coverage_overall": float(np.mean(total)),
        "intervals": len(total),
        "per_seed": per_seed,
    }


def laplace_agreement(n_skus: int, n_months: int) -> dict:
    sim = simulate_panel(
        n_skus, n_months, family="negbin", seed=11, n_categories=1, sd_category=0.0
    )
    data = design(sim.frame, categories=False)
    row, post = _timed_fit(data, chains=2, tune=TUNE, draws=DRAWS, seed=3)
    lap, res = _laplace(data)
    mean, sd = post.beta.mean(axis=0), post.beta.std(axis=0)
    ml = np.array(list(res.fixef.values()))
    names = list(res.fixef)
    ssd = post.sku_sd()
    comps = {
        "sd_intercept": (ssd[:, 0], res.sd["sku"]["(Intercept)"]),
        "sd_promo": (ssd[:, 1], res.sd["sku"]["promo"]),
        "alpha": (post.alpha, 1 / res.nb_theta),
    }
    gaps = {n: float(abs(m - v) / s) for n, m, v, s in zip(names, mean, ml, sd, strict=True)}
    gaps |= {n: float(abs(d.mean() - v) / d.std()) for n, (d, v) in comps.items()}
    out = {
        "panel": f"{n_skus} SKUs x {n_months} months, two levels, NB2 theta=5",
        "bayes": row,
        "laplace": lap,
        "gap_in_posterior_sd": gaps,
        "max_gap": max(gaps.values()),
    }
    print(json.dumps(out, default=float), flush=True)
    return out


def _arg(flag: str, default: str) -> str:
    return sys.argv[sys.argv.index(flag) + 1] if flag in sys.argv else default


def main() -> None:
    global TUNE, DRAWS
    part = sys.argv[1] if len(sys.argv) > 1 else "all"
    TUNE, DRAWS = int(_arg("--tune", str(TUNE))), int(_arg("--draws", str(DRAWS)))
    out = Path(_arg("--out", str(OUT)))
    results = json.loads(out.read_text()) if out.exists() else {}

    def save(key: str, value: dict) -> None:
        results[key] = value
        out.write_text(json.dumps(results, indent=2, default=float))

    if part in ("speed", "all"):
        skus, months = int(_arg("--skus", "1000")), int(_arg("--months", "36"))
        draws = int(_arg("--pymc-draws", "0")) or None
        key = "speed" if (skus, months) == (1000, 36) else f"speed_{skus}x{months}"
        key = _arg("--key", key)  # e.g. a repeat of the same panel
        save(key, speed("--pymc" in sys.argv, draws, skus, months))
    if part in ("advi", "all"):
        rows = [int(r) for r in _arg("--rows", "10000,36000,80000").split(",")]
        save("advi", results.get("advi", {}) | advi(rows))  # sizes add up over runs
    if part in ("recovery", "all"):
        seeds = int(_arg("--seeds", "5"))
        save(
            "recovery",
            recovery(range(1, seeds + 1), int(_arg("--skus", "100")), int(_arg("--months", "36"))),
        )
    if part in ("laplace", "all"):
        save("laplace", laplace_agreement(int(_arg("--skus", "100")), int(_arg("--months", "36"))))
    print(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
