"""Asynchronous Hyperband with probes: ASHA brackets, a hedge that follows the evidence.

Early steps are cheap but may rank configurations wrongly (learning curves that cross). Three
mechanisms keep the scheduler efficient when they rank well and safe when they do not:

- *probes*: a share of the compute goes to trials that the searcher draws without its model
  (quasi-random) and that are never stopped. They are a random-search hedge and, being
  unselected, the unbiased evidence of how each rung's decisions compare with full fidelity;
- *adaptive brackets*: every other trial joins a bracket that first judges at rung ``r_b``,
  drawn with Hyperband's proportions as a prior that moves with that evidence;
- *rung trust* (:class:`~coordinator.scheduling._asha.RungTrust`): a rung whose decisions would
  have stopped the probes that end best stops no one.
"""

from __future__ import annotations

import math

import numpy as np

from coordinator.scheduling._asha import Rungs, RungTrust, remove_value, rung_levels
from coordinator.scheduling._base import (
    Decision,
    TrialScheduler,
    checked_fidelity,
    checked_int,
    checked_real,
    checked_seed,
    is_integer,
)
from tunefleet.errors import InvalidInputError
from tunefleet.study import Fidelity

__all__ = ["HyperbandScheduler"]

_LEAN_LATER = 0.6  # rho of the brackets after the first in the leaning prior


class HyperbandScheduler(TrialScheduler):
    """Asynchronous Hyperband (stopping variant) over ``fidelity``, with probes.

    Contract: with rungs ``r_0 < ... < r_{s-1}`` below ``max`` there are ``s + 1`` brackets;
    bracket ``b`` first judges a trial at ``r_b`` (bracket ``s`` never stops one). A trial
    continues at a rung when its value is within the best ``1/eta`` of every value recorded at
    that rung, whatever the bracket that recorded it (``shared_rungs``; ``False`` keeps one
    record per bracket, as in the original); at the lowest rung ``r_0``, within the best
    ``first_keep`` while at most ``lean_running[0]`` trials run, ``1/eta`` from
    ``lean_running[1]`` on, linear between (``None``: ``1/eta`` always). All decisions are
    functions of the seed, the trial id and the events so far, so the same events in the same
    order give the same decisions (a replay rebuilds them exactly). A trial that failed has no
    valid result: its values leave the rungs and the probes' evidence.

    Probes (:meth:`wants_probe`): while some rung has fewer than ``min_pairs`` probes with a
    value there and at full fidelity, a new trial is a probe when probes hold less than
    ``probe_share`` of the running trials or of the compute so far (probes counted at full
    cost from their start); afterwards the share is ``probe_floor``. A probe never stops.
    While evidence is lacking and many trials run at once, the share grows to
    ``probe_share_crowded`` over the same concurrency ramp as the lean (``lean_running``:
    ``probe_share`` up to ``lean_running[0]`` trials running, ``probe_share_crowded`` from
    ``lean_running[1]`` on; ``None``: no growth).

    Brackets of the other trials, read as questions: "is rung ``r_0`` reliable? then bracket
    0; else is ``r_1``? then bracket 1; ..." with ``rho_b`` the chance of a yes at ``r_b``.
    Hyperband's proportions ``(s + 1) / (s - b + 1) * eta**(s - b)`` give the prior ``rho_b``;
    once enough probes have ended, ``rho_b`` moves towards the rung's reliability (see
    :class:`~coordinator.scheduling._asha.RungTrust`), the prior weighted as ``prior_pairs``
    probes. ``adaptive=False`` keeps Hyperband's proportions.

    The prior leans to bracket 0 while few trials run (``lean``): with ``n`` trials running,
    the new one included, ``rho_0`` is ``lean`` and every later ``rho_b`` 0.6 for
    ``n <= lean_running[0]``, Hyperband's from ``n >= lean_running[1]`` on, and a linear blend
    between. Before the probes' first results nobody knows whether early steps rank well. With
    few trials at once, a bet on them pays on most problems and the probes correct it in time
    where curves cross; with many, the whole first wave is judged before any evidence exists,
    and a wrong bet costs more than plain random search (``None``: Hyperband's prior always;
    ``adaptive=False`` ignores the lean too).

    Defaults: a rung is trusted while its reliability is at least 0.5 (at ``eta = 3``: it
    would have stopped at most a third of the best probes); 0.25 let a rung that stops half of
    them go on judging, which on the crossing-curves benchmark cost more than random search at
    8 and 32 workers on held-out seeds. Evidence counts after 3 pairs and the prior weighs as 4
    pairs, so the brackets follow the evidence sooner; probes take 15% of the compute while
    evidence is lacking. With 8 workers, 3 pairs instead of 4 (defaults version 5) cut the
    compute to the target on the crossing-curves benchmark to 0.92x (seeds 0-599: 1.05x random
    search's compute -> 0.93x) and left the other benchmarks within 2% (150 seeds, and 150
    held-out ones; on the held-out crossing seeds 600-1199, 1.02x -> 0.93x); with 1 worker it
    cost crossing 9% (0.74x -> 0.87x random search's on those seeds), with 32 it saved 3-5%.
    ``lean = 0.9`` up to 8 trials at once cut the compute to the target by about 12% at 1 and
    8 workers against Hyperband's prior; leaning at 32 workers too cost more than random
    search on the crossing-curves benchmark (``scripts/bench_schedulers.py``, 90 seeds: 0-29,
    100-129, 200-229). ``probe_share_crowded = 0.7``: with 32 workers the whole
    first wave is judged before any probe ends, and on the crossing-curves benchmark that cost
    1.23x random search's compute over seeds 0-599; with most of the first wave as probes the
    evidence of a misleading rung comes with the first wave's end and the default needs 1.01x
    on those seeds, where 0.7 was chosen (0.6: 1.16x; 0.8: 1.01x), and 1.16x on the held-out
    seeds 600-1199 (1.26x without), its mean compute there below random search's; parity is
    what any scheduler can hope for, as random search's median lands on its second wave.
    Where early steps rank well the same probes cost compute at 32 workers: 1.03x Optuna's
    instead of 0.90x over the suite (90 seeds; branin and digits move from the first wave to
    the second in more seeds), and nothing at 1 and 8 workers, where the share never grows.
    ``first_keep = 0.2`` instead of a third: a stop at the lowest rung costs one step, a pass
    ``eta`` times as many. At 1 and 8 workers it needed 4-6% less compute over the suite on
    150 seeds (0-89, 100-129, 200-229) and on 150 held-out ones (300-449), no benchmark
    reliably worse, the digits learning curves and the crossing-curves benchmark included; at
    32 workers it saved nothing and cost the digits curves 10% on the held-out seeds, so like
    the lean it fades out as the first wave widens. Cutting harder (0.15, or 0.2 at the
    second rung too) saved more on the test functions but cost 13-40% on the digits curves.
    The lowest rung's trust is still judged at ``1/eta`` (as measured).

    Arguments, checked when the scheduler is built (anything else raises
    :class:`~tunefleet.errors.InvalidInputError` naming the argument, the value and what is
    allowed): ``fidelity`` a :class:`~tunefleet.study.Fidelity` a study file could give
    (integers with ``1 <= min <= max <= MAX_STEP``, ``2 <= eta <= 1000``); ``seed`` an integer
    in ``[0, 2**63)``; ``trust_threshold`` a number in ``[0, 1]`` or ``None``; ``adaptive``
    and ``shared_rungs`` bools; ``prior_pairs`` a finite number > 0; ``probe_share`` and
    ``probe_floor`` finite numbers in ``[0, 1)``; ``probe_share_crowded`` one in
    ``[probe_share, 1)`` or ``None``; ``min_pairs`` an integer >= 1; ``lean`` and
    ``first_keep`` finite numbers in ``(0, 1)`` or ``None``; ``lean_running`` two integers
    ``(full, none)`` with ``1 <= full < none``. A report at a step at or beyond
    ``fidelity.max`` counts as full fidelity (never stopped); the coordinator never passes a
    step beyond ``max`` (see :meth:`Tuner.tell_report <coordinator.scheduling.Tuner.tell_report>`).
    """

    def __init__(
        self,
        fidelity: Fidelity,
        seed: int = 0,
        trust_threshold: float | None = 0.5,
        adaptive: bool = True,
        prior_pairs: float = 4.0,
        probe_share: float = 0.15,
        probe_floor: float = 0.05,
        shared_rungs: bool = True,
        min_pairs: int = 3,
        lean: float | None = 0.9,
        lean_running: tuple[int, int] = (8, 16),
        probe_share_crowded: float | None = 0.7,
        first_keep: float | None = 0.2,
    ) -> None:
        fidelity = checked_fidelity(fidelity)
        for name, flag in (("adaptive", adaptive), ("shared_rungs", shared_rungs)):
            if not isinstance(flag, bool):
                raise InvalidInputError(name, flag, "must be True or False")
        prior_pairs = checked_real("prior_pairs", prior_pairs, 0.0, low_open=True)
        min_pairs = checked_int("min_pairs", min_pairs, 1)
        if lean is not None:
            lean = checked_real("lean", lean, 0.0, 1.0, low_open=True, high_open=True,
                                none="no lean")
        if not (
            isinstance(lean_running, (tuple, list)) and len(lean_running) == 2
            and all(is_integer(n) for n in lean_running)
            and 1 <= lean_running[0] < lean_running[1]
        ):
            raise InvalidInputError(
                "lean_running", lean_running, "must be two integers (full, none) with 1 <= full < none"
            )
        lean_running = (int(lean_running[0]), int(lean_running[1]))
        probe_share = checked_real("probe_share", probe_share, 0.0, 1.0, high_open=True)
        probe_floor = checked_real("probe_floor", probe_floor, 0.0, 1.0, high_open=True)
        if probe_share_crowded is not None:
            probe_share_crowded = checked_real("probe_share_crowded", probe_share_crowded, 0.0,
                                               1.0, high_open=True, none="no growth")
        if first_keep is not None:
            first_keep = checked_real("first_keep", first_keep, 0.0, 1.0, low_open=True,
                                      high_open=True, none="1/eta as at the other rungs")
        if probe_share_crowded is not None and probe_share_crowded < probe_share:
            raise InvalidInputError("probe_share_crowded", probe_share_crowded,
                                    f"must be at least probe_share ({probe_share}), or None")
        self.fidelity = fidelity
        self.seed = checked_seed(seed)
        self.adaptive = adaptive
        self.prior_pairs = prior_pairs
        self.min_pairs = min_pairs
        self.probe_share = probe_share
        self.probe_floor = probe_floor
        self.probe_share_crowded = probe_share_crowded
        self.shared_rungs = shared_rungs
        levels = rung_levels(fidelity)
        self._levels = levels
        s, eta = len(levels), fidelity.eta
        self.first_keep = first_keep
        self._brackets = [Rungs(levels[b:], eta) for b in range(s + 1)]
        self._pooled: list[list[float]] = [[] for _ in levels]
        if shared_rungs:
            for b, rungs in enumerate(self._brackets):
                rungs.values = self._pooled[b:]
        sizes = np.array(
            [math.ceil((s + 1) / (s - b + 1) * eta ** (s - b)) for b in range(s + 1)], dtype=float
        )
        self.bracket_probabilities = sizes / sizes.sum()  # Hyperband's, the prior
        tails = np.cumsum(sizes[::-1])[::-1]
        self._prior_rho = sizes[:-1] / tails[:-1]
        self.lean = lean
        self.lean_running = lean_running
        self._lean_rho = np.array([lean or 0.0] + [_LEAN_LATER] * (s - 1))[:s]
        self._bracket_of: dict[int, int] = {}
        self._recorded: dict[int, int] = {}  # trial -> rungs whose value is recorded as evidence
        self._pooled_by: dict[int, list[tuple[int, float]]] = {}  # trial -> (rung, value) pooled
        self._last_step: dict[int, int] = {}
        self._probes: set[int] = set()
        self._running: set[int] = set()
        self._steps = 0.0  # compute so far: reported steps, probes at full cost from the start
        self._probe_steps = 0.0
        # pairs (a rung value and a final one) come from probes only; the cutoff a pair is
        # judged against is taken over the probes' values and those of the trials whose
        # bracket judges the rung (measured this way: a probes-only cutoff cost the
        # crossing-curves benchmark 1.4x at 8 workers, session 8)
        self._trust = RungTrust(trust_threshold, min_pairs=min_pairs, eta=eta)
        self._probe_cache: dict[int, bool] = {}

    # --- probes -------------------------------------------------------------------------

    def _evidence_lacking(self) -> bool:
        return any(self._trust.reliability(level) is None for level in self._levels)

    def wants_probe(self, trial_id: int) -> bool:
        decided = self._probe_cache.get(trial_id)
        if decided is not None:
            return decided
        share = self.lacking_share() if self._evidence_lacking() else self.probe_floor
        running_probes = len(self._running & self._probes)
        probe = share > 0 and bool(self._levels) and (
            running_probes + 1 <= share * (len(self._running) + 1)
            or self._probe_steps <= share * self._steps
        )
        self._probe_cache[trial_id] = probe
        return probe

    def lacking_share(self) -> float:
        """The probe share while evidence is lacking, for a trial that starts now: grows from
        ``probe_share`` to ``probe_share_crowded`` as the running trials (the new one counted)
        go from ``lean_running[0]`` to ``lean_running[1]``."""
        if self.probe_share_crowded is None:
            return self.probe_share
        # asked before on_add counts the new trial
        return self._ramp(self.probe_share, self.probe_share_crowded, len(self._running) + 1)

    def _crowding(self, running: int) -> float:
        """Where ``running`` trials at once sit on the ``lean_running`` ramp: 0 up to its
        first end, 1 from its second on, linear between."""
        full, none = self.lean_running
        return min(1.0, max(0.0, (running - full) / (none - full)))

    def _ramp(self, few: float, many: float, running: int) -> float:
        """``few`` up to ``lean_running[0]`` trials running, ``many`` from ``lean_running[1]``
        on, linear between."""
        return few + self._crowding(running) * (many - few)

    def is_probe(self, trial_id: int) -> bool:
        return trial_id in self._probes

    # --- brackets -----------------------------------------------------------------------

    def prior_rho(self) -> np.ndarray:
        """``rho_b`` before evidence, for a trial that starts now (see ``lean``)."""
        if self.lean is None:
            return np.asarray(self._prior_rho)
        weight = 1.0 - self._crowding(len(self._running))
        return np.asarray(self._prior_rho + weight * (self._lean_rho - self._prior_rho))

    def probabilities(self) -> np.ndarray:
        """The probability of each bracket for a trial (not a probe) that starts now, the
        running trials counting the new one once :meth:`on_add` has been told of it."""
        if not self.adaptive:
            return np.asarray(self.bracket_probabilities)
        out, remaining = [], 1.0
        prior = self.prior_rho()
        for b, level in enumerate(self._levels):
            rho = float(prior[b])
            evidence = self._trust.reliability(level)
            if evidence is not None:
                n, q = evidence
                rho = (self.prior_pairs * rho + n * q) / (self.prior_pairs + n)
            out.append(remaining * rho)
            remaining *= 1.0 - rho
        out.append(remaining)
        return np.array(out)

    def bracket(self, trial_id: int) -> int:
        """The bracket of ``trial_id``, drawn the first time it is asked for."""
        b = self._bracket_of.get(trial_id)
        if b is None:
            if trial_id in self._probes:
                b = len(self._levels)
            else:
                u = np.random.default_rng([self.seed, trial_id, 0x4B]).random()
                cumulative = np.cumsum(self.probabilities())
                b = min(int(np.searchsorted(cumulative, u, side="right")), len(cumulative) - 1)
            self._bracket_of[trial_id] = b
        return b

    # --- events -------------------------------------------------------------------------

    def on_add(self, trial_id: int) -> None:
        if self._probe_cache.get(trial_id, False):
            self._probes.add(trial_id)
            self._probe_steps += self.fidelity.max
            self._steps += self.fidelity.max
        self._running.add(trial_id)
        self.bracket(trial_id)

    def on_report(self, trial_id: int, step: int, value: float) -> Decision:
        probe = trial_id in self._probes
        if not probe:
            self._steps += max(step - self._last_step.get(trial_id, 0), 0)
        self._last_step[trial_id] = max(step, self._last_step.get(trial_id, 0))
        first = self.bracket(trial_id)
        k = self._recorded.get(trial_id, 0)
        while k < len(self._levels) and step >= self._levels[k]:
            if probe:
                self._trust.record(self._levels[k], trial_id, value)
            if self.shared_rungs and k < first:  # rungs this trial's bracket does not judge
                self._pooled[k].append(value)
                self._pooled_by.setdefault(trial_id, []).append((k, value))
            k += 1
        self._recorded[trial_id] = k
        if step >= self.fidelity.max:
            if probe:
                self._trust.record_final(trial_id, value)
            return Decision.CONTINUE
        keep = None
        if first == 0 and self.first_keep is not None and self._levels:
            share = self._ramp(self.first_keep, 1.0 / self.fidelity.eta, len(self._running))
            keep = {self._levels[0]: share}
        return self._brackets[first].on_report(trial_id, step, value, self._trust, keep)

    def on_complete(self, trial_id: int, value: float | None) -> None:
        self._running.discard(trial_id)

    def on_fail(self, trial_id: int) -> None:
        """A failed trial has no valid result: its values leave the rungs and the evidence
        (its compute still counts towards the probes' share)."""
        self._running.discard(trial_id)
        self._brackets[self.bracket(trial_id)].forget(trial_id)
        for k, value in self._pooled_by.pop(trial_id, []):
            remove_value(self._pooled[k], value)
        self._trust.forget(trial_id)
