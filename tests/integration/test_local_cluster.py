"""The embedded pool leaves nothing running when the process that started it is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

START = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from client.local import LocalCluster
    cluster = LocalCluster(agents=2, state_dir=Path(sys.argv[1]))
    cluster.start()
    cluster.wait_for_nodes(2)
    pids = [cluster.coordinator.pid, *(a.pid for a in cluster.agents)]
    print(" ".join(map(str, pids)), flush=True)
    time.sleep(600)
""")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_parts_die_with_the_process_that_started_them(tmp_path: Path) -> None:
    owner = subprocess.Popen([sys.executable, "-c", START, str(tmp_path / "state")],
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert owner.stdout is not None
        line = owner.stdout.readline()
        pids = [int(p) for p in line.split()]
        assert len(pids) == 3 and all(_alive(p) for p in pids), line
    finally:
        os.kill(owner.pid, signal.SIGKILL)  # no clean-up code runs in the owner
        owner.wait()
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [p for p in pids if _alive(p)]
    for pid in left:  # do not leak them into the rest of the run if the check fails
        os.kill(pid, signal.SIGKILL)
    assert left == []


FROM_A_THREAD = textwrap.dedent("""
    import sys, threading, time
    from pathlib import Path
    from client.local import LocalCluster
    cluster = LocalCluster(agents=1, state_dir=Path(sys.argv[1]))
    starter = threading.Thread(target=cluster.start)
    starter.start()
    starter.join()  # the thread that asked for the parts has ended
    cluster.wait_for_nodes(1)
    time.sleep(1.0)
    parts = [cluster.coordinator, *cluster.agents]
    print(" ".join(str(p.poll()) for p in parts), flush=True)
    cluster.close()
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_parts_outlive_the_short_lived_thread_that_started_them(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", FROM_A_THREAD, str(tmp_path / "state")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["None", "None"]  # both still running after the thread ended


def test_the_state_directorys_files_are_readable_by_this_user_only(tmp_path: Path) -> None:
    # before, coordinator.db and the logs were 0644 in a directory the trials' accounts may
    # traverse: any local account that knew the path could read another study's results
    proc = subprocess.run([sys.executable, "-c", FROM_A_THREAD, str(tmp_path / "state")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    state = tmp_path / "state"
    files = [state / "coordinator.db", state / "coordinator.log", state / "agent-0.log"]
    assert {f.name: oct(f.stat().st_mode & 0o777) for f in files} == {
        f.name: "0o600" for f in files}
