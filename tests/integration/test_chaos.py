"""A short chaos run (scripts/chaos.py) as a real process: kills, then the invariants."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_short_chaos_run_keeps_every_invariant() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "chaos.py"), "--agents", "2", "--trials", "6",
         "--steps", "6", "--kills", "4", "--seed", "7", "--lease", "2", "--json"],
        capture_output=True, text=True, timeout=240,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["problems"] == [], result["log"]
    assert proc.returncode == 0
    assert sum(result["kills"].values()) >= 3
    assert result["study_state"] == "completed"
    assert result["duplicates"] == 0 and result["acknowledged_missing"] == 0
    assert result["acknowledged_checked"] > 0
    assert sum(result["trials"].values()) == 6
