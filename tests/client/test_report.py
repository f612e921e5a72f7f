"""The result files of a study: best.json, trials.csv and three plots (real matplotlib)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from client.report import REPORT_FILES, write_report
from client.results import StudyStatus, TrialResult

PNG = b"\x89PNG\r\n\x1a\n"


def study() -> tuple[StudyStatus, list[TrialResult]]:
    """Hyperband-like: most trials stopped early, two run to step 9."""
    trials = []
    for i in range(10):
        last = 9 if i in (3, 7) else (1 if i % 2 else 3)
        lr = 10 ** (-4 + 0.3 * i)
        reports = [{"step": s, "val_loss": 1.0 / s + abs(i - 3) * 0.1} for s in range(1, last + 1)]
        trials.append(TrialResult(
            i, "completed" if last == 9 else "pruned",
            {"lr": lr, "activation": ["relu", "gelu"][i % 2], "hidden": 16 * (i + 1)},
            reports[-1]["val_loss"], last, 1, reports=reports,
            gpu_utilization=80.0 if i == 3 else None, gpu_memory_peak_gb=2.5 if i == 3 else None))
    trials.append(TrialResult(10, "failed", {"lr": 1e-3, "activation": "relu", "hidden": 8},
                              None, 0, 3, error="boom\n"))
    status = StudyStatus("abc123", "digits-mlp", "completed", "val_loss", "min",
                         {"pending": 0, "running": 0, "completed": 2, "pruned": 8, "failed": 1},
                         trials[3], 11, 0.0, 100.0, "budget spent", 0.42, 0.61, 0.84)
    return status, trials


def test_every_file_is_written_and_holds_the_study(tmp_path: Path) -> None:
    status, trials = study()
    written = write_report(status, trials, tmp_path / "out")
    assert [p.name for p in written] == list(REPORT_FILES)
    best = json.loads((tmp_path / "out" / "best.json").read_text())
    assert best["best"]["trial_id"] == 3 and best["best"]["params"]["activation"] == "gelu"
    assert best["cost"] == {"credits": 0.84, "gpu_hours": 0.42, "slot_hours": 0.61}
    assert best["end_reason"] == "budget spent"
    with (tmp_path / "out" / "trials.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["trial_id"] for r in rows] == [str(i) for i in range(11)]
    assert rows[3]["gpu_utilization"] == "80.0" and rows[4]["gpu_utilization"] == ""
    assert rows[10]["state"] == "failed" and rows[10]["error"] == "boom"
    assert set(rows[0]) >= {"lr", "activation", "hidden", "value", "step"}
    for name in ("learning_curves.png", "history.png", "parameters.png"):
        data = (tmp_path / "out" / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000, name  # drawn, not blank


def test_a_study_without_any_value_still_gets_its_files(tmp_path: Path) -> None:
    status, trials = study()
    nothing = [TrialResult(0, "failed", {"lr": 1e-3}, None, 0, 3, error="boom")]
    empty = StudyStatus("abc124", "s", "completed", "loss", "max",
                        {"pending": 0, "running": 0, "completed": 0, "pruned": 0, "failed": 1},
                        None, 1, 0.0, 1.0)
    written = write_report(empty, nothing, tmp_path)
    assert all(p.stat().st_size > 0 for p in written)
    assert json.loads((tmp_path / "best.json").read_text())["best"] is None


def test_parameters_named_like_the_fixed_columns_get_columns_of_their_own(tmp_path: Path
                                                                          ) -> None:
    # before, a parameter named step or value gave two columns of one name: pandas then read
    # the parameter as the objective's value
    trials = [TrialResult(0, "completed", {"step": 3, "value": 0.5, "lr": 0.1}, 0.25, 9, 1)]
    status = StudyStatus("s", "s", "completed", "loss", "min",
                         {"pending": 0, "running": 0, "completed": 1, "pruned": 0, "failed": 0},
                         trials[0], 1, 0.0, 1.0)
    write_report(status, trials, tmp_path)
    with (tmp_path / "trials.csv").open() as f:
        header = next(csv.reader(f))
    assert header[:5] == ["trial_id", "state", "param_step", "param_value", "lr"]
    assert len(header) == len(set(header))
    [row] = list(csv.DictReader((tmp_path / "trials.csv").open()))
    assert (row["value"], row["step"], row["param_value"], row["param_step"]) == (
        "0.25", "9", "0.5", "3")


def test_every_learning_curve_point_is_drawn_a_trial_of_one_step_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # before, lines without markers: a trial stopped at its first step drew nothing
    from matplotlib.axes import Axes

    calls: list[dict[str, object]] = []
    plot = Axes.plot

    def spy(self: Axes, *args: object, **kwargs: object) -> object:
        calls.append(kwargs)
        return plot(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "plot", spy)
    status, trials = study()
    write_report(status, trials, tmp_path)
    # one curve per trial that reported (history.png's step line is drawn with plot too)
    assert sum(c.get("marker") == "o" for c in calls) == 10


def test_json_of_a_trial_whose_value_is_not_finite_is_standard() -> None:
    trial = TrialResult(0, "completed", {"x": 1}, math.inf, 3, 1)
    assert trial.to_dict()["value"] is None
    json.dumps(trial.to_dict(), allow_nan=False)  # before, "value": Infinity


def test_results_into_a_path_that_is_a_file_say_so(tmp_path: Path) -> None:
    from tunefleet.errors import TunefleetError

    status, trials = study()
    (tmp_path / "out").write_text("a file")
    with pytest.raises(TunefleetError, match="out: it is a file, not a directory"):
        write_report(status, trials, tmp_path / "out")  # before, "[Errno 17] File exists"
