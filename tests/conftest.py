"""Fixtures shared by the whole suite."""

from __future__ import annotations

import re
import shutil
from importlib import resources
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own researcher and node homes."""
    home = tmp_path / "home"
    monkeypatch.setenv("TUNEFLEET_HOME", str(home))
    monkeypatch.setenv("TUNEFLEET_NODE_HOME", str(home / "node"))
    monkeypatch.delenv("TUNEFLEET_COORDINATOR", raising=False)
    return home


def write_template(target: Path, **overrides: str) -> Path:
    """Copy the digits template into ``target``; ``overrides`` replace ``key = value`` lines."""
    target.mkdir(parents=True, exist_ok=True)
    template = resources.files("client.templates.digits")
    for name in ("study.toml", "train.py"):
        (target / name).write_text(template.joinpath(name).read_text())
    study = (target / "study.toml").read_text()
    for key, value in overrides.items():
        study, n = re.subn(rf"(?m)^{key}\s*=.*$", f"{key} = {value}", study)
        if n != 1:
            raise KeyError(f"template has no single line for {key}")
    (target / "study.toml").write_text(study)
    return target / "study.toml"


@pytest.fixture
def small_study(tmp_path: Path) -> Path:
    """The template study, cut to 4 trials of 3 epochs."""
    return write_template(tmp_path / "study", max_trials="4", max="3", min="1")


@pytest.fixture
def tiny_train_dir(tmp_path: Path) -> Path:
    """A bundle directory whose train.py needs no torch: it reports a quadratic of x."""
    d = tmp_path / "tiny"
    d.mkdir()
    (d / "train.py").write_text(
        "import time\n"
        "from tunefleet import trial\n"
        "x = trial.params['x']\n"
        "for step in range(1, (trial.max_step or 3) + 1):\n"
        "    trial.report(step, loss=(x - 0.3) ** 2 + 1.0 / step)\n"
        "    if trial.should_stop():\n"
        "        break\n"
        "    time.sleep(0.05)\n"
    )
    (d / "study.toml").write_text(
        'name = "tiny"\n'
        '[objective]\nmetric = "loss"\nmode = "min"\n'
        "[budget]\nmax_trials = 6\n"
        '[search]\nsearcher = "random"\nscheduler = "fifo"\nseed = 1\n'
        "[fidelity]\nmin = 1\nmax = 3\n"
        '[space]\nx = { type = "float", low = 0.0, high = 1.0 }\n'
    )
    return d


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
