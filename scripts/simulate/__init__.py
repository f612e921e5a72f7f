"""A virtual-time simulator for the scheduling core, and the benchmarks it runs.

``benchmarks`` holds multi-fidelity test functions (Branin, Hartmann-6, Borehole, Park, Currin
in their published multi-fidelity forms, and a crossing-learning-curves variant); ``simulator``
runs a study on N virtual workers; ``optuna_adapter`` drives Optuna through the same interface
(it needs the ``bench`` extra: ``pip install -e '.[bench]'``).

The package imports relative to itself, so it works as ``scripts.simulate`` with the repository
root on ``sys.path`` and as ``simulate`` with ``scripts/`` on it (as the benchmark scripts
use it). Driving it with a :class:`~coordinator.scheduling.Tuner` (a few seconds)::

    >>> from coordinator.scheduling import SCHEDULER_FACTORIES, SEARCHER_FACTORIES, Tuner
    >>> from scripts.simulate.benchmarks import BENCHMARKS, FIDELITY
    >>> from scripts.simulate.simulator import simulate
    >>> bench = BENCHMARKS["branin"]
    >>> tuner = Tuner(SEARCHER_FACTORIES["tpe"](bench.space, 0),
    ...               SCHEDULER_FACTORIES["hyperband"](FIDELITY, 0))
    >>> trace = simulate(tuner, bench, workers=4, budget=20 * FIDELITY.max)  # 20 full evaluations
    >>> trace.total_compute == 20 * FIDELITY.max  # every step of branin costs 1
    True
    >>> trace.best == sorted(trace.best, reverse=True)  # the incumbent only improves
    True
    >>> compute, wall = trace.first_reaching(bench.target())  # (inf, inf) if never reached
    >>> trace.best_at(trace.total_compute) - bench.optimum >= 0  # the final regret
    True
"""
