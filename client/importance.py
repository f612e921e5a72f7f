"""Which hyperparameters mattered: importances from a study's reports.

:func:`importances` fits random forests (scikit-learn) from the trials' configurations to the
objective and measures, on trials each forest did not see (repeated K-fold), how much the prediction
error grows when one parameter's values are shuffled among those trials (permutation
importance). Forests split on thresholds, so a log-scaled parameter needs no transform;
categories are coded as integers. The importances are clipped at 0 and scaled to sum to 1; the
cross-validated R^2 says how much of the objective's variation the parameters explain at all.

Multi-fidelity schedulers stop most trials early, and a value at step 3 is not comparable with
one at step 27, so every trial is read at one common step: the highest step that at least
``max(MIN_TRIALS, half of the trials)`` trials reported (:func:`common_step`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from client.results import TrialResult
from tunefleet.errors import TunefleetError

__all__ = ["Importance", "common_step", "importances", "study_importance", "MIN_TRIALS"]

MIN_TRIALS = 8
"""Fewer trials than this with a value at the common step give no importances."""


@dataclass
class Importance:
    metric: str
    step: int
    trials: int
    r2: float  # cross-validated; near 0 or below: the parameters do not explain the metric
    by_param: dict[str, float]  # sums to 1 (all 0 when nothing is explained), largest first

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "step": self.step, "trials": self.trials,
                "r2": self.r2, "importance": self.by_param}


def common_step(trials: Sequence[TrialResult], metric: str) -> int | None:
    """The highest step at which at least ``max(MIN_TRIALS, half the trials)`` trials with
    reports reported ``metric``; ``None`` when no step has that many."""
    reached: dict[int, int] = {}
    reporting = 0
    for trial in trials:
        steps = {int(r["step"]) for r in trial.reports if _finite(r.get(metric))}
        reporting += bool(steps)
        for step in steps:
            reached[step] = reached.get(step, 0) + 1
    need = max(MIN_TRIALS, math.ceil(reporting / 2))
    enough = [step for step, count in reached.items() if count >= need]
    return max(enough) if enough else None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _encode(configs: Sequence[dict[str, Any]], names: list[str]) -> np.ndarray:
    """One column per parameter: numbers as they are, anything else as its category's code."""
    columns = []
    for name in names:
        values = [c.get(name) for c in configs]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            columns.append(np.array(values, dtype=float))
        else:
            codes = {v: i for i, v in enumerate(sorted({repr(v) for v in values}))}
            columns.append(np.array([codes[repr(v)] for v in values], dtype=float))
    return np.column_stack(columns)


def importances(configs: Sequence[dict[str, Any]], values: Sequence[float], seed: int = 0,
                folds: int = 5, rounds: int = 3, repeats: int = 4
                ) -> tuple[float, dict[str, float]]:
    """``(cross-validated R^2, importance per parameter)`` of ``values`` given ``configs``.

    ``rounds`` of ``folds``-fold cross-validation, each held-out fold's columns shuffled
    ``repeats`` times. Deterministic for a seed. Raises :class:`TunefleetError` with fewer than
    :data:`MIN_TRIALS` configurations or none with a parameter.
    """
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.model_selection import RepeatedKFold

    names = sorted({name for c in configs for name in c})
    if len(configs) < MIN_TRIALS or not names:
        raise TunefleetError(f"importance needs at least {MIN_TRIALS} trials with a value and "
                             f"a parameter; got {len(configs)}")
    x, y = _encode(configs, names), np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    grow = np.zeros(len(names))
    residual = total = 0.0
    splits = RepeatedKFold(n_splits=min(folds, len(y)), n_repeats=rounds, random_state=seed)
    for k, (train, test) in enumerate(splits.split(x)):
        forest = RandomForestRegressor(n_estimators=100, min_samples_leaf=2,
                                       random_state=seed + k).fit(x[train], y[train])
        base = float(np.mean((forest.predict(x[test]) - y[test]) ** 2))
        residual += base * len(test)
        total += float(np.sum((y[test] - y[train].mean()) ** 2))
        for j in range(len(names)):
            for _ in range(repeats):
                shuffled = x[test].copy()
                shuffled[:, j] = rng.permutation(shuffled[:, j])
                err = float(np.mean((forest.predict(shuffled) - y[test]) ** 2))
                grow[j] += (err - base) * len(test) / repeats
    r2 = 1.0 - residual / total if total > 0 else 0.0
    grow = np.clip(grow, 0.0, None)
    share = grow / grow.sum() if grow.sum() > 0 else grow
    ranked = sorted(zip(names, share.tolist(), strict=True), key=lambda p: (-p[1], p[0]))
    return r2, dict(ranked)


def study_importance(trials: Sequence[TrialResult], metric: str, seed: int = 0) -> Importance:
    """Importances of a study's parameters for ``metric`` at :func:`common_step`; the trials
    need their reports (``Client.trials(study_id, include_reports=True)``)."""
    step = common_step(trials, metric)
    if step is None:
        reporting = sum(1 for t in trials if any(_finite(r.get(metric)) for r in t.reports))
        others = sorted({k for t in trials for r in t.reports for k in r} - {"step", metric})
        raise TunefleetError(
            f"importance needs at least {MIN_TRIALS} trials that reported a finite {metric} "
            f"at one step; {reporting} of this study's {len(trials)} trials reported one at "
            "all" + (f" (the metrics they reported: {', '.join(others)})"
                     if not reporting and others else ""))
    configs, values = [], []
    for trial in trials:
        for report in trial.reports:
            if int(report["step"]) == step and _finite(report.get(metric)):
                configs.append(trial.params)
                values.append(float(report[metric]))
                break
    r2, by_param = importances(configs, values, seed)
    return Importance(metric, step, len(values), r2, by_param)
