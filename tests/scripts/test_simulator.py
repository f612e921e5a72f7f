"""The virtual-time simulator and the scheduler benchmark script (unit level, no Optuna)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from coordinator.scheduling import (
    SCHEDULER_FACTORIES,
    SEARCHER_FACTORIES,
    AskStatus,
    Decision,
    RandomSearcher,
    TrialScheduler,
    Tuner,
)

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

from simulate.benchmarks import BENCHMARKS, FIDELITY  # noqa: E402
from simulate.simulator import simulate  # noqa: E402


class Counting:
    """Wraps a tuner and records how many trials ran at once."""

    def __init__(self, tuner: Tuner) -> None:
        self.tuner = tuner
        self.running: set[int] = set()
        self.peak = 0
        self.log: list[tuple[Any, ...]] = []

    def ask(self) -> Any:
        s = self.tuner.ask()
        if s.status is AskStatus.READY and s.trial_id is not None:
            self.running.add(s.trial_id)
            self.peak = max(self.peak, len(self.running))
        self.log.append(("ask", s.status, s.trial_id))
        return s

    def tell_report(self, trial_id: int, step: int, value: float) -> Any:
        decision = self.tuner.tell_report(trial_id, step, value)
        self.log.append(("report", trial_id, step, value, decision))
        return decision

    def tell_complete(self, trial_id: int) -> None:
        self.running.discard(trial_id)
        self.tuner.tell_complete(trial_id)


def tuner(bench: str, searcher: str = "tpe", scheduler: str = "hyperband", seed: int = 3,
          max_running: int | None = None) -> Counting:
    space = BENCHMARKS[bench].space
    return Counting(Tuner(SEARCHER_FACTORIES[searcher](space, seed),
                          SCHEDULER_FACTORIES[scheduler](FIDELITY, seed),
                          max_running=max_running))


def test_fifo_random_search_spends_the_budget_in_full_evaluations() -> None:
    t = tuner("branin", "random", "fifo")
    trace = simulate(t, BENCHMARKS["branin"], workers=4, budget=10 * FIDELITY.max)
    assert trace.total_compute == 10 * FIDELITY.max  # each step costs 1, nothing is stopped
    assert t.peak == 4
    # two waves of four trials end at full fidelity (216 steps); the third wave is cut off
    # when the budget runs out
    assert trace.trials == 12
    assert trace.wall[-1] == 2 * FIDELITY.max
    # the incumbent only improves, and each entry is a full-fidelity value of a trial
    assert trace.best == sorted(trace.best, reverse=True)
    assert trace.compute == sorted(trace.compute)


def test_the_same_seed_gives_the_same_run_and_another_seed_a_different_one() -> None:
    bench = BENCHMARKS["hartmann6"]
    a, b, c = tuner("hartmann6"), tuner("hartmann6"), tuner("hartmann6", seed=4)
    ta = simulate(a, bench, workers=8, budget=20 * FIDELITY.max)
    tb = simulate(b, bench, workers=8, budget=20 * FIDELITY.max)
    simulate(c, bench, workers=8, budget=20 * FIDELITY.max)
    assert a.log == b.log and (ta.compute, ta.best) == (tb.compute, tb.best)
    assert a.log != c.log


@pytest.mark.parametrize("workers", [1, 8, 32])
def test_workers_and_max_running_bound_the_trials_at_once(workers: int) -> None:
    free = tuner("park")
    simulate(free, BENCHMARKS["park"], workers=workers, budget=15 * FIDELITY.max)
    assert free.peak == workers
    capped = tuner("park", max_running=4)
    simulate(capped, BENCHMARKS["park"], workers=workers, budget=15 * FIDELITY.max)
    assert capped.peak == min(workers, 4)


def test_first_reaching_reads_compute_and_wall_time_of_the_incumbent() -> None:
    t = tuner("currin", "random", "fifo")
    trace = simulate(t, BENCHMARKS["currin"], workers=2, budget=6 * FIDELITY.max)
    compute, wall = trace.first_reaching(trace.best[0])
    assert (compute, wall) == (trace.compute[0], trace.wall[0])
    assert trace.first_reaching(trace.best[-1] - 1.0) == (math.inf, math.inf)
    assert wall <= compute  # two workers: wall time is at most the compute


def test_the_default_beats_random_search_on_branin_in_the_simulator() -> None:
    bench = BENCHMARKS["branin"]
    target = bench.target()
    default: list[float] = []
    random: list[float] = []
    for seed in range(5):
        for method, out in (("default", default), ("random", random)):
            t = tuner("branin", seed=seed) if method == "default" else tuner(
                "branin", "random", "fifo", seed=seed)
            c, _ = simulate(t, bench, workers=4, budget=60 * FIDELITY.max).first_reaching(target)
            out.append(c)
    assert sorted(default)[2] < 0.5 * sorted(random)[2]  # the medians, with a wide margin


def test_the_benchmark_script_prints_ratios_and_writes_its_table(tmp_path: Path) -> None:
    table = tmp_path / "t.md"
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_schedulers.py"), "--seeds", "2", "--workers", "1",
         "4", "--benchmarks", "branin", "crossing", "--methods", "default", "random",
         "--budget", "100", "--table", str(table), "--png", "-"],  # no matplotlib in CI
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "default/random" in done.stdout and "90% bootstrap interval" in done.stdout
    assert "crossing: default/random" in done.stdout
    assert "geometric mean (without crossing):" in done.stdout
    scaling = done.stdout.split("geometric mean (without crossing):")[1].splitlines()[0]
    point, interval = scaling.split("[")  # the N=4/N=1 ratio comes with its interval
    lo, hi = (float(x) for x in interval.rstrip("] ").split(","))
    # a resample whose 4-worker median missed the target counts as inf, not dropped, in the
    # point estimate and in every resample alike (see the bootstrap test below)
    assert lo <= float(point) <= hi and not math.isnan(lo)
    assert table.read_text().startswith("# Scheduler benchmark")
    assert "default/random" in table.read_text()


def test_bootstrap_intervals_are_paired_and_keep_a_never_reached_target_infinite() -> None:
    import numpy as np
    from bench_schedulers import bootstrap

    a = np.arange(1.0, 41.0)
    lo, hi = bootstrap(lambda pick: float(np.median(a[pick])), len(a))
    assert lo < float(np.median(a)) < hi and hi - lo < 20
    # paired by seed: whatever order the runs arrive in, each draw takes the same seeds of both
    # methods, so a baseline that needs exactly twice the compute on every seed gives 0.5 always
    import argparse

    from bench_schedulers import bootstrap_crossing

    def run(method: str, seed: int, compute: float) -> dict[str, Any]:
        return {"task": (method, "crossing", 8, seed), "compute": compute}

    spread = [float(v) for v in np.random.default_rng(1).permutation(np.arange(1.0, 41.0))]
    by = {("default", "crossing", 8): [run("default", s, spread[s]) for s in range(40)],
          ("random", "crossing", 8): [run("random", s, 2 * spread[s]) for s in reversed(range(40))]}
    args = argparse.Namespace(budget=1000.0)
    assert bootstrap_crossing(by, args, 8) == (0.5, 0.5)
    # a method that misses the target in most runs: the upper end is infinite, not NaN
    b = np.where(np.arange(40) < 25, math.inf, 5.0)
    lo, hi = bootstrap(lambda pick: float(np.median(b[pick])), len(b))
    assert hi == math.inf and lo in (5.0, math.inf)
    assert all(math.isnan(x) for x in bootstrap(lambda pick: math.nan, 10))


def test_the_scaling_ratio_is_an_upper_bound_where_one_worker_never_reached_the_target() -> None:
    # one worker's median run missed the target within the budget (inf) while 32 workers' hit
    # it after 50 full evaluations: the budget (100) stands in, so the ratio is at most 0.5;
    # before, the ratio came out as 0 and was dropped, and the geometric mean read NaN
    import argparse

    from bench_schedulers import report

    def runs(bench: str, workers: int, computes: list[float]) -> list[dict[str, Any]]:
        return [{"task": ("default", bench, workers, s), "compute": c, "regret": 0.0,
                 "wall": c / workers, "cpu": 0.0} for s, c in enumerate(computes)]

    by = {("default", "branin", 1): runs("branin", 1, [math.inf] * 3),
          ("default", "branin", 32): runs("branin", 32, [50.0] * 3),
          ("default", "park", 1): runs("park", 1, [10.0] * 3),
          ("default", "park", 32): runs("park", 32, [40.0] * 3)}
    args = argparse.Namespace(budget=100.0, seeds=3, seed_start=0, max_running=None,
                              methods=["default"], benchmarks=["branin", "park"], workers=[1, 32])
    out = "\n".join(report(by, [r for v in by.values() for r in v], args, 0.0))
    assert "branin     <0.5" in out and "park       4" in out
    scaling = out.split("geometric mean (without crossing):")[1].splitlines()[0]
    assert scaling.split("[")[0].strip() == f"{math.sqrt(0.5 * 4):.3g}"
    lo, hi = (float(x) for x in scaling.split("[")[1].rstrip("] ").split(","))
    assert lo == hi == float(f"{math.sqrt(0.5 * 4):.3g}")


@pytest.mark.parametrize(("flag", "value"), [("--seeds", "0"), ("--max-running", "0")])
def test_the_benchmark_script_refuses_bad_counts(flag: str, value: str) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_schedulers.py"), flag, value, "--table", "-"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 2
    assert flag in done.stderr and value in done.stderr


class NeverAsked:
    """A tuner that fails the test if the simulator asks it anything."""

    def ask(self) -> Any:
        raise AssertionError("asked before the arguments were checked")

    def tell_report(self, trial_id: int, step: int, value: float) -> Any:
        raise AssertionError("told before the arguments were checked")

    def tell_complete(self, trial_id: int) -> None:
        raise AssertionError("told before the arguments were checked")


@pytest.mark.parametrize(("field", "workers", "budget"), [
    ("workers", 0, 10.0), ("workers", -2, 10.0), ("workers", 1.5, 10.0), ("workers", True, 10.0),
    ("budget", 2, 0.0), ("budget", 2, -27.0), ("budget", 2, math.nan), ("budget", 2, math.inf),
])
def test_simulate_refuses_bad_workers_and_budget_before_asking_the_tuner(
        field: str, workers: Any, budget: float) -> None:
    from tunefleet.errors import InvalidInputError

    with pytest.raises(InvalidInputError) as err:
        simulate(NeverAsked(), BENCHMARKS["branin"], workers, budget)
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: got ")
    assert ">= 1" in str(err.value) if field == "workers" else "> 0" in str(err.value)


class OpensAtStep3(TrialScheduler):
    """FIFO that lets only the first trial start until some trial has reported step 3."""

    def __init__(self) -> None:
        self.started = 0
        self.open = False

    def on_add(self, trial_id: int) -> None:
        self.started += 1

    def on_report(self, trial_id: int, step: int, value: float) -> Decision:
        self.open = self.open or step >= 3
        return Decision.CONTINUE

    def can_start(self) -> bool:
        return self.started == 0 or self.open


def test_a_waiting_worker_asks_again_after_every_event_not_only_when_a_trial_ends() -> None:
    bench = BENCHMARKS["branin"]
    t = Counting(Tuner(RandomSearcher(bench.space, 0), OpensAtStep3()))
    reports: list[int] = []  # the reports of step 3 seen when each trial started
    original = t.ask

    def ask() -> Any:
        s = original()
        if s.status is AskStatus.READY:
            reports.append(sum(1 for e in t.log if e[0] == "report"))
        return s

    t.ask = ask  # type: ignore[method-assign]
    trace = simulate(t, bench, workers=3, budget=3 * FIDELITY.max)
    # worker 0 starts trial 0 at time 0; workers 1 and 2 wait until its third report (time 3),
    # not until it ends (time 27; before, they waited that long), and then both start; when
    # trial 0 ends (after 27 + 2 * 23 reports) its worker starts the fourth and last trial
    assert reports == [0, 3, 3, 73]
    assert trace.trials == 4 and trace.total_compute == 3 * FIDELITY.max
    waits = [e for e in t.log if e[0] == "ask" and e[1] is AskStatus.WAIT]
    assert len(waits) == 2 * 3  # workers 1 and 2 asked at time 0 and after reports 1 and 2


def test_the_package_imports_from_the_repository_root_and_its_example_runs() -> None:
    root = SCRIPTS.parent
    code = (
        "import doctest, sys\n"
        "import scripts.simulate as package\n"
        "from scripts.simulate.simulator import simulate\n"
        "result = doctest.testmod(package)\n"
        "print(result.attempted, result.failed)\n"
        "sys.path.insert(0, 'scripts')\n"
        "from simulate.simulator import simulate as as_scripts_on_path\n"
        "print(simulate.__module__, as_scripts_on_path.__module__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    attempted, failed = (int(x) for x in done.stdout.splitlines()[0].split())
    assert attempted >= 5 and failed == 0
    assert done.stdout.splitlines()[1] == "scripts.simulate.simulator simulate.simulator"
