"""The researcher CLI's local commands (no coordinator needed)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from client.cli import main


def test_keygen_creates_a_private_key_once(capsys: pytest.CaptureFixture[str],
                                           _isolated_home: Path) -> None:
    assert main(["keygen"]) == 0
    first = capsys.readouterr().out
    path = _isolated_home / "researcher.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert main(["keygen"]) == 0
    again = capsys.readouterr().out
    assert "existing" in again and first.splitlines()[-1] == again.splitlines()[-1]


def test_init_writes_template_and_refuses_to_overwrite(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s" / "study.toml").is_file() and (tmp_path / "s" / "train.py").is_file()
    assert main(["init", str(tmp_path / "s")]) == 1
    assert "already exists" in capsys.readouterr().err


def test_try_runs_standalone_with_params_and_defaults(tiny_train_dir: Path,
                                                     capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["try", str(tiny_train_dir / "train.py"), "--param", "x=0.3"]) == 0
    out = capfd.readouterr().out
    assert "trying" in out and "x=0.3" in out
    assert [line.split()[1] for line in out.splitlines() if line.startswith("[trial]")] == [
        "step=1", "step=2", "step=3"]
    assert "step=1 loss=1\n" in out and "step=3 loss=0.333333\n" in out  # (x-0.3)^2 + 1/step


@pytest.mark.parametrize("param, field", [
    ("x=2.0", "--param.x"), ("y=1", "--param y"), ("x", "--param"),
])
def test_try_refuses_bad_params(tiny_train_dir: Path, param: str, field: str,
                                capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["try", str(tiny_train_dir / "train.py"), "--param", param]) == 1
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and field in err[0]


def test_commands_need_a_coordinator(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "abc"]) == 1
    assert "--coordinator" in capsys.readouterr().err


def test_run_local_refuses_a_gpu_study_without_gpus(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import write_template

    # No machine has a GPU this large, so the check fails here and on GPU machines alike.
    study = write_template(tmp_path / "s", gpus="1", min_gpu_memory_gb="100000", max_trials="2")
    assert main(["run", str(study), "--local", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "resources.gpus" in err[-1] and "gpus = 0" in err[-1]


def test_trials_show_the_gpu_use_where_it_was_measured(capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    from client.cli import _print_trials
    from client.results import TrialResult

    gpu = TrialResult(0, "completed", {"x": 0.5}, 0.25, 3, 1, gpu_utilization=87.4,
                      gpu_memory_peak_gb=3.25)
    cpu = TrialResult(1, "pruned", {"x": 0.1}, 0.5, 1, 1)
    big = TrialResult(2, "completed", {"x": 0.2}, 0.3, 3, 1, gpu_utilization=100.0,
                      gpu_memory_peak_gb=139.8)  # an H200 holds that much
    _print_trials([gpu, cpu, big], "table")
    header, first, second, third = capsys.readouterr().out.splitlines()
    assert "gpu%    GiB" in header
    assert "    87    3.2  x=0.5" in first and "     -      -  x=0.1" in second
    assert "   100  139.8  x=0.2" in third
    _print_trials([cpu], "table")  # no trial measured: no column
    assert "gpu%" not in capsys.readouterr().out
    _print_trials([gpu, cpu], "csv")
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].endswith("attempts,gpu_utilization,gpu_memory_peak_gb,error")
    assert rows[1].endswith(",87.4,3.25,") and rows[2].endswith(",,,")
    _print_trials([gpu], "json")
    import json

    [shown] = json.loads(capsys.readouterr().out)
    assert (shown["gpu_utilization"], shown["gpu_memory_peak_gb"]) == (87.4, 3.25)


def test_run_writes_the_results_beside_the_study_and_a_failed_report_hides_nothing(
    tiny_train_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    study = tiny_train_dir / "study.toml"
    study.write_text(study.read_text().replace("max_trials = 6", "max_trials = 2"))
    assert main(["run", str(study), "--local", "1", "--json"]) == 0
    out = capsys.readouterr().out
    best = json.loads(out[out.index("\n{\n") + 1:])
    results = tiny_train_dir / "results" / best["study_id"]
    assert f"results in {results}: best.json, trials.csv" in out
    assert "cost: 0 credits (" in out and "slot-hours)" in out  # CPU slots cost 0 by default
    saved = json.loads((results / "best.json").read_text())
    assert saved["best"]["trial_id"] == best["trial_id"]
    blocked = tiny_train_dir / "blocked"
    blocked.write_text("a file where the results directory would go")
    assert main(["run", str(study), "--local", "1", "--out", str(blocked)]) == 0
    captured = capsys.readouterr()
    assert f"warning: could not write the results to {blocked}" in captured.err
    assert "best trial" in captured.out  # the study's result is still shown
    assert main(["run", str(study), "--local", "1", "--no-report"]) == 0
    assert "results in" not in capsys.readouterr().out
    assert sorted(p.name for p in (tiny_train_dir / "results").iterdir()) == [
        ".tunefleet-results", best["study_id"]]  # marked: bundles leave it out


def test_a_study_a_limit_ended_before_any_trial_finished_says_so_and_shows_the_best_stopped(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import json

    from client.cli import _print_best
    from client.report import write_report
    from client.results import StudyStatus, TrialResult

    counts = {"pending": 0, "running": 0, "completed": 0, "pruned": 2, "failed": 0}
    ended = StudyStatus("s1", "s", "completed", "loss", "max", counts, None, None, 0.0, 9.0,
                        "deadline 2026-12-01T18:00:00Z passed")
    trials = [TrialResult(0, "pruned", {"x": 0.1}, 0.3, 4, 1),
              TrialResult(1, "pruned", {"x": 0.7}, 0.8, 4, 1)]
    assert _print_best(ended, False, trials) == 1
    out = capsys.readouterr().out
    assert "ended (deadline 2026-12-01T18:00:00Z passed) with no trial run to the end" in out
    assert "the best stopped early: trial 1, loss=0.8 at step 4" in out  # mode is max
    write_report(ended, trials, tmp_path)
    assert json.loads((tmp_path / "best.json").read_text())["best_pruned"]["trial_id"] == 1
    running = StudyStatus("s1", "s", "running", "loss", "min", counts, None, None, 0.0, 0.0)
    assert _print_best(running, False, trials) == 1
    assert "no completed trial with a value yet" in capsys.readouterr().out


def test_the_best_configuration_prints_as_toml_that_enqueue_takes(
    capsys: pytest.CaptureFixture[str]
) -> None:
    import tomllib

    from client.cli import _print_best
    from client.results import StudyStatus, TrialResult

    best = TrialResult(3, "completed", {"lr": 0.003, "act": "gelu", "bn": False, "n": 64}, 0.2,
                       9, 1)
    done = StudyStatus("s1", "s", "completed", "loss", "min",
                       {"pending": 0, "running": 0, "completed": 1, "pruned": 0, "failed": 0},
                       best, 1, 0.0, 1.0)
    assert _print_best(done, False) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()[2:]]
    assert tomllib.loads("\n".join(lines)) == best.params


def test_try_refuses_a_number_beyond_a_double_by_name(tiny_train_dir: Path,
                                                      capfd: pytest.CaptureFixture[str]) -> None:
    # "x=1" followed by 400 zeros used to overflow with a traceback
    assert main(["try", str(tiny_train_dir / "train.py"), "--param", "x=1" + "0" * 400]) == 1
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tunefleet: error: --param.x: got inf;"), err
