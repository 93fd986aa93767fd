"""Features: values against a plain-Python reference, gaps, no-customer sources, and leakage."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import polars as pl
import pytest

from poolcast.config import FeatureConfig
from poolcast.errors import DataContractError, InvalidParameterError
from poolcast.features import (
    FeatureSpec,
    build_forecast_frame,
    build_origin_frames,
    build_training_frame,
    make_feature_spec,
)
from poolcast.splines import natural_spline_basis

CONFIG = FeatureConfig()


def _add_months(d: date, k: int) -> date:
    i = d.year * 12 + d.month - 1 + k
    return date(i // 12, i % 12 + 1, 1)


def make_panel(
    n_sku: int = 6, n_month: int = 30, *, seed: int = 0, customers: bool = True
) -> pl.DataFrame:
    """A contract panel with staggered starts and ends, gap rows (NULL sales), promo, customers."""
    rng = np.random.default_rng(seed)
    frames = []
    for s in range(n_sku):
        start = s % 3  # staggered first months
        length = n_month - start - (2 if s == n_sku - 1 else 0)  # the last SKU ends early
        months = [_add_months(date(2021, 1, 1), start + i) for i in range(length)]
        level = rng.gamma(3.0, 15.0)
        cust = rng.poisson(level * 4, size=length).astype(float)
        sales = rng.poisson(level * (1 + 0.4 * np.sin(2 * np.pi * np.arange(length) / 12)))
        gap = np.zeros(length, dtype=bool)
        gap[rng.choice(np.arange(2, length - 1), size=2, replace=False)] = True
        cust_col: list[float | None] = [None if g else c for g, c in zip(gap, cust, strict=True)]
        frames.append(
            pl.DataFrame(
                {
                    "sku": f"sku{s}",
                    "month": months,
                    "sales": [None if g else int(v) for g, v in zip(gap, sales, strict=True)],
                    "customer_count": cust_col if customers else [None] * length,
                    "promo": rng.integers(0, 2, size=length),
                    "category": "A" if s % 2 else "B",
                    "on_hand": [None] * length,
                    "is_gap": gap,
                },
                schema={
                    "sku": pl.String,
                    "month": pl.Date,
                    "sales": pl.Int64,
                    "customer_count": pl.Float64,
                    "promo": pl.Int8,
                    "category": pl.String,
                    "on_hand": pl.Int64,
                    "is_gap": pl.Boolean,
                },
            ).with_columns(pl.col("customer_count").cast(pl.Int64))
        )
    return pl.concat(frames)


# --------------------------------------------------------------------------- reference


def _reference_state(panel: pl.DataFrame, sku: str, origin: date) -> dict[str, float | None]:
    """Origin-side features computed by plain loops over the months up to the origin."""
    rows = {
        r["month"]: r
        for r in panel.filter((pl.col("sku") == sku) & (pl.col("month") <= origin)).iter_rows(
            named=True
        )
    }

    def sales(d: date) -> float | None:
        r = rows.get(d)
        return None if r is None or r["sales"] is None else float(r["sales"])

    def cust(d: date) -> float | None:
        r = rows.get(d)
        return None if r is None or r["customer_count"] is None else float(r["customer_count"])

    def window_mean(get, w: int) -> float | None:  # type: ignore[no-untyped-def]
        vals = [get(_add_months(origin, -k)) for k in range(w)]
        vals = [v for v in vals if v is not None]
        return sum(vals) / len(vals) if vals else None

    out: dict[str, float | None] = {}
    for k in CONFIG.sales_lags:
        out[f"sales_lag_{k}"] = sales(_add_months(origin, -k))
    for w in CONFIG.rolling_windows:
        out[f"sales_rm_{w}"] = window_mean(sales, w)
        out[f"cust_rm_{w}"] = window_mean(cust, w)
    observed_cust = [cust(d) for d in sorted(rows) if cust(d) is not None]
    last3 = observed_cust[-3:]
    out["log_customers"] = math.log1p(sum(last3) / len(last3)) if last3 else None
    out["n_history"] = sum(1 for d in rows if sales(d) is not None)
    return out


def test_columns_and_dtypes_follow_the_contract() -> None:
    panel = make_panel()
    spec = make_feature_spec(panel, CONFIG)
    train = build_training_frame(panel, spec)
    expected = {
        "sku": pl.String,
        "origin": pl.Date,
        "horizon": pl.Int32,
        "month": pl.Date,
        "sales": pl.Int64,
        "category": pl.String,
        "promo": pl.Int8,
        "t": pl.Float64,
        "month_of_year": pl.Int8,
        "fourier_s1": pl.Float64,
        "fourier_c1": pl.Float64,
        "fourier_s2": pl.Float64,
        "fourier_c2": pl.Float64,
        "log_customers": pl.Float64,
        **{f"cust_spline_{j}": pl.Float64 for j in range(1, CONFIG.spline_df + 1)},
        "cust_rm_3": pl.Float64,
        "cust_rm_12": pl.Float64,
        "sales_lag_0": pl.Float64,
        "sales_lag_1": pl.Float64,
        "sales_lag_2": pl.Float64,
        "sales_rm_3": pl.Float64,
        "sales_rm_12": pl.Float64,
        "sales_lag_seasonal": pl.Float64,
        "n_history": pl.Int32,
    }
    assert dict(train.schema) == expected
    assert spec.feature_columns == tuple(train.columns[5:])
    assert spec.customer_columns == (
        "log_customers",
        *(f"cust_spline_{j}" for j in range(1, 5)),
        "cust_rm_3",
        "cust_rm_12",
    )
    assert spec.horizons == (1, 2, 3)
    assert spec.epoch == date(2021, 1, 1)
    forecast = build_forecast_frame(panel, spec)
    assert dict(forecast.schema) == expected


def test_training_rows_match_a_plain_python_reference() -> None:
    panel = make_panel(n_sku=4, n_month=26, seed=5)
    spec = make_feature_spec(panel, CONFIG)
    train = build_training_frame(panel, spec)
    truth = {(r["sku"], r["month"]): r for r in panel.iter_rows(named=True)}
    last = panel["month"].max()
    # every (sku, origin, h) with an observed target at T <= last is present, and nothing else
    expected_keys = {
        (sku, origin, h)
        for (sku, origin) in truth
        for h in (1, 2, 3)
        if _add_months(origin, h) <= last
        and truth.get((sku, _add_months(origin, h)), {}).get("sales") is not None
    }
    got_keys = set(train.select("sku", "origin", "horizon").iter_rows())
    assert got_keys == expected_keys
    for row in train.iter_rows(named=True):
        sku, origin, h, month = row["sku"], row["origin"], row["horizon"], row["month"]
        assert month == _add_months(origin, h)
        ref = _reference_state(panel, sku, origin)
        for name, value in ref.items():
            if value is None:
                assert row[name] is None, (name, row)
            else:
                assert row[name] == pytest.approx(value, rel=1e-12), (name, row)
        seasonal = truth.get((sku, _add_months(month, -12)), {}).get("sales")
        assert row["sales_lag_seasonal"] == (None if seasonal is None else float(seasonal))
        assert row["sales"] == truth[(sku, month)]["sales"]
        assert row["promo"] == truth[(sku, month)]["promo"]  # promo at T (planned)
        assert row["category"] == truth[(sku, origin)]["category"]
        assert row["month_of_year"] == month.month
        assert row["t"] == pytest.approx(((month.year - 2021) * 12 + month.month - 1) / 12)
        assert row["fourier_s1"] == pytest.approx(math.sin(2 * math.pi * month.month / 12))
        assert row["fourier_c2"] == pytest.approx(math.cos(4 * math.pi * month.month / 12))
        basis = natural_spline_basis(np.array([row["log_customers"]]), spec.spline_knots)[0]
        for j, value in enumerate(basis, start=1):
            assert row[f"cust_spline_{j}"] == pytest.approx(value)


def test_gap_months_are_not_zeros() -> None:
    panel = make_panel(n_sku=3, n_month=24, seed=2)
    spec = make_feature_spec(panel, CONFIG)
    train = build_training_frame(panel, spec)
    gaps = panel.filter(pl.col("is_gap")).select("sku", "month")
    # no training row has a gap month as its target
    assert train.join(gaps, on=["sku", "month"], how="inner").height == 0
    assert train["sales"].null_count() == 0
    # a lag that lands on a gap reads NULL (never 0)
    lag0_on_gap = train.join(gaps.rename({"month": "origin"}), on=["sku", "origin"], how="inner")
    assert lag0_on_gap.height > 0
    assert lag0_on_gap["sales_lag_0"].null_count() == lag0_on_gap.height
    # the rolling mean over a window with a gap averages only the observed months
    row = lag0_on_gap.row(0, named=True)
    g = {"sku": row["sku"], "month": row["origin"]}
    prev = [
        panel.filter(
            (pl.col("sku") == g["sku"]) & (pl.col("month") == _add_months(g["month"], -k))
        )["sales"][0]
        for k in (1, 2)
    ]
    observed = [float(v) for v in prev if v is not None]
    assert row["sales_rm_3"] == pytest.approx(sum(observed) / len(observed))


def test_no_customer_counts_means_no_customer_features() -> None:
    panel = make_panel(customers=False)
    spec = make_feature_spec(panel, CONFIG)
    assert not spec.has_customers
    assert spec.customer_columns == ()
    assert spec.spline_knots is None
    train = build_training_frame(panel, spec)
    assert not [c for c in train.columns if c.startswith("cust") or c == "log_customers"]
    # also when the column is absent altogether
    spec2 = make_feature_spec(panel.drop("customer_count"), CONFIG)
    assert not spec2.has_customers
    assert build_forecast_frame(panel.drop("customer_count"), spec2).height > 0


def test_spline_knots_come_from_the_history_quantiles() -> None:
    panel = make_panel(seed=3)
    origin = date(2022, 6, 1)
    history = panel.filter(pl.col("month") <= origin)
    spec = make_feature_spec(history, CONFIG)
    log_c = [
        _reference_state(history, sku, month)["log_customers"]
        for sku, month in history.select("sku", "month").iter_rows()
    ]
    values = np.array([v for v in log_c if v is not None])
    expected = np.quantile(values, [0.05, 0.275, 0.5, 0.725, 0.95])  # Harrell's 5 knots
    np.testing.assert_allclose(spec.spline_knots, expected, rtol=1e-12)


def test_forecast_frame_rows_promo_and_short_skus() -> None:
    panel = make_panel()
    spec = make_feature_spec(panel, CONFIG)
    last = panel["month"].max()
    frame = build_forecast_frame(panel, spec)
    n_sku = panel["sku"].n_unique()
    assert frame.height == n_sku * 3
    assert frame["origin"].unique().to_list() == [last]
    assert frame["sales"].null_count() == frame.height
    assert frame["promo"].null_count() == frame.height  # no plan given: unavailable, not 0
    # the SKU whose history ends two months before the last month: lags of unseen months are NULL
    ended = panel.group_by("sku").agg(pl.col("month").max()).filter(pl.col("month") < last)
    assert ended.height == 1
    short = frame.filter(pl.col("sku") == ended["sku"][0])
    assert short["sales_lag_0"].null_count() == 3 and short["sales_lag_1"].null_count() == 3
    assert short["sales_rm_12"].null_count() == 0  # observed months inside the window
    # a planned promo calendar is used for the target months
    future = frame.select("sku", "month").with_columns(promo=pl.lit(1, pl.Int8))
    planned = build_forecast_frame(panel, spec, future=future)
    assert (planned["promo"] == 1).all()
    # an explicit earlier origin ignores later rows
    origin = date(2022, 3, 1)
    early = build_forecast_frame(panel, spec, origin=origin)
    same = build_forecast_frame(panel.filter(pl.col("month") <= origin), spec, origin=origin)
    assert early.equals(same)
    assert early["month"].max() == _add_months(origin, 3)


def test_bad_inputs_raise() -> None:
    panel = make_panel()
    with pytest.raises(InvalidParameterError, match="horizons"):
        make_feature_spec(panel, FeatureConfig(horizons=13))
    with pytest.raises(DataContractError, match="sales"):
        make_feature_spec(panel.drop("sales"), CONFIG)
    spec = make_feature_spec(panel, CONFIG)
    irregular = panel.filter(~((pl.col("sku") == "sku0") & (pl.col("month") == date(2021, 5, 1))))
    with pytest.raises(DataContractError, match="regular monthly grid"):
        build_training_frame(irregular, spec)
    with pytest.raises(InvalidParameterError, match="origin"):
        build_forecast_frame(panel, spec, origin=date(2022, 3, 15))
    with pytest.raises(DataContractError, match="customer_count"):
        build_forecast_frame(panel.drop("customer_count"), spec)
    with pytest.raises(DataContractError, match="future"):
        build_forecast_frame(panel, spec, future=panel.select("sku"))


# --------------------------------------------------------------------------- leakage


def _perturb_after(panel: pl.DataFrame, origin: date, seed: int) -> pl.DataFrame:
    """Random large sales and customer counts in every month after the origin (gaps stay gaps,
    so the same rows exist and only values differ)."""
    rng = np.random.default_rng(seed)
    n = panel.height
    later = pl.col("month") > origin
    return panel.with_columns(
        sales=pl.when(later & pl.col("sales").is_not_null())
        .then(pl.Series(rng.integers(10_000, 10_000_000, n)))
        .otherwise(pl.col("sales")),
        customer_count=pl.when(later & pl.col("customer_count").is_not_null())
        .then(pl.Series(rng.integers(10_000, 10_000_000, n)))
        .otherwise(pl.col("customer_count")),
    )


def _leaky_training_frame(history: pl.DataFrame, spec: FeatureSpec) -> pl.DataFrame:
    """A deliberately leaky builder: adds the next month's sales as a 'feature'."""
    nxt = history.select(
        "sku",
        pl.col("month").alias("origin"),
        pl.col("sales").shift(-1).over("sku").cast(pl.Float64).alias("sales_lead_1"),
    )
    return build_training_frame(history, spec).join(nxt, on=["sku", "origin"], how="left")


def _changed_rows_up_to(builder, panel, perturbed, spec, origin):  # type: ignore[no-untyped-def]
    """Rows with origin <= ``origin`` whose features differ; and the number of later rows that differ."""
    a = builder(panel, spec)
    b = builder(perturbed, spec)
    keys = ["sku", "origin", "horizon"]
    features = [c for c in a.columns if c not in ("sales", "month", *keys)]
    joined = a.join(b, on=keys, how="inner", suffix="_p")
    assert joined.height == a.height == b.height
    differs = np.zeros(joined.height, dtype=bool)
    for c in features:
        x, y = joined[c], joined[f"{c}_p"]
        if x.dtype == pl.Float64:  # bit-identical: compare IEEE bit patterns (NULL as NaN)
            xb = x.fill_null(np.nan).to_numpy().view(np.int64)
            yb = y.fill_null(np.nan).to_numpy().view(np.int64)
            differs |= xb != yb
        else:
            differs |= x.ne_missing(y).to_numpy()
    differs = pl.Series(differs)
    early = joined.filter((pl.col("origin") <= origin) & differs)
    late = joined.filter((pl.col("origin") > origin) & differs)
    target_changed = joined.filter(
        (pl.col("origin") <= origin) & pl.col("sales").ne_missing(pl.col("sales_p"))
    )
    return early, late.height, target_changed.height


@pytest.mark.parametrize("origin", [date(2021, 9, 1), date(2022, 4, 1), date(2022, 12, 1)])
def test_features_never_look_past_the_origin(origin: date) -> None:
    panel = make_panel(n_sku=8, n_month=30, seed=11)
    perturbed = _perturb_after(panel, origin, seed=12)
    # the spec (spline knots) is learned from the history up to the origin; perturbing later
    # months does not change it
    spec = make_feature_spec(panel.filter(pl.col("month") <= origin), CONFIG)
    assert spec == make_feature_spec(perturbed.filter(pl.col("month") <= origin), CONFIG)

    early, n_late, n_target = _changed_rows_up_to(
        build_training_frame, panel, perturbed, spec, origin
    )
    assert early.height == 0, early
    # the perturbation is real: later origins' features change, and so do the targets after it
    assert n_late > 0
    assert n_target > 0

    # forecast frames from any origin up to the perturbed origin are bit-identical too
    for k in (0, 2, 5):
        o = _add_months(origin, -k)
        assert build_forecast_frame(panel, spec, origin=o).equals(
            build_forecast_frame(perturbed, spec, origin=o)
        )


def test_the_leakage_check_catches_a_leaky_builder() -> None:
    origin = date(2022, 4, 1)
    panel = make_panel(n_sku=8, n_month=30, seed=11)
    perturbed = _perturb_after(panel, origin, seed=12)
    spec = make_feature_spec(panel.filter(pl.col("month") <= origin), CONFIG)
    early, _, _ = _changed_rows_up_to(_leaky_training_frame, panel, perturbed, spec, origin)
    assert early.height > 0
    assert (early["origin"] == origin).all()  # exactly the rows that read month origin + 1


def test_origin_frames_equal_the_two_builders() -> None:
    panel = make_panel(seed=8)
    last = panel["month"].max()
    for origin in (last, _add_months(last, -1), date(2022, 2, 1)):
        history = panel.filter(pl.col("month") <= origin)
        spec = make_feature_spec(history, CONFIG)
        future = panel.filter(pl.col("month") > origin).select("sku", "month", "promo")
        train, rows = build_origin_frames(panel, spec, origin=origin, future=future)
        assert train.equals(build_training_frame(history, spec))
        assert rows.equals(build_forecast_frame(panel, spec, origin=origin, future=future))


# --------------------------------------------------------------------------- plan columns


PLAN = ("promo", "open_days", "price")


def make_plan_panel(seed: int = 21) -> pl.DataFrame:
    """make_panel plus two numeric plan columns (NULL on gap rows, as validation writes them)."""
    panel = make_panel(n_sku=8, n_month=30, seed=seed)
    rng = np.random.default_rng(seed + 1)
    n = panel.height
    return panel.with_columns(
        open_days=pl.when(pl.col("is_gap"))
        .then(None)
        .otherwise(pl.Series(rng.integers(20, 28, n).astype(float))),
        price=pl.Series(rng.uniform(1.0, 3.0, n)),
    )


def _perturb_plan_after(panel: pl.DataFrame, origin: date, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    later = pl.col("month") > origin
    n = panel.height
    return panel.with_columns(
        open_days=pl.when(later).then(pl.Series(rng.uniform(100, 200, n))).otherwise("open_days"),
        price=pl.when(later).then(pl.Series(rng.uniform(100, 200, n))).otherwise("price"),
        promo=pl.when(later).then(1 - pl.col("promo")).otherwise("promo").cast(pl.Int8),
    )


def _differing_columns(a: pl.DataFrame, b: pl.DataFrame) -> dict[str, int]:
    """Per column, the number of rows whose values differ (rows aligned by key)."""
    keys = ["sku", "origin", "horizon"]
    joined = a.join(b, on=keys, how="inner", suffix="_p")
    assert joined.height == a.height == b.height
    out = {}
    for c in a.columns:
        if c in keys:
            continue
        n = int(joined.select(pl.col(c).ne_missing(pl.col(f"{c}_p")).sum()).item())
        if n:
            out[c] = n
    return out


def test_plan_columns_are_valued_at_the_target_month() -> None:
    panel = make_plan_panel()
    spec = make_feature_spec(panel, CONFIG)
    assert spec.plan_columns == PLAN
    assert set(PLAN) <= set(spec.feature_columns)
    frame = build_training_frame(panel, spec)
    truth = {(r["sku"], r["month"]): r for r in panel.iter_rows(named=True)}
    for row in frame.sample(200, seed=3).iter_rows(named=True):
        at_t = truth[(row["sku"], row["month"])]  # T = origin + h, not the origin
        assert row["open_days"] == at_t["open_days"] and row["price"] == at_t["price"]
        assert row["promo"] == at_t["promo"]
    # no plan columns declared: only promo
    assert make_feature_spec(panel, CONFIG, plan_columns=()).plan_columns == ("promo",)
    with pytest.raises(DataContractError, match="not in the history"):
        make_feature_spec(panel, CONFIG, plan_columns=("holidays",))


@pytest.mark.parametrize("origin", [date(2021, 9, 1), date(2022, 4, 1)])
def test_only_plan_columns_at_t_come_from_after_the_origin(origin: date) -> None:
    """Leakage: plan covariates at T come from the plan, everything else from up to the origin."""
    panel = make_plan_panel()
    history = panel.filter(pl.col("month") <= origin)
    spec = make_feature_spec(history, CONFIG)
    plan = panel.filter(pl.col("month") > origin).select("sku", "month", *PLAN)

    # 1. overwrite the plan columns after the origin: in the origin's forecast rows only the
    #    plan columns change (every row, since every T is after the origin) ...
    replanned = _perturb_plan_after(panel, origin, seed=5)
    new_plan = replanned.filter(pl.col("month") > origin).select("sku", "month", *PLAN)
    rows = build_forecast_frame(panel, spec, origin=origin, future=plan)
    rows_new = build_forecast_frame(replanned, spec, origin=origin, future=new_plan)
    assert _differing_columns(rows, rows_new) == dict.fromkeys(PLAN, rows.height)
    # ... and the plan values are the plan's at T
    joined = rows_new.join(new_plan, on=["sku", "month"], suffix="_plan")
    assert joined.height == rows_new.height
    for c in PLAN:
        assert joined[c].equals(joined[f"{c}_plan"].cast(joined[c].dtype), check_names=False)
    # in training rows (the backtest's panel) only plan columns of rows with T after the
    # origin change, never a feature read at the origin
    train = build_training_frame(panel, spec)
    train_new = build_training_frame(replanned, spec)
    changed = _differing_columns(
        train.filter(pl.col("month") <= origin), train_new.filter(pl.col("month") <= origin)
    )
    assert changed == {}
    later = train.filter((pl.col("origin") <= origin) & (pl.col("month") > origin))
    later_new = train_new.filter((pl.col("origin") <= origin) & (pl.col("month") > origin))
    assert set(_differing_columns(later, later_new)) == set(PLAN)

    # 2. overwrite sales and customers after the origin: nothing of the origin's rows changes
    resold = _perturb_after(panel, origin, seed=6)
    assert build_forecast_frame(resold, spec, origin=origin, future=plan).equals(rows)
    early, _, _ = _changed_rows_up_to(build_training_frame, panel, resold, spec, origin)
    assert early.height == 0

    # 3. without a plan the plan columns are unavailable (NULL), not zero
    bare = build_forecast_frame(panel, spec, origin=origin)
    assert all(bare[c].null_count() == bare.height for c in PLAN)
    assert _differing_columns(rows, bare) == {c: rows[c].drop_nulls().len() for c in PLAN}


@pytest.mark.parametrize(("policy", "trailing"), [("zero", 0.0), ("missing", None)])
def test_a_sku_that_stopped_is_seen_at_the_as_of_not_at_its_last_row(
    tmp_path, policy: str, trailing: float | None
) -> None:
    # issue 7: sku B's last row is 2024-03; the run is as of 2024-08. Its forecast features
    # must describe 2024-08 (five months without a recorded sale), not 2024-03.
    from poolcast.config import ValidationConfig
    from poolcast.io import load_source
    from poolcast.validation import validate_panel

    lines = ["sku,month,sales,customer_count"]
    lines += [f"A,2024-{m:02d},{10 + m},{100 + m}" for m in range(1, 9)]
    lines += [f"B,2024-{m:02d},50,{100 + m}" for m in range(1, 4)]
    path = tmp_path / "sales.csv"
    path.write_text("\n".join(lines) + "\n")
    result = validate_panel(
        load_source(path, "contract"),
        config=ValidationConfig(gap_policy=policy),  # type: ignore[arg-type]
        as_of=date(2024, 8, 1),
    )
    panel = result.panel
    assert panel.filter(pl.col("sku") == "B")["month"].max() == date(2024, 8, 1)
    assert result.counts.gaps == 5
    spec = make_feature_spec(panel, FeatureConfig(horizons=2, sales_lags=(0, 1)))
    rows = build_forecast_frame(panel, spec).filter(pl.col("sku") == "B")
    assert rows["origin"].unique().to_list() == [date(2024, 8, 1)]
    assert rows["sales_lag_0"].to_list() == [trailing, trailing]
    # the 3-month rolling mean covers 2024-06..08: zeros, or unknown (NULL, not a median)
    assert rows["sales_rm_3"].to_list() == [trailing, trailing]
