"""ASHA: asynchronous successive halving, stopping variant, with rungs checked for trust.

A trial is judged at each *rung* ``min * eta**k`` below ``max``: it goes on only if its value
there is within the best ``1/eta`` quantile of the values recorded at that rung so far. The
:class:`RungTrust` check turns a rung off while its decisions would have stopped the trials that
end best (learning curves that cross), so a misleading early step stops no one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from coordinator.scheduling._base import Decision, TrialScheduler, checked_fidelity, checked_seed
from tunefleet.errors import InvalidInputError
from tunefleet.study import Fidelity

__all__ = ["ASHAScheduler", "Rungs", "RungTrust", "quantile", "remove_value", "rung_levels"]


def quantile(values: list[float] | np.ndarray, share: float) -> float:
    """The ``share`` quantile of ``values`` (numpy's linear interpolation), where huge finite
    values cannot overflow.

    Exactly ``np.quantile(values, share)`` unless the finite values span more than a double
    holds (``max - min`` beyond about 1.8e308, which made numpy's interpolation give inf or
    NaN, so that a trial far worse than the rest went on): then the quantile of the values
    times 1/4 (a power of two, so exact), times 4. Infinite and NaN values count as numpy
    counts them either way."""
    arr = np.asarray(values, dtype=float)
    if arr.size and not math.isfinite(float(arr.max()) - float(arr.min())):
        finite = arr[np.isfinite(arr)]
        if finite.size and not math.isfinite(float(finite.max()) - float(finite.min())):
            return float(np.quantile(arr * 0.25, share)) * 4.0
    return float(np.quantile(arr, share))


def remove_value(values: list[float], value: float) -> None:
    """Remove one value equal to ``value`` from ``values`` (NaN matching NaN, which
    ``list.remove`` finds only by identity, and a pickle round trip does not keep that)."""
    nan = math.isnan(value)
    for i, v in enumerate(values):
        if v == value or (nan and math.isnan(v)):
            del values[i]
            return
    raise ValueError(f"{value!r} is not among the recorded values")


def rung_levels(fidelity: Fidelity) -> list[int]:
    """The steps ``min * eta**k`` strictly below ``max`` (empty when ``min == max``); a
    fidelity :func:`~coordinator.scheduling._base.checked_fidelity` refuses raises
    :class:`~tunefleet.errors.InvalidInputError`."""
    fidelity = checked_fidelity(fidelity)
    levels, step = [], fidelity.min
    while step < fidelity.max:
        levels.append(step)
        step *= fidelity.eta
    return levels


class RungTrust:
    """How reliably each rung's stop decisions spare the trials that end best.

    Contract: :meth:`record` every rung value and every full-fidelity value of a trial. A
    *pair* is a trial with both a value at the rung and one at full fidelity. Among the pairs,
    the best ``1/eta`` by final value (at least one) are the ones a rung must not stop; the
    rung's *false-stop rate* is the fraction of them whose rung value lies above the rung's
    cutoff (the ``1/eta`` quantile of every value recorded there). :meth:`reliability` maps it
    to ``[0, 1]``: 1 when the rung stopped none of them, 0 when it did no better than a coin
    with the rung's odds. :meth:`trusted` is true until ``min_pairs`` pairs exist, and after
    that while the reliability is at least ``threshold`` (``None``: every rung always).

    Judging decisions rather than the whole ranking (Kendall's tau) keeps a good searcher from
    looking untrustworthy: its trials are all fairly good, so their ranking among themselves
    is noisy even where the rung separates good from bad well.
    """

    def __init__(
        self, threshold: float | None = 0.5, min_pairs: int = 6, eta: int = 3
    ) -> None:
        if threshold is not None and not (
                isinstance(threshold, (int, float)) and not isinstance(threshold, bool)
                and 0.0 <= threshold <= 1.0):
            raise InvalidInputError("trust_threshold", threshold,
                                    "must be a number in [0, 1], or None: trust every rung")
        self.threshold = threshold
        self.min_pairs = min_pairs
        self.eta = eta
        self._at_rung: dict[int, dict[int, float]] = {}
        self._final: dict[int, float] = {}
        self._cache: dict[int, tuple[int, int, float]] = {}

    def record(self, rung: int, trial_id: int, value: float) -> None:
        self._at_rung.setdefault(rung, {}).setdefault(trial_id, value)

    def record_final(self, trial_id: int, value: float) -> None:
        self._final.setdefault(trial_id, value)

    def forget(self, trial_id: int) -> None:
        """Drop every value of ``trial_id`` (a failed trial has no valid result)."""
        for values in self._at_rung.values():
            values.pop(trial_id, None)
        self._final.pop(trial_id, None)
        self._cache.clear()

    def reliability(self, rung: int) -> tuple[int, float] | None:
        """(pairs, reliability in ``[0, 1]``) of the rung, or ``None`` while fewer than
        ``min_pairs`` pairs exist."""
        values = self._at_rung.get(rung, {})
        pairs = [(values[t], f) for t, f in self._final.items() if t in values]
        n = len(pairs)
        if n < self.min_pairs:
            return None
        cached = self._cache.get(rung)
        if cached is not None and cached[:2] == (n, len(values)):
            return n, cached[2]
        cutoff = quantile(np.fromiter(values.values(), float), 1.0 / self.eta)
        pairs.sort(key=lambda pair: pair[1])
        best = pairs[: max(1, -(-n // self.eta))]
        false_stops = sum(1 for v, _ in best if v > cutoff) / len(best)
        result = min(max(1.0 - false_stops / (1.0 - 1.0 / self.eta), 0.0), 1.0)
        self._cache[rung] = (n, len(values), result)
        return n, result

    def trusted(self, rung: int) -> bool:
        if self.threshold is None:
            return True
        evidence = self.reliability(rung)
        return evidence is None or evidence[1] >= self.threshold


class Rungs:
    """The values recorded at each rung of one successive-halving bracket.

    A trial continues at a rung when its value is at most the ``1/eta`` quantile of the values
    recorded there, or the share that :meth:`on_report`'s ``keep`` names for that level.
    """

    def __init__(self, levels: list[int], eta: int) -> None:
        self.levels = levels
        self.eta = eta
        self.values: list[list[float]] = [[] for _ in levels]
        self._next: dict[int, int] = {}
        self._recorded: dict[int, list[tuple[int, float]]] = {}  # trial -> (rung, value)

    def on_report(self, trial_id: int, step: int, value: float, trust: RungTrust,
                  keep: Mapping[int, float] | None = None) -> Decision:
        """Record ``value`` at every rung that ``step`` passed and judge the trial there
        (``keep``: level -> the share kept there, instead of ``1/eta``)."""
        k = self._next.get(trial_id, 0)
        decision = Decision.CONTINUE
        while k < len(self.levels) and step >= self.levels[k]:
            recorded = self.values[k]
            recorded.append(value)
            self._recorded.setdefault(trial_id, []).append((k, value))
            trust.record(self.levels[k], trial_id, value)
            share = keep.get(self.levels[k], 1.0 / self.eta) if keep else 1.0 / self.eta
            cutoff = quantile(recorded, share)
            k += 1
            if value > cutoff and trust.trusted(self.levels[k - 1]):
                decision = Decision.STOP
                break
        self._next[trial_id] = k
        return decision

    def forget(self, trial_id: int) -> None:
        """Drop the values ``trial_id`` recorded (a failed trial has no valid result). Any
        one of equal values may go: a cutoff depends only on the values, not on whose."""
        for k, value in self._recorded.pop(trial_id, []):
            remove_value(self.values[k], value)


class ASHAScheduler(TrialScheduler):
    """Asynchronous successive halving (stopping variant) over ``fidelity``.

    Contract: rungs are at ``min * eta**k < max``. At each rung a trial continues when its value
    is at most the ``1/eta`` quantile of all values recorded there (its own included), so the
    first trial at a rung always continues. A trial reaching ``max`` is never stopped. Rungs whose
    ranking disagrees with full fidelity (see :class:`RungTrust`) stop no one while that lasts.
    A trial that failed has no valid result: its values leave the rungs and the trust.

    ``fidelity`` must be a :class:`~tunefleet.study.Fidelity` a study file could give
    (integers with ``1 <= min <= max <= MAX_STEP`` and ``2 <= eta <= 1000``), ``seed`` an
    integer in ``[0, 2**63)`` and ``trust_threshold`` a number in ``[0, 1]`` or ``None``:
    anything else raises :class:`~tunefleet.errors.InvalidInputError` when it is built. A
    report at a step at or beyond ``fidelity.max`` counts as full fidelity (never stopped);
    the coordinator never passes a step beyond ``max`` (see :meth:`Tuner.tell_report
    <coordinator.scheduling.Tuner.tell_report>`).
    """

    def __init__(
        self, fidelity: Fidelity, seed: int = 0, trust_threshold: float | None = 0.5
    ) -> None:
        self.fidelity = fidelity = checked_fidelity(fidelity)
        self.seed = checked_seed(seed)
        self._rungs = Rungs(rung_levels(fidelity), fidelity.eta)
        self._trust = RungTrust(trust_threshold, eta=fidelity.eta)

    @property
    def levels(self) -> list[int]:
        return list(self._rungs.levels)

    def on_report(self, trial_id: int, step: int, value: float) -> Decision:
        if step >= self.fidelity.max:
            self._trust.record_final(trial_id, value)
            return Decision.CONTINUE
        return self._rungs.on_report(trial_id, step, value, self._trust)

    def on_fail(self, trial_id: int) -> None:
        self._rungs.forget(trial_id)
        self._trust.forget(trial_id)
