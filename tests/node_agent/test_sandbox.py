"""The training child's sandbox, shown with real child processes.

Each test lets a real child try something the sandbox must prevent and checks that it failed,
in the child (it reports what happened through the trial API) and from the outside.
"""

from __future__ import annotations

import asyncio
import errno
import math
import os
import pwd
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node_agent import sandbox
from node_agent.runner import Child, ChildExit, ChildSpec
from node_agent.sandbox import AccountPool, SandboxLimits, launch_command, sandbox_user
from tunefleet.errors import InvalidInputError

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(
    not ROOT, reason="running the child as another user needs the tests to run as root")
MiB = 1024**2


def spec(tmp_path: Path, code: str, *, workdir: Path | None = None,
         limits: SandboxLimits | None = None, run_as: str | None = None,
         gpu_uuids: tuple[str, ...] = (), account: sandbox.Account | None = None) -> ChildSpec:
    work = workdir or tmp_path / "work"
    work.mkdir(parents=True)
    (work / "train.py").write_text(code)
    return ChildSpec(work, "train.py", {"params": {}, "fidelity_max": 3}, gpu_uuids=gpu_uuids,
                     limits=limits or SandboxLimits(), run_as=run_as, account=account)


def run(s: ChildSpec) -> tuple[dict[str, float], ChildExit]:
    """Run the child to its end: the union of its reported metrics, and how it ended."""

    async def go() -> tuple[dict[str, float], ChildExit]:
        child = await Child.start(s)
        metrics: dict[str, float] = {}
        async for r in child.reports():
            metrics.update(r.metrics)
        return metrics, await child.wait()

    return asyncio.run(go())


# the account -----------------------------------------------------------------------------


@needs_root
def test_child_runs_as_an_unprivileged_user_and_cannot_regain_root(tmp_path: Path) -> None:
    user = sandbox_user()
    assert user == "nobody"
    nobody = pwd.getpwnam("nobody")
    s = spec(tmp_path, "import ctypes, os\nfrom tunefleet import trial\n"
                       "try:\n    os.setuid(0)\n    regained = 1.0\n"
                       "except PermissionError:\n    regained = 0.0\n"
                       "sig = ctypes.c_int()\n"
                       "ctypes.CDLL(None).prctl(2, ctypes.byref(sig))  # PR_GET_PDEATHSIG\n"
                       "trial.report(1, uid=os.getuid(), euid=os.geteuid(), gid=os.getgid(),\n"
                       "             groups=len(os.getgroups()), regained=regained,\n"
                       "             pdeathsig=sig.value)\n", run_as=user)
    groups = os.getgroups()
    os.setgroups([0])  # a supplementary group the child would otherwise keep
    try:
        metrics, result = run(s)
    finally:
        os.setgroups(groups)
    assert result.exit_code == 0, result.stderr_tail
    assert metrics == {"uid": nobody.pw_uid, "euid": nobody.pw_uid, "gid": nobody.pw_gid,
                       "groups": 0, "regained": 0.0, "pdeathsig": float(signal.SIGKILL)}
    assert s.workdir.stat().st_uid == nobody.pw_uid
    assert (s.workdir / "train.py").stat().st_uid == nobody.pw_uid


@needs_root
def test_child_cannot_read_or_list_the_agent_key(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "work").mkdir(parents=True)
    home.chmod(0o700)
    (home / "work").chmod(0o700)
    key = home / "node.key"
    key.write_bytes(b"SECRET-KEY-BYTES")
    key.chmod(0o600)
    code = ("from tunefleet import trial\n"
            "def denied(action):\n"
            "    try:\n        action()\n        return 0.0\n"
            "    except PermissionError:\n        return 1.0\n"
            "import os\n"
            "trial.report(1, read_denied=denied(lambda: open('../../node.key').read()),\n"
            "             list_denied=denied(lambda: os.listdir('../..')),\n"
            "             writes_own_dir=1.0 - denied(lambda: open('out.txt', 'w').write('x')))\n")
    metrics, result = run(spec(tmp_path, code, workdir=home / "work" / "attempt-1",
                               run_as=sandbox_user()))
    assert result.exit_code == 0, result.stderr_tail
    assert metrics == {"read_denied": 1.0, "list_denied": 1.0, "writes_own_dir": 1.0}
    # only the search bit was added on the way down; the key kept its owner and mode
    assert stat.S_IMODE(home.stat().st_mode) == 0o701
    assert stat.S_IMODE((home / "work").stat().st_mode) == 0o701
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.stat().st_uid == 0
    # the same child without the sandbox account reads it: the test can fail
    metrics, _ = run(spec(tmp_path, code, workdir=home / "work" / "attempt-2"))
    assert metrics["read_denied"] == 0.0


@needs_root
def test_a_hard_link_in_the_work_dir_is_not_handed_over(tmp_path: Path) -> None:
    key = tmp_path / "node.key"
    key.write_bytes(b"SECRET-KEY-BYTES")
    key.chmod(0o600)
    s = spec(tmp_path, "print(open('key').read())\n", run_as=sandbox_user())
    os.link(key, s.workdir / "key")
    with pytest.raises(PermissionError, match="hard links"):
        asyncio.run(Child.start(s))
    assert key.stat().st_uid == 0


@needs_root
def test_modules_in_the_work_dir_never_run_with_the_agent_privileges(tmp_path: Path) -> None:
    planted = ("import os\nopen(os.path.join(os.path.dirname(__file__), f'ran-as-{os.geteuid()}'),"
               " 'w').close()\nfrom importlib import import_module\n")
    s = spec(tmp_path, "import sys\n", run_as=sandbox_user())
    for name in ("os", "sys", "resource", "signal", "ctypes", "encodings", "site"):
        (s.workdir / f"{name}.py").write_text(planted)
    _, result = run(s)
    assert result.exit_code == 0, result.stderr_tail
    assert not list(s.workdir.glob("ran-as-0"))


def test_stderr_tail_never_follows_a_link_the_child_planted(tmp_path: Path) -> None:
    key = tmp_path / "node.key"
    key.write_text("SECRET-KEY-BYTES\n")
    key.chmod(0o600)
    s = spec(tmp_path, f"import os, sys\nos.remove('stderr.log')\nos.symlink({str(key)!r}, "
                       "'stderr.log')\nprint('boom', file=sys.stderr)\nsys.exit(1)\n",
             run_as=sandbox_user())
    _, result = run(s)
    assert result.exit_code == 1
    assert "boom" in result.stderr_tail and "SECRET" not in result.stderr_tail


@needs_root
def test_sandboxed_child_streams_reports_and_stop_kills_its_whole_group(tmp_path: Path) -> None:
    s = spec(tmp_path, "import signal, subprocess, sys, time\n"
                       "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                       "p = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
                       "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'])\n"
                       "open('grandchild.pid', 'w').write(str(p.pid))\n"
                       "from tunefleet import trial\ntrial.report(1, loss=1.0)\n"
                       "time.sleep(60)\n", run_as=sandbox_user())

    async def go() -> tuple[list[int], ChildExit]:
        child = await Child.start(s)
        steps = []
        async for r in child.reports():
            steps.append(r.step)
            await child.stop(grace=0.2)
        return steps, await child.wait()

    steps, result = asyncio.run(go())
    assert steps == [1] and result.stopped and result.exit_code == -signal.SIGKILL
    time.sleep(0.2)
    assert not _alive(int((s.workdir / "grandchild.pid").read_text()))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# resource limits -------------------------------------------------------------------------


def test_memory_limit_fails_a_big_allocation(tmp_path: Path) -> None:
    limits = SandboxLimits(memory_bytes=256 * MiB)
    _, result = run(spec(tmp_path, "b = bytearray(512 * 1024 * 1024)\n", limits=limits,
                         run_as=sandbox_user()))
    assert result.exit_code == 1 and "MemoryError" in result.stderr_tail


def test_memory_limit_is_not_applied_to_gpu_children(tmp_path: Path) -> None:
    code = ("import resource\nfrom tunefleet import trial\n"
            "trial.report(1, soft=float(resource.getrlimit(resource.RLIMIT_AS)[0]))\n")
    limits = SandboxLimits(memory_bytes=256 * MiB)
    metrics, _ = run(spec(tmp_path, code, limits=limits, gpu_uuids=("GPU-test",)))
    assert metrics["soft"] == float(resource.getrlimit(resource.RLIMIT_AS)[0])


def test_cpu_time_limit_kills_a_busy_loop(tmp_path: Path) -> None:
    limits = SandboxLimits(cpu_seconds=1, wall_seconds=15)
    started = time.monotonic()
    _, result = run(spec(tmp_path, "while True:\n    pass\n", limits=limits,
                         run_as=sandbox_user()))
    assert result.exit_code in (-signal.SIGXCPU, -signal.SIGKILL)
    assert time.monotonic() - started < 6
    if result.exit_code == -signal.SIGXCPU:
        assert result.limit_exceeded == "CPU time limit of 1 s exceeded"


def test_file_size_limit_caps_files_and_the_output_logs(tmp_path: Path) -> None:
    code = ("import errno, sys\nfrom tunefleet import trial\n"
            "def write(f):\n"
            "    try:\n"
            "        for _ in range(4):\n            f.write(b'x' * 1024 * 1024)\n"
            "            f.flush()\n"
            "        return 0.0\n"
            "    except OSError as exc:\n        return float(exc.errno)\n"
            "trial.report(1, file_errno=write(open('big.bin', 'wb', buffering=0)))\n"
            "trial.report(2, stdout_errno=write(sys.stdout.buffer))\n")
    limits = SandboxLimits(file_bytes=MiB)
    metrics, _ = run(spec(tmp_path, code, limits=limits, run_as=sandbox_user()))
    assert metrics == {"file_errno": errno.EFBIG, "stdout_errno": errno.EFBIG}
    assert (tmp_path / "work" / "big.bin").stat().st_size == MiB
    assert (tmp_path / "work" / "stdout.log").stat().st_size <= MiB


def test_open_files_limit_makes_opening_many_files_fail(tmp_path: Path) -> None:
    code = ("import errno\nfrom tunefleet import trial\nfiles = []\ncode = 0\n"
            "try:\n    for i in range(200):\n        files.append(open(f'f{i}', 'w'))\n"
            "except OSError as exc:\n    code = exc.errno\n"
            "trial.report(1, opened=len(files), errno=code)\n")
    limits = SandboxLimits(open_files=32)
    metrics, _ = run(spec(tmp_path, code, limits=limits, run_as=sandbox_user()))
    assert metrics["errno"] == errno.EMFILE and metrics["opened"] < 32


@needs_root
def test_a_process_limit_stops_a_fork_bomb_of_an_account_of_its_own(tmp_path: Path) -> None:
    # before, none was set: a trial forked as many processes as the machine allowed
    code = ("import os, time\nfrom tunefleet import trial\nkids = []\n"
            "try:\n    for i in range(100):\n        pid = os.fork()\n"
            "        if pid == 0:\n            time.sleep(5)\n            os._exit(0)\n"
            "        kids.append(pid)\nexcept BlockingIOError:\n    pass\n"
            "trial.report(1, forked=len(kids))\n"
            "for pid in kids:\n    os.kill(pid, 9)\n")
    pool = AccountPool(70500, size=1, lock_dir=tmp_path / "locks")
    metrics, result = run(spec(tmp_path, code, limits=SandboxLimits(processes=20),
                               account=pool.take()))
    assert result.exit_code == 0, result.stderr_tail
    assert 0 < metrics["forked"] < 20
    pool.close()


def test_wall_time_limit_stops_a_sleeping_child_and_marks_its_exit(tmp_path: Path) -> None:
    limits = SandboxLimits(wall_seconds=0.5, wall_grace_seconds=0.3)
    started = time.monotonic()
    _, result = run(spec(tmp_path, "import time\ntime.sleep(30)\n", limits=limits,
                         run_as=sandbox_user()))
    took = time.monotonic() - started
    assert result.limit_exceeded == "wall time limit of 0.5 s exceeded"
    assert result.exit_code == -signal.SIGTERM and not result.stopped
    assert 0.5 <= took < 0.5 + 0.3 + 2.0


def test_a_child_within_its_limits_is_not_marked(tmp_path: Path) -> None:
    limits = SandboxLimits(wall_seconds=10, cpu_seconds=10)
    _, result = run(spec(tmp_path, "pass\n", limits=limits, run_as=sandbox_user()))
    assert result.exit_code == 0 and result.limit_exceeded is None


def test_core_dumps_are_off(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))  # the child would inherit this
    try:
        code = ("import os, resource\nfrom tunefleet import trial\n"
                "trial.report(1, core=float(resource.getrlimit(resource.RLIMIT_CORE)[1]))\n"
                "os.abort()\n")
        metrics, result = run(spec(tmp_path, code, run_as=sandbox_user()))
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))
    assert metrics == {"core": 0.0}
    assert result.exit_code == -signal.SIGABRT
    assert not [p for p in (tmp_path / "work").iterdir() if p.name.startswith("core")]


# configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value"), [
    ("memory_bytes", 0), ("memory_bytes", True), ("memory_bytes", 1.5e9), ("memory_bytes", 1024),
    ("cpu_seconds", 0), ("cpu_seconds", -1), ("file_bytes", "1G"), ("open_files", 3),
    ("processes", 0), ("wall_seconds", 0), ("wall_seconds", math.nan),
    ("wall_seconds", math.inf), ("wall_grace_seconds", None), ("wall_grace_seconds", -1.0),
])
def test_bad_limits_are_refused_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(InvalidInputError) as info:
        SandboxLimits(**{field: value})  # type: ignore[arg-type]
    assert info.value.field == f"limits.{field}"
    assert str(info.value).startswith(f"limits.{field}: got {value!r}; ")


def test_unlimited_is_none_and_defaults_are_finite() -> None:
    SandboxLimits(memory_bytes=None, cpu_seconds=None, file_bytes=None, open_files=None,
                  processes=None, wall_seconds=None)
    d = SandboxLimits()
    assert d.memory_bytes and d.file_bytes and d.open_files and d.wall_seconds


def test_sandbox_user_is_nobody_as_root_and_the_agent_itself_otherwise() -> None:
    if ROOT:
        assert sandbox_user() == "nobody"
        with pytest.raises(InvalidInputError, match="uid other than 0"):
            sandbox_user("root")
        with pytest.raises(InvalidInputError, match="existing user account"):
            sandbox_user("no-such-user-tunefleet")
    else:
        assert sandbox_user() is None
        assert sandbox_user(pwd.getpwuid(os.geteuid()).pw_name) is None
        with pytest.raises(InvalidInputError, match="runs as root"):
            sandbox_user("root")


# accounts of their own ------------------------------------------------------------------


def skip_clearing(account: sandbox.Account) -> None:
    """Clearing an account needs root; the pool's bookkeeping does not."""


def test_an_account_pool_skips_known_uids_and_reuses_what_it_got_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox, "_known_uid", lambda uid: uid == 70001)
    pool = AccountPool(70000, size=3, lock_dir=tmp_path / "locks", clear=skip_clearing)
    a, b = pool.take(), pool.take()
    assert (a.uid, b.uid) == (70000, 70002)  # 70001 belongs to someone
    assert (a.name, a.gid) == ("tunefleet-70000", 70000)
    pool.give_back(a)
    assert pool.take().uid == 70000
    pool.take()
    with pytest.raises(OSError, match="all 3 sandbox accounts are in use"):
        pool.take()
    pool.close()


def test_two_agents_on_one_machine_never_share_an_account(tmp_path: Path) -> None:
    first = AccountPool(70000, size=4, lock_dir=tmp_path / "locks", clear=skip_clearing)
    second = AccountPool(70000, size=4, lock_dir=tmp_path / "locks", clear=skip_clearing)
    mine = {first.take().uid for _ in range(3)}
    theirs = {second.take().uid for _ in range(3)}
    assert mine == {70000, 70001, 70002} and theirs == {70003, 70004, 70005}
    first.close()  # the first agent ends: its uids are free for others
    third = AccountPool(70000, size=4, lock_dir=tmp_path / "locks", clear=skip_clearing)
    assert third.take().uid == 70000
    second.close()
    third.close()


@pytest.mark.parametrize("first", [0, 999, 2**31])
def test_a_bad_uid_base_is_refused_naming_the_field(first: int, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="uid_base"):
        AccountPool(first, lock_dir=tmp_path)


def test_a_lock_dir_others_may_write_to_is_refused(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    locks.mkdir(mode=0o777)
    locks.chmod(0o777)
    with pytest.raises(PermissionError, match="no one else may write"):
        AccountPool(70000, lock_dir=locks)  # when the agent starts, not at its first trial


@needs_root
def test_children_with_accounts_of_their_own_cannot_read_each_other(tmp_path: Path) -> None:
    pool = AccountPool(70100, size=2, lock_dir=tmp_path / "locks")
    first = spec(tmp_path / "a", "import os\nfrom tunefleet import trial\n"
                                 "trial.report(1, uid=os.getuid(), gid=os.getgid())\n",
                 account=pool.take())
    (first.workdir / "secret.txt").write_text("the first trial's data")
    second = spec(tmp_path / "b", "import getpass, os\nfrom tunefleet import trial\n"
                                  f"path = {str(first.workdir / 'secret.txt')!r}\n"
                                  "try:\n    open(path).read()\n    read = 1.0\n"
                                  "except PermissionError:\n    read = 0.0\n"
                                  "named = float(getpass.getuser() == 'tunefleet-70101')\n"
                                  "trial.report(1, uid=os.getuid(), read=read, named=named)\n",
                  account=pool.take())
    metrics, result = run(first)
    assert result.exit_code == 0, result.stderr_tail
    assert metrics == {"uid": 70100.0, "gid": 70100.0}
    metrics, result = run(second)
    assert result.exit_code == 0, result.stderr_tail
    assert metrics == {"uid": 70101.0, "read": 0.0, "named": 1.0}
    pool.close()


@needs_root
def test_an_account_is_cleared_before_it_is_handed_out_again(tmp_path: Path) -> None:
    pool = AccountPool(70200, size=1, lock_dir=tmp_path / "locks")
    account = pool.take()
    leftover = subprocess.Popen(launch_command([sys.executable, "-c", "import time; "
                                                "time.sleep(60)"], (), account, os.getpid()),
                                start_new_session=True)  # escaped its trial's process group
    planted = Path("/tmp") / f"tunefleet-test-{account.uid}"
    planted.write_text("left for the next holder")
    os.chown(planted, account.uid, account.gid)
    try:
        time.sleep(0.3)
        assert leftover.poll() is None
        pool.give_back(account)
        again = pool.take()
        assert again == account
        # before the next holder gets it, nothing of the previous one runs or lies in /tmp
        assert leftover.wait(timeout=10) == -signal.SIGKILL
        assert not planted.exists()
    finally:
        if leftover.poll() is None:
            leftover.kill()
        planted.unlink(missing_ok=True)
    pool.close()


# A process left behind that kills whatever starts as its uid (the old clearing switched a
# launcher to the account to kill its processes, and lost that race), and forks as it goes.
RESISTER = """
import os, signal, time
me = str(os.getuid()).encode()
end = time.monotonic() + 60
while time.monotonic() < end:
    if os.fork() == 0:  # a new child now and then, so that one round of kills is not enough
        time.sleep(0.5)
        os._exit(0)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")
            if int(pid) != os.getpid() and b"-S" in argv[:3]:
                os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        pass
"""


@needs_root
def test_a_leftover_process_that_fights_the_clearing_is_killed_all_the_same(
        tmp_path: Path) -> None:
    # before, clearing ran a launcher switched to the account, which the leftover killed:
    # the account stayed dirty and, once every account was, the node could run no trial
    pool = AccountPool(70300, size=1, lock_dir=tmp_path / "locks")
    account = pool.take()
    leftover = subprocess.Popen(launch_command([sys.executable, "-c", RESISTER], (), account,
                                               os.getpid()), start_new_session=True)
    try:
        time.sleep(0.5)
        assert leftover.poll() is None
        pool.give_back(account)
        assert pool.take() == account  # cleared, not refused
        assert leftover.wait(timeout=10) == -signal.SIGKILL
        assert sandbox._uid_processes(account.uid) == []  # its children too
    finally:
        if leftover.poll() is None:
            leftover.kill()
        for pid in sandbox._uid_processes(account.uid):
            os.kill(pid, signal.SIGKILL)
    pool.close()


@pytest.mark.parametrize("account", [None, sandbox.Account("root", 0, 0)])
def test_killing_an_accounts_processes_needs_an_unprivileged_account(
    account: sandbox.Account | None,
) -> None:
    with pytest.raises(InvalidInputError, match="unprivileged account when exclusive"):
        launch_command(["/bin/true"], (), account, os.getpid(), exclusive=True)


def test_an_account_is_cleared_once_between_two_holders(tmp_path: Path) -> None:
    cleared: list[int] = []
    pool = AccountPool(70400, size=2, lock_dir=tmp_path / "locks",
                       clear=lambda account: cleared.append(account.uid))
    pool.reserve(1)  # ahead of the first trial
    assert cleared == [70400]
    first = pool.take()  # no wait: it was cleared ahead
    assert cleared == [70400]
    pool.release(first)  # cleared as its holder ends
    assert cleared == [70400, 70400]
    again = pool.take()
    assert again.uid == 70400 and cleared == [70400, 70400]
    pool.give_back(again)  # not cleared now: the next take clears it
    assert pool.take().uid == 70400 and cleared == [70400, 70400, 70400]
    pool.close()


@needs_root
@pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("setpriv") is None,
                    reason="needs unshare and setpriv (util-linux)")
@pytest.mark.parametrize(("uid", "keep_caps"), [(0, False), (70500, True)])
def test_the_launcher_will_not_kill_while_it_is_still_privileged(uid: int, keep_caps: bool
                                                                 ) -> None:
    """In a PID namespace of its own, where a wrong kill could end only that namespace's
    processes: a launcher still privileged after the switch (uid 0, or capabilities kept with
    SECBIT_NO_SETUID_FIXUP) refuses to kill, and a sleeper beside it lives on."""
    launcher = [sys.executable, "-I", "-S", "-c", sandbox._LAUNCHER, "", str(uid), str(uid),
                "1", "1", "/bin/true"]
    if keep_caps:
        launcher = ["setpriv", "--securebits", "+no_setuid_fixup", *launcher]
    script = ('sleep 30 & S=$!; "$@"; RC=$?; kill -0 $S 2>/dev/null && echo alive; '
              'echo rc=$RC; kill $S')
    done = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", script,
                           "sh", *launcher], capture_output=True, text=True, timeout=60)
    if "unshare failed" in done.stderr or "Operation not permitted" in done.stderr:
        pytest.skip(f"no PID namespace here: {done.stderr.strip()}")
    assert done.stdout.split() == ["alive", "rc=126"], (done.stdout, done.stderr)
    assert "still privileged after the switch" in done.stderr


def test_a_reserve_that_fails_half_way_keeps_no_account(tmp_path: Path) -> None:
    def clear(account: sandbox.Account) -> None:
        if account.uid == 70502:
            raise OSError("could not clear")

    pool = AccountPool(70500, size=5, lock_dir=tmp_path / "locks", clear=clear)
    with pytest.raises(OSError, match="could not clear"):
        pool.reserve(5)
    assert pool.in_use == 0
    pool.close()
