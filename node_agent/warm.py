"""Warm runtimes: a sandboxed interpreter per slot that has already imported the heavy modules.

A trial whose code begins with ``import torch`` spends most of a second before its first step
in that import alone. With ``--preload torch`` the agent keeps, for every slot, one child
started the usual way (the same launcher, rlimits, account, scrubbed environment, own process
group, pinned GPUs) that imports the preload modules and then waits on a pipe. When an
assignment for that slot arrives, the agent unpacks the bundle, hands the work directory over,
and writes one line: the work directory, the entrypoint, and the trial's environment. The child
moves there and runs the entrypoint as ``__main__``. Each warm child runs at most one trial (no
state is shared between trials); a new one is started for the slot at once.

The child's stdout and stderr are log files the agent opened before the start, in a scratch
directory the agent owns (:attr:`WarmChild.scratch`), so the agent reads the stderr tail through
its own descriptor, as for a cold start. The trial's order is a file there too; the pipe only
carries its path (under ``PIPE_BUF`` bytes, so the write never blocks the agent). While it
waits the child is not dumpable: no other process of the sandbox account can ptrace it or write
its memory to plant code for the next trial.

Preloading ``torch`` also preloads ``torch._dynamo`` (:data:`PRELOAD_COMPANIONS`), which the
first optimizer a trial builds would import. An agent that offers GPUs preloads torch unless the
provider says otherwise (:func:`default_preload`; ``--no-preload`` turns it off).

Differences from a cold start: the preloaded modules were imported with the scratch directory
as ``HOME`` and ``TMPDIR``. The trial's own are set before its code runs; environment variables
the imports set (torch._dynamo sets ``TORCHINDUCTOR_CACHE_DIR``) are removed and tempfile's
cached directory is reset, so caches are placed from the trial's own directories. A module that
kept such a path in a variable of its own at import would keep it. The CPU-time limit also
counts the preload; each waiting child holds the preloaded modules in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import select
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

from node_agent.runner import (
    Child,
    ChildSpec,
    child_account,
    hand_over,
    report_reader,
    spawn_sandboxed,
)
from node_agent.sandbox import Account, AccountPool, grant_traversal, runtime_directories
from tunefleet.trial import ENV_TRIAL

__all__ = [
    "WarmPool", "WarmChild", "ENV_GO_FD", "PRELOAD_COMPANIONS", "default_preload", "expand_preload",
]

log = logging.getLogger(__name__)

ENV_GO_FD = "TUNEFLEET_GO_FD"
ENV_READY_FD = "TUNEFLEET_READY_FD"
READY_WAIT_SECONDS = 300.0  # how long a trial waits for its warm runtime's preload
PRELOAD_FAILURES_TO_GIVE_UP = 3  # warm runtimes dying in their preload in a row: stop making them

PRELOAD_COMPANIONS: dict[str, tuple[str, ...]] = {"torch": ("torch._dynamo",)}
"""Modules preloaded with a module because its first real use imports them anyway: building any
``torch.optim`` optimizer imports ``torch._dynamo`` (about 800 modules with sympy; 1 s on a
2-core machine, 4-5 s on a GPU machine whose torch had no compiled bytecode)."""


def default_preload(gpu_count: int) -> tuple[str, ...]:
    """What an agent preloads when the provider says nothing: ``torch`` where GPUs are offered
    and torch is installed (GPU trials are torch training), nothing on CPU-only machines."""
    if gpu_count and importlib.util.find_spec("torch") is not None:
        return ("torch",)
    return ()


def expand_preload(modules: tuple[str, ...]) -> tuple[str, ...]:
    """``modules`` in order, each followed by its :data:`PRELOAD_COMPANIONS`, without repeats."""
    out: list[str] = []
    for name in modules:
        for each in (name, *PRELOAD_COMPANIONS.get(name, ())):
            if each not in out:
                out.append(each)
    return tuple(out)

# Runs in the sandboxed child. Preload failures are reported and do not stop the child: the
# trial then imports the module itself, as it would cold.
_BOOT = r"""
import ctypes, json, os, runpy, sys
# Not dumpable while waiting: no other process of this account may ptrace this one or write its
# memory, so a trial cannot plant code in the interpreter that will run the next trial.
ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE, 0
if sys.path and sys.path[0] == "":
    del sys.path[0]  # "-c" put the current directory first; a script run does not
before = dict(os.environ)
for name in sys.argv[1:]:
    try:
        __import__(name)
    except Exception as exc:
        print(f"tunefleet warm runtime: could not preload {name}: {exc!r}", file=sys.stderr)
# What the imports derived from the waiting child's environment must not reach the trial:
# variables they set (torch._dynamo sets TORCHINDUCTOR_CACHE_DIR) and tempfile's cached
# directory, recomputed from the trial's own TMPDIR at its first use.
os.environ.clear()
os.environ.update(before)
if "tempfile" in sys.modules:
    sys.modules["tempfile"].tempdir = None
del before
ready = int(os.environ.pop("TUNEFLEET_READY_FD"))
os.write(ready, b"R")  # preloaded: a trial may come
os.close(ready)
del ready
go = os.fdopen(int(os.environ.pop("TUNEFLEET_GO_FD")), "rb")
path = go.readline().strip()
go.close()
if not path:
    sys.exit(0)
with open(path, "rb") as f:
    order = json.loads(f.read())
os.chdir(order["workdir"])
os.environ.update(order["env"])
sys.argv = [order["entrypoint"]]
sys.path.insert(0, os.path.dirname(os.path.abspath(order["entrypoint"])))
del go, path, order, f
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@dataclass
class WarmChild:
    """A waiting child: its process, the agent's ends of its pipes and its log files."""

    spec: ChildSpec  # what it was started as (its workdir is the scratch directory)
    process: asyncio.subprocess.Process
    report_r: int
    control_w: int
    go_w: int
    logs: tuple[IO[bytes], IO[bytes]]
    scratch: Path
    ready_r: int = -1  # the child writes one byte here once its preload is done
    ready: bool = False

    def poll_ready(self) -> bool:
        """Whether the child has said its preload is done (reads its byte once)."""
        if not self.ready and self.ready_r >= 0:
            readable, _, _ = select.select([self.ready_r], [], [], 0)
            if readable and os.read(self.ready_r, 1) == b"R":
                self.ready = True
        return self.ready

    def matches(self, spec: ChildSpec) -> bool:
        mine = self.spec
        return (mine.gpu_uuids, mine.threads, mine.limits, mine.run_as) == (
            spec.gpu_uuids, spec.threads, spec.limits, spec.run_as
        ) and self.process.returncode is None

    def discard(self) -> None:
        """End the child (it never got a trial) and free what the agent holds for it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        for fd in (self.report_r, self.control_w, self.go_w, self.ready_r):
            with contextlib.suppress(OSError):
                os.close(fd)
        for log_file in self.logs:
            log_file.close()
        shutil.rmtree(self.scratch, ignore_errors=True)


class WarmPool:
    """Warm children for the agent's slots, taken by matching assignments.

    Contract: :meth:`spawn` starts one child for a slot shape (GPUs, threads); :meth:`take`
    returns a started :class:`~node_agent.runner.Child` for a spec of that shape (the bundle
    already unpacked in ``spec.workdir``) or ``None`` when no live child matches, in which case
    the caller starts the trial cold. :meth:`close` ends every waiting child.
    """

    def __init__(self, scratch_root: Path, preload: tuple[str, ...],
                 accounts: AccountPool | None = None) -> None:
        """With ``accounts``, each warm child runs as an account of its own from that pool; a
        trial that takes the child takes its account (give it back once the child has ended);
        a child discarded unused gives it back itself."""
        self.scratch_root = scratch_root
        self.preload = preload
        self.accounts = accounts
        self.waiting: list[WarmChild] = []
        self.closed = False
        self.failed_preloads = 0  # in a row: at PRELOAD_FAILURES_TO_GIVE_UP, no more are made

    async def spawn(self, template: ChildSpec) -> WarmChild:
        """Start a warm child shaped like ``template`` (its workdir and trial are ignored)."""
        self.scratch_root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="warm-", dir=self.scratch_root))
        os.chmod(scratch, 0o755)  # the child reads its order here; only the agent writes
        spec = replace(template, workdir=scratch, entrypoint="", trial={})
        if self.accounts is not None:
            spec = replace(spec, account=await asyncio.to_thread(self.accounts.take))
        try:
            child = await self._spawn(spec, scratch)
        except BaseException:
            self._give_back(spec)
            raise
        if self.closed:  # closed while this child started: it never waits
            self.waiting.remove(child)
            self._discard(child)
        return child

    def _give_back(self, spec: ChildSpec) -> None:
        if self.accounts is not None and spec.account is not None:
            self.accounts.give_back(spec.account)

    @property
    def given_up(self) -> bool:
        """Whether warm runtimes kept dying in their preload, so none is made any more."""
        return self.failed_preloads >= PRELOAD_FAILURES_TO_GIVE_UP

    async def _spawn(self, spec: ChildSpec, scratch: Path) -> WarmChild:
        go_r, go_w = os.pipe()
        ready_r, ready_w = os.pipe()
        try:
            process, report_r, control_w, logs = await spawn_sandboxed(
                spec, [sys.executable, "-c", _BOOT, *self.preload], cwd="/",
                prepare=_grant_runtime_traversal,
                env_changes={ENV_TRIAL: None, ENV_GO_FD: str(go_r),
                             ENV_READY_FD: str(ready_w)}, extra_fds=(go_r, ready_w),
            )
        except BaseException:
            os.close(go_w)
            os.close(ready_r)
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        finally:
            os.close(go_r)
            os.close(ready_w)
        child = WarmChild(spec, process, report_r, control_w, go_w, logs, scratch, ready_r)
        self.waiting.append(child)
        return child

    async def take(self, spec: ChildSpec) -> Child | None:
        """Start ``spec``'s entrypoint in a matching warm child, or return ``None``.

        Raises ``FileNotFoundError`` for a missing entrypoint (as a cold start does).
        """
        entry = spec.workdir / spec.entrypoint
        if not entry.is_file():
            raise FileNotFoundError(f"entrypoint {spec.entrypoint} is not in the bundle")
        for dead in [w for w in self.waiting if w.process.returncode is not None]:
            if not dead.poll_ready():
                self.failed_preloads += 1
            log.warning("a warm runtime ended before it got a trial (exit %s): %s",
                        dead.process.returncode, _tail(dead.logs[1]))
            self.waiting.remove(dead)
            self._discard(dead)
        matching = [w for w in self.waiting if w.matches(spec)]
        warm = next((w for w in matching if w.poll_ready()), matching[0] if matching else None)
        if warm is None:
            return None
        self.waiting.remove(warm)
        if not await self._preloaded(warm):
            return None  # started cold: a failed preload is the node's, not the trial's
        if warm.spec.account is not None:  # the trial runs as the child's own account
            spec = replace(spec, account=warm.spec.account)
        try:
            account = child_account(spec)
            tmp = spec.workdir / ".tmp"
            tmp.mkdir(exist_ok=True)
            if account is not None:
                await asyncio.to_thread(hand_over, spec.workdir, account)
            order = warm.scratch / "order.json"
            order.write_text(json.dumps({
                "workdir": str(spec.workdir), "entrypoint": spec.entrypoint,
                "env": {"HOME": str(spec.workdir), "TMPDIR": str(tmp),
                        ENV_TRIAL: json.dumps(spec.trial)},
            }))
            order.chmod(0o644)
            line = str(order).encode() + b"\n"
            if len(line) > select.PIPE_BUF:
                raise OSError(f"the scratch path is over {select.PIPE_BUF} bytes")
        except BaseException:
            self._discard(warm)
            raise
        try:
            # a line of at most PIPE_BUF bytes into an empty pipe: written whole, never blocks
            os.write(warm.go_w, line)
            os.close(warm.go_w)
        except OSError as exc:  # the child died after the check: start the trial cold
            log.warning("a warm runtime ended before it got a trial: %s", exc)
            self._discard(warm)
            return None
        try:
            reader = await report_reader(warm.report_r)
        except BaseException:
            self._discard(warm)
            raise
        child = Child(spec, warm.process, reader, warm.control_w, time.monotonic(), warm.logs)
        child.scratch = warm.scratch
        return child

    async def _preloaded(self, warm: WarmChild) -> bool:
        """Wait until ``warm`` has preloaded (a trial would wait for the import anyway); False,
        with ``warm`` discarded, if it died first or took over :data:`READY_WAIT_SECONDS`."""
        deadline = time.monotonic() + READY_WAIT_SECONDS
        while not warm.poll_ready():
            if warm.process.returncode is not None or time.monotonic() > deadline:
                self.failed_preloads += warm.process.returncode is not None
                log.warning("a warm runtime %s before its preload of %s was done%s: the trial "
                            "starts cold: %s",
                            "died" if warm.process.returncode is not None else "took too long",
                            ", ".join(self.preload), " (no more warm runtimes are made)"
                            if self.given_up else "", _tail(warm.logs[1]).strip()[-500:])
                self._discard(warm)
                return False
            await asyncio.sleep(0.05)
        self.failed_preloads = 0
        return True

    def count(self, shape: ChildSpec) -> int:
        """How many live children of ``shape`` wait."""
        return sum(1 for w in self.waiting if w.matches(shape))

    def _discard(self, warm: WarmChild) -> None:
        warm.discard()
        self._give_back(warm.spec)

    def close(self) -> None:
        """End every waiting child, and any that a :meth:`spawn` still starting makes."""
        self.closed = True
        for warm in self.waiting:
            self._discard(warm)
        self.waiting.clear()


def _grant_runtime_traversal(scratch: Path, account: Account) -> None:
    """What a waiting child needs before its account switch: the interpreter's directories
    traversable (its scratch directory stays the agent's; the work directory is handed over
    when a trial comes)."""
    grant_traversal(runtime_directories())


def _tail(log_file: IO[bytes]) -> str:
    with contextlib.suppress(OSError):
        size = os.fstat(log_file.fileno()).st_size
        start = max(0, size - 2000)
        return os.pread(log_file.fileno(), size - start, start).decode("utf-8", "replace")
    return ""
