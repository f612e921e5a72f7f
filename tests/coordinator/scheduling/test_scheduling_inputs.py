"""Bad input to the public scheduling core is refused at construction, by name; huge finite
values and huge ints do not change or crash decisions."""

from __future__ import annotations

import pickle
import time
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pytest

from coordinator.scheduling import (
    ASHAScheduler,
    Decision,
    FIFOScheduler,
    GPSearcher,
    GridSearcher,
    HyperbandScheduler,
    MedianStoppingScheduler,
    QuasiRandomSearcher,
    RandomSearcher,
    Searcher,
    TPESearcher,
    TrialScheduler,
    Tuner,
)
from coordinator.scheduling._asha import quantile, rung_levels
from coordinator.scheduling._base import Config
from tunefleet.errors import InvalidInputError
from tunefleet.search_limits import MAX_GRID_POINTS
from tunefleet.space import CategoricalParam, SearchSpace
from tunefleet.study import Fidelity

C, S = Decision.CONTINUE, Decision.STOP
SPACE = SearchSpace.from_mapping({"x": {"type": "float", "low": 0.0, "high": 1.0}})
SEARCHERS: list[Callable[..., Searcher]] = [
    TPESearcher, RandomSearcher, QuasiRandomSearcher, GPSearcher, GridSearcher]
SCHEDULERS: list[Callable[..., TrialScheduler]] = [
    ASHAScheduler, HyperbandScheduler, MedianStoppingScheduler]


def refused(build: Callable[[], object], field: str, *fragments: str) -> InvalidInputError:
    with pytest.raises(InvalidInputError) as exc:
        build()
    assert exc.value.field == field, str(exc.value)
    for fragment in fragments:
        assert fragment in exc.value.allowed, (fragment, str(exc.value))
    return exc.value


# --- 1. the space must be a SearchSpace --------------------------------------------------------

@pytest.mark.parametrize("searcher", SEARCHERS, ids=lambda s: s.__name__)
@pytest.mark.parametrize("space", [{"x": {"type": "float", "low": 0.0, "high": 1.0}}, None])
def test_a_space_that_is_not_a_search_space_is_refused_at_construction(
    searcher: Callable[..., Searcher], space: Any
) -> None:
    # before: accepted, then AttributeError 'dict' object has no attribute 'from_unit' at the
    # first ask (the grid: a bare error in its constructor)
    err = refused(lambda: searcher(space, 0), "space", "must be a SearchSpace",
                  "SearchSpace.from_mapping")
    assert err.value == space


def test_a_tuner_refuses_a_searcher_whose_space_is_not_a_search_space() -> None:
    class Custom(Searcher):
        def __init__(self) -> None:  # skips Searcher.__init__, keeps a raw table
            self.space = {"x": {"type": "float"}}  # type: ignore[assignment]
            self.seed = 0

        def suggest(self, trial_id: int) -> Config | None:
            return {"x": 0.5}

    # before: AttributeError 'dict' object has no attribute 'validate_config'
    refused(lambda: Tuner(Custom(), FIFOScheduler(), enqueue=[{"x": 0.5}]), "searcher.space",
            "must be a SearchSpace")


# --- 3. a grid too large to enumerate ----------------------------------------------------------

def test_a_grid_over_max_grid_points_is_refused_before_it_is_enumerated() -> None:
    huge = SearchSpace({f"c{i}": CategoricalParam(tuple(range(10))) for i in range(12)})
    assert GridSearcher.size_of(huge) == 10**12
    start = time.perf_counter()
    refused(lambda: GridSearcher(huge, 0), "space", f"at most {MAX_GRID_POINTS:,} points")
    assert time.perf_counter() - start < 5.0  # before: spun and ate memory
    just_over = SearchSpace({"a": CategoricalParam(tuple(range(1001))),
                             "b": CategoricalParam(tuple(range(1000)))})
    refused(lambda: GridSearcher(just_over, 0), "space", "MAX_GRID_POINTS")
    assert GridSearcher(SPACE, 0, points=7).size == 7  # within the limit: as before


@pytest.mark.parametrize("points", [0, -1, "5", 2.5, True, None, MAX_GRID_POINTS + 1])
def test_grid_points_must_be_an_integer_from_1(points: Any) -> None:
    # before: 0 or -1 gave an empty grid silently, '5' and 2.5 bare TypeErrors
    err = refused(lambda: GridSearcher(SPACE, 0, points=points), "points",
                  f"must be an integer in [1, {MAX_GRID_POINTS:,}]")
    assert err.value is points
    refused(lambda: GridSearcher.size_of(SPACE, points), "points")


# --- 4. constructor arguments ------------------------------------------------------------------

BAD_ARGUMENTS: list[tuple[Callable[..., object], str, Any, str]] = [
    *[(TPESearcher, "n_startup", v, "integer >= 2") for v in (2.5, "6", True, 1, 0, -3)],
    *[(TPESearcher, "n_candidates", v, "integer in [1, 100,000]")
      for v in (0, 2.5, "24", True, 100_001)],
    *[(TPESearcher, "gamma", v, "finite number in (0, 1)")
      for v in ("0.1", 0.0, 1.0, float("nan"), True)],
    *[(TPESearcher, "widen", v, "finite number in (0, 1000]")
      for v in (float("nan"), float("inf"), 0.0, -1.0, 1001.0, "3")],
    *[(TPESearcher, "max_good", v, "integer >= 1") for v in (0, 2.5, "25")],
    *[(TPESearcher, "random_fraction", v, "finite number in [0, 1]")
      for v in (-0.1, 1.5, float("nan"), "0.1")],
    *[(GPSearcher, "n_candidates", v, "integer in [1, 100,000]") for v in (0, 2.5, "1024")],
    *[(GPSearcher, "max_points", v, "integer in [10, 1,000]") for v in (9, 200.0, "200", 1001)],
    *[(GPSearcher, "n_startup", v, "integer >= 2") for v in (1, 2.5, "8")],
    *[(GPSearcher, "refit_growth", v, "finite number >= 1")
      for v in (0.5, float("nan"), float("inf"), "1.1")],
]


@pytest.mark.parametrize(("searcher", "name", "value", "allowed"), BAD_ARGUMENTS,
                         ids=[f"{s.__name__}-{n}-{v!r}" for s, n, v, _ in BAD_ARGUMENTS])
def test_bad_searcher_arguments_are_refused_by_name(
    searcher: Callable[..., object], name: str, value: Any, allowed: str
) -> None:
    # before: bare TypeErrors, or a crash mid-study (n_startup=2.5, widen=nan)
    err = refused(lambda: searcher(SPACE, 0, **{name: value}), name, allowed)
    assert err.value is value


BAD_HYPERBAND: list[tuple[str, Any, str]] = [
    *[("prior_pairs", v, "finite number > 0") for v in ("4", 0.0, -1.0, float("inf"),
                                                       float("nan"), None)],
    *[("probe_share", v, "finite number in [0, 1)") for v in ("0.15", 1.0, -0.1, float("nan"))],
    *[("probe_floor", v, "finite number in [0, 1)") for v in ("0.05", 1.0, float("nan"))],
    *[("probe_share_crowded", v, "finite number in [0, 1)") for v in ("0.7", 1.0)],
    *[("lean", v, "finite number in (0, 1)") for v in ("0.9", float("nan"))],
    *[("first_keep", v, "finite number in (0, 1)") for v in ("0.2", float("nan"))],
    *[("lean_running", v, "two integers") for v in (8, "8,16", (True, 16), (8, 16, 32), None)],
    *[("min_pairs", v, "integer >= 1") for v in (0, 2.5, "3")],
    *[(name, v, "True or False") for name in ("adaptive", "shared_rungs") for v in (1, "yes")],
]


@pytest.mark.parametrize(("name", "value", "allowed"), BAD_HYPERBAND,
                         ids=[f"{n}-{v!r}" for n, v, _ in BAD_HYPERBAND])
def test_bad_hyperband_arguments_are_refused_by_name(name: str, value: Any, allowed: str
                                                     ) -> None:
    err = refused(lambda: HyperbandScheduler(Fidelity(1, 27, 3), 0, **{name: value}), name,
                  allowed)
    assert err.value is value


def test_valid_arguments_at_the_edges_are_accepted_as_before() -> None:
    tpe = TPESearcher(SPACE, 0, n_startup=np.int64(2),  # type: ignore[arg-type]
                      gamma=0.5, n_candidates=100_000,
                      random_fraction=0, widen=1000.0, max_good=1)
    assert (tpe.n_startup, tpe.random_fraction) == (2, 0.0) and type(tpe.n_startup) is int
    gp = GPSearcher(SPACE, 0, n_startup=2, n_candidates=1, max_points=1_000, refit_growth=1)
    assert (gp.n_startup, gp.max_points, gp.refit_growth) == (2, 1_000, 1.0)
    hb = HyperbandScheduler(Fidelity(1, 27, 3), 0, prior_pairs=1e-3, probe_share=0,
                            probe_floor=0.99, probe_share_crowded=None, lean=None,
                            first_keep=None, lean_running=[1, 2])  # type: ignore[arg-type]
    assert hb.lean_running == (1, 2) and hb.probe_share == 0.0


# --- 5. fidelity -------------------------------------------------------------------------------

BAD_FIDELITIES = [
    (Fidelity(5, 1, 3), "fidelity", "`min <= max` must hold"),
    (Fidelity(-3, -1, 1), "fidelity.min", "integer in [1, 1,000,000,000]"),
    (Fidelity(0, 27, 3), "fidelity.min", "integer in [1, 1,000,000,000]"),
    (Fidelity("1", 27, 3), "fidelity.min", "integer in [1,"),  # type: ignore[arg-type]
    (Fidelity(1.5, 27, 3), "fidelity.min", "integer in [1,"),  # type: ignore[arg-type]
    (Fidelity(True, 27, 3), "fidelity.min", "integer in [1,"),
    (Fidelity(1, 27, 2.5), "fidelity.eta", "integer in [2, 1,000]"),  # type: ignore[arg-type]
    (Fidelity(1, 27, 1), "fidelity.eta", "integer in [2, 1,000]"),
    (Fidelity(1, 27, 1001), "fidelity.eta", "integer in [2, 1,000]"),
    (Fidelity(1, 10**9 + 1, 3), "fidelity.max", "integer in [1, 1,000,000,000]"),
    (Fidelity(1, "27", 3), "fidelity.max", "integer in [1,"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=lambda s: s.__name__)
@pytest.mark.parametrize(("fidelity", "field", "allowed"), BAD_FIDELITIES,
                         ids=[repr(f) for f, _, _ in BAD_FIDELITIES])
def test_every_scheduler_with_a_fidelity_refuses_what_a_study_file_refuses(
    scheduler: Callable[..., TrialScheduler], fidelity: Fidelity, field: str, allowed: str
) -> None:
    # before: median stopping accepted (5, 1, 3), (-3, -1, 1) and (0, 27, 3); min='1' gave
    # bare TypeErrors; ASHA and Hyperband took (1, 27, 2.5) and (1.5, 27, 3) and made
    # fractional rungs
    refused(lambda: scheduler(fidelity, 0), field, allowed)


def test_a_fidelity_of_numpy_ints_is_kept_as_plain_ints() -> None:
    fidelity = Fidelity(np.int64(1), np.int64(27), np.int64(3))  # type: ignore[arg-type]
    for scheduler in SCHEDULERS:
        kept = scheduler(fidelity, 0).fidelity  # type: ignore[attr-defined]
        assert kept == Fidelity(1, 27, 3) and all(type(v) is int for v in vars(kept).values())
    assert rung_levels(fidelity) == [1, 3, 9]
    with pytest.raises(InvalidInputError, match=r"^fidelity.eta: got 2.5"):
        rung_levels(Fidelity(1, 27, 2.5))  # type: ignore[arg-type]


# --- 6. huge finite values ---------------------------------------------------------------------

@pytest.mark.parametrize("scale", [1.0, 1e307, 1.5e308, np.finfo(float).max])
def test_asha_decides_the_same_whatever_the_magnitude_of_finite_values(scale: float) -> None:
    asha = ASHAScheduler(Fidelity(1, 9, 3), 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # before: RuntimeWarning, overflow in b - a
        decisions = [asha.on_report(i, 1, v * scale) for i, v in enumerate([-1, -1, 1, 1, 1])]
    # before: 1.5e308 gave continue, continue, stop, continue, continue
    assert decisions == [C, C, S, S, S]


def run_script(make: Callable[[], TrialScheduler], values: np.ndarray) -> list[Decision]:
    """Report ``values[t]`` at steps 1, 3, 9 (trial ``t``) in an interleaved order."""
    scheduler, out, stopped = make(), [], set()
    for t in range(len(values)):
        scheduler.wants_probe(t)
        scheduler.on_add(t)
    for k, step in enumerate((1, 3, 9, 27)):
        for t in range(len(values)):
            if t not in stopped:
                out.append(scheduler.on_report(t, step, float(values[t, k])))
                if out[-1] is S:
                    stopped.add(t)
                    scheduler.on_complete(t, float(values[t, k]))
    return out


@pytest.mark.parametrize("seed", range(20))
def test_values_scaled_near_the_float_maximum_rank_as_they_do_unscaled(seed: int) -> None:
    # values times 2**1023 (exact) reach about 1.3e308: their range is beyond a double
    values = np.random.default_rng(seed).uniform(-1.5, 1.5, (30, 4))
    for make in (lambda: ASHAScheduler(Fidelity(1, 27, 3), seed),
                 lambda: HyperbandScheduler(Fidelity(1, 27, 3), seed)):
        plain = run_script(make, values)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            huge = run_script(make, values * 2.0**1023)
        assert S in plain and huge == plain


def test_the_quantile_is_numpys_exactly_for_values_of_normal_magnitude() -> None:
    rng = np.random.default_rng(0)
    for _ in range(3000):
        n = int(rng.integers(1, 40))
        values = rng.normal(size=n)
        if rng.random() < 0.3:
            values = np.round(values, 1)  # ties
        values *= 10.0 ** rng.uniform(-300, 300)
        if rng.random() < 0.1:  # NaN and infinity count as numpy counts them
            values[rng.integers(n)] = [np.inf, -np.inf, np.nan][rng.integers(3)]
        share = float(rng.choice([1 / 3, 0.2, 0.5, 1 / 4, rng.random()]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy's own warnings for inf - inf
            expected = float(np.quantile(values, share))
            got = quantile(list(values), share)
        assert got == expected or (np.isnan(got) and np.isnan(expected))


def test_the_quantile_of_values_spanning_beyond_a_double_interpolates_without_overflow() -> None:
    big = 1.5e308
    assert quantile([-big, -big, big, big, big], 1 / 3) == pytest.approx(-big / 3)
    assert quantile([-big, big], 0.5) == 0.0
    assert quantile([-big, big, np.inf], 0.25) == 0.0  # an infinite value changes nothing


# --- 7. a report beyond a double ---------------------------------------------------------------

def test_an_int_too_large_for_a_float_is_refused_as_too_large_and_changes_nothing() -> None:
    tuner = Tuner(RandomSearcher(SPACE, 0), ASHAScheduler(Fidelity(1, 9, 3), 0))
    trial = tuner.ask().trial_id
    assert trial is not None
    before = pickle.dumps(tuner)
    for value in (10**400, -(10**400)):
        err = refused(partial(tuner.tell_report, trial, 1, value), "value",
                      "must be a real number", "too large for a float", "report inf")
        assert err.value == value
    assert pickle.dumps(tuner) == before
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy: inf - inf at a rung that holds only inf
        assert tuner.tell_report(trial, 1, float("inf")) is S  # the worst result, as documented


# --- 8. steps beyond fidelity.max (documented, not refused: stored events replay) --------------

@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=lambda s: s.__name__)
def test_a_step_beyond_fidelity_max_counts_as_full_fidelity_and_is_never_stopped(
    scheduler: Callable[..., TrialScheduler]
) -> None:
    sched = scheduler(Fidelity(1, 27, 3), 0)
    tuner = Tuner(RandomSearcher(SPACE, 0), sched)
    ids = [tuner.ask().trial_id for _ in range(6)]
    for i, trial in enumerate(ids):
        assert trial is not None
        # iterations 100..2700 against a fidelity of 1..27: the worst trial goes on
        assert tuner.tell_report(trial, 100, float(i)) is C
        assert tuner.tell_report(trial, 2700, float(i)) is C
