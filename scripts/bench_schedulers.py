"""Compare the default scheduler (asynchronous Hyperband + TPE) with its baselines.

Baselines, in the same simulator and the same run: random search with FIFO, random search with
twice the budget, and Optuna's TPE sampler with its Hyperband pruner. For every benchmark,
worker count and seed the simulator records the compute (in full-fidelity evaluations) and the
virtual wall time until the incumbent reaches the target (the 1% quantile of 1,000 random
configurations at full fidelity), and the final regret (at each method's own budget). It prints
medians over seeds as ratios default / baseline, and writes the same text as a markdown table
(``--table``) and a PNG of median regret over compute (``--png``). Both default to the
committed figures in ``scripts/results/``: name other files (or '-') for any other run.

    python scripts/bench_schedulers.py --seeds 30 --workers 1 8 32 --jobs 2 \
        --table /tmp/bench.md --png /tmp/bench.png

Medians over a few seeds are noisy (compute to the target is bimodal with several workers), so
every ratio a target names (the suite's geometric means, the crossing benchmark's ratio to
random search, the ratio of 32 workers to 1) comes with a 90% bootstrap interval over the seeds
(seeds resampled together for every method and worker count: runs are paired by seed).
``--seed-start`` runs a held-out set of seeds.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import time
from collections.abc import Callable
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from simulate.benchmarks import BENCHMARKS, FIDELITY  # noqa: E402
from simulate.simulator import AskTell, simulate  # noqa: E402
from simulate.tabular import TabularBenchmark  # noqa: E402

from coordinator.scheduling import (  # noqa: E402
    SCHEDULER_FACTORIES,
    SEARCHER_FACTORIES,
    Tuner,
)
from tunefleet.writable import unwritable_file as unwritable  # noqa: E402

METHODS = ("default", "random", "random2x", "optuna")
METHOD_HELP = {
    "default": "TPE + asynchronous Hyperband (the coordinator's defaults)",
    "random": "random search with FIFO",
    "random2x": "random search with FIFO and twice the budget",
    "optuna": "Optuna's TPE + HyperbandPruner (needs optuna: pip install -e '.[bench]')",
}
OPTUNA_HINT = "install it with pip install -e '.[bench]' (or pip install 'optuna>=3.6')"
GRID_POINTS = 60
RESULTS = Path(__file__).resolve().parent / "results"
CROSSING = "crossing"  # the robustness variant: judged against random search, not averaged
ALLOWED_METHODS = (
    f"allowed: {', '.join(METHODS)}, or searcher+scheduler with a searcher of "
    f"{', '.join(SEARCHER_FACTORIES)} and a scheduler of {', '.join(SCHEDULER_FACTORIES)} "
    "(e.g. tpe+asha)"
)


def method_error(method: str) -> str | None:
    """``None`` if ``method`` names a method (one of :data:`METHODS` or ``searcher+scheduler``
    with names of ``SEARCHER_FACTORIES`` and ``SCHEDULER_FACTORIES``), else what is wrong."""
    if method in METHODS:
        return None
    parts = method.split("+")
    if len(parts) != 2:
        return f"got {method!r}; {ALLOWED_METHODS}"
    searcher, scheduler = parts
    if searcher not in SEARCHER_FACTORIES:
        return (f"got {method!r}: unknown searcher {searcher!r}; searchers: "
                f"{', '.join(SEARCHER_FACTORIES)}")
    if scheduler not in SCHEDULER_FACTORIES:
        return (f"got {method!r}: unknown scheduler {scheduler!r}; schedulers: "
                f"{', '.join(SCHEDULER_FACTORIES)}")
    return None


def make(method: str, bench_name: str, seed: int, max_running: int | None = None) -> AskTell:
    space = BENCHMARKS[bench_name].space
    if method == "default":
        return Tuner(
            SEARCHER_FACTORIES["tpe"](space, seed), SCHEDULER_FACTORIES["hyperband"](FIDELITY, seed),
            max_running=max_running,
        )
    if method in ("random", "random2x"):
        return Tuner(SEARCHER_FACTORIES["random"](space, seed), SCHEDULER_FACTORIES["fifo"](FIDELITY, seed))
    if method == "optuna":
        from simulate.optuna_adapter import OptunaTuner

        return OptunaTuner(space, FIDELITY, seed)
    if method_error(method) is None:  # searcher+scheduler, for exploration
        searcher, scheduler = method.split("+")
        return Tuner(
            SEARCHER_FACTORIES[searcher](space, seed), SCHEDULER_FACTORIES[scheduler](FIDELITY, seed)
        )
    raise ValueError(f"method: got {method!r}; {ALLOWED_METHODS}")


def run_one(task: tuple[str, str, int, int, float, int | None]) -> dict[str, Any]:
    method, bench_name, workers, seed, budget, max_running = task
    bench = BENCHMARKS[bench_name]
    full = budget_of(method, budget) * FIDELITY.max
    started = time.process_time()
    trace = simulate(make(method, bench_name, seed, max_running), bench, workers, full)
    compute, wall = trace.first_reaching(bench.target())
    grid = np.linspace(0, 2 * budget * FIDELITY.max, GRID_POINTS)
    return {
        "task": task,
        "compute": compute / FIDELITY.max,
        "wall": wall / FIDELITY.max,
        # final regret at the method's own budget (random2x: twice the others')
        "regret": trace.best_at(budget_of(method, budget) * FIDELITY.max) - bench.optimum,
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


def budget_of(method: str, budget: float) -> float:
    return 2 * budget if method == "random2x" else budget


def censored_ratio(a: float, b: float, b_budget: float) -> tuple[float, bool]:
    """``a / b``; when the baseline's median run never reached the target (``b`` infinite), its
    budget stands in for ``b``, which gives an upper bound of the ratio (flagged ``True``)."""
    if math.isinf(b) and math.isfinite(a):
        return a / b_budget, True
    return ratio(a, b), False


def geomean(values: list[float]) -> float:
    return math.exp(float(np.mean(np.log(values)))) if values else math.nan


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after every option's help (where there is one), and the epilog as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


EPILOG = f"""\
benchmarks: {', '.join(BENCHMARKS)}
  ({CROSSING} is judged against random search and left out of the suite's geometric means;
  digits reads scripts/data/digits_curves.npz)
methods:
{chr(10).join(f"  {m:9} {text}" for m, text in METHOD_HELP.items())}
  searcher+scheduler, for exploration, e.g. tpe+asha; searchers: {', '.join(SEARCHER_FACTORIES)};
  schedulers: {', '.join(SCHEDULER_FACTORIES)}

Prints to stdout, for every benchmark and worker count, the medians over seeds of each method's
compute to the target, the ratios default/baseline, the default's virtual wall time and each
method's final regret; then the suite's geometric means with 90% bootstrap intervals, the
{CROSSING} ratio to random search and the ratio of the most workers to the fewest. --table gets
the same text as markdown (with the command line), --png a figure of median regret over
compute. Their defaults are the committed figures in scripts/results/: name other files (or '-')
for any other run.
"""


def importable(module: str) -> bool:
    """Whether ``module`` imports (a missing or broken install both count as not)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked before any work: a bad value exits 2 with a message naming
    the option, the value and what is allowed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=EPILOG,
                                     formatter_class=_HelpFormatter)
    parser.add_argument("--seeds", type=int, default=30,
                        help="how many seeds, at least 1 (report at least 10)")
    parser.add_argument("--seed-start", type=int, default=0,
                        help="the first seed, at least 0 (seeds run from here on)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 8, 32],
                        help="worker counts to simulate, each at least 1")
    parser.add_argument("--budget", type=float, default=100.0,
                        help="compute budget in full-fidelity evaluations, > 0 "
                             "(random2x gets twice)")
    parser.add_argument("--benchmarks", nargs="+", default=list(BENCHMARKS),
                        help="benchmarks to run (names below)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS),
                        help="methods to compare (names below); the ratios need 'default'")
    parser.add_argument("--jobs", type=int, default=1,
                        help="processes that run the simulations, at least 1")
    parser.add_argument("--max-running", type=int, default=None,
                        help="the default method's [search] max_running, at least 1 "
                             "(default: no limit); needs 'default' in --methods")
    parser.add_argument("--png", type=Path, default=RESULTS / "bench_schedulers.png",
                        help="PNG of median regret over compute, written at exactly this path, "
                             "which must end in .png ('-' for none; needs matplotlib)")
    parser.add_argument("--table", type=Path, default=RESULTS / "bench_schedulers.md",
                        help="markdown file for the printed figures ('-' for none)")
    args = parser.parse_args(argv)

    def once(option: str, values: list[Any]) -> None:
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            parser.error(f"{option}: got {' '.join(map(str, values))}; each value at most once "
                         f"(repeated: {', '.join(repeated)})")

    if args.seeds < 1:
        parser.error(f"--seeds: got {args.seeds}; must be >= 1")
    if args.seed_start < 0:
        parser.error(f"--seed-start: got {args.seed_start}; must be >= 0")
    bad = [w for w in args.workers if w < 1]
    if bad:
        parser.error(f"--workers: got {bad[0]}; each worker count must be >= 1")
    once("--workers", args.workers)
    if not (math.isfinite(args.budget) and args.budget > 0):
        parser.error(f"--budget: got {args.budget:g}; must be a finite number > 0 "
                     "(full-fidelity evaluations)")
    unknown = [b for b in args.benchmarks if b not in BENCHMARKS]
    if unknown:
        parser.error(f"--benchmarks: got {unknown[0]!r}; allowed: {', '.join(BENCHMARKS)}")
    once("--benchmarks", args.benchmarks)
    for m in args.methods:
        error = method_error(m)
        if error is not None:
            parser.error(f"--methods: {error}")
    once("--methods", args.methods)
    if args.jobs < 1:
        parser.error(f"--jobs: got {args.jobs}; must be >= 1")
    if args.max_running is not None and args.max_running < 1:
        parser.error(f"--max-running: got {args.max_running}; must be >= 1")
    if args.max_running is not None and "default" not in args.methods:
        parser.error(f"--max-running: got {args.max_running}, but it limits the default method "
                     f"only and --methods ({' '.join(args.methods)}) leaves 'default' out; "
                     "add default to --methods or drop --max-running")
    if "optuna" in args.methods and not importable("optuna"):
        parser.error(f"--methods: 'optuna' needs the optuna package, which is not installed; "
                     f"{OPTUNA_HINT}, or leave optuna out of --methods")
    for name in args.benchmarks:
        bench = BENCHMARKS[name]
        if isinstance(bench, TabularBenchmark) and not bench.path.exists():
            parser.error(f"--benchmarks: {name!r} needs {bench.path}, which is missing; build it "
                         "with scripts/make_digits_curves.py or leave it out")
    if str(args.png) != "-":
        if args.png.suffix.lower() != ".png":
            parser.error(f"--png: got {str(args.png)!r}; a path ending in .png, or '-' for none")
        if not importable("matplotlib"):
            parser.error("--png: needs matplotlib, which is not installed; install it or pass "
                         "--png -")
    for option, path in (("--table", args.table), ("--png", args.png)):
        why = None if str(path) == "-" else unwritable(path)
        if why is not None:
            parser.error(f"{option}: got {str(path)!r}, which {why}; give a writable file path, "
                         "or '-' for none")
    if str(args.table) != "-" and str(args.png) != "-" and (
            args.table.resolve() == args.png.resolve()):
        parser.error(f"--table and --png: both name {str(args.table)!r}; give two files")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    seeds = list(range(args.seed_start, args.seed_start + args.seeds))

    tasks = [
        (m, b, w, s, args.budget, args.max_running)
        for b in args.benchmarks for w in args.workers for m in args.methods
        for s in seeds
    ]
    started = time.time()
    if args.jobs > 1:
        with Pool(args.jobs) as pool:
            results = pool.map(run_one, tasks, chunksize=1)
    else:
        results = [run_one(t) for t in tasks]
    by: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in results:
        m, b, w = r["task"][:3]
        by.setdefault((m, b, w), []).append(r)
    lines = report(by, results, args, time.time() - started)
    print("\n".join(lines))
    if str(args.table) != "-":
        args.table.parent.mkdir(parents=True, exist_ok=True)
        command = "python scripts/bench_schedulers.py " + " ".join(
            sys.argv[1:] if argv is None else argv)
        args.table.write_text(
            "# Scheduler benchmark\n\n`" + command.strip() + "`\n\n```\n"
            + "\n".join(lines) + "\n```\n"
        )
        print(f"wrote {args.table}")
    if str(args.png) != "-":
        print(f"wrote {plot(by, args, args.png)}")


def report(by: dict[tuple[str, str, int], list[dict[str, Any]]], results: list[dict[str, Any]],
           args: argparse.Namespace, seconds: float) -> list[str]:
    out: list[str] = []
    out.append(f"targets: 1% quantile of 1,000 random configurations; budget {args.budget:g} "
               f"full evaluations; {args.seeds} seeds ({args.seed_start}-"
               f"{args.seed_start + args.seeds - 1}); {seconds:.0f} s")
    if args.max_running is not None:
        out.append(f"default runs at most {args.max_running} trials at once (max_running)")
    out.append("compute and virtual wall time in full-fidelity evaluations (medians over seeds; "
               "inf: the median run did not reach the target; '<': the baseline's median run "
               "did not, and its budget stands in, so the ratio is an upper bound); regret: "
               "median final regret at each method's own budget (random2x: twice)")
    methods = args.methods
    baselines = [m for m in methods if m != "default"]
    has_default = "default" in methods
    out.append(f"{'benchmark':10} {'N':>3} " + " ".join(f"{m + ' comp':>14}" for m in methods)
               + " " + " ".join(f"{'def/' + m:>12}" for m in baselines if has_default)
               + f" {'def wall':>9} " + " ".join(f"{m + ' regret':>16}" for m in methods))
    geo: dict[tuple[int, str], list[float]] = {}
    for w in args.workers:
        for b in args.benchmarks:
            comp = {m: median([r["compute"] for r in by[(m, b, w)]]) for m in methods}
            regret = {m: median([r["regret"] for r in by[(m, b, w)]]) for m in methods}
            ratios = {
                m: censored_ratio(comp["default"], comp[m], budget_of(m, args.budget))
                for m in baselines
            } if has_default else {}
            for m, (q, _) in ratios.items():
                if b != CROSSING and not math.isnan(q):
                    geo.setdefault((w, m), []).append(max(q, 1e-3))
            wall = median([r["wall"] for r in by[("default", b, w)]]) if has_default else math.nan
            shown = {m: ("<" if c else "") + fmt(q) for m, (q, c) in ratios.items()}
            out.append(
                f"{b:10} {w:>3} " + " ".join(f"{fmt(comp[m]):>14}" for m in methods)
                + " " + " ".join(f"{shown.get(m, 'nan'):>12}" for m in baselines
                                 if has_default)
                + f" {fmt(wall):>9} " + " ".join(f"{fmt(regret[m]):>16}" for m in methods)
            )
    if geo:
        out.append("")
        out.append(f"geometric mean of compute ratios default/baseline over the suite "
                   f"(without {CROSSING}), with a 90% bootstrap interval over the seeds:")
        for (w, m), qs in sorted(geo.items()):
            lo, hi = bootstrap_geomean(by, args, w, m)
            out.append(f"  N={w:>2}  default/{m:9} {geomean(qs):.3f}  [{lo:.3f}, {hi:.3f}]  "
                       f"(n={len(qs)})")
    if has_default and "random" in methods and CROSSING in args.benchmarks:
        out.append("")
        out.append(f"{CROSSING}: default/random compute to target (target: at most 1):")
        for w in args.workers:
            a = median([r["compute"] for r in by[("default", CROSSING, w)]])
            c = median([r["compute"] for r in by[("random", CROSSING, w)]])
            q, bound = censored_ratio(a, c, args.budget)
            ci_lo, ci_hi = bootstrap_crossing(by, args, w)
            out.append(f"  N={w:>2}  {'<' if bound else ''}{estimate(q, ci_lo, ci_hi)}"
                       f"   (default {fmt(a)}, random {fmt(c)})")
    if has_default and len(args.workers) > 1:
        lo, hi = min(args.workers), max(args.workers)
        out.append("")
        out.append(f"default: compute to target at N={hi} / N={lo} (target: at most 1.5; '<': "
                   f"the N={lo} median run did not reach it, and the budget stands in)")
        qs = []
        for b in args.benchmarks:
            a = median([r["compute"] for r in by[("default", b, hi)]])
            c = median([r["compute"] for r in by[("default", b, lo)]])
            # never at N=lo: its budget stands in, an upper bound; never at N=hi: inf counts
            q, bound = censored_ratio(a, c, args.budget)
            if b != CROSSING and not math.isnan(q):
                qs.append(q)
            out.append(f"  {b:10} {'<' if bound else ''}{fmt(q)}   "
                       f"(N={lo}: {fmt(c)}, N={hi}: {fmt(a)})")
        if any(b != CROSSING for b in args.benchmarks):  # else there is nothing to average
            ci_lo, ci_hi = bootstrap_scaling(by, args, lo, hi)
            out.append(f"  geometric mean (without {CROSSING}): "
                       f"{estimate(geomean(qs), ci_lo, ci_hi)}")
        busy = hi if args.max_running is None else min(hi, args.max_running)
        out.append(f"  (with {busy} trials at once the target takes at least about {busy} full "
                   f"evaluations of compute: the first full-fidelity result takes {FIDELITY.max} "
                   f"steps, during which all {busy} are running)")
    cpu = {m: median([r["cpu"] for r in results if r["task"][0] == m]) for m in methods}
    out.append("")
    out.append("median CPU seconds per run: " + ", ".join(f"{m} {v:.2f}" for m, v in cpu.items()))
    return out


UNDEFINED = "undefined (no median run of either side reached the target)"


def estimate(point: float, lo: float, hi: float) -> str:
    """``point  [lo, hi]``; where ``point`` is NaN (neither side's median run reached the
    target, so there is no ratio) the text says so instead of showing an interval of the
    resamples that happened to be defined, which could not contain the point."""
    if math.isnan(point):
        return UNDEFINED
    return f"{fmt(point)}  [{fmt(lo)}, {fmt(hi)}]"


def _by_seed(by: dict[tuple[str, str, int], list[dict[str, Any]]], method: str, bench: str,
             workers: int) -> np.ndarray:
    """The compute to the target of ``method`` on ``bench`` at ``workers``, in seed order."""
    return np.array([r["compute"] for r in sorted(by[(method, bench, workers)],
                                                  key=lambda r: r["task"][3])])


def bootstrap(statistic: Callable[[np.ndarray], float], n: int, rounds: int = 1000
              ) -> tuple[float, float]:
    """5% and 95% quantiles of ``statistic(pick)`` over ``rounds`` draws of ``n`` seed indices
    with replacement (every method is indexed by the same draw: runs are paired by seed).
    NaN results (no method reached the target) are left out; ``(nan, nan)`` when none is left.
    The interval is only shown next to a defined (non-NaN) point estimate (see
    :func:`estimate`)."""
    if n == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(0)
    stats = [statistic(rng.integers(0, n, n)) for _ in range(rounds)]
    stats = [x for x in stats if not math.isnan(x)]
    if not stats:
        return math.nan, math.nan
    # quantiles that pick a drawn value: an infinite ratio (a method that never reached the
    # target) stays infinite instead of turning into NaN by interpolation
    return (float(np.quantile(stats, 0.05, method="inverted_cdf")),
            float(np.quantile(stats, 0.95, method="inverted_cdf")))


def bootstrap_geomean(by: dict[tuple[str, str, int], list[dict[str, Any]]],
                      args: argparse.Namespace, workers: int, baseline: str,
                      rounds: int = 1000) -> tuple[float, float]:
    """The interval of the suite's geometric-mean ratio default/``baseline`` (see
    :func:`bootstrap`)."""
    benches = [b for b in args.benchmarks if b != CROSSING]
    comp = {(m, b): _by_seed(by, m, b, workers) for b in benches for m in ("default", baseline)}

    def statistic(pick: np.ndarray) -> float:
        logs = []
        for b in benches:
            a = float(np.median(comp[("default", b)][pick]))
            c = float(np.median(comp[(baseline, b)][pick]))
            q, _ = censored_ratio(a, c, budget_of(baseline, args.budget))
            if not math.isnan(q):  # as the point estimate: floored at 1e-3, inf stays inf
                logs.append(math.log(max(q, 1e-3)))
        return math.exp(float(np.mean(logs))) if logs else math.nan

    return bootstrap(statistic, len(comp[("default", benches[0])]) if benches else 0, rounds)


def bootstrap_crossing(by: dict[tuple[str, str, int], list[dict[str, Any]]],
                       args: argparse.Namespace, workers: int) -> tuple[float, float]:
    """The interval of the crossing benchmark's ratio default/random (see :func:`bootstrap`)."""
    a, c = _by_seed(by, "default", CROSSING, workers), _by_seed(by, "random", CROSSING, workers)
    return bootstrap(lambda pick: censored_ratio(float(np.median(a[pick])),
                                                 float(np.median(c[pick])), args.budget)[0],
                     len(a))


def bootstrap_scaling(by: dict[tuple[str, str, int], list[dict[str, Any]]],
                      args: argparse.Namespace, lo: int, hi: int) -> tuple[float, float]:
    """The interval of the default's geometric-mean ratio of compute at ``hi`` workers to
    compute at ``lo`` workers over the suite (see :func:`bootstrap`)."""
    benches = [b for b in args.benchmarks if b != CROSSING]
    comp = {(b, w): _by_seed(by, "default", b, w) for b in benches for w in (lo, hi)}

    def statistic(pick: np.ndarray) -> float:
        qs = [censored_ratio(float(np.median(comp[(b, hi)][pick])),
                             float(np.median(comp[(b, lo)][pick])), args.budget)[0]
              for b in benches]
        qs = [q for q in qs if not math.isnan(q)]  # as the point estimate
        return geomean(qs)

    return bootstrap(statistic, len(comp[(benches[0], lo)]) if benches else 0)


LINE_STYLES: dict[str, dict[str, Any]] = {
    "default": {"linestyle": "-", "linewidth": 1.5},
    # random2x runs random's seeds on, so up to the budget its curve is random's: random is
    # drawn wide and solid, random2x thin and dashed on top, so that both stay visible
    "random": {"linestyle": "-", "linewidth": 3.0, "alpha": 0.6},
    "random2x": {"linestyle": "--", "linewidth": 1.2},
    "optuna": {"linestyle": "-.", "linewidth": 1.5},
}


def line_style(method: str) -> dict[str, Any]:
    """Matplotlib line keywords of ``method`` (dotted for searcher+scheduler methods)."""
    return dict(LINE_STYLES.get(method, {"linestyle": ":", "linewidth": 1.5}))


def draw(by: dict[tuple[str, str, int], list[dict[str, Any]]], args: argparse.Namespace) -> Any:
    """The figure of median regret over compute: a row per worker count, a column per
    benchmark, a line per method (each to its own budget, in its own style)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, rows = len(args.benchmarks), len(args.workers)
    fig, axes = plt.subplots(rows, n, figsize=(3.2 * n, 2.8 * rows), squeeze=False)
    grid = np.linspace(0, 2 * args.budget, GRID_POINTS)
    for row, w in zip(axes, args.workers, strict=True):
        for ax, b in zip(row, args.benchmarks, strict=True):
            for m in args.methods:
                curves = np.array([r["curve"] for r in by[(m, b, w)]])
                med = np.median(curves, axis=0)
                keep = (grid <= budget_of(m, args.budget)) & np.isfinite(med)
                ax.plot(grid[keep], np.maximum(med[keep], 1e-6), label=m, **line_style(m))
            ax.set_yscale("log")
            ax.set_title(f"{b} (N={w})", fontsize=9)
            ax.tick_params(labelsize=7)
        row[0].set_ylabel("median regret")
    for ax in axes[-1]:
        ax.set_xlabel("compute (full evaluations)", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot(by: dict[tuple[str, str, int], list[dict[str, Any]]], args: argparse.Namespace,
         path: Path) -> Path:
    """Write :func:`draw`'s figure as PNG at exactly ``path`` (no suffix added); return it."""
    import matplotlib.pyplot as plt

    fig = draw(by, args)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80, format="png")
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
