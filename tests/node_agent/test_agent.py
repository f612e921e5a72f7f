"""The agent's attempt handling without a coordinator: every attempt ends with one final event."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from node_agent.agent import Agent, AgentConfig, RunningAttempt, exit_text
from node_agent.cli import main
from tunefleet.errors import BundleError, InvalidInputError
from tunefleet.keys import Identity
from tunefleet.v1 import node_pb2


def make_agent(tmp_path: Path) -> Agent:
    agent = Agent(AgentConfig(coordinator="127.0.0.1:1", home=tmp_path / "home", cpu_slots=1),
                  Identity.generate())
    return agent


def assignment() -> node_pb2.Assignment:
    return node_pb2.Assignment(attempt_id=7, study_id="s", trial_id=0, bundle_digest="ab" * 32,
                               entrypoint="train.py", fidelity_max=3)


@pytest.mark.parametrize("error, kind, outcome", [
    (BundleError("publisher x is not in this node's trust policy"), "declined", None),
    (OSError(28, "No space left on device"), "finished", "failed"),
    (RuntimeError("something unexpected"), "finished", "failed"),
])
def test_every_attempt_ends_with_one_final_event(tmp_path: Path, error: Exception, kind: str,
                                                 outcome: str | None) -> None:
    agent = make_agent(tmp_path)

    async def broken(digest: str, workdir: Path) -> None:
        raise error

    agent.cache.unpack = broken  # type: ignore[method-assign]
    attempt = RunningAttempt(assignment())
    asyncio.run(agent._run_attempt(attempt))
    assert attempt.final is not None and attempt.final.WhichOneof("kind") == kind
    if outcome is not None:
        assert attempt.final.finished.outcome == outcome
        assert str(error.args[-1]) in attempt.final.finished.error
    # Only a refused bundle is "declined" (it bars the node from the study); transient
    # failures are ordinary failures that the coordinator retries.
    assert not (tmp_path / "home" / "work" / "attempt-7").exists()


def test_work_left_by_an_agent_that_died_is_removed_at_start(tmp_path: Path) -> None:
    # before, kept: a later trial given the same account read the earlier trial's files
    work = tmp_path / "home" / "work"
    (work / "attempt-16").mkdir(parents=True)
    (work / "attempt-16" / "data.bin").write_bytes(b"another researcher's data")
    (work / "warm-x1").mkdir()
    make_agent(tmp_path)
    assert list(work.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="accounts of their own need the tests as root")
def test_a_daemon_writing_into_its_work_directory_cannot_keep_it(tmp_path: Path) -> None:
    # before, the directory was removed before the account's processes were killed: a daemon
    # still writing there kept it (and its files) for good
    agent = Agent(AgentConfig(coordinator="127.0.0.1:1", home=tmp_path / "home", cpu_slots=1,
                              uid_base=70700), Identity.generate())

    async def unpack(digest: str, workdir: Path) -> None:
        workdir.mkdir(parents=True)
        (workdir / "train.py").write_text(
            "import os, time\nfrom tunefleet import trial\ntrial.report(1, loss=1.0)\n"
            "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            "        for i in range(100000):\n"
            "            os.makedirs(f'd{i % 50}', exist_ok=True)\n"
            "            open(f'd{i % 50}/f{i}', 'w').write('x' * 1000)\n"
            "    os._exit(0)\n"
            "time.sleep(0.5)\n")

    agent.cache.unpack = unpack  # type: ignore[method-assign]
    attempt = RunningAttempt(assignment())
    asyncio.run(agent._run_attempt(attempt))
    assert attempt.final is not None and attempt.final.finished.outcome == "completed"
    assert not (tmp_path / "home" / "work" / "attempt-7").exists()
    assert agent.accounts is not None
    agent.accounts.close()


def test_agent_refuses_to_run_trials_as_its_own_user_without_consent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("node_agent.cli.os.geteuid", lambda: 1000)
    code = main(["start", "--coordinator", "127.0.0.1:1", "--insecure", "--home",
                 str(tmp_path / "h")])
    assert code == 2
    err = capsys.readouterr().err
    assert "could read the node key" in err and "--allow-same-user" in err
    assert not (tmp_path / "h" / "node.key").exists()


@pytest.mark.parametrize(("flags", "named"), [
    (["--coordinator", "127.0.0.1:1", "--insecure", "--memory-gb", "-1"], "--memory-gb"),
    (["--coordinator", "no-port", "--insecure"], "--coordinator"),
    (["--coordinator", "127.0.0.1:1", "--ca", "/nonexistent/ca.pem"], "--ca"),
])
def test_bad_flags_name_the_flag_and_exit_as_usage_errors(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], named: str) -> None:
    code = main(["start", *flags, "--home", str(tmp_path / "h")])
    assert code == 2  # a usage error, as argparse's own
    assert f"node-agent: error: {named}" in capsys.readouterr().err
    assert not (tmp_path / "h").exists()


def test_warm_runtimes_run_attempts_refill_their_slots_and_stop_refilling_when_draining(
        tmp_path: Path) -> None:
    agent = Agent(AgentConfig(coordinator="127.0.0.1:1", home=tmp_path / "home", cpu_slots=2,
                              preload=("json", "decimal")), Identity.generate())
    assert agent.warm is not None
    pool = agent.warm

    async def unpack(digest: str, workdir: Path) -> None:
        workdir.mkdir(parents=True)
        (workdir / "train.py").write_text(
            "import sys\nfrom tunefleet import trial\n"
            "trial.report(1, warm=float('decimal' in sys.modules))\n")

    agent.cache.unpack = unpack  # type: ignore[method-assign]

    async def settle(count: int) -> int:
        for _ in range(100):
            if len(pool.waiting) == count:
                break
            await asyncio.sleep(0.05)
        return len(pool.waiting)

    async def go() -> tuple[int, int, float, str, int, int]:
        await agent._refill_warm()
        first = len(pool.waiting)
        attempt = RunningAttempt(assignment())
        await agent._run_attempt(attempt)
        refilled = await settle(2)  # the used slot got a new warm runtime
        [report] = attempt.unacked.values()
        assert attempt.final is not None
        outcome = attempt.final.finished.outcome
        agent.draining = True
        again = RunningAttempt(node_pb2.Assignment(
            attempt_id=8, study_id="s", trial_id=1, bundle_digest="ab" * 32,
            entrypoint="train.py", fidelity_max=1))
        await agent._run_attempt(again)
        await asyncio.sleep(0.3)
        draining = len(pool.waiting)  # used, and not replaced while draining
        pool.close()
        return first, refilled, report.metrics["warm"], outcome, draining, len(pool.waiting)

    first, refilled, warm, outcome, draining, closed = asyncio.run(go())
    assert (first, refilled, warm, outcome) == (2, 2, 1.0, "completed")
    assert (draining, closed) == (1, 0)
    work = tmp_path / "home" / "work"
    assert not list(work.glob("warm-*")) and not list(work.glob("attempt-*"))


def test_an_attempt_on_a_gpu_ends_with_the_gpu_use_measured_while_it_ran(
        tmp_path: Path) -> None:
    from node_agent.gpu_monitor import GIB, GpuMonitor
    from tests.node_agent.test_gpu_monitor import Readings

    agent = make_agent(tmp_path)
    agent.inventory.gpus.add(index=0, uuid="GPU-a", memory_total_gb=24.0)
    readings = Readings({"GPU-a": [(75, 5 * GIB)] * 10_000})
    agent.gpu_monitor = GpuMonitor(readings.module(), ["GPU-a"], interval=0.02)

    async def unpack(digest: str, workdir: Path) -> None:
        workdir.mkdir(parents=True)
        (workdir / "train.py").write_text(
            "import os, time\nfrom tunefleet import trial\n"
            "time.sleep(0.5)\n"
            "trial.report(1, pinned=float(os.environ['CUDA_VISIBLE_DEVICES'] == 'GPU-a'))\n")

    agent.cache.unpack = unpack  # type: ignore[method-assign]
    on_gpu = assignment()
    on_gpu.gpu_uuids.append("GPU-a")
    attempt = RunningAttempt(on_gpu)
    asyncio.run(agent._run_attempt(attempt))
    agent.gpu_monitor.close()
    assert attempt.final is not None
    done = attempt.final.finished
    assert done.outcome == "completed", done.error
    assert (done.gpu_utilization, done.gpu_memory_peak_gb) == (75.0, 5.0)
    [report] = attempt.unacked.values()
    assert report.metrics["pinned"] == 1.0
    cpu = RunningAttempt(node_pb2.Assignment(
        attempt_id=9, study_id="s", trial_id=1, bundle_digest="ab" * 32,
        entrypoint="train.py", fidelity_max=1))
    asyncio.run(agent._run_attempt(cpu))
    assert cpu.final is not None and not cpu.final.finished.HasField("gpu_utilization")


@pytest.mark.parametrize("code, text", [
    (0, "exit code 0"), (1, "exit code 1"),
    (-15, "exit code -15 (killed by SIGTERM)"),
    (-9, "exit code -9 (killed by SIGKILL: the kernel's out-of-memory killer, a CPU-time "
         "limit the trial did not stop at, or someone on the node)"),
    (-200, "exit code -200 (killed by signal 200)"),
])
def test_an_exit_by_a_signal_names_the_signal(code: int, text: str) -> None:
    # before, a trial killed at its CPU hard limit showed only "exit code -9"
    assert exit_text(code) == text


def test_an_assignment_that_arrives_while_shutting_down_is_handed_back_at_once(
        tmp_path: Path) -> None:
    # before, the agent started it after SIGTERM and the trial was lost with the session
    agent = make_agent(tmp_path)
    agent._out = asyncio.Queue()
    agent.shutdown()
    agent._on_message(node_pb2.CoordinatorMessage(assignment=assignment()))
    attempt = agent.attempts[7]
    assert attempt.task is None and attempt.final is not None
    finished = attempt.final.finished
    assert (finished.outcome, finished.error) == ("failed", "node agent shut down")
    assert agent._out.qsize() == 1


@pytest.mark.parametrize("flags, expected", [
    (["--memory-gb", "nan"], "--memory-gb: got nan; must be a finite number >= 0"),
    (["--cpu-hours", "inf"], "--cpu-hours: got inf;"),
    (["--wall-hours", "-1"], "--wall-hours: got -1.0; must be a finite number >= 0"),
    (["--max-backoff", "0"], "--max-backoff: got 0.0; must be a finite number of seconds > 0"),
    (["--max-backoff", "nan"], "--max-backoff: got nan;"),
    (["--stop-grace", "-1"], "--stop-grace: got -1.0;"),
    (["--slots", "99999999999999999999"], "--slots: got 99999999999999999999; must be in [0,"),
    (["--name", "x" * 129], "--name: got 'xxx"),
    (["--name", "a\nb"], "--name: got 'a\\nb'; must be printable text"),
    (["--trust", "abc"], "--trust: got 'abc'; must be a researcher's 32-character key id"),
    # before, accepted: every acknowledgement then failed the session
    (["--ack-log", "/nonexistent/dir/acks.log"], "--ack-log: got '/nonexistent/dir/acks.log';"),
    (["--trust", "6FC2788029BBD33A5A8C00961AA7AAF6"], "--trust: got '6FC27"),
])
def test_start_flags_out_of_range_are_refused_before_anything_is_created(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], expected: str
) -> None:
    # before: a traceback (nan, inf, a huge slot count), a reconnect loop with no pause
    # (--max-backoff 0), a name refused by the coordinator forever, a trust id never matching
    code = main(["start", "--coordinator", "127.0.0.1:1", "--insecure", "--allow-same-user",
                 "--home", str(tmp_path / "h"), *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code in (1, 2) and len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "h").exists()


def test_drain_signals_only_a_node_agent(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    # before, a stale agent.pid's number was signalled whatever process held it now (SIGUSR1
    # ends most), and 1 signalled init
    import subprocess

    home = tmp_path / "h"
    home.mkdir()
    other = subprocess.Popen(["sleep", "30"])  # what now holds a stale file's pid
    try:
        for pid in (other.pid, 1, 0, -1):
            (home / "agent.pid").write_text(str(pid))
            assert main(["drain", "--home", str(home)]) == 1
            assert "no running agent under" in capsys.readouterr().err
        assert other.poll() is None  # not signalled
    finally:
        other.kill()
        other.wait()


def test_a_second_agent_on_the_same_home_is_refused(tmp_path: Path) -> None:
    # before, both ran with one node id, raced for trials, and the second's exit removed the
    # first's agent.pid (so `drain` no longer found it)
    import subprocess
    import sys
    import time

    home = tmp_path / "h"
    argv = ["start", "--coordinator", "127.0.0.1:1", "--insecure", "--allow-same-user",
            "--no-preload", "--home", str(home)]
    first = subprocess.Popen([sys.executable, "-m", "node_agent", *argv],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not ((home / "agent.pid").is_file() and (home / "agent.pid").read_text()):
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.1)
        second = subprocess.run([sys.executable, "-m", "node_agent", *argv], timeout=30,
                                capture_output=True, text=True)  # without the lock: runs on
        assert second.returncode == 1
        assert f"another agent (pid {first.pid}) is using {home}" in second.stderr
        assert (home / "agent.pid").read_text() == str(first.pid)  # left as it was
    finally:
        first.terminate()
        first.wait(timeout=30)


def test_trials_with_accounts_of_their_own_get_a_process_limit() -> None:
    from node_agent.cli import _limits, _parser

    def limits(*flags: str) -> object:
        return _limits(_parser().parse_args(["start", "--coordinator", "127.0.0.1:1",
                                             "--insecure", *flags])).processes
    assert limits() == (4096 if os.geteuid() == 0 else None)
    assert limits("--max-processes", "0") is None
    if os.geteuid() == 0:  # a shared account counts every process of its user: no default
        assert limits("--run-as", "nobody") is None
    with pytest.raises(InvalidInputError, match="^--max-processes: got -1"):
        limits("--max-processes", "-1")


def test_a_ca_file_that_holds_no_certificate_is_refused_before_anything_is_created(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # before, accepted: the agent then failed every connection, forever, in gRPC's words
    (tmp_path / "ca.pem").write_text("garbage")
    code = main(["start", "--coordinator", "127.0.0.1:1", "--ca", str(tmp_path / "ca.pem"),
                 "--allow-same-user", "--home", str(tmp_path / "h")])
    err = capsys.readouterr().err
    assert code == 2 and "--ca: got" in err and "must hold a PEM certificate" in err
    assert not (tmp_path / "h").exists()


def test_an_empty_node_home_variable_means_the_default_home(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # before, the current folder: node.key, bundles and work dirs were made wherever it ran
    from node_agent.cli import default_home

    monkeypatch.setenv("TUNEFLEET_NODE_HOME", "")
    assert default_home() == Path.home() / ".tunefleet" / "node"


def test_a_node_key_others_can_read_is_made_private_at_start(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import os
    import stat
    import subprocess
    import sys

    home = tmp_path / "h"
    assert main(["id", "--home", str(home)]) == 0
    os.chmod(home / "node.key", 0o644)  # copied in by hand, say
    proc = subprocess.Popen([sys.executable, "-m", "node_agent", "start", "--coordinator",
                             "127.0.0.1:1", "--insecure", "--allow-same-user", "--no-preload",
                             "--home", str(home)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "was readable by others: made it 0600" in first
        assert stat.S_IMODE((home / "node.key").stat().st_mode) == 0o600
    finally:
        proc.terminate()
        proc.wait(timeout=30)
