"""Suggestion latency of TPE and GP with --trials finished trials (default 1,000) and 16
parameters, next to Optuna's TPE sampler in the same run.

The space has 16 parameters (10 floats, 3 log-floats, 2 ints, 1 categorical) and a smooth
objective. Our searchers are fed ``--trials`` finished quasi-random trials through their public
interface, Optuna gets as many random ones; each is then timed over ``--repeats`` suggestions
(median wall time of one suggestion, in ms; the GP's first suggestion includes the fit of its
hyperparameters, later ones reuse it). It needs Optuna (the ``bench`` extra:
``pip install -e '.[bench]'``), checked before any work; it prints a table and writes nothing.

    python scripts/bench_suggest_latency.py
"""

from __future__ import annotations

import argparse
import importlib
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from coordinator.scheduling import GPSearcher, RandomSearcher, TPESearcher
from tunefleet.space import CategoricalParam, FloatParam, SearchSpace

SPACE = SearchSpace.from_mapping({
    **{f"f{i}": {"type": "float", "low": -1.0, "high": 1.0} for i in range(10)},
    **{f"l{i}": {"type": "float", "low": 1e-4, "high": 1.0, "log": True} for i in range(3)},
    **{f"i{i}": {"type": "int", "low": 1, "high": 64} for i in range(2)},
    "c0": {"type": "categorical", "choices": ["a", "b", "c", "d"]},
})


MIN_TRIALS = 10  # the searchers use their model from this many finished trials on (see time_ours)
OPTUNA_HINT = "install it with pip install -e '.[bench]' (or pip install 'optuna>=3.6')"


def objective(params: dict[str, Any]) -> float:
    u = SPACE.to_unit(params)
    return float(((u - 0.3) ** 2).sum() + 0.1 * math.sin(10 * u[0]))


def history(n: int, seed: int) -> list[dict[str, Any]]:
    sampler = RandomSearcher(SPACE, seed)
    return [sampler.suggest(i) or {} for i in range(n)]


def time_ours(make: Callable[[int], Any], n: int, repeats: int, stopped: bool = False
              ) -> tuple[float, float]:
    """(first, median) suggestion latency in ms after ``n`` finished quasi-random trials
    (``n >= MIN_TRIALS``, so that the model makes the timed suggestions; ``repeats >= 1``).

    ``stopped``: trials report steps up to 1,000 and four in five were stopped early, each at
    its own step (as under the median-stopping rule), which the model has to judge.
    """
    searcher = make(n)  # n_startup = n: the history is quasi-random and cheap to build
    for trial_id in range(n):
        config = searcher.suggest(trial_id)
        value = objective(config)
        last = 1 if not stopped else (1000 if trial_id % 5 == 0 else 2 + trial_id % 997)
        for step in sorted({1, max(1, last // 2), last}):
            searcher.on_report(trial_id, step, value + (1.0 / step if stopped else 0.0))
        searcher.on_complete(trial_id, value)
    searcher.n_startup = make(MIN_TRIALS).n_startup  # from now on the model is used
    times = []
    for r in range(repeats):
        started = time.perf_counter()
        config = searcher.suggest(n + r)
        times.append(time.perf_counter() - started)
        searcher.on_fail(n + r)  # keep the history at exactly n finished trials
        if config is None:
            raise RuntimeError("a searcher returned no configuration")
    return times[0] * 1e3, float(np.median(times)) * 1e3


def time_optuna(configs: list[dict[str, Any]], repeats: int, multivariate: bool) -> float:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists: dict[str, Any] = {}
    for name, p in SPACE.items():
        if isinstance(p, CategoricalParam):
            dists[name] = optuna.distributions.CategoricalDistribution(list(p.choices))
        elif isinstance(p, FloatParam):
            dists[name] = optuna.distributions.FloatDistribution(p.low, p.high, log=p.log)
        else:
            dists[name] = optuna.distributions.IntDistribution(p.low, p.high, log=p.log)
    sampler = optuna.samplers.TPESampler(seed=0, multivariate=multivariate)
    study = optuna.create_study(sampler=sampler)
    study.add_trials([
        optuna.trial.create_trial(params=c, distributions=dists, value=objective(c))
        for c in configs
    ])
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        trial = study.ask(dists)
        times.append(time.perf_counter() - started)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return float(np.median(times)) * 1e3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked before any work: a bad value, or a missing Optuna, exits 2
    with a message naming the option, the value and what is allowed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "),
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--trials", type=int, default=1000,
                        help=f"finished trials in each searcher's history, at least {MIN_TRIALS} "
                             "(so that the model, not the start-up design, is timed)")
    parser.add_argument("--repeats", type=int, default=20,
                        help="timed suggestions per searcher (the median is shown), at least 1")
    args = parser.parse_args(argv)
    if args.trials < MIN_TRIALS:
        parser.error(f"--trials: got {args.trials}; must be >= {MIN_TRIALS}")
    if args.repeats < 1:
        parser.error(f"--repeats: got {args.repeats}; must be >= 1")
    try:
        importlib.import_module("optuna")
    except ImportError:
        parser.error(f"optuna is not installed, and the Optuna rows need it; {OPTUNA_HINT}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    configs = history(args.trials, 0)
    tpe_first, tpe = time_ours(lambda k: TPESearcher(SPACE, 0, n_startup=k), args.trials,
                               args.repeats)
    _, tpe_stopped = time_ours(lambda k: TPESearcher(SPACE, 0, n_startup=k), args.trials,
                               args.repeats, stopped=True)
    gp_first, gp = time_ours(lambda k: GPSearcher(SPACE, 0, n_startup=k), args.trials,
                             args.repeats)
    uni = time_optuna(configs, args.repeats, False)
    multi = time_optuna(configs, args.repeats, True)
    print(f"median suggestion latency, {args.trials} finished trials, {len(SPACE)} parameters")
    rows = [
        ("tunefleet TPE", tpe), ("tunefleet TPE (80% stopped, ~800 steps)", tpe_stopped),
        ("tunefleet GP (median)", gp),
        ("tunefleet GP (first, with fit)", gp_first),
        ("Optuna TPE (univariate, default)", uni), ("Optuna TPE (multivariate)", multi),
    ]
    for name, ms in rows:
        print(f"  {name:40} {ms:9.2f} ms   {ms / uni:7.3f}x Optuna univariate   "
              f"{ms / multi:7.3f}x Optuna multivariate")


if __name__ == "__main__":
    main()
