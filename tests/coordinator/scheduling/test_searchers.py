"""Searchers: grid coverage, quasi-random order independence, diversity with 32 pending
trials, and TPE and GP against random search on Branin."""

from __future__ import annotations

import itertools
import math
import pickle

import numpy as np
import pytest

from coordinator.scheduling import (
    SCHEDULER_FACTORIES,
    SEARCHER_FACTORIES,
    AskStatus,
    FIFOScheduler,
    GPSearcher,
    GridSearcher,
    QuasiRandomSearcher,
    RandomSearcher,
    Searcher,
    TPESearcher,
    Tuner,
    build_tuner,
)
from coordinator.scheduling._history import TrialHistory
from tests.coordinator.scheduling.helpers import toy_loss
from tunefleet.errors import InvalidInputError
from tunefleet.space import SearchSpace
from tunefleet.study import StudySpec

BRANIN_SPACE = SearchSpace.from_mapping({
    "x1": {"type": "float", "low": -5.0, "high": 10.0},
    "x2": {"type": "float", "low": 0.0, "high": 15.0},
})
BRANIN_MIN = 0.397887


def branin(x1: float, x2: float) -> float:
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


def test_grid_covers_the_space_exactly_once() -> None:
    space = SearchSpace.from_mapping({
        "act": {"type": "categorical", "choices": ["relu", "tanh", "gelu"]},
        "layers": {"type": "int", "low": 1, "high": 4},
        "dropout": {"type": "float", "low": 0.0, "high": 0.4},
    })
    tuner = Tuner(GridSearcher(space, 0, points=5), FIFOScheduler())
    seen = []
    while (s := tuner.ask()).status is AskStatus.READY:
        assert s.params is not None
        seen.append((s.params["act"], s.params["layers"], s.params["dropout"]))
    expected = set(itertools.product(
        ["relu", "tanh", "gelu"], [1, 2, 3, 4], [0.0, 0.1, 0.2, 0.30000000000000004, 0.4]
    ))
    assert len(seen) == 60 == len(set(seen))
    assert {(a, n, round(d, 9)) for a, n, d in seen} == {(a, n, round(d, 9)) for a, n, d in expected}
    assert tuner.ask().status is AskStatus.EXHAUSTED


def test_quasirandom_depends_only_on_seed_and_trial(mixed_space: SearchSpace) -> None:
    a, b = QuasiRandomSearcher(mixed_space, 5), QuasiRandomSearcher(mixed_space, 5)
    forward = [a.suggest(i) for i in range(300)]
    backward = [b.suggest(i) for i in reversed(range(300))][::-1]
    assert forward == backward
    assert pickle.loads(pickle.dumps(a)).suggest(299) == forward[299]
    assert QuasiRandomSearcher(mixed_space, 6).suggest(0) != forward[0]
    # a Sobol sequence fills the cube evenly: every coordinate's 8 bins hit 256 points equally
    points = np.array([mixed_space.to_unit(c) for c in forward[:256]])
    counts = np.stack([np.histogram(points[:, j], bins=8, range=(0, 1))[0] for j in (0, 2)])
    assert counts.min() >= 28


def test_invalid_options_name_field_and_value() -> None:
    with pytest.raises(InvalidInputError, match="gamma"):
        TPESearcher(BRANIN_SPACE, 0, gamma=1.5)
    with pytest.raises(InvalidInputError, match="n_candidates"):
        GPSearcher(BRANIN_SPACE, 0, n_candidates=0)


def _nn_distance(points: np.ndarray) -> float:
    d = np.sqrt(((points[:, None] - points[None]) ** 2).sum(axis=2))
    np.fill_diagonal(d, np.inf)
    return float(d.min(axis=1).mean())


@pytest.mark.parametrize(("name", "seed"), [("tpe", 1), ("gp", 0), ("gp", 1), ("gp", 2)])
def test_a_model_never_suggests_a_configuration_already_run_or_running(name: str,
                                                                        seed: int) -> None:
    # before, the GP gave two running trials the same configuration (its unperturbed local
    # candidates are incumbents themselves, and discrete parameters decode many points alike)
    space = SearchSpace.from_mapping({
        "lr": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
        "width": {"type": "int", "low": 8, "high": 512, "log": True},
        "depth": {"type": "int", "low": 1, "high": 3},
        "act": {"type": "categorical", "choices": ["relu", "gelu", "tanh"]},
        "bs": {"type": "categorical", "choices": [32, 64, 128]},
    })
    tuner = Tuner(SEARCHER_FACTORIES[name](space, seed), FIFOScheduler())
    seen: list[dict[str, object]] = []
    running: list[int] = []
    for n in range(40):
        s = tuner.ask()
        assert s.trial_id is not None and s.params is not None
        assert s.params not in seen, f"trial {n} repeats {s.params}"
        seen.append(s.params)
        running.append(s.trial_id)
        if len(running) == 2:  # two at once, the oldest ends
            done = running.pop(0)
            params = seen[done]
            loss = abs(math.log10(float(params["lr"])) + 2.5) + abs(
                math.log2(int(params["width"])) - 6) + int(params["depth"]) / 3
            tuner.tell_report(done, 1, loss + (params["act"] == "gelu") + (params["bs"] == 32))
            tuner.tell_complete(done)


@pytest.mark.parametrize("name", ["random", "quasirandom", "tpe", "gp"])
def test_32_pending_suggestions_stay_diverse(name: str) -> None:
    space = SearchSpace.from_mapping({
        f"x{i}": {"type": "float", "low": 0.0, "high": 1.0} for i in range(4)
    })
    searcher: Searcher = SEARCHER_FACTORIES[name](space, 1)
    tuner = Tuner(searcher, FIFOScheduler())
    for _ in range(30):  # a model that has seen enough to be confident
        s = tuner.ask()
        assert s.trial_id is not None and s.params is not None
        u = space.to_unit(s.params)
        tuner.tell_report(s.trial_id, 1, float(((u - 0.3) ** 2).sum()))
        tuner.tell_complete(s.trial_id)
    pending = []
    for _ in range(32):
        s = tuner.ask()
        assert s.params is not None
        pending.append(space.to_unit(s.params))
    points = np.array(pending)
    assert len({tuple(p) for p in points}) == 32
    reference = _nn_distance(np.random.default_rng(0).random((32, 4)))
    assert _nn_distance(points) > 0.35 * reference
    # and the model still aims: the batch is closer to the optimum than uniform points
    if name in ("tpe", "gp"):
        assert np.linalg.norm(points - 0.3, axis=1).mean() < 0.7


def _branin_regret(searcher: Searcher, trials: int) -> float:
    tuner = Tuner(searcher, FIFOScheduler(), max_trials=trials)
    best = math.inf
    while (s := tuner.ask()).status is AskStatus.READY:
        assert s.trial_id is not None and s.params is not None
        value = branin(float(s.params["x1"]), float(s.params["x2"]))
        best = min(best, value)
        tuner.tell_report(s.trial_id, 1, value)
        tuner.tell_complete(s.trial_id)
    return best - BRANIN_MIN


@pytest.mark.parametrize("cls", [TPESearcher, GPSearcher])
def test_model_based_searchers_beat_random_on_branin(cls: type[Searcher]) -> None:
    seeds = range(5)
    ours = [_branin_regret(cls(BRANIN_SPACE, s), 50) for s in seeds]
    rand = [_branin_regret(RandomSearcher(BRANIN_SPACE, s), 50) for s in seeds]
    # a clear margin: at least 5x lower regret in geometric mean, and better on most seeds
    assert np.exp(np.mean(np.log(ours))) < 0.2 * np.exp(np.mean(np.log(rand)))
    assert sum(o < r for o, r in zip(ours, rand, strict=True)) >= 3


@pytest.mark.parametrize("searcher", sorted(SEARCHER_FACTORIES))
@pytest.mark.parametrize("scheduler", sorted(SCHEDULER_FACTORIES))
def test_study_keys_select_searcher_and_scheduler(searcher: str, scheduler: str) -> None:
    spec = StudySpec.from_mapping({
        "name": "t", "objective": {"metric": "loss", "mode": "max"},
        "budget": {"max_trials": 3},
        "search": {"searcher": searcher, "scheduler": scheduler, "seed": 1},
        "fidelity": {"min": 1, "max": 9, "eta": 3},
        "space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
                  "hidden": {"type": "int", "low": 16, "high": 256, "log": True},
                  "dropout": {"type": "float", "low": 0.0, "high": 0.5},
                  "activation": {"type": "categorical", "choices": ["relu", "gelu", "tanh"]}},
    })
    tuner = build_tuner(spec)
    s = tuner.ask()
    assert s.status is AskStatus.READY and s.trial_id is not None and s.params is not None
    tuner.tell_report(s.trial_id, 1, -toy_loss(s.params, 1))
    tuner.tell_complete(s.trial_id)
    assert tuner.best() is not None


class _ProbeEvery(FIFOScheduler):
    """Asks for a probe on every ``k``-th trial."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.asked: list[int] = []

    def wants_probe(self, trial_id: int) -> bool:
        self.asked.append(trial_id)
        return trial_id % self.k == self.k - 1


@pytest.mark.parametrize("cls", [TPESearcher, GPSearcher])
def test_probes_get_the_searchers_quasi_random_point(cls: type[Searcher]) -> None:
    scheduler = _ProbeEvery(4)
    tuner = Tuner(cls(BRANIN_SPACE, 3), scheduler, max_trials=24)
    reference = QuasiRandomSearcher(BRANIN_SPACE, 3)
    while (s := tuner.ask()).status is AskStatus.READY:
        assert s.trial_id is not None and s.params is not None
        if s.trial_id % 4 == 3:  # a probe: the model is not asked, even once it has data
            assert s.params == reference.suggest(s.trial_id)
        tuner.tell_report(s.trial_id, 1, branin(float(s.params["x1"]), float(s.params["x2"])))
        tuner.tell_complete(s.trial_id)
    assert scheduler.asked == list(range(24))  # once per trial, in order


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_stopped_trials_count_as_bad_only_where_their_step_ranks_like_the_fit(
    sign: float,
) -> None:
    history = TrialHistory(dim=1)
    for t in range(6):  # six trials ran to step 27; step 1 ranks them like it (1) or against (-1)
        history.add(t, np.array([t / 10]))
        history.report(t, 1, sign * t)
        history.report(t, 27, float(t))
        history.finish(t, float(t))
    for t in range(6, 9):  # three stopped at step 1, one stopped without a report
        history.add(t, np.array([t / 10]))
        history.report(t, 1, 100.0 * sign)
        history.finish(t, 100.0 * sign)
    history.add(9, np.array([0.9]))
    history.finish(9, None)
    history.add(10, np.array([0.95]))  # still running
    data = history.training_set(6)
    assert data is not None and data.level == 27
    assert data.y.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert data.pending.ravel().tolist() == [0.95]
    below = sorted(data.below.ravel().tolist())
    if sign > 0:  # step 1 can be believed: the stopped trials are bad
        assert below == [0.6, 0.7, 0.8, 0.9]
    else:  # step 1 ranks against step 27: its stops say nothing of those configurations
        assert below == [0.9]


def spy_on_rank_checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The steps TrialHistory judges by a rank correlation, in call order, from now on."""
    judged: list[int] = []
    real = TrialHistory._trusted

    def spy(self: TrialHistory, live: object, level: int, reference: int) -> bool:
        judged.append(level)
        return real(self, live, level, reference)  # type: ignore[arg-type]

    monkeypatch.setattr(TrialHistory, "_trusted", spy)
    return judged


def test_many_distinct_stopping_steps_cost_a_bounded_number_of_rank_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    history = TrialHistory(dim=1)
    for t in range(20):  # twenty trials ran to step 1,000, every step ranking them alike
        history.add(t, np.array([t / 100]))
        for step in (1, 10, 100, 1000):
            history.report(t, step, float(t) + 1.0 / step)
        history.finish(t, float(t))
    for t in range(20, 320):  # 300 stopped at 300 distinct steps (median stopping, say)
        history.add(t, np.array([t / 1000]))
        history.report(t, 1, 50.0 + t)
        history.report(t, 2 + (t - 20) * 3, 50.0 + t)
        history.finish(t, 50.0 + t)
    judged = spy_on_rank_checks(monkeypatch)
    data = history.training_set(6)
    assert data is not None and data.level == 1000
    assert len(data.below) == 300  # every stop believed: their steps rank like step 1,000
    assert len(judged) <= 20  # not one rank check per distinct step
    stops = sorted({2 + k * 3 for k in range(300)})
    assert set(judged) <= set(stops) and min(judged) == stops[0]
    steps = sorted(set(judged))
    ratios = [b / a for a, b in zip(steps, steps[1:], strict=False)]
    assert min(ratios) >= 2 ** 0.5  # judging steps spaced by sqrt(2) at least


def test_a_few_distinct_stopping_steps_are_each_judged_by_themselves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    history = TrialHistory(dim=1)
    for t in range(6):
        history.add(t, np.array([t / 10]))
        for step in (1, 3, 9, 27):
            history.report(t, step, float(t))
        history.finish(t, float(t))
    for t, stop in enumerate((1, 3, 9, 1, 3), start=6):  # Hyperband's rungs
        history.add(t, np.array([t / 10]))
        history.report(t, stop, 99.0)
        history.finish(t, 99.0)
    judged = spy_on_rank_checks(monkeypatch)
    assert history.training_set(6) is not None
    assert sorted(judged) == [1, 3, 9]


def test_gp_standardises_non_finite_and_huge_results_without_flattening() -> None:
    from coordinator.scheduling._gp import standardise
    from coordinator.scheduling._history import WORST

    # NaN and inf are stored as WORST: they count as the worst of the other results
    assert np.allclose(standardise(np.array([0.1, 0.3, WORST])),
                       standardise(np.array([0.1, 0.3, 0.3])))
    # values whose squares overflow still come out with zero mean and unit variance
    with np.errstate(over="raise", invalid="raise"):
        huge = standardise(np.array([-1e299, 0.0, 9e299, 5e299]))
    assert abs(huge.mean()) < 1e-12 and abs(huge.std() - 1.0) < 1e-12
    assert list(np.argsort(huge)) == [0, 1, 3, 2]


@pytest.mark.parametrize("bad", [math.nan, math.inf, 1e308])
def test_gp_keeps_modelling_after_a_non_finite_or_huge_result(bad: float) -> None:
    # before, a NaN or inf (stored as 1e300) squared to inf in the standardisation and left
    # every candidate with the same score; two results of 1e308 in mode max (-1e308 once
    # signed) overflowed the mean and made every later ask raise
    from tunefleet.study import Mode

    space = SearchSpace.from_mapping({"x": {"type": "float", "low": 0.0, "high": 1.0},
                                      "y": {"type": "float", "low": 0.0, "high": 1.0}})
    mode = Mode.MAX if bad == 1e308 else Mode.MIN
    tuner = Tuner(GPSearcher(space, 0), FIFOScheduler(), mode=mode, max_trials=30)
    late = []
    for i in range(30):
        s = tuner.ask()
        assert s.trial_id is not None and s.params is not None
        loss = (s.params["x"] - 0.3) ** 2 + (s.params["y"] - 0.7) ** 2
        value = bad if i in (1, 2) else (loss if mode is Mode.MIN else -loss)
        tuner.tell_report(s.trial_id, 1, value)
        tuner.tell_complete(s.trial_id)
        if i >= 15:
            late.append(loss)
    if mode is Mode.MIN:  # the worst results: the model still homes in on (0.3, 0.7)
        assert float(np.median(late)) < 0.01
    # in mode max, 1e308 is the best result there is: the model may stay near it, but every
    # ask still gets a configuration (the loop above)


def test_tpe_does_not_repeat_a_configuration_in_a_space_without_floats() -> None:
    # integers and choices: many candidates round to the same configuration; before, a burst
    # of 40 asks near a sharp optimum gave 26 distinct configurations (one of them 4 times)
    space = SearchSpace.from_mapping({
        "units": {"type": "int", "low": 0, "high": 1000},
        "act": {"type": "categorical", "choices": ["relu", "gelu"]},
    })
    tuner = Tuner(TPESearcher(space, 3, random_fraction=0.0), FIFOScheduler())  # model picks
    for _ in range(30):
        s = tuner.ask()
        assert s.trial_id is not None and s.params is not None
        loss = (int(s.params["units"]) - 300) ** 2 + (0 if s.params["act"] == "gelu" else 1e4)
        tuner.tell_report(s.trial_id, 1, float(loss))
        tuner.tell_complete(s.trial_id)
    burst = [tuner.ask().params for _ in range(40)]
    keys = [(int(p["units"]), p["act"]) for p in burst if p is not None]
    assert len(keys) == 40 and len(set(keys)) == 40
    assert np.median([abs(u - 300) for u, _ in keys]) < 100  # and it still aims


def test_tpe_in_a_small_discrete_space_repeats_once_every_configuration_was_tried() -> None:
    space = SearchSpace.from_mapping({"a": {"type": "categorical", "choices": [1, 2, 3]},
                                      "b": {"type": "int", "low": 0, "high": 2}})
    tuner = Tuner(TPESearcher(space, 0), FIFOScheduler(), max_trials=30)
    seen = []
    while (s := tuner.ask()).status is AskStatus.READY:
        assert s.trial_id is not None and s.params is not None
        seen.append((s.params["a"], s.params["b"]))
        tuner.tell_report(s.trial_id, 1, float(s.params["a"] + s.params["b"]))
        tuner.tell_complete(s.trial_id)
    assert len(seen) == 30 and len(set(seen)) <= 9
