"""Runs one training child in a sandbox and streams its reports.

The child gets a fresh work directory, a scrubbed environment (no agent key, no provider
secrets), its own process group, its GPUs pinned through ``CUDA_VISIBLE_DEVICES``, resource
limits (:class:`~node_agent.sandbox.SandboxLimits`), an unprivileged account when
:attr:`ChildSpec.run_as` names one, and two pipes: reports come in as JSON lines on one, a
``stop`` line goes out on the other. :meth:`Child.stop` asks politely, then ends the process
group: SIGTERM, a grace period, SIGKILL. The wall-time limit ends the child the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from node_agent.sandbox import (
    Account,
    SandboxLimits,
    grant_access,
    grant_traversal,
    launch_command,
    resolve_account,
    rlimits_for,
    runtime_directories,
)
from tunefleet.errors import InvalidInputError, shortened
from tunefleet.trial import ENV_CONTROL_FD, ENV_REPORT_FD, ENV_TRIAL, MAX_REPORT_BYTES

__all__ = ["ChildSpec", "Child", "ChildReport", "ChildExit", "spawn_sandboxed", "report_reader",
           "hand_over", "child_account"]

STDERR_TAIL_LINES = 20
STDERR_TAIL_BYTES = 256 * 1024  # read from the end of stderr.log to find those lines
STDERR_LINE_CHARS = 300  # each line of the tail at most about this long
MAX_STEP = 2**62  # steps beyond this are refused (they must fit the wire's int64)
MAX_LINE_BYTES = MAX_REPORT_BYTES + 1024  # the trial API refuses longer reports itself
DRAIN_SECONDS = 1.0  # after the main process exits, how long a silent report pipe is waited on


@dataclass(frozen=True)
class ChildSpec:
    """What to run and how to confine it.

    ``run_as`` names the account the child runs as (see :func:`node_agent.sandbox.sandbox_user`);
    ``None`` keeps the agent's own. ``account``, when given, is an account of the child's own
    from the agent's :class:`~node_agent.sandbox.AccountPool` and takes precedence; every other
    process of it is killed as the child starts. Switching needs root; the work directory is
    then handed to that account and the directories above it made traversable (``o+x`` only).
    """

    workdir: Path
    entrypoint: str
    trial: dict[str, Any]  # params, fidelity_max, trial_id, attempt_id
    gpu_uuids: tuple[str, ...] = ()
    threads: int = 1
    limits: SandboxLimits = SandboxLimits()
    run_as: str | None = None
    account: Account | None = None


@dataclass(frozen=True)
class ChildReport:
    step: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class ChildExit:
    """How a child ended.

    ``exit_code`` is negative for a signal (``-9`` for SIGKILL). ``stopped`` is true when a
    stop order ended it. ``limit_exceeded`` says which limit ended it when the runner knows
    (``"wall time limit of 60 s exceeded"``, ``"CPU time limit of 10 s exceeded"``); a child
    that runs out of memory, file size or descriptors sees failing calls instead and exits
    on its own, with the error in ``stderr_tail``. A child past its wall time is told to stop
    first, so it may still exit 0; ``limit_exceeded`` is set all the same.
    """

    exit_code: int
    stopped: bool  # we ended it (stop order or scheduler STOP)
    stderr_tail: str
    wall_seconds: float
    limit_exceeded: str | None = None


def _environment(spec: ChildSpec, report_fd: int, control_fd: int) -> dict[str, str]:
    tmp = spec.workdir / ".tmp"
    tmp.mkdir(exist_ok=True)
    threads = str(max(1, spec.threads))
    env = {
        "PATH": os.pathsep.join(p for p in ("/usr/local/bin", "/usr/bin", "/bin")),
        "HOME": str(spec.workdir),
        "TMPDIR": str(tmp),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "CUDA_VISIBLE_DEVICES": ",".join(spec.gpu_uuids),
        ENV_TRIAL: json.dumps(spec.trial),
        ENV_REPORT_FD: str(report_fd),
        ENV_CONTROL_FD: str(control_fd),
    }
    name = spec.account.name if spec.account is not None else spec.run_as
    if name is not None:  # getpass.getuser() (torch.compile's cache, git) needs no pwd entry
        env["USER"] = env["LOGNAME"] = name
    for passthrough in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "LD_LIBRARY_PATH"):
        if passthrough in os.environ:
            env[passthrough] = os.environ[passthrough]
    return env


def child_account(spec: ChildSpec) -> Account | None:
    """The account to switch to, or ``None`` when the child keeps the agent's."""
    if spec.account is not None:
        if os.geteuid() != 0:
            raise InvalidInputError("account", spec.account.name,
                                    "an account of the child's own only when the agent runs "
                                    "as root")
        return spec.account
    if spec.run_as is None:
        return None
    account = resolve_account(spec.run_as)
    if account.uid == os.geteuid():
        return None
    if os.geteuid() != 0:
        raise InvalidInputError("run_as", spec.run_as,
                                "another account only when the agent runs as root")
    return account


def _seconds(value: float) -> str:
    return f"{value:g}"


async def spawn_sandboxed(
    spec: ChildSpec,
    command: list[str],
    *,
    cwd: Path | str,
    prepare: Callable[[Path, Account], None],
    env_changes: Mapping[str, str | None] | None = None,
    extra_fds: tuple[int, ...] = (),
) -> tuple[asyncio.subprocess.Process, int, int, tuple[IO[bytes], IO[bytes]]]:
    """Start ``command`` under the sandbox of ``spec`` (launcher, rlimits, account, scrubbed
    environment, own process group), with the report and control pipes and with stdout and
    stderr going to log files in ``spec.workdir``.

    ``prepare`` runs (in a thread) when the child switches account; ``env_changes`` set
    variables, or remove them where the value is ``None``; ``extra_fds`` are passed on as well.
    Returns the process, the agent's ends of the report and control pipes, and the log files.
    """
    account = child_account(spec)
    rlimits = rlimits_for(spec.limits, gpus=bool(spec.gpu_uuids))
    report_r, report_w = os.pipe()
    control_r, control_w = os.pipe()
    logs: tuple[IO[bytes], IO[bytes]] | None = None
    try:
        env = _environment(spec, report_w, control_r)
        for key, value in (env_changes or {}).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        logs = (open(spec.workdir / "stdout.log", "wb"),  # noqa: SIM115
                open(spec.workdir / "stderr.log", "w+b"))  # noqa: SIM115
        if account is not None:
            await asyncio.to_thread(prepare, spec.workdir, account)
        argv = launch_command(command, rlimits, account, os.getpid(),
                              exclusive=spec.account is not None)
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, env=env, pass_fds=(report_w, control_r, *extra_fds),
            stdin=asyncio.subprocess.DEVNULL, stdout=logs[0], stderr=logs[1],
            start_new_session=True,
        )
    except BaseException:
        for fd in (report_r, control_w):
            os.close(fd)
        for log_file in logs or ():
            log_file.close()
        raise
    finally:
        os.close(report_w)
        os.close(control_r)
    # a child that never reads its control pipe must not block the agent once it is full: a
    # line that does not fit is dropped (a stop is followed by signals anyway)
    os.set_blocking(control_w, False)
    return process, report_r, control_w, logs


async def report_reader(report_r: int) -> asyncio.StreamReader:
    """An asyncio reader over the agent's end of a child's report pipe."""
    reader = asyncio.StreamReader(limit=MAX_LINE_BYTES)
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(report_r, "rb", 0)
    )
    return reader


class Child:
    """A started training process. Iterate :meth:`reports`, then await :meth:`wait`."""

    def __init__(self, spec: ChildSpec, process: asyncio.subprocess.Process,
                 reader: asyncio.StreamReader, control_fd: int, started: float,
                 logs: tuple[IO[bytes], ...] = ()) -> None:
        self.spec = spec
        self.process = process
        self._reader = reader
        self._control_fd = control_fd
        self._started = started
        self._stopped = False
        self._logs = logs
        self._tail: str | None = None
        self.limit_exceeded: str | None = None
        self.bad_lines = 0
        self.scratch: Path | None = None  # a directory of the agent's to remove afterwards
        self._watchdog: asyncio.Task[None] | None = None
        if spec.limits.wall_seconds is not None:
            self._watchdog = asyncio.get_running_loop().create_task(
                self._enforce_wall_time(spec.limits.wall_seconds))

    @classmethod
    async def start(cls, spec: ChildSpec) -> Child:
        """Start the entrypoint under the sandbox of ``spec``.

        Raises ``FileNotFoundError`` for a missing entrypoint, ``InvalidInputError`` for a
        ``run_as`` that does not exist, is root, or needs a switch the agent cannot make, and
        ``OSError`` when the process cannot start.
        """
        entry = spec.workdir / spec.entrypoint
        if not entry.is_file():
            raise FileNotFoundError(f"entrypoint {spec.entrypoint} is not in the bundle")
        process, report_r, control_w, logs = await spawn_sandboxed(
            spec, [sys.executable, spec.entrypoint], cwd=spec.workdir, prepare=hand_over)
        reader = await report_reader(report_r)
        return cls(spec, process, reader, control_w, time.monotonic(), logs)

    async def reports(self) -> AsyncIterator[ChildReport]:
        """The child's reports in order (lines that are malformed, too long, beyond the
        study's ``fidelity_max`` or at a step not after the previous report's are dropped and
        counted in :attr:`bad_lines`: one trial cannot flood the coordinator's database with
        reports of one step), until its end
        of the pipe closes or, once its main
        process has exited, until no line has come for ``DRAIN_SECONDS``: a descendant that
        keeps the pipe open (a fork, an escape to its own session) cannot hold the attempt,
        and its slot, after the training process ended. What the process wrote before it
        exited is in the pipe already, so none of it is lost."""
        top = self.spec.trial.get("fidelity_max")
        last: int | None = None  # steps must increase, as trial.report has them
        exited = asyncio.ensure_future(self.process.wait())
        try:
            while True:
                try:
                    line = await self._next_line(exited)
                except ValueError:  # a line over the limit: skip it
                    self.bad_lines += 1
                    continue
                if not line:
                    return
                report = _parse(line)
                if report is None or (isinstance(top, int) and report.step > top) or (
                        last is not None and report.step <= last):
                    self.bad_lines += 1
                    continue
                last = report.step
                yield report
        finally:
            exited.cancel()

    async def _next_line(self, exited: asyncio.Future[int]) -> bytes:
        """The next line, or ``b""`` at the pipe's end or when the main process has exited
        and nothing more comes within ``DRAIN_SECONDS``."""
        if exited.done():
            try:
                return await asyncio.wait_for(self._reader.readline(), DRAIN_SECONDS)
            except TimeoutError:
                return b""
        read = asyncio.ensure_future(self._reader.readline())
        pending: set[asyncio.Future[Any]] = {read, exited}
        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if read.done():
            return read.result()
        read.cancel()  # the buffer keeps a partial line: the drain below reads it whole
        with contextlib.suppress(asyncio.CancelledError):
            await read
        return await self._next_line(exited)

    def let_through(self, step: int) -> None:
        """Tell the child the scheduler let its report at ``step`` through (``continue
        STEP``): its ``trial.should_stop()`` waits for this or a ``stop``."""
        if self._control_fd >= 0:
            with contextlib.suppress(OSError):
                os.write(self._control_fd, f"continue {step}\n".encode())

    async def stop(self, grace: float) -> None:
        """Ask the child to stop, then end its process group if it does not."""
        if self.process.returncode is not None:
            return
        self._stopped = True
        await self._end(grace)

    async def _end(self, grace: float) -> None:
        """Write ``stop``; after ``grace`` SIGTERM the group; after ``grace`` more, SIGKILL."""
        with contextlib.suppress(OSError):
            os.write(self._control_fd, b"stop\n")
        for sig, wait in ((None, grace), (signal.SIGTERM, grace), (signal.SIGKILL, None)):
            if sig is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.process.pid, sig)
            if wait is None:
                break
            try:
                await asyncio.wait_for(self.process.wait(), wait)
                return
            except TimeoutError:
                continue

    async def _enforce_wall_time(self, limit: float) -> None:
        try:
            await asyncio.wait_for(self.process.wait(), limit)
        except TimeoutError:
            if self.process.returncode is None and not self._stopped:
                self.limit_exceeded = f"wall time limit of {_seconds(limit)} s exceeded"
                await self._end(self.spec.limits.wall_grace_seconds)

    async def wait(self) -> ChildExit:
        """Wait for the child's end, kill what is left of its group, and describe the end."""
        code = await self.process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # leftovers of the group
        if self._watchdog is not None and not self._watchdog.done():
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        with contextlib.suppress(OSError):
            os.close(self._control_fd)
        self._control_fd = -1  # closed: its number may be another file's now
        cpu = self.spec.limits.cpu_seconds
        if self.limit_exceeded is None and cpu is not None and code == -signal.SIGXCPU:
            self.limit_exceeded = f"CPU time limit of {cpu} s exceeded"
        self._tail = self.stderr_tail()
        for log_file in self._logs:
            log_file.close()
        return ChildExit(code, self._stopped, self._tail,
                         time.monotonic() - self._started, self.limit_exceeded)

    def stderr_tail(self) -> str:
        """The last lines of the child's stderr.

        Read through the descriptor the agent opened, never by path: the child owns its work
        directory and could put a link to the agent's key where ``stderr.log`` was.
        """
        if self._tail is not None:
            return self._tail
        if len(self._logs) < 2:
            return ""
        fd = self._logs[1].fileno()
        try:
            size = os.fstat(fd).st_size
            start = max(0, size - STDERR_TAIL_BYTES)
            data = os.pread(fd, size - start, start).decode("utf-8", "replace")
        except OSError:
            return ""
        # each line cut in its middle, so a huge message keeps its start (the exception's
        # type) and its end, and the whole tail stays a few KB
        return "\n".join(shortened(line, STDERR_LINE_CHARS)
                         for line in deque(data.splitlines(), maxlen=STDERR_TAIL_LINES))


def hand_over(workdir: Path, account: Account) -> None:
    """Give the work directory to ``account`` and open the paths it needs (``o+x`` only)."""
    grant_access(workdir, account)
    grant_traversal(runtime_directories())


def _parse(line: bytes) -> ChildReport | None:
    try:
        data = json.loads(line)
        step = data["step"]
        metrics = data["metrics"]
        if data.get("type") != "report" or isinstance(step, bool) or not isinstance(step, int):
            return None
        if not 0 <= step < MAX_STEP:
            return None
        clean = {str(k): float(v) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for name in clean:
            name.encode("utf-8")  # a lone surrogate (UnicodeEncodeError, a ValueError) cannot go on
        if not clean:
            return None
        return ChildReport(step, {k: (v if not math.isnan(v) else math.nan)
                                  for k, v in clean.items()})
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
        return None
