"""Helpers for integration tests: run the real CLIs as processes and read the real database."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from client.sdk import Client


def cli(*args: str, timeout: float = 120.0, check: bool = False, cwd: Path | None = None
        ) -> subprocess.CompletedProcess[str]:
    """Run ``tunefleet ARGS`` as a child process (in ``cwd``)."""
    proc = subprocess.run([sys.executable, "-m", "client", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"tunefleet {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def query(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


def last_values(db: Path, study_id: str, metric: str) -> dict[int, float]:
    """Each trial's value: the metric at the highest step its reports show."""
    out: dict[int, tuple[int, float]] = {}
    for trial, step, metrics in query(
        db, "SELECT r.trial_number, r.step, r.metrics FROM reports r JOIN attempts a ON "
        "a.id = r.attempt_id WHERE r.study_id = ? AND a.purpose = 'trial'", (study_id,)
    ):
        value = json.loads(metrics).get(metric)
        if value is not None and (trial not in out or step > out[trial][0]):
            out[trial] = (step, value)
    return {t: v for t, (_, v) in out.items()}


def wait_until_finished(client: Client, study_id: str, timeout: float = 90.0) -> None:
    """Poll the study's status until it has finished; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not client.status(study_id).finished:
        assert time.monotonic() < deadline, "the study did not finish"
        time.sleep(0.2)
