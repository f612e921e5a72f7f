"""Runs one training child in a sandbox and streams its reports.

The child gets a fresh work directory, a scrubbed environment (no agent key, no provider
secrets), its own process group, its GPUs pinned through ``CUDA_VISIBLE_DEVICES`` and two pipes:
reports come in as JSON lines on one, a ``stop`` line goes out on the other. :meth:`Child.stop`
asks politely, then ends the process group: SIGTERM, a grace period, SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import math
import os
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunefleet.trial import ENV_CONTROL_FD, ENV_REPORT_FD, ENV_TRIAL

__all__ = ["ChildSpec", "Child", "ChildReport", "ChildExit"]

STDERR_TAIL_LINES = 20
MAX_LINE_BYTES = 64 * 1024


@dataclass(frozen=True)
class ChildSpec:
    workdir: Path
    entrypoint: str
    trial: dict[str, Any]  # params, fidelity_max, trial_id, attempt_id
    gpu_uuids: tuple[str, ...] = ()
    threads: int = 1


@dataclass(frozen=True)
class ChildReport:
    step: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class ChildExit:
    exit_code: int
    stopped: bool  # we ended it (stop order or scheduler STOP)
    stderr_tail: str
    wall_seconds: float


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
    for passthrough in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "LD_LIBRARY_PATH"):
        if passthrough in os.environ:
            env[passthrough] = os.environ[passthrough]
    return env


PR_SET_PDEATHSIG = 1


def _in_child() -> None:
    """Runs in the child between fork and exec: it dies with the agent, even on SIGKILL."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Child:
    """A started training process. Iterate :meth:`reports`, then await :meth:`wait`."""

    def __init__(self, spec: ChildSpec, process: asyncio.subprocess.Process,
                 reader: asyncio.StreamReader, control_fd: int, started: float) -> None:
        self.spec = spec
        self.process = process
        self._reader = reader
        self._control_fd = control_fd
        self._started = started
        self._stopped = False
        self.bad_lines = 0

    @classmethod
    async def start(cls, spec: ChildSpec) -> Child:
        entry = spec.workdir / spec.entrypoint
        if not entry.is_file():
            raise FileNotFoundError(f"entrypoint {spec.entrypoint} is not in the bundle")
        report_r, report_w = os.pipe()
        control_r, control_w = os.pipe()
        env = _environment(spec, report_w, control_r)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, spec.entrypoint,
                cwd=spec.workdir, env=env, pass_fds=(report_w, control_r),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=open(spec.workdir / "stdout.log", "wb"),  # noqa: SIM115
                stderr=open(spec.workdir / "stderr.log", "wb"),  # noqa: SIM115
                start_new_session=True, preexec_fn=_in_child,
            )
        finally:
            os.close(report_w)
            os.close(control_r)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=MAX_LINE_BYTES)
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(report_r, "rb", 0)
        )
        return cls(spec, process, reader, control_w, time.monotonic())

    async def reports(self) -> AsyncIterator[ChildReport]:
        """The child's reports in order, until it closes its end of the pipe."""
        while True:
            try:
                line = await self._reader.readline()
            except ValueError:  # a line over the limit: skip it
                self.bad_lines += 1
                continue
            if not line:
                return
            report = _parse(line)
            if report is None:
                self.bad_lines += 1
                continue
            yield report

    async def stop(self, grace: float) -> None:
        """Ask the child to stop, then end its process group if it does not."""
        if self.process.returncode is not None:
            return
        self._stopped = True
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

    async def wait(self) -> ChildExit:
        code = await self.process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # leftovers of the group
        with contextlib.suppress(OSError):
            os.close(self._control_fd)
        return ChildExit(code, self._stopped, self.stderr_tail(),
                         time.monotonic() - self._started)

    def stderr_tail(self) -> str:
        path = self.spec.workdir / "stderr.log"
        try:
            with open(path, "rb") as f:
                f.seek(max(0, path.stat().st_size - 16384))
                data = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(deque(data.splitlines(), maxlen=STDERR_TAIL_LINES))


def _parse(line: bytes) -> ChildReport | None:
    try:
        data = json.loads(line)
        step = data["step"]
        metrics = data["metrics"]
        if data.get("type") != "report" or isinstance(step, bool) or not isinstance(step, int):
            return None
        clean = {str(k): float(v) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if not clean:
            return None
        return ChildReport(step, {k: (v if not math.isnan(v) else math.nan)
                                  for k, v in clean.items()})
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
