"""The champion: a forecaster that works from a feature frame, and the rule that moves the alias.

:class:`ChampionForecaster` bundles a fitted candidate with its frozen
:class:`~poolcast.features.FeatureSpec`; ``poolcast.tracking.log_champion_model`` logs it as
an MLflow pyfunc model whose ``predict`` takes a feature frame (the output of
``build_forecast_frame``) and returns the forecast distribution.

Alias rule (:func:`decide_alias`)
---------------------------------
The registry alias ``champion`` moves to the new model version

1. when no version holds it;
2. when the new champion beats the current one **on the same backtest**: the score
   (``selection_metric``, lower is better) is compared on one backtest fingerprint
   (:func:`backtest_fingerprint`: data hash + origins + horizons + metric + quantiles).
   If the current version's recorded fingerprint equals this run's, its recorded score is
   used. If not (a new month of data), the current champion is **re-scored on this run's
   backtest by refitting its candidate class** (the ``candidate`` version tag) at every
   origin. Loading the old fitted model instead would score it on months it was trained
   on (leakage), so a refit is the only fair comparison. When the candidate also ran in
   this month's competition, its leaderboard score *is* that refit score and is reused.
3. On an exact tie the alias moves only when the fingerprints differ (typically the same
   method fitted on a new month of data); a re-run of the same month leaves it in place.

It stays when the new champion is worse, or when its score is not finite. A current
champion whose candidate cannot be re-scored here (its class is no longer in the line-up, or
its refit fails) is not comparable, and the alias moves (the reason says so).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import polars as pl

__all__ = [
    "TAG_CANDIDATE",
    "TAG_FINGERPRINT",
    "TAG_METRIC",
    "TAG_SCORE",
    "AliasDecision",
    "ChampionForecaster",
    "ChampionRecord",
    "backtest_fingerprint",
    "decide_alias",
    "fit_champion",
    "leaderboard_score",
    "make_rescorer",
]

TAG_CANDIDATE = "poolcast.candidate"
TAG_SCORE = "poolcast.backtest_score"
TAG_FINGERPRINT = "poolcast.backtest_fingerprint"
TAG_METRIC = "poolcast.selection_metric"

_DATE_COLUMNS = ("origin", "month")


@dataclass
class ChampionForecaster:
    """A fitted candidate and its feature spec: forecasts from a feature frame.

    Fields
    ------
    name : str
        Candidate name.
    candidate : Candidate
        The fitted candidate (``fit`` already called on all history).
    spec : FeatureSpec
        The frozen feature spec the candidate was trained with.
    quantiles : tuple of float
        Quantile levels of the returned distribution.
    n_samples : int
        Predictive draws per row, for candidates that simulate.
    seed : int
        Seed of the predictive draws (same input, same output); :meth:`forecast` draws
        from ``poolcast.backtest.origin_rng(seed, origin)`` like the backtest.
    inactive_months : int
        The inactive rule N of :func:`poolcast.backtest.forecast_at_origin` (0 disables).
    calibration : str
        Recalibration mode (see :func:`poolcast.backtest.pit_recalibrate`).
    calibration_history : pl.DataFrame or None
        ``month``, ``pit`` and ``res_<level>`` of the candidate's backtest forecasts (its
        calibration set, see :func:`poolcast.backtest.conformal_shifts`).
    """

    name: str
    candidate: Any
    spec: Any
    quantiles: tuple[float, ...]
    n_samples: int
    seed: int
    inactive_months: int = 0
    calibration: str = "none"
    calibration_history: pl.DataFrame | None = None

    def predict_frame(self, features: pl.DataFrame) -> pl.DataFrame:
        """Forecast distribution (keys, ``mean``, ``q_<level>``, ``reason``) of feature rows.

        The rows of one origin go through :func:`poolcast.backtest.forecast_at_origin` (draws
        seeded by the origin, non-negative monotone quantiles, recalibration); without the
        panel there is no inactive rule (``reason`` is NULL): :meth:`forecast` applies it.
        """
        from poolcast.backtest import OriginSplit, forecast_at_origin

        frames = []
        for (origin,), rows in features.sort("origin").group_by("origin", maintain_order=True):
            split = OriginSplit(
                origin=origin,
                train=rows.head(0),
                test=rows.sort("horizon", "sku"),
                spec=self.spec,
                scale=pl.DataFrame(),
                history=pl.DataFrame(),
                activity=None,
            )
            frames.append(
                forecast_at_origin(
                    self.candidate,
                    split,
                    levels=self.quantiles,
                    n_samples=self.n_samples,
                    seed=self.seed,
                    inactive_months=0,
                    calibration=self.calibration,
                    calibration_history=self.calibration_history,
                    name=self.name,
                ).frame
            )
        return pl.concat(frames)

    def forecast(
        self, history: pl.DataFrame, *, future: pl.DataFrame | None = None
    ) -> pl.DataFrame:
        """Forecast the next horizons from the end of a validated panel (the as-of).

        The backtest's path at an origin: :func:`poolcast.backtest.make_origin_split` at
        the panel's last month with the frozen spec and the plan ``future``, then
        :func:`poolcast.backtest.forecast_at_origin` (inactive rule, recalibration, draws
        seeded by the origin, non-negative monotone quantiles).

        Returns
        -------
        pl.DataFrame
            ``sku, origin, horizon, month, mean``, ``q_<level>`` per level, ``reason``.
        """
        return self.forecast_distribution(history, future=future).frame

    def forecast_distribution(
        self, history: pl.DataFrame, *, future: pl.DataFrame | None = None
    ) -> Any:
        """The :class:`~poolcast.backtest.OriginForecast` behind :meth:`forecast`: the same
        frame plus its predictive draws (``samples``, aligned with the frame's rows; zeros for
        inactive SKUs), so the inventory plan uses exactly the published distribution."""
        from poolcast.backtest import forecast_at_origin, make_origin_split

        origin = history.get_column("month").max()
        split = make_origin_split(history, origin, spec=self.spec, plan=future)
        return forecast_at_origin(
            self.candidate,
            split,
            levels=self.quantiles,
            n_samples=self.n_samples,
            seed=self.seed,
            inactive_months=self.inactive_months,
            calibration=self.calibration,
            calibration_history=self.calibration_history,
            name=self.name,
        )

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        """pyfunc entry point: a pandas (or polars) feature frame in, a pandas forecast frame out.

        pandas datetimes in ``origin`` / ``month`` are cast back to polars ``Date``.
        """
        frame = (
            model_input if isinstance(model_input, pl.DataFrame) else pl.from_pandas(model_input)
        )
        casts = [
            pl.col(c).cast(pl.Date)
            for c in _DATE_COLUMNS
            if c in frame.columns and frame.schema[c] != pl.Date
        ]
        if casts:
            frame = frame.with_columns(casts)
        return self.predict_frame(frame).to_pandas()


@dataclass(frozen=True)
class ChampionRecord:
    """The registry's current champion, as read from its model-version tags.

    Fields
    ------
    version : str
        Registry version holding the alias.
    candidate : str
        Candidate class name (tag ``poolcast.candidate``).
    score : float
        Its backtest score (tag ``poolcast.backtest_score``).
    fingerprint : str
        Fingerprint of that backtest (tag ``poolcast.backtest_fingerprint``).
    """

    version: str
    candidate: str
    score: float
    fingerprint: str

    @classmethod
    def from_tags(cls, version: str, tags: Mapping[str, str]) -> ChampionRecord:
        """Build from model-version tags; missing tags give an empty name / NaN score."""
        score = tags.get(TAG_SCORE)
        return cls(
            version=str(version),
            candidate=tags.get(TAG_CANDIDATE, ""),
            score=float(score) if score not in (None, "") else math.nan,
            fingerprint=tags.get(TAG_FINGERPRINT, ""),
        )


@dataclass(frozen=True)
class AliasDecision:
    """Whether the alias moves, and why.

    Fields
    ------
    move : bool
        True: point ``champion`` at the new version.
    reason : str
        Human-readable reason (logged as a tag and shown in the summary).
    current_version : str or None
        The version that held the alias before.
    current_score : float or None
        The current champion's score on this run's backtest (None when there is none or it
        could not be re-scored).
    """

    move: bool
    reason: str
    current_version: str | None = None
    current_score: float | None = None


def backtest_fingerprint(
    panel: pl.DataFrame,
    *,
    origins: Sequence[date],
    horizons: int | Sequence[int],
    metric: str,
    quantiles: Sequence[float] = (),
) -> str:
    """SHA-256 of what makes two backtest scores comparable.

    The data hash is the SHA-256 of the panel sorted by (sku, month) and written as CSV
    (stable across library versions, unlike in-memory row hashes); it is combined with the
    origins, the horizons, the metric and the quantile levels.
    """
    data = panel.sort(["sku", "month"]).write_csv().encode()
    payload = {
        "data": hashlib.sha256(data).hexdigest(),
        "origins": [d.isoformat() for d in origins],
        "horizons": list(horizons) if not isinstance(horizons, int) else horizons,
        "metric": metric,
        "quantiles": [float(q) for q in quantiles],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def leaderboard_score(leaderboard: pl.DataFrame, name: str, *, metric: str) -> float | None:
    """The finite `metric` score of candidate `name` in a leaderboard, or None."""
    key = "name" if "name" in leaderboard.columns else "candidate"
    if metric not in leaderboard.columns:
        return None
    hit = leaderboard.filter(pl.col(key) == name).get_column(metric)
    if hit.len() == 0 or hit[0] is None or not math.isfinite(float(hit[0])):
        return None
    return float(hit[0])


def decide_alias(
    *,
    new_score: float,
    fingerprint: str,
    current: ChampionRecord | None,
    rescore: Callable[[str], float | None],
) -> AliasDecision:
    """Apply the alias rule in this module's docstring.

    Parameters
    ----------
    new_score : float
        The new champion's backtest score (lower is better).
    fingerprint : str
        This run's :func:`backtest_fingerprint`.
    current : ChampionRecord or None
        The version holding the alias, or None.
    rescore : callable
        ``rescore(candidate_name)`` returns that candidate's score on this run's backtest
        (or None if it cannot be computed). Called only when the fingerprints differ.
    """
    if current is None:
        return AliasDecision(True, "no current champion")
    if not math.isfinite(new_score):
        return AliasDecision(False, f"new score {new_score} is not finite", current.version)
    same = current.fingerprint == fingerprint
    if same and math.isfinite(current.score):
        current_score: float | None = current.score
        how = "recorded score on the same backtest"
    else:
        current_score = rescore(current.candidate) if current.candidate else None
        how = "re-scored on this run's backtest"
    if current_score is None or not math.isfinite(current_score):
        return AliasDecision(
            True,
            f"current champion v{current.version} ({current.candidate or 'unknown candidate'}) "
            "cannot be scored on this backtest",
            current.version,
        )
    detail = f"new {new_score:.6g} vs current v{current.version} {current_score:.6g} ({how})"
    if new_score < current_score and not math.isclose(new_score, current_score, rel_tol=1e-12):
        return AliasDecision(True, "better: " + detail, current.version, current_score)
    if math.isclose(new_score, current_score, rel_tol=1e-12) and not same:
        return AliasDecision(
            True, "tie on a new backtest (new data): " + detail, current.version, current_score
        )
    return AliasDecision(False, "not better: " + detail, current.version, current_score)


def fit_champion(
    name: str,
    factory: Callable[[], Any],
    history: pl.DataFrame,
    feature_config: Any,
    *,
    quantiles: Sequence[float],
    n_samples: int,
    seed: int,
    publish_quantiles: Sequence[float] = (),
    inactive_months: int = 0,
    calibration: str = "none",
    calibration_history: pl.DataFrame | None = None,
) -> ChampionForecaster:
    """Refit the champion's candidate class on all history, as the backtest fits at an origin.

    The origin is the panel's last month (the as-of); the training rows, spec and history
    come from :func:`poolcast.backtest.make_origin_split` there, and the fit is the
    backtest's ``factory().fit(active_training_rows(split, inactive_months),
    history=split.history)``. The forecaster
    forecasts ``all_levels(quantiles, publish_quantiles)``.
    """
    from poolcast.backtest import active_training_rows, all_levels, make_origin_split

    origin = history.get_column("month").max()
    split = make_origin_split(history, origin, feature_config=feature_config)
    candidate = factory().fit(active_training_rows(split, inactive_months), history=split.history)
    return ChampionForecaster(
        name,
        candidate,
        split.spec,
        all_levels(quantiles, publish_quantiles),
        n_samples,
        seed,
        inactive_months=inactive_months,
        calibration=calibration,
        calibration_history=calibration_history,
    )


def make_rescorer(
    leaderboard: pl.DataFrame,
    factories: Mapping[str, Callable[[], Any]],
    splits: Sequence[Any],
    *,
    metric: str,
    quantiles: Sequence[float],
    n_samples: int,
    seed: int,
    backtest_options: Mapping[str, Any] | None = None,
) -> Callable[[str], float | None]:
    """``rescore(name)``: the candidate's score on this run's backtest.

    Reuses the leaderboard when the candidate competed this month (same splits, same
    seed: the same refit score); otherwise refits the class from `factories` at every
    origin of `splits`. None when the class is unknown or its refit raises a library or
    numerical error. ``backtest_options`` are passed on to
    :func:`poolcast.backtest.backtest_candidate` (``publish_quantiles``,
    ``inactive_months``, ``calibration``), so a refit is scored as the competition was.
    """

    def rescore(name: str) -> float | None:
        score = leaderboard_score(leaderboard, name, metric=metric)
        if score is not None or name not in factories:
            return score
        from poolcast.backtest import backtest_candidate, build_leaderboard
        from poolcast.errors import PoolcastError

        try:
            result = backtest_candidate(
                name,
                factories[name],
                splits,
                quantiles=quantiles,
                n_samples=n_samples,
                seed=seed,
                **dict(backtest_options or {}),
            )
        except (PoolcastError, ArithmeticError, np.linalg.LinAlgError, ValueError):
            return None
        return leaderboard_score(build_leaderboard([result], {}), name, metric=metric)

    return rescore
