"""bench_suggest_latency.py: options and the Optuna it needs are checked before any work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

from bench_suggest_latency import MIN_TRIALS, parse_args  # noqa: E402


@pytest.mark.parametrize(("argv", "allowed"), [
    (["--trials", "0"], f">= {MIN_TRIALS}"),
    (["--trials", "-3"], f">= {MIN_TRIALS}"),
    (["--trials", str(MIN_TRIALS - 1)], f">= {MIN_TRIALS}"),
    (["--repeats", "0"], ">= 1"),
    (["--repeats", "-1"], ">= 1"),
])
def test_bad_counts_are_refused_with_exit_2(argv: list[str], allowed: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"{argv[0]}: got {argv[1]}" in err and allowed in err


def test_a_missing_optuna_is_refused_up_front_with_how_to_install_it(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # makes `import optuna` fail
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--trials", "50"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "optuna is not installed" in err and "pip install -e '.[bench]'" in err


def test_help_documents_both_options_with_their_defaults() -> None:
    done = subprocess.run([sys.executable, str(SCRIPTS / "bench_suggest_latency.py"), "--help"],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "COLUMNS": "10000"})  # no path broken by wrapping
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "--trials finished trials (default 1,000)" in text
    assert "(default: 1000)" in text and "(default: 20)" in text
    assert f"at least {MIN_TRIALS}" in text and "at least 1" in text
