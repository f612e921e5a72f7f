"""Compare the default scheduler (asynchronous Hyperband + TPE) with its baselines.

Baselines, in the same simulator and the same run: random search with FIFO, random search with
twice the budget, and Optuna's TPE sampler with its Hyperband pruner. For every benchmark,
worker count and seed the simulator records the compute (in full-fidelity evaluations) and the
virtual wall time until the incumbent reaches the target (the 1% quantile of 1,000 random
configurations at full fidelity), and the final regret. It prints medians over seeds as ratios
default / baseline, and writes a PNG of median regret over compute.

    python scripts/bench_schedulers.py --seeds 10 --workers 1 8 32 --png bench_schedulers.png
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from simulate.benchmarks import BENCHMARKS, FIDELITY  # noqa: E402
from simulate.simulator import AskTell, simulate  # noqa: E402

from coordinator.scheduling import (  # noqa: E402
    SCHEDULER_FACTORIES,
    SEARCHER_FACTORIES,
    Tuner,
)

METHODS = ("default", "random", "random2x", "optuna")
GRID_POINTS = 60


def make(method: str, bench_name: str, seed: int) -> AskTell:
    space = BENCHMARKS[bench_name].space
    if method == "default":
        return Tuner(
            SEARCHER_FACTORIES["tpe"](space, seed), SCHEDULER_FACTORIES["hyperband"](FIDELITY, seed)
        )
    if method in ("random", "random2x"):
        return Tuner(SEARCHER_FACTORIES["random"](space, seed), SCHEDULER_FACTORIES["fifo"](FIDELITY, seed))
    if method == "optuna":
        from simulate.optuna_adapter import OptunaTuner

        return OptunaTuner(space, FIDELITY, seed)
    if "+" in method:  # searcher+scheduler, for exploration
        searcher, scheduler = method.split("+")
        return Tuner(
            SEARCHER_FACTORIES[searcher](space, seed), SCHEDULER_FACTORIES[scheduler](FIDELITY, seed)
        )
    raise ValueError(f"method: got {method!r}; allowed: {list(METHODS)} or 'searcher+scheduler'")


def run_one(task: tuple[str, str, int, int, float]) -> dict[str, Any]:
    method, bench_name, workers, seed, budget = task
    bench = BENCHMARKS[bench_name]
    full = budget * FIDELITY.max * (2 if method == "random2x" else 1)
    started = time.process_time()
    trace = simulate(make(method, bench_name, seed), bench, workers, full)
    compute, wall = trace.first_reaching(bench.target())
    grid = np.linspace(0, 2 * budget * FIDELITY.max, GRID_POINTS)
    return {
        "task": task,
        "compute": compute / FIDELITY.max,
        "wall": wall / FIDELITY.max,
        "regret": trace.best_at(budget * FIDELITY.max) - bench.optimum,
        "curve": [trace.best_at(c) - bench.optimum for c in grid],
        "cpu": time.process_time() - started,
        "trials": trace.trials,
    }


def median(values: list[float]) -> float:
    return float(np.median(values)) if values else math.nan


def fmt(x: float) -> str:
    if math.isinf(x):
        return "inf"
    if math.isnan(x):
        return "nan"
    return f"{x:.3g}"


def ratio(a: float, b: float) -> float:
    if math.isinf(a) and math.isinf(b):
        return math.nan
    if math.isinf(b):
        return 0.0
    return a / b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--budget", type=float, default=100.0,
                        help="compute budget in full-fidelity evaluations (random2x gets twice)")
    parser.add_argument("--benchmarks", nargs="+", default=list(BENCHMARKS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--png", default="bench_schedulers.png")
    args = parser.parse_args()

    tasks = [
        (m, b, w, s, args.budget)
        for b in args.benchmarks for w in args.workers for m in args.methods
        for s in range(args.seeds)
    ]
    started = time.time()
    with Pool(args.jobs) as pool:
        results = pool.map(run_one, tasks, chunksize=1)
    by: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in results:
        m, b, w, _, _ = r["task"]
        by.setdefault((m, b, w), []).append(r)

    print(f"targets: 1% quantile of 1,000 random configurations; budget {args.budget:g} "
          f"full evaluations; {args.seeds} seeds; {time.time() - started:.0f} s")
    print("compute and wall time in full-fidelity evaluations (medians over seeds; inf: the "
          "median run did not reach the target)")
    baselines = [m for m in args.methods if m != "default"]
    header = (f"{'benchmark':10} {'N':>3} " + " ".join(f"{m + ' comp':>14}" for m in args.methods)
              + " " + " ".join(f"{'def/' + m:>12}" for m in baselines)
              + " " + " ".join(f"{m + ' regret':>16}" for m in args.methods))
    print(header)
    geo: dict[tuple[int, str], list[float]] = {}
    for w in args.workers:
        for b in args.benchmarks:
            comp = {m: median([r["compute"] for r in by[(m, b, w)]]) for m in args.methods}
            regret = {m: median([r["regret"] for r in by[(m, b, w)]]) for m in args.methods}
            ratios = {m: ratio(comp["default"], comp[m]) for m in baselines} if "default" in comp else {}
            for m, q in ratios.items():
                if b != "crossing" and not math.isnan(q):
                    geo.setdefault((w, m), []).append(max(q, 1e-3))
            print(f"{b:10} {w:>3} " + " ".join(f"{fmt(comp[m]):>14}" for m in args.methods)
                  + " " + " ".join(f"{fmt(ratios.get(m, math.nan)):>12}" for m in baselines)
                  + " " + " ".join(f"{fmt(regret[m]):>16}" for m in args.methods))
    print("\ngeometric mean of compute ratios default/baseline over the suite (without crossing):")
    for (w, m), qs in sorted(geo.items()):
        print(f"  N={w:>2}  default/{m:9} {math.exp(np.mean(np.log(qs))):.3f}  (n={len(qs)})")
    if "default" in args.methods and len(args.workers) > 1:
        lo, hi = min(args.workers), max(args.workers)
        print(f"\ndefault: compute to target at N={hi} / N={lo}:")
        for b in args.benchmarks:
            a = median([r["compute"] for r in by[("default", b, hi)]])
            c = median([r["compute"] for r in by[("default", b, lo)]])
            print(f"  {b:10} {fmt(ratio(a, c))}")
    cpu = {m: median([r["cpu"] for r in results if r["task"][0] == m]) for m in args.methods}
    print("\nmedian CPU seconds per run: " + ", ".join(f"{m} {v:.2f}" for m, v in cpu.items()))
    plot(by, args, Path(args.png))


def plot(by: dict[tuple[str, str, int], list[dict[str, Any]]], args: argparse.Namespace,
         path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = 8 if 8 in args.workers else args.workers[0]
    n = len(args.benchmarks)
    fig, axes = plt.subplots(1, n, figsize=(4 * n, 3.4), squeeze=False)
    grid = np.linspace(0, 2 * args.budget, GRID_POINTS)
    for ax, b in zip(axes[0], args.benchmarks, strict=True):
        for m in args.methods:
            curves = np.array([r["curve"] for r in by[(m, b, w)]])
            med = np.median(curves, axis=0)
            limit = 2 * args.budget if m == "random2x" else args.budget
            keep = (grid <= limit) & np.isfinite(med)
            ax.plot(grid[keep], np.maximum(med[keep], 1e-6), label=m)
        ax.set_yscale("log")
        ax.set_title(f"{b} (N={w})")
        ax.set_xlabel("compute (full evaluations)")
    axes[0][0].set_ylabel("median regret")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
