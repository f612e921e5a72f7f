"""A study's results as files: the best configuration, every trial, learning curves and plots.

:func:`write_report` writes into one directory:

- ``best.json``: the study, its cost and its best trial (configuration, value, verification);
- ``trials.csv``: every trial (state, parameters, value, step, attempts, GPU use, error);
- ``learning_curves.png``: the objective at every reported step of every trial, the best one
  drawn thick, pruned trials thin and grey, so where the scheduler stopped each one shows;
- ``history.png``: each trial's last value in the order trials were created, with the best
  completed value so far as a line;
- ``parameters.png``: one panel per parameter, its value against each trial's last value
  (completed trials in colour, pruned ones grey).

``tunefleet run`` writes them when a study ends; ``tunefleet report STUDY_ID`` writes them for
any study the key may read. Plots use matplotlib without a display (the Agg backend).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from client.results import StudyStatus, TrialResult
from tunefleet.errors import TunefleetError

__all__ = ["write_report", "write_trials_csv", "best_pruned", "REPORT_FILES"]

REPORT_FILES = ("best.json", "trials.csv", "learning_curves.png", "history.png",
                "parameters.png")


def write_report(status: StudyStatus, trials: Sequence[TrialResult], out: Path) -> list[Path]:
    """Write the report files of a study into ``out`` (created if needed); returns their
    paths. ``trials`` need their reports for the learning curves."""
    if out.exists() and not out.is_dir():
        raise TunefleetError(f"could not write the results to {out}: it is a file, not a "
                             "directory")
    out.mkdir(parents=True, exist_ok=True)
    written = [_best_json(status, trials, out / "best.json"),
               _trials_csv(trials, out / "trials.csv")]
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, none used
    written.append(_learning_curves(status, trials, out / "learning_curves.png"))
    written.append(_history(status, trials, out / "history.png"))
    written.append(_parameters(status, trials, out / "parameters.png"))
    return written


def best_pruned(status: StudyStatus, trials: Sequence[TrialResult]) -> TrialResult | None:
    """The best trial that was stopped early, for a study without a completed one."""
    pruned = [t for t in trials if t.state == "pruned" and _finite(t.value)]
    if not pruned:
        return None
    key = (lambda t: t.value) if status.mode == "min" else (lambda t: -float(t.value or 0.0))
    return min(pruned, key=key)  # type: ignore[arg-type, return-value]


def _best_json(status: StudyStatus, trials: Sequence[TrialResult], path: Path) -> Path:
    data = status.to_dict()
    if status.best is None:  # a study a limit ended before any trial ran to the end
        pruned = best_pruned(status, trials)
        data["best_pruned"] = None if pruned is None else pruned.to_dict()
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


CSV_COLUMNS = frozenset({"trial_id", "state", "value", "step", "attempts", "gpu_utilization",
                         "gpu_memory_peak_gb", "error"})


def write_trials_csv(trials: Sequence[TrialResult], stream: TextIO) -> None:
    """Every trial as one CSV row: id, state, each parameter, value, step, attempts, GPU use,
    then the error text last (the same columns for ``tunefleet trials --format csv``). A
    parameter named as one of the other columns (``step``, ``value``...) gets the column
    ``param_NAME``, so that no two columns share a name."""
    names = _param_names(trials)
    writer = csv.writer(stream)
    writer.writerow(["trial_id", "state", *[f"param_{n}" if n in CSV_COLUMNS else n
                                            for n in names],
                     "value", "step", "attempts", "gpu_utilization", "gpu_memory_peak_gb",
                     "error"])
    for t in trials:
        writer.writerow([t.trial_id, t.state, *[t.params.get(n, "") for n in names],
                         _blank(t.value), t.step, t.attempts, _blank(t.gpu_utilization),
                         _blank(t.gpu_memory_peak_gb), t.error.strip()])


def _param_names(trials: Sequence[TrialResult]) -> list[str]:
    """Every parameter name, in the order the trials' params give them (the SDK gives them in
    the study's ``[space]`` order)."""
    return list(dict.fromkeys(k for t in trials for k in t.params))


def _trials_csv(trials: Sequence[TrialResult], path: Path) -> Path:
    with path.open("w", newline="") as f:
        write_trials_csv(trials, f)
    return path


def _blank(value: float | None) -> Any:
    return "" if value is None else value


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _title(status: StudyStatus, what: str) -> str:
    c = status.counts
    return (f"{status.name}: {what} ({c['completed']} completed, {c['pruned']} pruned, "
            f"{c['failed']} failed)")


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _learning_curves(status: StudyStatus, trials: Sequence[TrialResult], path: Path) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(8, 5))
    best = status.best.trial_id if status.best is not None else None
    for t in trials:
        points = [(int(r["step"]), float(r[status.metric])) for r in t.reports
                  if _finite(r.get(status.metric))]
        if not points:
            continue
        steps, values = zip(*points, strict=True)
        # a marker at each point: a trial stopped at its first step is one point, no line
        if t.trial_id == best:
            ax.plot(steps, values, color="tab:red", linewidth=2.5, zorder=3, marker="o",
                    markersize=3, label=f"best: trial {t.trial_id}")
        elif t.state == "completed":
            ax.plot(steps, values, color="tab:blue", linewidth=1.0, alpha=0.8, marker="o",
                    markersize=2)
        else:
            ax.plot(steps, values, color="grey", linewidth=0.8, alpha=0.5, marker="o",
                    markersize=2)
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(status.metric)
    ax.set_title(_title(status, f"{status.metric} per step"), fontsize=10)
    if ax.get_legend_handles_labels()[0]:  # the best trial's curve, when it reported
        ax.legend(loc="best")
    return _save(fig, path)


def _history(status: StudyStatus, trials: Sequence[TrialResult], path: Path) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(8, 5))
    ordered = sorted((t for t in trials if _finite(t.value)), key=lambda t: t.trial_id)
    for state, color in (("completed", "tab:blue"), ("pruned", "grey"),
                         ("failed", "tab:orange")):  # a failed trial's last value, if any
        shown = [t for t in ordered if t.state == state]
        if not shown and state == "failed":
            continue
        ax.scatter([t.trial_id for t in shown], [float(t.value or 0.0) for t in shown],
                   color=color, s=18, label=state, zorder=2)
    better = min if status.mode == "min" else max
    xs: list[int] = []
    ys: list[float] = []
    for t in ordered:
        if t.state != "completed":
            continue
        value = float(t.value or 0.0)
        ys.append(value if not ys else better(ys[-1], value))
        xs.append(t.trial_id)
    if xs:
        ax.step(xs, ys, where="post", color="tab:red", label=f"best {status.metric} so far")
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"{status.metric} (last reported)")
    ax.set_title(_title(status, "history"), fontsize=10)
    ax.legend(loc="best")
    return _save(fig, path)


_STATE_COLORS = {"completed": "tab:blue", "pruned": "grey", "failed": "tab:orange"}


def _parameters(status: StudyStatus, trials: Sequence[TrialResult], path: Path) -> Path:
    import matplotlib.pyplot as plt

    names = _param_names(trials)
    columns = min(3, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / columns))
    # wide enough for the title however few the parameters
    fig, axes = plt.subplots(rows, columns, figsize=(max(4 * columns, 8), 3 * rows),
                             squeeze=False)
    valued = [t for t in trials if _finite(t.value)]
    for ax, name in zip(axes.flat, names, strict=False):
        values = [t.params.get(name) for t in valued]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numeric:
            positions = [float(v) for v in values]  # type: ignore[arg-type]
            if positions and min(positions) > 0 and max(positions) / min(positions) > 100:
                ax.set_xscale("log")
        else:
            labels = sorted({repr(v) for v in values})
            positions = [labels.index(repr(v)) for v in values]
            ax.set_xticks(range(len(labels)), [label.strip("'") for label in labels],
                          fontsize=8)
        colors = [_STATE_COLORS.get(t.state, "grey") for t in valued]
        ax.scatter(positions, [float(t.value or 0.0) for t in valued], c=colors, s=14)
        ax.set_xlabel(name if len(name) <= 40 else name[:37] + "...")
        ax.set_ylabel(status.metric)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(_title(status, "parameters against the last value"), fontsize=10)
    return _save(fig, path)
