"""Asynchronous Hyperband: several ASHA brackets that differ in how early they first judge."""

from __future__ import annotations

import math

import numpy as np

from coordinator.scheduling._asha import Rungs, RungTrust, rung_levels
from coordinator.scheduling._base import Decision, TrialScheduler
from tunefleet.study import Fidelity

__all__ = ["HyperbandScheduler"]


class HyperbandScheduler(TrialScheduler):
    """Asynchronous Hyperband (stopping variant) over ``fidelity``.

    Contract: with rungs ``r_0 < r_1 < ... < r_{s-1}`` below ``max`` there are ``s + 1``
    brackets; bracket ``b`` first judges a trial at ``r_b`` (bracket ``s`` never stops one).
    Each bracket keeps its own rung records, as in ASHA. A trial's bracket is drawn from
    ``(seed, trial_id)`` alone, with Hyperband's bracket proportions
    ``(s + 1) / (s - b + 1) * eta**(s - b)``, so replays and reorderings assign it identically.
    Rungs whose ranking disagrees with full fidelity stop no one (see
    :class:`~coordinator.scheduling._asha.RungTrust`).
    """

    def __init__(
        self, fidelity: Fidelity, seed: int = 0, trust_threshold: float | None = 0.1
    ) -> None:
        self.fidelity = fidelity
        self.seed = seed
        levels = rung_levels(fidelity)
        s = len(levels)
        eta = fidelity.eta
        self._brackets = [Rungs(levels[b:], eta) for b in range(s + 1)]
        sizes = np.array([math.ceil((s + 1) / (s - b + 1) * eta ** (s - b)) for b in range(s + 1)])
        self.bracket_probabilities = sizes / sizes.sum()
        self._bracket_of: dict[int, int] = {}
        self._trust = RungTrust(trust_threshold)

    def bracket(self, trial_id: int) -> int:
        """The bracket of ``trial_id`` (a pure function of the seed and the id)."""
        b = self._bracket_of.get(trial_id)
        if b is None:
            u = np.random.default_rng([self.seed, trial_id, 0x4B]).random()
            cumulative = np.cumsum(self.bracket_probabilities)
            b = min(int(np.searchsorted(cumulative, u, side="right")), len(cumulative) - 1)
            self._bracket_of[trial_id] = b
        return b

    def on_add(self, trial_id: int) -> None:
        self.bracket(trial_id)

    def on_report(self, trial_id: int, step: int, value: float) -> Decision:
        if step >= self.fidelity.max:
            self._trust.record_final(trial_id, value)
            return Decision.CONTINUE
        return self._brackets[self.bracket(trial_id)].on_report(trial_id, step, value, self._trust)
