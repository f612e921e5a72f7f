"""The contract every searcher x scheduler pair honours: suggest, report, complete, fail,
identical decisions on replay, and a pickle round trip that changes nothing."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from coordinator.scheduling import (
    SCHEDULER_FACTORIES,
    SEARCHER_FACTORIES,
    AskStatus,
    Decision,
    HyperbandScheduler,
    Tuner,
)
from tests.coordinator.scheduling.helpers import toy_loss
from tunefleet.errors import InvalidInputError, StateError
from tunefleet.space import SearchSpace
from tunefleet.study import Fidelity, Mode

PAIRS = [(s, t) for s in SEARCHER_FACTORIES for t in SCHEDULER_FACTORIES]


def make_tuner(searcher: str, scheduler: str, space: SearchSpace, fidelity: Fidelity) -> Tuner:
    return Tuner(
        SEARCHER_FACTORIES[searcher](space, 7), SCHEDULER_FACTORIES[scheduler](fidelity, 7),
        Mode.MIN, max_trials=24,
    )


def drive(tuner: Tuner, fidelity: Fidelity, workers: int = 4, stop_after: int | None = None,
          log: list[Any] | None = None) -> list[Any]:
    """Run a study with ``workers`` trials in flight, advancing them in round-robin order.

    Every fifth trial fails after its first report. Returns the log of every call's outcome.
    """
    log = [] if log is None else log
    running: dict[int, tuple[dict, int]] = {}
    events = 0
    while True:
        while len(running) < workers:
            s = tuner.ask()
            log.append(("ask", s.status, s.trial_id, s.params))
            if s.status is not AskStatus.READY:
                break
            assert s.trial_id is not None and s.params is not None
            running[s.trial_id] = (s.params, 0)
        if not running:
            return log
        for trial_id in sorted(running):
            params, step = running[trial_id]
            step += 1
            decision = tuner.tell_report(trial_id, step, toy_loss(params, step))
            log.append(("report", trial_id, step, decision))
            if trial_id % 5 == 4:
                tuner.tell_failed(trial_id)
                del running[trial_id]
            elif decision is Decision.STOP or step >= fidelity.max:
                tuner.tell_complete(trial_id)
                del running[trial_id]
            else:
                running[trial_id] = (params, step)
            events += 1
            if stop_after is not None and events >= stop_after:
                return log


@pytest.mark.parametrize(("searcher", "scheduler"), PAIRS)
def test_pair_honours_the_contract(
    searcher: str, scheduler: str, mixed_space: SearchSpace, fidelity: Fidelity
) -> None:
    tuner = make_tuner(searcher, scheduler, mixed_space, fidelity)
    log = drive(tuner, fidelity)
    asked = [entry for entry in log if entry[0] == "ask" and entry[1] is AskStatus.READY]
    assert len(asked) == 24
    for _, _, _, params in asked:
        mixed_space.validate_config(params)
    assert log[-1][1] is AskStatus.EXHAUSTED
    states = {r.state for r in tuner.trials.values()}
    assert "failed" in states and "completed" in states
    if scheduler != "fifo":
        assert tuner.best() is not None

    replay = drive(make_tuner(searcher, scheduler, mixed_space, fidelity), fidelity)
    assert replay == log


@pytest.mark.parametrize(("searcher", "scheduler"), PAIRS)
def test_pickle_round_trip_keeps_decisions(
    searcher: str, scheduler: str, mixed_space: SearchSpace, fidelity: Fidelity
) -> None:
    original = make_tuner(searcher, scheduler, mixed_space, fidelity)
    drive(original, fidelity, stop_after=40)
    copy = pickle.loads(pickle.dumps(original))
    # both continue the same way from the same state: a fresh driver over the same trials
    tail_a = [original.ask() for _ in range(3)]
    tail_b = [copy.ask() for _ in range(3)]
    assert tail_a == tail_b
    for s in tail_a:
        if s.status is AskStatus.READY:
            assert s.trial_id is not None and s.params is not None
            a = original.tell_report(s.trial_id, 1, toy_loss(s.params, 1))
            b = copy.tell_report(s.trial_id, 1, toy_loss(s.params, 1))
            assert a == b


def test_max_running_holds_new_trials_back_until_one_ends() -> None:
    space = SearchSpace.from_mapping({"x": {"type": "float", "low": 0.0, "high": 1.0}})
    fidelity = Fidelity(1, 9, 3)
    tuner = Tuner(
        SEARCHER_FACTORIES["random"](space, 1), SCHEDULER_FACTORIES["hyperband"](fidelity, 1),
        Mode.MIN, max_trials=10, max_running=2,
    )
    first, second = tuner.ask(), tuner.ask()
    assert first.status is AskStatus.READY and second.status is AskStatus.READY
    assert tuner.ask().status is AskStatus.WAIT  # two are running
    assert tuner.ask().status is AskStatus.WAIT  # asking again changes nothing
    tuner.tell_report(first.trial_id, 1, 0.5)
    assert tuner.ask().status is AskStatus.WAIT  # a report does not free a place
    tuner.tell_complete(first.trial_id)
    third = tuner.ask()
    assert third.status is AskStatus.READY and third.trial_id == 2
    assert tuner.ask().status is AskStatus.WAIT
    tuner.tell_failed(second.trial_id)  # a failure frees its place too
    assert tuner.ask().status is AskStatus.READY
    assert len(tuner.running) == 2


@pytest.mark.parametrize("field", ["max_running", "max_trials"])
@pytest.mark.parametrize("value", [0, -1, float("nan"), 2.5, True, "3"])
def test_a_bad_limit_is_refused(field: str, value: Any) -> None:
    # before, max_running=nan meant no limit at all and max_trials=-1 blamed "enqueue"
    space = SearchSpace.from_mapping({"x": {"type": "float", "low": 0.0, "high": 1.0}})
    with pytest.raises(InvalidInputError,
                       match=f"^{field}: got .*; must be an integer >= 1 \\(or None: no limit\\)"):
        Tuner(SEARCHER_FACTORIES["random"](space, 1), SCHEDULER_FACTORIES["fifo"](Fidelity(), 1),
              **{field: value})


def test_a_grid_tuner_is_exhausted_once_its_last_point_is_handed_out() -> None:
    # the coordinator completes a study when its tuner is exhausted and nothing runs: before,
    # the grid's end was only learnt at one more ask, which a draining node never makes
    space = SearchSpace.from_mapping({"c": {"type": "categorical", "choices": ["a", "b"]}})
    tuner = Tuner(SEARCHER_FACTORIES["grid"](space, 0), SCHEDULER_FACTORIES["fifo"](Fidelity(), 0))
    assert tuner.ask().status is AskStatus.READY and not tuner.exhausted
    assert tuner.ask().status is AskStatus.READY
    assert tuner.exhausted
    assert tuner.ask().status is AskStatus.EXHAUSTED


@pytest.mark.parametrize("scheduler", ["median", "asha", "hyperband"])
@pytest.mark.parametrize("end", ["failed", "completed"])
def test_failed_trials_stop_no_one(scheduler: str, end: str) -> None:
    # three trials report excellent values and then fail: they have no valid result, so a
    # fourth trial, alone at its first rung, goes on; had they ended normally, it would stop
    space = SearchSpace.from_mapping({"x": {"type": "float", "low": 0.0, "high": 1.0}})
    fidelity = Fidelity(1, 9, 3)
    built = SCHEDULER_FACTORIES[scheduler](fidelity, 0)
    if scheduler == "hyperband":  # no probes: a probe never stops, whatever the others did
        built = HyperbandScheduler(fidelity, 0, probe_share=0.0, probe_floor=0.0,
                                   probe_share_crowded=None)
    tuner = Tuner(SEARCHER_FACTORIES["random"](space, 0), built)
    trials = [tuner.ask().trial_id for _ in range(4)]
    if scheduler == "hyperband":
        assert isinstance(built, HyperbandScheduler) and built.bracket(trials[3]) == 0
    for trial in trials[:3]:
        for step in (1, 2, 3):
            tuner.tell_report(trial, step, 0.01)
        (tuner.tell_failed if end == "failed" else tuner.tell_complete)(trial)
    decision = tuner.tell_report(trials[3], 1, 0.5)
    assert decision is (Decision.CONTINUE if end == "failed" else Decision.STOP)


ENQUEUED = [{"lr": 3e-3, "hidden": 64, "dropout": 0.2, "activation": "relu"},
            {"lr": 1e-2, "hidden": 128, "dropout": 0.0, "activation": "tanh"}]


@pytest.mark.parametrize(("searcher", "scheduler"),
                         [p for p in PAIRS if p[0] != "grid"])
def test_enqueued_configurations_run_first_and_replay_identically(
    searcher: str, scheduler: str, mixed_space: SearchSpace, fidelity: Fidelity
) -> None:
    for config in ENQUEUED:
        mixed_space.validate_config(config)

    def tuner() -> Tuner:
        return Tuner(SEARCHER_FACTORIES[searcher](mixed_space, 7),
                     SCHEDULER_FACTORIES[scheduler](fidelity, 7), Mode.MIN, max_trials=24,
                     enqueue=ENQUEUED)

    log = drive(tuner(), fidelity)
    asked = [entry for entry in log if entry[0] == "ask" and entry[1] is AskStatus.READY]
    assert [params for _, _, _, params in asked[:2]] == ENQUEUED
    assert len(asked) == 24 and all(p not in ENQUEUED for _, _, _, p in asked[2:])
    assert drive(tuner(), fidelity) == log


def test_the_searcher_learns_of_an_enqueued_trial_as_of_its_own(
    mixed_space: SearchSpace, fidelity: Fidelity
) -> None:
    searcher = SEARCHER_FACTORIES["tpe"](mixed_space, 7)
    adopted: list[tuple[int, dict[str, Any]]] = []
    searcher.adopt = lambda trial_id, config: adopted.append((trial_id, config))  # type: ignore[method-assign]
    tuner = Tuner(searcher, SCHEDULER_FACTORIES["fifo"](fidelity, 7), Mode.MIN,
                  max_trials=5, enqueue=ENQUEUED)
    assert [tuner.ask().params for _ in range(2)] == ENQUEUED
    assert adopted == [(0, ENQUEUED[0]), (1, ENQUEUED[1])]
    assert tuner.ask().params not in ENQUEUED


def test_an_enqueued_trial_is_never_hyperbands_probe(mixed_space: SearchSpace) -> None:
    fidelity = Fidelity(min=1, max=27, eta=3)
    plain = Tuner(SEARCHER_FACTORIES["tpe"](mixed_space, 7),
                  SCHEDULER_FACTORIES["hyperband"](fidelity, 7), Mode.MIN, max_trials=8)
    plain.ask()
    assert plain.scheduler.is_probe(0)  # the first trial is a probe when nothing is enqueued
    tuner = Tuner(SEARCHER_FACTORIES["tpe"](mixed_space, 7),
                  SCHEDULER_FACTORIES["hyperband"](fidelity, 7), Mode.MIN, max_trials=8,
                  enqueue=ENQUEUED)
    asked = [tuner.ask() for _ in range(3)]
    assert [s.params for s in asked[:2]] == ENQUEUED
    assert [tuner.scheduler.is_probe(i) for i in range(3)] == [False, False, True]


@pytest.mark.parametrize(("enqueue", "max_trials", "match"), [
    ([{**ENQUEUED[0], "lr": 5.0}], 4, r"enqueue\[0\].lr: got 5.0"),
    ([ENQUEUED[0], {"lr": 1e-3}], 4, r"enqueue\[1\].hidden: got None; is missing"),
    (ENQUEUED, 1, "enqueue: got '2 configurations'; must be at most max_trials"),
])
def test_a_tuner_refuses_enqueued_configurations_it_cannot_run(
    mixed_space: SearchSpace, fidelity: Fidelity, enqueue: list[dict[str, Any]],
    max_trials: int, match: str,
) -> None:
    with pytest.raises(InvalidInputError, match=match):
        Tuner(SEARCHER_FACTORIES["tpe"](mixed_space, 7), SCHEDULER_FACTORIES["fifo"](fidelity, 7),
              Mode.MIN, max_trials=max_trials, enqueue=enqueue)


def test_a_grid_tuner_refuses_enqueued_configurations(mixed_space: SearchSpace,
                                                       fidelity: Fidelity) -> None:
    # the grid indexes its points by trial id: enqueued trials would use up grid points that
    # then never run (the study file refuses the same combination)
    with pytest.raises(InvalidInputError, match="enqueue: got '1 configurations'; cannot be "
                       "used with the grid searcher"):
        Tuner(SEARCHER_FACTORIES["grid"](mixed_space, 7), SCHEDULER_FACTORIES["fifo"](fidelity, 7),
              enqueue=ENQUEUED[:1])


BAD_REPORTS = [("value", v) for v in (None, "0.5", 10**400, 10**5000, [1.0], True)] + [
    ("step", s) for s in (None, "3", float("nan"), 2.5, True, -1, 10**400)]


@pytest.mark.parametrize(("field", "bad"), BAD_REPORTS,
                         ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD_REPORTS)])
def test_a_report_with_a_bad_step_or_value_is_refused_and_changes_nothing(
    mixed_space: SearchSpace, fidelity: Fidelity, field: str, bad: Any
) -> None:
    # before, a bad value half-updated the trial (a retry then raised "steps must increase"),
    # a NaN step was accepted and then let any later step through as "increasing", and a
    # step beyond a double overflowed in Hyperband after the trial's record had changed
    tuner = Tuner(SEARCHER_FACTORIES["tpe"](mixed_space, 7),
                  SCHEDULER_FACTORIES["hyperband"](fidelity, 7))
    trial = tuner.ask().trial_id
    assert trial is not None
    tuner.tell_report(trial, 2, 0.5)
    before = pickle.dumps(tuner)
    report = {"step": 3, "value": 0.4, field: bad}
    allowed = "a real number" if field == "value" else r"an integer in \[0, 1,000,000,000\]"
    with pytest.raises(InvalidInputError, match=f"^{field}: got .*; must be {allowed}"):
        tuner.tell_report(trial, report["step"], report["value"])
    assert pickle.dumps(tuner) == before
    tuner.tell_report(trial, 3, 0.4)  # the same step, now well-formed: accepted
    assert tuner.trials[trial].step == 3 and tuner.trials[trial].value == 0.4


@pytest.mark.parametrize("seed", [-1, 2**63, 1.5, "7", True])
def test_a_bad_seed_is_refused_when_the_searcher_or_scheduler_is_built(
    mixed_space: SearchSpace, fidelity: Fidelity, seed: Any
) -> None:
    # before, a negative seed passed and numpy raised at the first ask, mid-study
    for build in (lambda: SEARCHER_FACTORIES["tpe"](mixed_space, seed),
                  lambda: SEARCHER_FACTORIES["random"](mixed_space, seed),
                  lambda: SCHEDULER_FACTORIES["hyperband"](fidelity, seed)):
        with pytest.raises(InvalidInputError, match=r"seed: got .*must be an integer in \[0, 2\*\*63\)"):
            build()


def test_enqueued_values_come_back_in_their_parameters_own_types() -> None:
    # a float parameter given 3 and an integer one given 2.0 run as 3.0 and 2, as they do when
    # the study file enqueues them
    space = SearchSpace.from_mapping({"x": {"type": "float", "low": 0.0, "high": 5.0},
                                      "n": {"type": "int", "low": 1, "high": 4}})
    tuner = Tuner(SEARCHER_FACTORIES["tpe"](space, 0), SCHEDULER_FACTORIES["fifo"](
        Fidelity(1, 3, 3), 0), enqueue=[{"x": 3, "n": 2.0}])
    params = tuner.ask().params
    assert params == {"x": 3.0, "n": 2}
    assert params is not None and type(params["x"]) is float and type(params["n"]) is int


@pytest.mark.parametrize(("mode", "stopped"), [("min", 1), (Mode.MIN, 1), ("max", 2)])
def test_the_mode_may_be_named_by_its_string(mode: Any, stopped: int) -> None:
    # before, mode="min" (a string, not Mode.MIN) silently maximised: ASHA stopped the best
    # trial, and best() raised AttributeError
    space = SearchSpace.from_mapping({"x": {"type": "float", "low": 0.0, "high": 1.0}})
    tuner = Tuner(SEARCHER_FACTORIES["random"](space, 0),
                  SCHEDULER_FACTORIES["asha"](Fidelity(1, 9, 3), 0), mode=mode)
    ids = [tuner.ask().trial_id for _ in range(3)]
    decisions = [tuner.tell_report(i, 1, v) for i, v in zip(ids, [0.5, 0.9, 0.1], strict=True)]
    assert [d is Decision.STOP for d in decisions] == [i == stopped for i in range(3)]
    for i in ids:
        tuner.tell_complete(i)
    best = tuner.best()
    assert best is not None and best.value == (0.1 if Mode(mode) is Mode.MIN else 0.9)


@pytest.mark.parametrize("mode", ["MIN", "minimize", None, 1])
def test_a_bad_mode_is_refused(mode: Any) -> None:
    space = SearchSpace.from_mapping({"x": {"type": "float", "low": 0.0, "high": 1.0}})
    with pytest.raises(InvalidInputError, match="^mode: got .*; must be 'min' or 'max'"):
        Tuner(SEARCHER_FACTORIES["random"](space, 0), SCHEDULER_FACTORIES["fifo"](Fidelity(), 0),
              mode=mode)


@pytest.mark.parametrize(("enqueue", "match"), [
    ([None], r"^enqueue\[0\]: got None; must be a table of parameter values"),
    ([[("lr", 1e-3)]], r"^enqueue\[0\]: got \[\('lr', 0.001\)\]; must be a table"),
    (ENQUEUED[0], r"^enqueue: got \{.*\}; must be a list of configurations"),
    ("lr=0.01", r"^enqueue: got 'lr=0.01'; must be a list of configurations"),
])
def test_enqueue_that_is_not_a_list_of_tables_is_refused(
    mixed_space: SearchSpace, fidelity: Fidelity, enqueue: Any, match: str
) -> None:
    # before: a raw TypeError from deep inside the space
    with pytest.raises(InvalidInputError, match=match):
        Tuner(SEARCHER_FACTORIES["tpe"](mixed_space, 7), SCHEDULER_FACTORIES["fifo"](fidelity, 7),
              enqueue=enqueue)


@pytest.mark.parametrize(("params", "error", "match"), [
    ({"lr": 1e-3}, InvalidInputError, r"^params.hidden: got None; is missing"),
    ({**ENQUEUED[0], "lr": -1.0}, InvalidInputError, r"^params.lr: got -1.0; must be a number"),
    ({**ENQUEUED[0], "activation": "zz"}, InvalidInputError, r"^params.activation: got 'zz'"),
    ({**ENQUEUED[0], "extra": 1}, InvalidInputError, r"^params.extra: got 1; is not a parameter"),
    (ENQUEUED[0], StateError, "trial 0 has reported already"),
])
def test_adopt_refuses_params_outside_the_space_or_after_a_report_and_changes_nothing(
    mixed_space: SearchSpace, fidelity: Fidelity, params: dict[str, Any],
    error: type[Exception], match: str,
) -> None:
    # before: raw KeyError/ValueError after the tuner's record had changed, out-of-range
    # values accepted into the model, and an adopt after reports wiped the searcher's record
    # of them
    tuner = Tuner(SEARCHER_FACTORIES["tpe"](mixed_space, 7),
                  SCHEDULER_FACTORIES["hyperband"](fidelity, 7))
    trial = tuner.ask().trial_id
    assert trial is not None
    if error is StateError:
        tuner.tell_report(trial, 1, 0.5)
    before = pickle.dumps(tuner)
    with pytest.raises(error, match=match):
        tuner.adopt(trial, params)
    assert pickle.dumps(tuner) == before


def test_adopt_keeps_values_in_their_parameters_own_types_and_the_spaces_order(
    mixed_space: SearchSpace, fidelity: Fidelity
) -> None:
    tuner = Tuner(SEARCHER_FACTORIES["tpe"](mixed_space, 7), SCHEDULER_FACTORIES["fifo"](fidelity, 7))
    trial = tuner.ask().trial_id
    assert trial is not None
    tuner.adopt(trial, {"activation": "gelu", "dropout": 0, "hidden": 32.0, "lr": 1e-3})
    params = tuner.trials[trial].params
    assert list(params) == list(mixed_space)
    assert params == {"lr": 1e-3, "hidden": 32, "dropout": 0.0, "activation": "gelu"}
    assert type(params["hidden"]) is int and type(params["dropout"]) is float


def test_a_report_after_stop_changes_nothing_and_gets_stop_again(fidelity: Fidelity) -> None:
    # before: it was fed to the scheduler (setting the next rung's cutoff) and got CONTINUE
    space = SearchSpace.from_mapping({"x": {"type": "float", "low": 0.0, "high": 1.0}})
    tuner = Tuner(SEARCHER_FACTORIES["random"](space, 0), SCHEDULER_FACTORIES["asha"](fidelity, 0))
    a, b = tuner.ask().trial_id, tuner.ask().trial_id
    assert a is not None and b is not None
    assert tuner.tell_report(a, 1, 0.1) is Decision.CONTINUE
    assert tuner.tell_report(b, 1, 0.9) is Decision.STOP
    before = pickle.dumps(tuner)
    assert tuner.tell_report(b, 3, 0.0) is Decision.STOP
    assert pickle.dumps(tuner) == before
    tuner.tell_complete(b)
    assert tuner.trials[b].state == "pruned" and tuner.trials[b].step == 1


@pytest.mark.parametrize(("trial_id", "error", "match"), [
    (True, InvalidInputError, "^trial_id: got True; must be an integer"),
    (1.0, InvalidInputError, "^trial_id: got 1.0; must be an integer"),
    ([0], InvalidInputError, r"^trial_id: got \[0\]; must be an integer"),
    (7, StateError, "^trial 7 was never suggested"),
])
def test_a_report_for_a_bad_trial_id_is_refused(trial_id: Any, error: type[Exception],
                                                match: str) -> None:
    # before, True and 1.0 reported to trial 1, and [0] raised a raw TypeError
    space = SearchSpace.from_mapping({"x": {"type": "float", "low": 0.0, "high": 1.0}})
    tuner = Tuner(SEARCHER_FACTORIES["random"](space, 0), SCHEDULER_FACTORIES["fifo"](Fidelity(), 0))
    tuner.ask(), tuner.ask()
    with pytest.raises(error, match=match):
        tuner.tell_report(trial_id, 1, 0.5)
    assert all(record.step is None for record in tuner.trials.values())


def test_best_is_the_best_completed_trial_not_a_pruned_ones_early_value() -> None:
    # before, a trial stopped at step 1 with 0.6 was "best" over one that ran to the end and
    # ended at 0.7, where the coordinator (completed trials only) names the latter
    space = SearchSpace.from_mapping({"x": {"type": "float", "low": 0.0, "high": 1.0}})
    tuner = Tuner(SEARCHER_FACTORIES["random"](space, 0),
                  SCHEDULER_FACTORIES["asha"](Fidelity(1, 9, 3), 0))
    a, c = tuner.ask().trial_id, tuner.ask().trial_id
    assert a is not None and c is not None
    assert tuner.tell_report(a, 1, 0.5) is Decision.CONTINUE
    assert tuner.tell_report(c, 1, 0.6) is Decision.STOP
    tuner.tell_complete(c)
    assert tuner.best() is None
    assert tuner.tell_report(a, 3, 0.55) is Decision.CONTINUE
    tuner.tell_report(a, 9, 0.7)
    tuner.tell_complete(a)
    assert tuner.trials[c].state == "pruned" and tuner.best() is tuner.trials[a]
