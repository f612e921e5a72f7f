"""Known-answer tests of ASHA, asynchronous Hyperband and the median stopping rule."""

from __future__ import annotations

import math
import pickle
from typing import Any

import pytest

from coordinator.scheduling import (
    ASHAScheduler,
    Decision,
    FIFOScheduler,
    HyperbandScheduler,
    MedianStoppingScheduler,
    RandomSearcher,
    Tuner,
)
from coordinator.scheduling._asha import RungTrust, rung_levels
from tunefleet.errors import InvalidInputError
from tunefleet.space import SearchSpace
from tunefleet.study import Fidelity

C, S = Decision.CONTINUE, Decision.STOP


def test_rung_levels() -> None:
    assert rung_levels(Fidelity(1, 27, 3)) == [1, 3, 9]
    assert rung_levels(Fidelity(2, 20, 3)) == [2, 6, 18]
    assert rung_levels(Fidelity(5, 5, 3)) == []
    with pytest.raises(InvalidInputError, match="fidelity"):
        rung_levels(Fidelity(3, 2, 3))


def test_asha_promotions_and_stops_on_hand_made_curves() -> None:
    asha = ASHAScheduler(Fidelity(1, 9, 3), trust_threshold=None)
    assert asha.levels == [1, 3]
    script = [
        # (trial, step, value, expected decision)
        (0, 1, 1.0, C),  # first at rung 1: always continues
        (0, 2, 0.8, C),  # between rungs: nothing to judge
        (1, 1, 2.0, S),  # rung 1 holds [1.0, 2.0]; 1/3 quantile 1.33
        (2, 1, 0.5, C),  # [0.5, 1.0, 2.0] -> 0.83
        (0, 3, 0.5, C),  # first at rung 3
        (2, 3, 0.4, C),  # rung 3 [0.5, 0.4] -> 0.43
        (3, 1, 0.9, C),  # rung 1 [0.5, 0.9, 1.0, 2.0] -> 0.9 (ties continue)
        (3, 3, 0.6, S),  # rung 3 [0.4, 0.5, 0.6] -> 0.47
        (4, 2, 3.0, S),  # step 2 passes rung 1: [0.5, 0.9, 1.0, 2.0, 3.0] -> 0.93
        (0, 9, 0.3, C),  # max fidelity: never stopped
        (2, 9, 9.9, C),
    ]
    got = [asha.on_report(t, step, v) for t, step, v, _ in script]
    assert got == [d for *_, d in script]


def test_asha_judges_every_rung_a_jump_passes() -> None:
    asha = ASHAScheduler(Fidelity(1, 27, 3), trust_threshold=None)
    assert asha.on_report(0, 1, 1.0) is C
    assert asha.on_report(0, 3, 1.0) is C
    # trial 1 jumps from nothing to step 5: judged at rung 1 (good) then rung 3 (bad)
    assert asha.on_report(1, 1, 0.5) is C
    assert asha.on_report(2, 5, 2.0) is S


def test_untrusted_rung_stops_no_one_while_curves_cross() -> None:
    def feed(asha: ASHAScheduler) -> Decision:
        # six trials: each new one looks best early, yet ends worse than all before it
        for i in range(6):
            assert asha.on_report(i, 1, 10.0 - i) is C
            assert asha.on_report(i, 3, 9.5 - i) is C
            assert asha.on_report(i, 9, float(i)) is C
        return asha.on_report(6, 1, 100.0)

    assert feed(ASHAScheduler(Fidelity(1, 9, 3), trust_threshold=None)) is S
    assert feed(ASHAScheduler(Fidelity(1, 9, 3), trust_threshold=0.1)) is C


def test_hyperband_brackets_are_a_function_of_seed_and_trial() -> None:
    fid = Fidelity(1, 27, 3)
    a, b = HyperbandScheduler(fid, seed=3), HyperbandScheduler(fid, seed=3)
    ids = list(range(400))
    forward = [a.bracket(i) for i in ids]
    backward = [b.bracket(i) for i in reversed(ids)][::-1]
    assert forward == backward
    assert set(forward) == {0, 1, 2, 3}
    # Hyperband proportions 27 : 12 : 6 : 4 (the prior; with nothing running the draws above
    # lean to bracket 0)
    assert a.bracket_probabilities.round(3).tolist() == [0.551, 0.245, 0.122, 0.082]
    assert forward.count(0) > forward.count(1) > forward.count(2) > 0
    assert [HyperbandScheduler(fid, seed=4).bracket(i) for i in ids] != forward


def _run_trials(hb: HyperbandScheduler, sign: float, n: int = 300) -> list[int]:
    """Trials whose rung values rank them like (sign 1) or against (sign -1) their finals.

    Every trial reports at steps 1, 3, 9 and 27 (a STOP is ignored); returns the probes."""
    probes = []
    for t in range(n):
        if hb.wants_probe(t):
            probes.append(t)
        hb.on_add(t)
        final = float((t * 7919) % 101)  # finals in a scrambled order
        for step in (1, 3, 9):
            hb.on_report(t, step, sign * final + 1000.0)
        hb.on_report(t, 27, final)
        hb.on_complete(t, final)
    return probes


def test_hyperband_probes_are_a_share_of_the_compute_and_never_stop() -> None:
    hb = HyperbandScheduler(
        Fidelity(1, 27, 3), seed=0, probe_share=0.2, probe_floor=0.05, min_pairs=6
    )
    probes = _run_trials(hb, 1.0, n=230)
    assert probes[0] == 0  # the first trial probes (no compute spent yet)
    assert all(hb.bracket(t) == 3 for t in probes)  # the bracket that never stops
    # every trial here costs the same: a fifth are probes until six probes have ended (the
    # evidence every rung needs), then a twentieth
    assert probes[:6] == [0, 5, 10, 15, 20, 25]
    assert 5 <= len([t for t in probes if t > 25]) <= 8
    none = HyperbandScheduler(Fidelity(1, 27, 3), seed=0, probe_share=0.0, probe_floor=0.0)
    assert _run_trials(none, 1.0, n=30) == []
    with pytest.raises(InvalidInputError, match="probe_share"):
        HyperbandScheduler(Fidelity(1, 27, 3), probe_share=1.0)


def _burst(hb: HyperbandScheduler, n: int, start: int = 0) -> list[int]:
    """Start ``n`` trials at once (no reports in between); returns the probes among them."""
    probes = []
    for t in range(start, start + n):
        if hb.wants_probe(t):
            probes.append(t)
        hb.on_add(t)
    return probes


def test_hyperband_probes_more_while_many_trials_run_and_evidence_is_lacking() -> None:
    fid = Fidelity(1, 27, 3)
    crowded = _burst(HyperbandScheduler(fid, seed=0), 32)
    plain = _burst(HyperbandScheduler(fid, seed=0, probe_share_crowded=None), 32)
    # up to 8 at once: the plain share (the first trial, then none while under 15%)
    assert [t for t in crowded if t < 8] == [t for t in plain if t < 8] == [0]
    # from 16 at once on, probes hold about 70% of the running trials instead of 15%
    assert len(plain) <= 5
    assert 0.6 <= len(crowded) / 32 <= 0.75 and len([t for t in crowded if t >= 16]) >= 13
    hb = HyperbandScheduler(fid, seed=0)
    assert hb.lacking_share() == pytest.approx(0.15)
    _burst(hb, 11)  # 12 running once the next one starts: halfway up the ramp
    assert hb.lacking_share() == pytest.approx((0.15 + 0.7) / 2)
    # once every rung has its evidence the share is the floor, however many run
    done = HyperbandScheduler(fid, seed=0, min_pairs=4)
    _run_trials(done, 1.0, n=60)
    assert len(_burst(done, 32, start=1000)) <= 3
    for bad in (1.0, -0.1, 0.1):  # 0.1 is below probe_share (0.15)
        with pytest.raises(InvalidInputError, match="probe_share_crowded"):
            HyperbandScheduler(fid, probe_share_crowded=bad)


def test_hyperband_brackets_follow_the_evidence_of_the_probes() -> None:
    fid = Fidelity(1, 27, 3)
    # 4 pairs before evidence counts (the default until version 5): with 3, the 15 probe pairs
    # of these 300 trials include a best-third probe at the rung's cutoff (reliability 0.7)
    hb = HyperbandScheduler(fid, seed=0, min_pairs=4)
    # without evidence and few trials running: the lean to bracket 0
    assert hb.probabilities().round(3).tolist() == [0.9, 0.06, 0.024, 0.016]
    _run_trials(hb, 1.0)  # early steps rank exactly like full fidelity
    agree = hb.probabilities()
    assert agree.sum() == pytest.approx(1.0)
    assert agree[0] > 0.8  # mostly the cheapest bracket
    crossing = HyperbandScheduler(fid, seed=0, min_pairs=4)
    _run_trials(crossing, -1.0)  # early steps rank in reverse
    against = crossing.probabilities()
    assert against.sum() == pytest.approx(1.0)
    assert against[0] < 0.25 and against[-1] > 0.3  # mostly the cautious brackets
    fixed = HyperbandScheduler(fid, seed=0, adaptive=False)
    _run_trials(fixed, -1.0)
    assert fixed.probabilities().round(3).tolist() == [0.551, 0.245, 0.122, 0.082]
    with pytest.raises(InvalidInputError, match="prior_pairs"):
        HyperbandScheduler(fid, prior_pairs=0)
    for bad in (0, 2.5, True):
        with pytest.raises(InvalidInputError, match="min_pairs"):
            HyperbandScheduler(fid, min_pairs=bad)  # type: ignore[arg-type]


def test_hyperband_prior_leans_to_bracket_0_only_while_few_trials_run() -> None:
    fid = Fidelity(1, 27, 3)
    hb = HyperbandScheduler(fid, seed=0, probe_share=0.0, probe_floor=0.0)
    hyperband = [0.551, 0.245, 0.122, 0.082]
    lean = [0.9, 0.06, 0.024, 0.016]  # rho 0.9, then 0.6 of the rest at each later rung
    seen, rho = [], []
    for t in range(20):
        hb.on_add(t)  # the new trial counts among the running ones
        seen.append(hb.probabilities().round(3).tolist())
        rho.append(hb.prior_rho().tolist())
    assert seen[0] == seen[7] == lean  # 1 to 8 running
    # 12 running: rho halfway between the lean's and Hyperband's (27/49, 12/22, 6/10)
    assert rho[11] == pytest.approx([(0.9 + 27 / 49) / 2, (0.6 + 12 / 22) / 2, 0.6])
    assert seen[15] == seen[19] == hyperband  # 16 and more
    # the draw happens once, with the running count at the trial's start
    early = [hb.bracket(t) for t in range(20)]
    assert early.count(0) >= 10  # most of the first eight (p 0.9) and some of the blend
    for t in range(20):
        hb.on_complete(t, None)
    assert hb.probabilities().round(3).tolist() == lean
    assert [hb.bracket(t) for t in range(20)] == early  # a drawn bracket never moves
    assert HyperbandScheduler(fid, lean=None).probabilities().round(3).tolist() == hyperband
    assert HyperbandScheduler(fid, adaptive=False).probabilities().round(3).tolist() == hyperband
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(InvalidInputError, match="lean"):
            HyperbandScheduler(fid, lean=bad)
    for pair in ((8, 8), (0, 4), (16, 8), (8,), (8.0, 16)):
        with pytest.raises(InvalidInputError, match="lean_running"):
            HyperbandScheduler(fid, lean_running=pair)  # type: ignore[arg-type]


def test_hyperband_brackets_first_judge_at_their_own_rung() -> None:
    fid = Fidelity(1, 27, 3)
    hb = HyperbandScheduler(fid, seed=0, trust_threshold=None, shared_rungs=False)
    by_bracket: dict[int, list[int]] = {}
    for i in range(200):
        by_bracket.setdefault(hb.bracket(i), []).append(i)
    # the last bracket never stops anyone, however bad
    for n, t in enumerate(by_bracket[3][:5]):
        for step in (1, 3, 9, 27):
            assert hb.on_report(t, step, 100.0 + n) is C
    # bracket 1 judges at step 3 first: a bad trial survives step 1 and stops at 3
    first, second = by_bracket[1][:2]
    assert hb.on_report(first, 3, 1.0) is C
    assert hb.on_report(second, 1, 50.0) is C
    assert hb.on_report(second, 3, 50.0) is S
    # bracket 0 judges at step 1, on its own records (bracket 1's values do not count)
    a, b = by_bracket[0][:2]
    assert hb.on_report(a, 1, 60.0) is C
    assert hb.on_report(b, 1, 70.0) is S


def test_median_stopping_rule() -> None:
    med = MedianStoppingScheduler(Fidelity(1, 10, 3), grace_step=2, min_trials=3)
    for t, v in enumerate([1.0, 2.0, 3.0]):
        for step in range(1, 5):
            assert med.on_report(t, step, v) is C  # fewer than three peers so far, or good
    assert med.on_report(3, 1, 2.5) is C  # within the grace period
    assert med.on_report(3, 2, 2.5) is S  # peers' running averages [1, 2, 3]: median 2
    assert med.on_report(4, 2, 1.5) is C
    assert med.on_report(5, 10, 99.0) is C  # at max fidelity nothing stops
    with pytest.raises(InvalidInputError, match="min_trials"):
        MedianStoppingScheduler(Fidelity(1, 10, 3), min_trials=0)


def _trust_with_false_stops(false_stops: int) -> RungTrust:
    """Twelve probes at rung 1: the four that end best are ``false_stops`` of them above the
    rung's cutoff (the 1/3 quantile), the rest of them below it."""
    trust = RungTrust(min_pairs=4, eta=3)
    for t in range(12):
        final = float(t)  # trial 0 ends best
        if t < 4:
            rung = 100.0 + t if t < false_stops else float(t)  # above or below the cutoff
        else:
            rung = 50.0 + t
        trust.record(1, t, rung)
        trust.record_final(t, final)
    return trust


@pytest.mark.parametrize(("false_stops", "reliability", "trusted"),
                         [(0, 1.0, True), (1, 0.625, True), (2, 0.25, False), (4, 0.0, False)])
def test_a_rung_that_would_stop_half_the_best_probes_is_not_trusted(
    false_stops: int, reliability: float, trusted: bool
) -> None:
    trust = _trust_with_false_stops(false_stops)
    n, q = trust.reliability(1) or (0, -1.0)
    assert n == 12 and q == pytest.approx(reliability)
    assert trust.trusted(1) is trusted
    assert RungTrust(threshold=None).trusted(1)  # no threshold: every rung is trusted


def test_a_rung_is_trusted_until_it_has_enough_pairs() -> None:
    trust = RungTrust(min_pairs=4, eta=3)
    for t in range(3):
        trust.record(1, t, 100.0 - t)  # the worst at the rung ends best: would be stopped
        trust.record_final(t, float(t))
    assert trust.reliability(1) is None and trust.trusted(1)
    trust.record(1, 3, 200.0)
    trust.record_final(3, 0.5)
    assert trust.reliability(1) is not None and not trust.trusted(1)


def test_hyperband_lowest_rung_keeps_a_fifth_while_few_trials_run() -> None:
    """Trials of bracket 0 reach a rung with values 9, 8, ..., 1 (each the best so far) and
    then 2.5: within the best third (cutoff 3.0) but not within the best fifth (cutoff 2.4).
    With ``first_keep = 0.2`` the lowest rung stops it while few trials run; the next rung
    keeps a third, and so does the lowest once 16 or more run at once."""
    fid = Fidelity(1, 27, 3)
    values = [9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 2.5]

    def judged(first_keep: float | None, others_running: int = 0
               ) -> tuple[list[Decision], list[Decision]]:
        hb = HyperbandScheduler(fid, seed=0, trust_threshold=None, probe_share=0.0,
                                probe_floor=0.0, probe_share_crowded=None, lean=0.99,
                                first_keep=first_keep)
        for t in range(10_000, 10_000 + others_running):  # started, never reporting
            hb.on_add(t)
        at_1: list[Decision] = []
        at_3: list[Decision] = []
        t = 0
        while len(at_3) < len(values):  # one trial at a time, of bracket 0 only
            hb.on_add(t)
            if hb.bracket(t) == 0:
                if len(at_1) < len(values):
                    at_1.append(hb.on_report(t, 1, values[len(at_1)]))
                else:  # the best at step 1, then judged at step 3
                    assert hb.on_report(t, 1, 0.5) is C
                    at_3.append(hb.on_report(t, 3, values[len(at_3)]))
            hb.on_complete(t, None)
            t += 1
        return at_1, at_3

    third_1, third_3 = judged(None)
    fifth_1, fifth_3 = judged(0.2)
    assert third_1 == [C] * 10
    assert fifth_1 == [C] * 9 + [S]
    assert third_3 == fifth_3 == [C] * 10
    crowded_1, _ = judged(0.2, others_running=15)  # 16 running while each is judged
    assert crowded_1 == [C] * 10
    for bad in (0.0, 1.0):
        with pytest.raises(InvalidInputError, match="first_keep"):
            HyperbandScheduler(fid, first_keep=bad)


@pytest.mark.parametrize("make", [
    lambda: ASHAScheduler(Fidelity(1, 9, 3)),
    lambda: HyperbandScheduler(Fidelity(1, 9, 3), 0, probe_share=0.0, probe_floor=0.0,
                               probe_share_crowded=None, shared_rungs=True),
], ids=["asha", "hyperband"])
def test_a_failed_trials_nan_leaves_the_rungs_after_a_pickle_round_trip(make: Any) -> None:
    # list.remove finds a NaN only by identity, which pickle does not keep
    scheduler = make()
    for trial, value in ((0, 0.5), (1, math.nan), (2, 0.7)):
        scheduler.on_add(trial)
        scheduler.on_report(trial, 1, value)
    restored = pickle.loads(pickle.dumps(scheduler))
    restored.on_fail(1)
    rungs = restored._rungs if isinstance(restored, ASHAScheduler) else restored._brackets[0]
    assert sorted(rungs.values[0]) == [0.5, 0.7]


@pytest.mark.parametrize("make, field", [
    # before, accepted, then a TypeError at the first report
    (lambda: MedianStoppingScheduler(Fidelity(1, 9, 3), grace_step="3"), "grace_step"),
    (lambda: MedianStoppingScheduler(Fidelity(1, 9, 3), min_trials="3"), "min_trials"),
    (lambda: MedianStoppingScheduler(Fidelity(1, 9, 3), min_trials=2.5), "min_trials"),
    (lambda: MedianStoppingScheduler(Fidelity(1, 9, 3), seed="x"), "seed"),
    (lambda: ASHAScheduler(Fidelity(1, 9, 3), seed=-1), "seed"),
    (lambda: ASHAScheduler(Fidelity(1, 9, 3), trust_threshold="a"), "trust_threshold"),
    (lambda: HyperbandScheduler(Fidelity(1, 9, 3), trust_threshold=1.5), "trust_threshold"),
    # before, AttributeError: 'NoneType' object has no attribute 'min'
    (lambda: ASHAScheduler(None), "fidelity"),
    (lambda: HyperbandScheduler(None), "fidelity"),
    (lambda: MedianStoppingScheduler(None), "fidelity"),
    (lambda: Tuner(None, FIFOScheduler()), "searcher"),  # before, accepted
    (lambda: Tuner(RandomSearcher(SearchSpace.from_mapping(
        {"x": {"type": "float", "low": 0.0, "high": 1.0}}), 0), None), "scheduler"),
])
def test_bad_arguments_of_the_schedulers_and_the_tuner_are_named(make: Any, field: str
                                                                  ) -> None:
    with pytest.raises(InvalidInputError, match=f"^{field}: got "):
        make()
