"""What model-based searchers remember of trials, and which fidelity level they fit on.

A :class:`TrialHistory` keeps, for every suggested trial, its point in the unit cube, its reports
(step, value) and whether it is pending, finished or failed. :meth:`TrialHistory.training_set`
picks the fidelity level a model should be fitted on, BOHB style: the highest step that enough
trials reached, unless the ranking at that step disagrees with the ranking at the highest
well-populated step (learning curves that cross), in which case it moves up. Trials that a
scheduler stopped below that level count as bad only where their stopping step ranks like the
level: a stop decided by a step that ranks against it says nothing of the configuration.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import kendalltau

__all__ = ["TrialHistory", "TrainingSet", "WORST", "rank_agreement"]

WORST = 1e300  # values are capped to [-WORST, WORST]; NaN and infinity (the worst) become WORST


@dataclass
class _Trial:
    point: np.ndarray
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    state: str = "pending"  # pending | finished | failed

    @property
    def max_step(self) -> int:
        return self.steps[-1] if self.steps else -1

    def value_at(self, step: int) -> float:
        """The value of the first report at or after ``step`` (the trial must have reached it)."""
        return self.values[bisect.bisect_left(self.steps, step)]


@dataclass(frozen=True)
class TrainingSet:
    """Points with a value at ``level``, and the points that have none there.

    ``below`` are finished trials that stopped before ``level`` at a step that ranks the trials
    which reached ``level`` like ``level`` does (the scheduler judged them worse, and its judgement
    can be believed); ``pending`` are running trials that have not reached it yet.
    """

    level: int
    x: np.ndarray
    y: np.ndarray
    below: np.ndarray
    pending: np.ndarray


def _key(point: np.ndarray) -> tuple[float, ...]:
    """A point as a hashable key (exact coordinates)."""
    return tuple(np.asarray(point, dtype=float).tolist())


def _capped(value: float) -> float:
    """``value`` within ``[-WORST, WORST]``; NaN (which has no order) counts as ``WORST``."""
    v = float(value)
    return WORST if math.isnan(v) else min(max(v, -WORST), WORST)


def rank_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau between two value vectors (1: same ranking, -1: reversed, 0 when undefined)."""
    if len(a) < 3:
        return 1.0
    tau = kendalltau(a, b).statistic
    return 0.0 if not np.isfinite(tau) else float(tau)


class TrialHistory:
    """The results of a study as a searcher sees them (values to be minimised).

    Contract: :meth:`add` once per suggested trial, then :meth:`report` with increasing steps,
    then :meth:`finish` or :meth:`fail`. A finished trial with a value but no report counts as a
    report at step 0. Everything is plain data, so the history pickles.
    """

    def __init__(self, dim: int, trust_threshold: float = 0.2, reference_count: int = 5) -> None:
        self.dim = dim
        self.trust_threshold = trust_threshold
        self.reference_count = reference_count
        self._trials: dict[int, _Trial] = {}
        self._points: dict[tuple[float, ...], int] = {}  # point -> how many trials have it

    def __len__(self) -> int:
        return len(self._trials)

    def add(self, trial_id: int, point: np.ndarray) -> None:
        """Record ``trial_id`` at ``point`` (again: the trial's point is replaced)."""
        old = self._trials.get(trial_id)
        if old is not None:
            key = _key(old.point)
            self._points[key] -= 1
            if not self._points[key]:
                del self._points[key]
        self._trials[trial_id] = _Trial(np.asarray(point, dtype=float))
        self._points[_key(point)] = self._points.get(_key(point), 0) + 1

    def tried(self, point: np.ndarray) -> bool:
        """Whether some trial (pending, finished or failed) was recorded at exactly ``point``."""
        return _key(point) in self._points

    def report(self, trial_id: int, step: int, value: float) -> None:
        trial = self._trials.get(trial_id)
        if trial is None or trial.state == "failed":
            return
        if trial.steps and step <= trial.steps[-1]:
            return
        trial.steps.append(step)
        trial.values.append(_capped(value))

    def finish(self, trial_id: int, value: float | None) -> None:
        trial = self._trials.get(trial_id)
        if trial is None:
            return
        trial.state = "finished"
        if not trial.steps and value is not None:
            trial.steps.append(0)
            trial.values.append(_capped(value))

    def fail(self, trial_id: int) -> None:
        trial = self._trials.get(trial_id)
        if trial is not None:
            trial.state = "failed"

    def n_with_results(self) -> int:
        return sum(1 for t in self._trials.values() if t.steps and t.state != "failed")

    def training_set(self, min_points: int) -> TrainingSet | None:
        """The data to fit on, or ``None`` while fewer than ``min_points`` trials have results.

        The level is the highest step that at least ``min_points`` trials reached. If a higher
        *reference* step reached by ``reference_count`` trials ranks those trials differently
        (Kendall's tau below ``trust_threshold``), the level moves up to the reference step.
        """
        live = [t for t in self._trials.values() if t.state != "failed"]
        reached = sorted((t.max_step for t in live if t.steps), reverse=True)
        if len(reached) < min(min_points, self.reference_count):
            return None
        if len(reached) >= min_points:
            level = reached[min_points - 1]
            if len(reached) >= self.reference_count:
                reference = reached[self.reference_count - 1]
                if reference > level and not self._trusted(live, level, reference):
                    level = reference
        else:
            return None
        return self._split(live, level)

    def _trusted(self, live: list[_Trial], level: int, reference: int) -> bool:
        top = [t for t in live if t.steps and t.max_step >= reference]
        a = np.array([t.value_at(level) for t in top])
        b = np.array([t.value_at(reference) for t in top])
        return rank_agreement(a, b) >= self.trust_threshold

    def _split(self, live: list[_Trial], level: int) -> TrainingSet:
        """Points at ``level``; stopped trials count as bad only where their stopping step
        ranks like ``level`` (Kendall's tau at least ``trust_threshold`` over the trials that
        reached ``level``). On learning curves that cross, the trials an early step stopped are
        often the best ones, and calling them bad would steer the model away from them. With
        many distinct stopping steps (median stopping), a step is judged by the nearest lower
        one of a few steps spaced at least ``sqrt(2)`` apart (see :func:`_judging_steps`)."""
        x, y, below, pending, stopped = [], [], [], [], []
        for t in live:
            if t.steps and t.max_step >= level:
                x.append(t.point)
                y.append(t.value_at(level))
            elif t.state == "pending":
                pending.append(t.point)
            else:
                stopped.append(t)
        judge = _judging_steps(sorted({t.max_step for t in stopped if t.max_step >= 0}))
        believed = {step: self._trusted(live, step, level) for step in set(judge.values())}
        for t in stopped:
            if t.max_step < 0 or believed[judge[t.max_step]]:
                below.append(t.point)
        d = self.dim
        return TrainingSet(
            level,
            np.array(x).reshape(-1, d),
            np.array(y, dtype=float),
            np.array(below).reshape(-1, d),
            np.array(pending).reshape(-1, d),
        )


_EXACT_STEPS = 16  # up to this many distinct stopping steps, each is judged by itself
_STEP_RATIO = 2.0 ** 0.5


def _judging_steps(steps: list[int]) -> dict[int, int]:
    """Map each of the sorted distinct ``steps`` to the step whose ranking judges it: itself
    while there are at most ``_EXACT_STEPS`` of them, else the largest of a subset spaced by a
    factor of at least ``_STEP_RATIO`` that is not above it (about 20 subsets up to step
    1,000), so one suggestion costs a bounded number of rank correlations."""
    if len(steps) <= _EXACT_STEPS:
        return {step: step for step in steps}
    judge: dict[int, int] = {}
    current = steps[0]
    for step in steps:
        if step >= max(current * _STEP_RATIO, current + 1):
            current = step
        judge[step] = current
    return judge
