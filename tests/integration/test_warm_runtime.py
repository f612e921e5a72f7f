"""An agent with warm runtimes (``--preload``) runs a real study through a real coordinator."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from client.local import LocalCluster
from client.sdk import Client
from tests.integration.helpers import wait_until_finished
from tunefleet.keys import Identity


def test_an_agent_with_warm_runtimes_runs_every_trial(tmp_path: Path, tiny_train_dir: Path
                                                      ) -> None:
    identity = Identity.generate()
    with LocalCluster(agents=1, state_dir=tmp_path / "cluster", slots_per_agent=2,
                      agent_args=["--preload", "json", "--preload", "decimal"]) as cluster, \
            Client(cluster.address, identity, cluster.security) as client:
        (tiny_train_dir / "train.py").write_text(  # did the trial find decimal imported?
            "import sys\n"
            "preloaded = float('decimal' in sys.modules)\n"
            "from tunefleet import trial\n"
            "for step in (1, 2, 3):\n"
            "    trial.report(step, loss=trial.params['x'] + 1 / step, preloaded=preloaded)\n"
        )
        study_id = client.submit_file(tiny_train_dir / "study.toml")
        wait_until_finished(client, study_id)
        trials = client.trials(study_id, include_reports=True)
        log = (cluster.state_dir / "agent-0.log").read_text()
        with sqlite3.connect(cluster.db_path) as db:
            attempts = db.execute("SELECT COUNT(*) FROM attempts WHERE study_id = ?",
                                  (study_id,)).fetchone()[0]
    assert len(trials) == 6 and {t.state for t in trials} == {"completed"}
    assert all([p["step"] for p in t.reports] == [1, 2, 3] for t in trials)
    assert attempts == 6  # one try each (one agent: no other node re-runs the best)
    assert "warm runtimes: one per slot, preloading json, decimal" in log
    assert all(p["preloaded"] == 1.0 for t in trials for p in t.reports)  # all ran warm
    # scratch directories of used warm runtimes go with their attempts, and of waiting ones
    # when the agent stops
    work = cluster.state_dir / "agent-0" / "work"
    assert not list(work.glob("warm-*")) and not list(work.glob("attempt-*"))


def test_a_preload_that_is_not_a_module_name_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "node_agent", "start", "--coordinator", "127.0.0.1:1",
         "--insecure", "--allow-same-user", "--preload", "torch; rm -rf /"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2
    assert "--preload: got 'torch; rm -rf /'" in done.stderr and "module name" in done.stderr


def test_a_preload_that_is_not_installed_is_refused(tmp_path: Path) -> None:
    # before, accepted: every warm runtime then printed the ImportError into trials' stderr
    done = subprocess.run(
        [sys.executable, "-m", "node_agent", "start", "--coordinator", "127.0.0.1:1",
         "--insecure", "--allow-same-user", "--home", str(tmp_path / "home"),
         "--preload", "numpy", "--preload", "no_such_package_here.sub"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2
    assert "--preload: got 'no_such_package_here.sub'; no_such_package_here is not installed" \
        in done.stderr
    assert not (tmp_path / "home").exists()


def test_no_preload_with_a_preload_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "node_agent", "start", "--coordinator", "127.0.0.1:1",
         "--insecure", "--allow-same-user", "--no-preload", "--preload", "torch"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2
    assert "--no-preload: given with --preload torch" in done.stderr


def test_gpus_that_this_machine_does_not_have_are_refused_before_anything_is_made(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "node_agent", "start", "--coordinator", "127.0.0.1:1",
         "--insecure", "--allow-same-user", "--home", str(tmp_path / "home"), "--gpus", "7"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2
    assert "--gpus: got '7'" in done.stderr and "GPU" in done.stderr.split("got '7'")[1]
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize("base", ["5", "999", str(2**31)])
def test_a_uid_base_outside_the_unprivileged_range_is_refused(base: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "node_agent", "start", "--coordinator", "127.0.0.1:1",
         "--insecure", "--allow-same-user", "--uid-base", base, "--home", str(tmp_path / "h")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2
    assert f"--uid-base: got {base}; must be a user id in [1000," in done.stderr
    assert not (tmp_path / "h").exists()  # nothing created
