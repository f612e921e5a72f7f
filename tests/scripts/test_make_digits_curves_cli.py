"""make_digits_curves.py: bad options exit 2 before any training or file, and --help shows the
defaults. Never runs the real design: only argument errors and a one-epoch --time-one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

from make_digits_curves import parse_args  # noqa: E402


@pytest.mark.parametrize(("argv", "expected"), [
    (["--time-one", "--configs", "0", "--epochs", "1"], "--configs: got 0; must be >= 1"),
    (["--configs", "0"], "--configs: got 0; must be >= 1"),
    (["--configs", "-4"], "--configs: got -4; must be >= 1"),
    (["--configs", "1", "--epochs", "0"], "--epochs: got 0; must be >= 1"),
    (["--pack", "--time-one"], "--time-one: not allowed with argument --pack"),
])
def test_bad_options_exit_2_and_touch_no_file(argv: list[str], expected: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    work, out = tmp_path / "w.jsonl", tmp_path / "o.npz"
    with pytest.raises(SystemExit) as exit_:
        parse_args([*argv, "--work", str(work), "--out", str(out)])
    assert exit_.value.code == 2
    assert expected in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_unwritable_or_misnamed_outputs_are_refused_up_front(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    work = tmp_path / "w.jsonl"
    cases = [
        (["--out", str(blocker / "t.npz"), "--work", str(work)], "--out", "not a folder"),
        (["--out", str(tmp_path / "t"), "--work", str(work)], "--out", "ending in .npz"),
        (["--out", str(tmp_path / "t.npz"), "--work", str(blocker / "w.jsonl")], "--work",
         "not a folder"),
        (["--pack", "--out", str(tmp_path / "t.npz"), "--work", str(work)], "--work",
         "does not exist"),
    ]
    for argv, option, why in cases:
        with pytest.raises(SystemExit) as exit_:
            parse_args(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert option in err and why in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_help_shows_the_defaults_and_that_the_default_out_is_the_committed_table() -> None:
    done = subprocess.run([sys.executable, str(SCRIPTS / "make_digits_curves.py"), "--help"],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "COLUMNS": "10000"})  # no path broken by wrapping
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    for expected in ("(default: 4096)", "(default: 27)", "scripts/data/digits_curves.npz",
                     ".cache/tunefleet/digits_curves.work.jsonl", "committed table"):
        assert expected in text, expected


def test_time_one_with_one_configuration_of_one_epoch_writes_nothing(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "make_digits_curves.py"), "--time-one", "--configs", "1",
         "--epochs", "1", "--work", str(tmp_path / "w.jsonl"), "--out", str(tmp_path / "o.npz")],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "s per configuration of 1 epochs; 1 configurations" in done.stdout
    assert list(tmp_path.iterdir()) == []
