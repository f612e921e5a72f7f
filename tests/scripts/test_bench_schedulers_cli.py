"""bench_schedulers.py: its options are checked before any work, its help says what it does,
random2x is judged at its own budget and undefined ratios say so (no Optuna needed)."""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import bench_schedulers  # noqa: E402
from bench_schedulers import estimate, line_style, parse_args, report, run_one  # noqa: E402

NO_OPTUNA = ["--methods", "default", "random"]  # the default methods include optuna


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """parse_args(argv) must exit 2; return its error text."""
    with pytest.raises(SystemExit) as exit_:
        parse_args([*NO_OPTUNA, *argv, "--table", "-", "--png", "-"])
    assert exit_.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(("argv", "allowed"), [
    (["--workers", "0"], ">= 1"),
    (["--workers", "8", "-3"], ">= 1"),
    (["--workers", "8", "8"], "at most once"),
    (["--budget", "0"], "> 0"),
    (["--budget", "-5"], "> 0"),
    (["--budget", "nan"], "> 0"),
    (["--jobs", "0"], ">= 1"),
    (["--jobs", "-2"], ">= 1"),
    (["--seed-start", "-1"], ">= 0"),
    (["--seeds", "0"], ">= 1"),
    (["--benchmarks", "branin", "nosuch"], "branin, hartmann6, borehole, park, currin, crossing"),
    (["--methods", "default", "bogus"], "searcher+scheduler"),
    (["--methods", "default", "tpe+nope"], "schedulers: fifo, asha, hyperband, median"),
    (["--methods", "default", "nope+fifo"], "searchers: grid, random, quasirandom, tpe, gp"),
    (["--methods", "default", "tpe+asha+fifo"], "searcher+scheduler"),
])
def test_bad_values_are_refused_naming_option_value_and_what_is_allowed(
        argv: list[str], allowed: str, capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(argv, capsys)
    assert argv[0] in err and argv[-1] in err and allowed in err


def test_max_running_without_the_default_method_is_refused(
        capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(["--max-running", "8", "--methods", "random", "random2x"], capsys)
    assert "--max-running" in err and "8" in err and "default" in err


def test_the_searcher_plus_scheduler_form_and_every_method_name_are_accepted() -> None:
    args = parse_args(["--methods", "default", "random", "random2x", "tpe+asha", "gp+median",
                       "--table", "-", "--png", "-"])
    assert args.methods == ["default", "random", "random2x", "tpe+asha", "gp+median"]


def test_a_missing_optuna_is_refused_up_front_with_how_to_install_it(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # makes `import optuna` fail
    err = refused(["--methods", "default", "optuna"], capsys)
    assert "--methods" in err and "optuna" in err and "pip install -e '.[bench]'" in err


@pytest.mark.parametrize("option", ["--table", "--png"])
def test_unwritable_output_paths_are_refused_before_any_work(
        option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    target = blocker / ("out.png" if option == "--png" else "out.md")  # under a file: never
    other = "--png" if option == "--table" else "--table"
    with pytest.raises(SystemExit) as exit_:
        parse_args([*NO_OPTUNA, option, str(target), other, "-"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert option in err and str(target) in err and "not a folder" in err
    folder = tmp_path / target.name
    folder.mkdir()
    with pytest.raises(SystemExit):
        parse_args([*NO_OPTUNA, option, str(folder), other, "-"])  # a folder is no file either
    assert "is a folder" in capsys.readouterr().err


def test_a_png_path_must_end_in_png_so_that_no_suffix_is_added_silently(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args([*NO_OPTUNA, "--png", "/tmp/fig", "--table", "-"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--png" in err and "/tmp/fig" in err and ".png" in err


def test_help_lists_names_and_defaults_including_the_output_paths() -> None:
    done = subprocess.run([sys.executable, str(SCRIPTS / "bench_schedulers.py"), "--help"],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "COLUMNS": "10000"})  # no path broken by wrapping
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())  # argparse wraps lines
    for expected in ("results/bench_schedulers.md", "results/bench_schedulers.png",
                     "default: 1", "default: [1, 8, 32]", "default: 100.0", "tpe+asha",
                     "crossing", "digits", "random2x", "searcher+scheduler", "Prints to stdout"):
        assert expected in text, expected


def test_a_bad_value_exits_2_from_the_command_line_before_any_output(tmp_path: Path) -> None:
    table = tmp_path / "t.md"
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_schedulers.py"), "--workers", "0", "--table",
         str(table), "--png", "-"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 2 and done.stdout == "" and not table.exists()
    assert "--workers: got 0" in done.stderr


def test_random2x_final_regret_is_measured_at_its_own_twice_larger_budget() -> None:
    single = run_one(("random", "branin", 2, 0, 10.0, None))
    double = run_one(("random2x", "branin", 2, 0, 10.0, None))
    # the curve's grid ends at twice the budget: random2x's final regret is its last point
    assert double["regret"] == double["curve"][-1]
    # on this seed the second half of random2x's budget finds a better configuration; before,
    # both columns read random's regret at the budget
    assert double["regret"] < single["regret"]


def test_random_and_random2x_are_drawn_distinguishably(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    assert line_style("random") != line_style("random2x")
    assert line_style("random2x")["linestyle"] != line_style("random")["linestyle"]
    grid = 60
    by = {(m, "branin", 2): [{"task": (m, "branin", 2, 0), "curve": [1.0] * grid}]
          for m in ("random", "random2x")}
    args = argparse.Namespace(benchmarks=["branin"], workers=[2], methods=["random", "random2x"],
                              budget=10.0)
    fig = bench_schedulers.draw(by, args)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert set(lines) == {"random", "random2x"}
    assert lines["random"].get_linestyle() != lines["random2x"].get_linestyle()
    assert max(lines["random"].get_xdata()) <= 10.0 < max(lines["random2x"].get_xdata())
    path = bench_schedulers.plot(by, args, tmp_path / "fig.png")
    assert path == tmp_path / "fig.png" and path.read_bytes()[:4] == b"\x89PNG"


def runs(method: str, bench: str, workers: int, computes: list[float]) -> list[dict[str, Any]]:
    return [{"task": (method, bench, workers, s), "compute": c, "regret": 0.0, "wall": c,
             "cpu": 0.0, "curve": []} for s, c in enumerate(computes)]


def test_a_ratio_without_any_median_run_at_the_target_is_undefined_with_no_interval() -> None:
    # neither method's median run reached the target; two of the five seeds of each did, so
    # some resamples have a ratio: before, the line read "nan  [x, x]"
    by = {(m, "crossing", w): runs(m, "crossing", w, [5.0, 7.0] + [math.inf] * 3)
          for m in ("default", "random") for w in (1, 8)}
    args = argparse.Namespace(budget=100.0, seeds=5, seed_start=0, max_running=None,
                              methods=["default", "random"], benchmarks=["crossing"],
                              workers=[1, 8])
    out = "\n".join(report(by, [r for v in by.values() for r in v], args, 0.0))
    crossing = out.split("crossing: default/random")[1].splitlines()[1:3]
    assert all("undefined" in line and "[" not in line for line in crossing), crossing
    # a crossing-only run has nothing to average over the suite: the line is left out
    assert "geometric mean (without crossing)" not in out
    assert "nan  [" not in out


def test_estimate_shows_an_interval_only_next_to_a_defined_point() -> None:
    assert estimate(0.5, 0.4, 0.61) == "0.5  [0.4, 0.61]"
    assert estimate(math.inf, 2.0, math.inf) == "inf  [2, inf]"
    assert "[" not in estimate(math.nan, 3.63, 3.63)
    assert "undefined" in estimate(math.nan, 3.63, 3.63)


def test_an_exploration_method_runs_end_to_end_and_names_the_png_it_wrote(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    table, png = tmp_path / "t.md", tmp_path / "fig.png"
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_schedulers.py"), "--seeds", "1", "--workers", "2",
         "--benchmarks", "branin", "--methods", "default", "tpe+asha", "--budget", "15",
         "--table", str(table), "--png", str(png)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "def/tpe+asha" in done.stdout
    assert f"wrote {png}" in done.stdout and png.exists() and f"wrote {table}" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png", "t.md"]
