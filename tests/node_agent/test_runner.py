"""The sandboxed runner with real child processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from node_agent.inventory import read_inventory
from node_agent.runner import Child, ChildExit, ChildSpec


def spec(tmp_path: Path, code: str, params: dict[str, object] | None = None,
         fidelity_max: int = 3) -> ChildSpec:
    work = tmp_path / "work"
    work.mkdir()
    (work / "train.py").write_text(code)
    return ChildSpec(work, "train.py", {"params": params or {}, "fidelity_max": fidelity_max})


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def to_the_end(s: ChildSpec) -> ChildExit:
    """Start the child, read every report, and wait for its end."""
    child = await Child.start(s)
    _ = [r async for r in child.reports()]
    return await child.wait()


async def steps_and_dropped(s: ChildSpec) -> tuple[list[int], int]:
    """The steps of the reports the child's reader let through, and how many lines it dropped."""
    child = await Child.start(s)
    steps = [r.step async for r in child.reports()]
    await child.wait()
    return steps, child.bad_lines


def test_reports_stream_in_order_and_exit_is_clean(tmp_path: Path) -> None:
    s = spec(tmp_path, "from tunefleet import trial\n"
                       "for i in range(1, trial.max_step + 1):\n"
                       "    trial.report(i, loss=trial.params['a'] * i)\n", {"a": 0.5})

    async def go() -> tuple[list[tuple[int, dict[str, float]]], int]:
        child = await Child.start(s)
        got = [(r.step, r.metrics) async for r in child.reports()]
        return got, (await child.wait()).exit_code

    got, code = run(go())
    assert got == [(1, {"loss": 0.5}), (2, {"loss": 1.0}), (3, {"loss": 1.5})]
    assert code == 0


def test_environment_is_scrubbed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVIDER_SECRET", "hunter2")
    s = spec(tmp_path, "import os, json\nfrom tunefleet import trial\n"
                       "trial.report(1, leaked=float('PROVIDER_SECRET' in os.environ),\n"
                       "             home=float(os.environ['HOME'] == os.getcwd()),\n"
                       "             pgid=float(os.getpgid(0) == os.getpid()))\n")

    async def go() -> dict[str, float]:
        child = await Child.start(s)
        [r] = [r async for r in child.reports()]
        await child.wait()
        return r.metrics

    assert run(go()) == {"leaked": 0.0, "home": 1.0, "pgid": 1.0}


def test_stop_asks_then_kills_the_whole_group(tmp_path: Path) -> None:
    s = spec(tmp_path, "import signal, subprocess, sys, time\n"
                       "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                       "p = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
                       "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'])\n"
                       "open('grandchild.pid', 'w').write(str(p.pid))\n"
                       "from tunefleet import trial\ntrial.report(1, loss=1.0)\n"
                       "time.sleep(60)\n")

    async def go() -> tuple[bool, float, int]:
        child = await Child.start(s)
        async for _ in child.reports():
            break
        started = time.monotonic()
        await child.stop(grace=0.3)
        result = await child.wait()
        return result.stopped, time.monotonic() - started, result.exit_code

    stopped, took, code = run(go())
    assert stopped and code != 0 and took < 5
    grandchild = int((tmp_path / "work" / "grandchild.pid").read_text())
    time.sleep(0.2)
    assert not _alive(grandchild)


def _alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie waiting for its reaper does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_cooperative_stop_lets_the_child_finish(tmp_path: Path) -> None:
    s = spec(tmp_path, "import time\nfrom tunefleet import trial\n"
                       "for i in range(1, 1000):\n"
                       "    trial.report(i, loss=1.0 / i)\n"
                       "    if trial.should_stop():\n        break\n"
                       "    time.sleep(0.02)\n", fidelity_max=1000)

    async def go() -> tuple[int, int]:
        child = await Child.start(s)
        steps = 0
        async for r in child.reports():
            steps = r.step
            if r.step == 3:
                asyncio.create_task(child.stop(grace=5))
        return steps, (await child.wait()).exit_code

    steps, code = run(go())
    assert code == 0 and 3 <= steps < 20


def test_failure_keeps_the_tail_of_stderr(tmp_path: Path) -> None:
    s = spec(tmp_path, "import sys\nfor i in range(100):\n    print('line', i, file=sys.stderr)\n"
                       "raise RuntimeError('diverged')\n")

    result = run(to_the_end(s))
    assert result.exit_code == 1
    assert "RuntimeError: diverged" in result.stderr_tail
    assert "line 0\n" not in result.stderr_tail and len(result.stderr_tail.splitlines()) <= 20


def test_malformed_report_lines_are_skipped(tmp_path: Path) -> None:
    s = spec(tmp_path, "import os\nfd = int(os.environ['TUNEFLEET_REPORT_FD'])\n"
                       "os.write(fd, b'not json\\n{\"type\": \"report\", \"step\": true}\\n"
                       "{\"type\": \"report\", \"step\": 2, \"metrics\": {\"loss\": 0.5}}\\n"
                       "{\"type\": \"report\", \"step\": 9223372036854775808, "
                       "\"metrics\": {\"loss\": 0.5}}\\n"
                       "{\"type\": \"report\", \"step\": 3, \"metrics\": {\"loss\": "
                       + "9" * 400 + "}}\\n')\n")

    assert run(steps_and_dropped(s)) == ([2], 4)


def test_inventory_without_a_driver_offers_cpu_slots() -> None:
    result = read_inventory(cpu_slots=3)
    if result.inventory.gpus:
        pytest.skip("this machine has an NVIDIA driver")
    assert result.inventory.cpu_slots == 3
    assert "no NVIDIA driver" in result.note and "\n" not in result.note


def test_a_descendant_holding_the_report_pipe_does_not_hold_the_attempt(tmp_path: Path) -> None:
    # before, reports() waited for the pipe's end, which a forked child that outlives the
    # training process (here in its own session, out of the group's reach) never gave: the
    # attempt, and the agent's slot, hung for as long as that child lived
    s = spec(tmp_path, "import os, time\nfrom tunefleet import trial\n"
                       "trial.report(1, loss=1.0)\n"
                       "if os.fork() == 0:\n"
                       "    os.setsid()\n"
                       "    open('escapee.pid', 'w').write(str(os.getpid()))\n"
                       "    time.sleep(60)\n"
                       "    os._exit(0)\n"
                       "trial.report(2, loss=0.5)\n"
                       "trial.report(3, loss=0.25)\n")

    async def go() -> tuple[list[int], int, float]:
        child = await Child.start(s)
        began = time.monotonic()
        steps = [r.step async for r in child.reports()]
        code = (await child.wait()).exit_code
        return steps, code, time.monotonic() - began

    try:
        steps, code, took = run(go())
    finally:  # the agent's account release ends such an escapee; here the test does
        pid = (s.workdir / "escapee.pid").read_text()
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    assert steps == [1, 2, 3] and code == 0
    assert took < 10


def test_a_huge_error_message_keeps_its_exception_type_in_a_short_tail(tmp_path: Path) -> None:
    # before, the tail was the last 16 KiB of stderr: a 200,000-character message left only
    # its own end, without "ValueError", and the whole of it went to the researcher
    s = spec(tmp_path, "def f(n):\n    if n == 0:\n        raise ValueError('boom ' + 'X' * 200000)\n"
                       "    f(n - 1)\nf(50)\n")

    result = run(to_the_end(s))
    assert result.exit_code == 1
    last = result.stderr_tail.splitlines()[-1]
    assert last.startswith("ValueError: boom XXX") and "(200,017 characters)" in last
    assert len(result.stderr_tail) < 20 * 320


def test_reports_beyond_fidelity_max_are_dropped(tmp_path: Path) -> None:
    # written straight to the pipe, past the trial API's own check (fidelity_max is 3 here)
    s = spec(tmp_path, "import os\nfd = int(os.environ['TUNEFLEET_REPORT_FD'])\n"
                       "os.write(fd, b'{\"type\": \"report\", \"step\": 1, \"metrics\": {\"l\": 1}}\\n"
                       "{\"type\": \"report\", \"step\": 1000, \"metrics\": {\"l\": 0}}\\n')\n")

    assert run(steps_and_dropped(s)) == ([1], 1)


def test_reports_not_after_the_previous_step_are_dropped(tmp_path: Path) -> None:
    # before, a trial writing straight to its pipe had 3,000 reports of step 1 stored
    line = '{"type": "report", "step": %d, "metrics": {"l": 1}}\\n'
    s = spec(tmp_path, "import os\nfd = int(os.environ['TUNEFLEET_REPORT_FD'])\n"
                       f"for step in [1] * 500 + [0, 2, 2, 3]:\n"
                       f"    os.write(fd, (\'{line}\' % step).encode())\n")
    assert run(steps_and_dropped(s)) == ([1, 2, 3], 501)


def test_decisions_for_a_child_that_never_reads_them_never_block_the_agent(
        tmp_path: Path) -> None:
    # the control pipe holds 64 KiB: a blocking write of the ten-thousandth "continue" line
    # would hang the agent's event loop for as long as the child lived
    s = spec(tmp_path, "import time\ntime.sleep(3)\n")

    async def go() -> float:
        child = await Child.start(s)
        start = time.monotonic()
        for step in range(20_000):
            child.let_through(step)
        took = time.monotonic() - start
        await child.stop(grace=0.1)
        await child.wait()
        child.let_through(1)  # after its end: nothing written, nothing raised
        return took

    assert run(go()) < 2.0
