"""Asynchronous Hyperband: several ASHA brackets that differ in how early they first judge.

Which bracket a new trial joins is a hedge between aggressive brackets (cheap, but they trust
early steps) and cautious ones. Hyperband's fixed proportions hedge blindly; here they are only
the prior, and the hedge follows the evidence: how well each rung has ranked trials so far
compared with full fidelity (Kendall's tau, from :class:`~coordinator.scheduling._asha.RungTrust`).
"""

from __future__ import annotations

import math

import numpy as np

from coordinator.scheduling._asha import Rungs, RungTrust, rung_levels
from coordinator.scheduling._base import Decision, TrialScheduler
from tunefleet.errors import InvalidInputError
from tunefleet.study import Fidelity

__all__ = ["HyperbandScheduler"]


class HyperbandScheduler(TrialScheduler):
    """Asynchronous Hyperband (stopping variant) over ``fidelity``, with adaptive brackets.

    Contract: with rungs ``r_0 < r_1 < ... < r_{s-1}`` below ``max`` there are ``s + 1``
    brackets; bracket ``b`` first judges a trial at ``r_b`` (bracket ``s`` never stops one).
    Each bracket keeps its own rung records, as in ASHA. A trial's bracket is drawn when it
    starts, from ``(seed, trial_id)`` and :meth:`probabilities` at that moment, so the same
    events in the same order assign the same brackets (a replay rebuilds them exactly).

    Bracket choice, read as a sequence of questions: "is rung ``r_0`` reliable? then bracket 0;
    else is ``r_1``? then bracket 1; ..." with ``rho_b`` the chance to answer yes at ``r_b``.
    Hyperband's proportions ``(s + 1) / (s - b + 1) * eta**(s - b)`` are the prior ``rho_b``.
    Once ``min_pairs`` trials have a value at ``r_b`` and at full fidelity, ``rho_b`` moves
    from the prior towards ``max(tau_b, 0)`` (``tau_b``: Kendall's tau between the two), with
    the prior weighted as ``prior_pairs`` pairs. So a rung that ranks like full fidelity draws
    trials into the cheap brackets, and one whose ranking crosses pushes them to later ones.
    ``adaptive=False`` keeps Hyperband's proportions. Every trial's value at every rung counts
    as evidence, whatever its bracket. Rungs whose ranking disagrees with full fidelity stop no
    one (``trust_threshold``, see :class:`~coordinator.scheduling._asha.RungTrust`).
    """

    def __init__(
        self,
        fidelity: Fidelity,
        seed: int = 0,
        trust_threshold: float | None = 0.1,
        adaptive: bool = True,
        prior_pairs: float = 10.0,
        reliable_tau: float = 1.0,
        prior_rho: float | None = None,
        probe_share: float = 0.0,
    ) -> None:
        self.probe_share = probe_share
        if prior_pairs <= 0:
            raise InvalidInputError("prior_pairs", prior_pairs, "must be > 0")
        if not 0.0 < reliable_tau <= 1.0:
            raise InvalidInputError("reliable_tau", reliable_tau, "must be in (0, 1]")
        self.reliable_tau = reliable_tau
        self.fidelity = fidelity
        self.seed = seed
        self.adaptive = adaptive
        self.prior_pairs = prior_pairs
        levels = rung_levels(fidelity)
        self._levels = levels
        s = len(levels)
        eta = fidelity.eta
        self._brackets = [Rungs(levels[b:], eta) for b in range(s + 1)]
        sizes = np.array(
            [math.ceil((s + 1) / (s - b + 1) * eta ** (s - b)) for b in range(s + 1)], dtype=float
        )
        self.bracket_probabilities = sizes / sizes.sum()  # Hyperband's, the prior
        tails = np.cumsum(sizes[::-1])[::-1]
        self._prior_rho = sizes[:-1] / tails[:-1] if prior_rho is None else np.full(s, prior_rho)
        self._bracket_of: dict[int, int] = {}
        self._recorded: dict[int, int] = {}  # trial -> rungs whose value is recorded as evidence
        self._trust = RungTrust(trust_threshold)

    def probabilities(self) -> np.ndarray:
        """The probability of each bracket for a trial that starts now."""
        if not self.adaptive:
            return np.asarray(self.bracket_probabilities)
        out, remaining = [], 1.0
        lacking = False
        for b, level in enumerate(self._levels):
            rho = float(self._prior_rho[b])
            evidence = self._trust.agreement(level)
            lacking = lacking or evidence is None
            if evidence is not None:
                n, tau = evidence
                q = min(max(tau, 0.0) / self.reliable_tau, 1.0)
                rho = (self.prior_pairs * rho + n * q) / (self.prior_pairs + n)
            out.append(remaining * rho)
            remaining *= 1.0 - rho
        out.append(remaining)
        p = np.array(out)
        if lacking and self.probe_share > 0:
            p = (1 - self.probe_share) * p
            p[-1] += self.probe_share
        return p

    def bracket(self, trial_id: int) -> int:
        """The bracket of ``trial_id``, drawn the first time it is asked for."""
        b = self._bracket_of.get(trial_id)
        if b is None:
            u = np.random.default_rng([self.seed, trial_id, 0x4B]).random()
            cumulative = np.cumsum(self.probabilities())
            b = min(int(np.searchsorted(cumulative, u, side="right")), len(cumulative) - 1)
            self._bracket_of[trial_id] = b
        return b

    def on_add(self, trial_id: int) -> None:
        self.bracket(trial_id)

    def on_report(self, trial_id: int, step: int, value: float) -> Decision:
        if step >= self.fidelity.max:
            self._trust.record_final(trial_id, value)
            return Decision.CONTINUE
        k = self._recorded.get(trial_id, 0)
        while k < len(self._levels) and step >= self._levels[k]:
            self._trust.record(self._levels[k], trial_id, value)
            k += 1
        self._recorded[trial_id] = k
        return self._brackets[self.bracket(trial_id)].on_report(trial_id, step, value, self._trust)
