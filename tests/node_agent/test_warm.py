"""Warm runtimes: a waiting sandboxed interpreter per slot runs the next trial (real processes)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest

from node_agent.runner import ChildSpec
from node_agent.sandbox import AccountPool, SandboxLimits
from node_agent.warm import (
    PRELOAD_FAILURES_TO_GIVE_UP,
    WarmPool,
    default_preload,
    expand_preload,
)

TRIAL = (
    "import os, sys\n"
    "from tunefleet import trial\n"
    "trial.report(1, x=trial.params['x'],\n"
    "             leaked=float('PROVIDER_SECRET' in os.environ),\n"
    "             home=float(os.environ['HOME'] == os.getcwd()),\n"
    "             pgid=float(os.getpgid(0) == os.getpid()),\n"
    "             preloaded=float('json' in sys.modules and 'decimal' in sys.modules),\n"
    "             main=float(__name__ == '__main__'),\n"
    "             local=float(__import__('helper').VALUE),\n"
    "             argv=float(sys.argv == ['train.py']),\n"
    "             cwd_path=float('' not in sys.path),\n"
    "             dumpable=float(__import__('ctypes').CDLL(None).prctl(3, 0, 0, 0, 0)))\n"
    "print('to stderr', file=sys.stderr)\n"
)


def trial_spec(tmp_path: Path, code: str = TRIAL, x: float = 0.25, **changes: object
               ) -> ChildSpec:
    work = tmp_path / f"attempt-{x}"
    work.mkdir()
    (work / "train.py").write_text(code)
    (work / "helper.py").write_text("VALUE = 7\n")  # the bundle's own modules import
    spec = ChildSpec(work, "train.py", {"params": {"x": x}, "fidelity_max": 1})
    return replace(spec, **changes)  # type: ignore[arg-type]


def test_a_warm_child_runs_the_trial_in_its_work_directory_and_sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROVIDER_SECRET", "hunter2")
    pool = WarmPool(tmp_path / "scratch", ("json", "decimal"))
    spec = trial_spec(tmp_path)

    async def go() -> tuple[list[dict[str, float]], int, str, Path | None]:
        await pool.spawn(spec)
        child = await pool.take(spec)
        assert child is not None
        got = [r.metrics async for r in child.reports()]
        end = await child.wait()
        return got, end.exit_code, end.stderr_tail, child.scratch

    got, code, tail, scratch = asyncio.run(go())
    assert got == [{"x": 0.25, "leaked": 0.0, "home": 1.0, "pgid": 1.0, "preloaded": 1.0,
                    "main": 1.0, "local": 7.0, "argv": 1.0, "cwd_path": 1.0,
                    "dumpable": 0.0}]  # not dumpable: no other trial may ptrace it
    assert code == 0 and "to stderr" in tail
    assert scratch is not None and scratch.parent == tmp_path / "scratch"
    assert pool.waiting == []  # each warm child runs one trial only


def test_only_a_child_of_the_same_shape_is_taken(tmp_path: Path) -> None:
    pool = WarmPool(tmp_path / "scratch", ("json",))

    async def go() -> tuple[bool, bool, bool]:
        await pool.spawn(trial_spec(tmp_path, x=1.0, gpu_uuids=("GPU-a",)))
        other_gpu = await pool.take(trial_spec(tmp_path, x=2.0, gpu_uuids=("GPU-b",)))
        other_limits = await pool.take(trial_spec(tmp_path, x=3.0, gpu_uuids=("GPU-a",),
                                                  limits=SandboxLimits(open_files=99)))
        same = await pool.take(trial_spec(tmp_path, x=4.0, gpu_uuids=("GPU-a",)))
        if same is not None:
            [r async for r in same.reports()]
            await same.wait()
        pool.close()
        return other_gpu is None, other_limits is None, same is not None

    assert asyncio.run(go()) == (True, True, True)


def test_a_failed_preload_still_runs_the_trial_and_says_why(tmp_path: Path) -> None:
    pool = WarmPool(tmp_path / "scratch", ("no_such_module_for_tunefleet",))
    spec = trial_spec(tmp_path, "from tunefleet import trial\ntrial.report(1, ok=1.0)\n"
                                "import sys\nsys.exit(3)\n")

    async def go() -> tuple[list[dict[str, float]], int, str]:
        await pool.spawn(spec)
        child = await pool.take(spec)
        assert child is not None
        got = [r.metrics async for r in child.reports()]
        end = await child.wait()
        return got, end.exit_code, end.stderr_tail

    got, code, tail = asyncio.run(go())
    assert got == [{"ok": 1.0}] and code == 3
    assert "could not preload no_such_module_for_tunefleet" in tail


def test_torch_comes_with_the_module_its_first_optimizer_imports() -> None:
    assert expand_preload(("json", "torch", "torch._dynamo", "json")) == (
        "json", "torch", "torch._dynamo")
    assert expand_preload(()) == ()


def test_an_agent_with_gpus_preloads_torch_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_preload(2) == ("torch",)  # torch is installed here
    assert default_preload(0) == ()  # CPU slots: no guess at what the trials import
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert default_preload(2) == ()  # no torch installed: nothing to preload


def test_what_the_preload_derived_from_the_waiting_environment_does_not_reach_the_trial(
    tmp_path: Path,
) -> None:
    """Importing torch._dynamo sets TORCHINDUCTOR_CACHE_DIR and tempfile's cached directory from
    the waiting child's environment; the trial must see its own."""
    pool = WarmPool(tmp_path / "scratch", expand_preload(("torch",)))
    spec = trial_spec(tmp_path, "import os, sys, tempfile\n"
                                "from tunefleet import trial\n"
                                "trial.report(1, dynamo=float('torch._dynamo' in sys.modules),\n"
                                "  inductor=float('TORCHINDUCTOR_CACHE_DIR' in os.environ),\n"
                                "  tmp=float(tempfile.gettempdir() == os.environ['TMPDIR']))\n")

    async def go() -> list[dict[str, float]]:
        await pool.spawn(spec)
        child = await pool.take(spec)
        assert child is not None
        got = [r.metrics async for r in child.reports()]
        assert (await child.wait()).exit_code == 0
        return got

    assert asyncio.run(go()) == [{"dynamo": 1.0, "inductor": 0.0, "tmp": 1.0}]


def test_a_large_order_does_not_block_and_reaches_the_trial(tmp_path: Path) -> None:
    pool = WarmPool(tmp_path / "scratch", ("json",))
    spec = trial_spec(tmp_path, "from tunefleet import trial\n"
                                "trial.report(1, n=float(len(trial.params['big'])))\n")
    spec = replace(spec, trial={"params": {"x": 0.0, "big": "b" * 300_000}, "fidelity_max": 1})

    async def go() -> list[dict[str, float]]:
        warm = await pool.spawn(spec)
        while not warm.poll_ready():  # preloaded (a trial waits for that)
            await asyncio.sleep(0.05)
        os.killpg(warm.process.pid, signal.SIGSTOP)  # a child that reads nothing for now
        started = time.monotonic()
        child = await pool.take(spec)
        assert child is not None and time.monotonic() - started < 2.0  # the loop never blocks
        os.killpg(warm.process.pid, signal.SIGCONT)
        got = [r.metrics async for r in child.reports()]
        await child.wait()
        return got

    assert asyncio.run(go()) == [{"n": 300_000.0}]


def test_a_runtime_that_dies_in_its_preload_means_a_cold_start_not_a_failed_trial(
        tmp_path: Path) -> None:
    # before, the trial was handed the runtime while it still preloaded, and the preload's
    # crash (torch under too small an address-space limit, say) failed the trial
    pool = WarmPool(tmp_path / "scratch", ("json",))
    spec = trial_spec(tmp_path)

    async def go() -> list[object]:
        taken = []
        for _ in range(PRELOAD_FAILURES_TO_GIVE_UP):
            warm = await pool.spawn(spec)
            os.killpg(warm.process.pid, signal.SIGKILL)  # dies before its preload is done
            taken.append(await pool.take(spec))
        return taken

    assert asyncio.run(go()) == [None] * PRELOAD_FAILURES_TO_GIVE_UP  # each: a cold start
    assert pool.given_up and pool.waiting == []


def test_a_child_that_dies_before_it_is_reaped_means_a_cold_start(tmp_path: Path) -> None:
    pool = WarmPool(tmp_path / "scratch", ("json",))
    spec = trial_spec(tmp_path)

    async def go() -> object:
        warm = await pool.spawn(spec)
        await asyncio.sleep(0.5)  # past its imports, waiting on the pipe
        os.killpg(warm.process.pid, signal.SIGKILL)
        time.sleep(0.2)  # dead, but the event loop has not reaped it yet
        return await pool.take(spec)

    assert asyncio.run(go()) is None
    assert list((tmp_path / "scratch").iterdir()) == []


def test_a_dead_warm_child_is_dropped_and_the_caller_starts_cold(tmp_path: Path) -> None:
    pool = WarmPool(tmp_path / "scratch", ("json",))
    spec = trial_spec(tmp_path)

    async def go() -> tuple[object, int]:
        warm = await pool.spawn(spec)
        os.killpg(warm.process.pid, signal.SIGKILL)
        await warm.process.wait()
        taken = await pool.take(spec)
        return taken, len(pool.waiting)

    taken, waiting = asyncio.run(go())
    assert taken is None and waiting == 0
    assert list((tmp_path / "scratch").iterdir()) == []  # its scratch directory is gone


def test_the_wall_time_limit_counts_from_the_trial_start(tmp_path: Path) -> None:
    limits = SandboxLimits(wall_seconds=1.0, wall_grace_seconds=0.2)
    pool = WarmPool(tmp_path / "scratch", ("json",))
    spec = trial_spec(tmp_path, "import time\ntime.sleep(30)\n", limits=limits)

    async def go() -> tuple[str | None, float]:
        await pool.spawn(spec)
        await asyncio.sleep(1.5)  # waiting is not running: the limit has not started
        child = await pool.take(spec)
        assert child is not None
        end = await child.wait()
        return end.limit_exceeded, end.wall_seconds

    exceeded, seconds = asyncio.run(go())
    assert exceeded == "wall time limit of 1 s exceeded"
    assert 0.9 <= seconds < 5.0


def test_a_missing_entrypoint_is_refused_before_a_child_is_used(tmp_path: Path) -> None:
    pool = WarmPool(tmp_path / "scratch", ("json",))
    spec = trial_spec(tmp_path)

    async def go() -> int:
        await pool.spawn(spec)
        with pytest.raises(FileNotFoundError, match="not in the bundle"):
            await pool.take(replace(spec, entrypoint="missing.py"))
        waiting = len(pool.waiting)
        pool.close()
        return waiting

    assert asyncio.run(go()) == 1  # still waiting for a trial it can run


@pytest.mark.skipif(os.geteuid() != 0, reason="accounts of their own need the tests as root")
def test_a_warm_child_of_its_own_account_hands_it_to_its_trial(tmp_path: Path) -> None:
    accounts = AccountPool(70300, size=2, lock_dir=tmp_path / "locks")
    pool = WarmPool(tmp_path / "scratch", ("json",), accounts)
    code = "import os\nfrom tunefleet import trial\ntrial.report(1, uid=os.getuid())\n"
    spec = trial_spec(tmp_path, code)

    async def go() -> tuple[list[dict[str, float]], int, int | None]:
        await pool.spawn(spec)
        await pool.spawn(spec)
        assert accounts.in_use == 2
        child = await pool.take(spec)
        assert child is not None and child.spec.account is not None
        got = [r.metrics async for r in child.reports()]
        end = await child.wait()
        pool.close()  # the other waiting child is discarded: its account comes back
        return got, end.exit_code, child.spec.account.uid

    got, exit_code, uid = asyncio.run(go())
    assert exit_code == 0 and uid == 70300
    assert got == [{"uid": 70300.0}]  # the trial ran as the warm child's own account
    assert accounts.in_use == 1  # the trial's account is the caller's to give back
    accounts.close()


def test_a_child_still_starting_when_the_pool_closes_does_not_outlive_it(tmp_path: Path) -> None:
    pool = WarmPool(tmp_path / "scratch", ("json",))
    spec = trial_spec(tmp_path)

    async def go() -> tuple[int | None, bool]:
        starting = asyncio.create_task(pool.spawn(spec))
        await asyncio.sleep(0)  # the spawn has begun, its child is not started yet
        pool.close()  # the agent shuts down meanwhile
        child = await starting
        return await asyncio.wait_for(child.process.wait(), 10), child.scratch.exists()

    code, scratch_left = asyncio.run(go())
    assert code == -signal.SIGKILL and not scratch_left
    assert pool.waiting == []
