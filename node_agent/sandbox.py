"""Resource limits, the unprivileged account and the launcher for training children.

The runner (:mod:`node_agent.runner`) builds one :class:`SandboxLimits` per child. Limits are
enforced by the kernel through ``setrlimit``, applied by a launcher before it execs the training
code (see :func:`launch_command`), except the wall time, which the runner enforces itself (it
stops the child like a stop order).

When the agent runs as root, each child runs as an unprivileged account of its own, taken from
an :class:`AccountPool` of user ids that no user or service on the machine owns, and every
process of that account is killed before the account is used again; a provider may instead
name one shared account (``--run-as``, see :func:`sandbox_user`). Before such a child starts,
:func:`grant_access` hands its work directory to that account and makes every directory above it
traversable (search bit only, never read), so the child reaches its own files but cannot list or
read the agent's home or its key; the runner does the same for the directories holding the
Python interpreter (:func:`runtime_directories`), which the child must reach to start.

Limits of this sandbox, stated so nobody relies on more: children that share one account (a
named ``--run-as`` account, or the agent's own user when it is not root) can signal and read
each other; a child may escape its process group with ``setsid``, though not outlive its
account's next use; memory is capped as address space (``RLIMIT_AS``) of each process, not
resident memory nor the sum over a trial's processes, and not at all for GPU children; files in
``/dev/shm`` count against no limit; the number of processes (``RLIMIT_NPROC``) is capped only
for accounts of their own; trials share the machine's network.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import pwd
import resource
import shutil
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from tunefleet.errors import InvalidInputError

__all__ = [
    "SandboxLimits",
    "Account",
    "AccountPool",
    "DEFAULT_ACCOUNT",
    "DEFAULT_UID_BASE",
    "sandbox_user",
    "resolve_account",
    "rlimits_for",
    "grant_access",
    "grant_traversal",
    "runtime_directories",
    "launch_command",
    "clear_account",
]

log = logging.getLogger(__name__)

GiB = 1024**3
MiB = 1024**2
DEFAULT_ACCOUNT = "nobody"
DEFAULT_UID_BASE = 60600
"""The first user id of the agent's own accounts (uids the user database does not know): in the
gap that systemd leaves between the ids of systemd-homed (60001-60513) and of dynamic service
users (61184-65519), above the ids that ``useradd`` gives people (up to 60000)."""
MAX_UID = 2**31 - 2
CPU_KILL_AFTER = 2
"""Seconds of CPU time between SIGXCPU (the soft limit) and SIGKILL (the hard limit)."""
MIN_MEMORY_BYTES = 64 * MiB
MIN_OPEN_FILES = 16

Rlimit = tuple[int, int, int]
"""``(resource, soft, hard)`` as :func:`resource.setrlimit` takes them."""


@dataclass(frozen=True)
class SandboxLimits:
    """What one training child may use. ``None`` means unlimited (the agent's own limit stays).

    - ``memory_bytes``: address space (``RLIMIT_AS``); an allocation beyond it fails
      (``MemoryError`` in Python). Applied only to children without GPUs, because CUDA maps
      virtual ranges far larger than any real memory use.
    - ``cpu_seconds``: CPU time of the child process, all its threads summed (``RLIMIT_CPU``);
      the child gets SIGXCPU at the limit and SIGKILL :data:`CPU_KILL_AFTER` seconds later.
      Unlimited by default: a trial legitimately uses threads x wall time, and ``wall_seconds``
      bounds it.
    - ``file_bytes``: the size of every file the child writes (``RLIMIT_FSIZE``), its
      ``stdout.log`` and ``stderr.log`` included; writing past it fails with ``EFBIG``.
    - ``open_files``: descriptors the child may hold (``RLIMIT_NOFILE``).
    - ``processes``: processes of the child's real user, counted across the whole machine
      (``RLIMIT_NPROC``); root ignores it. Off by default because a shared account such as
      ``nobody`` counts every process of that account.
    - ``wall_seconds``: enforced by the runner; when exceeded the child is stopped like a stop
      order, waiting ``wall_grace_seconds`` before each escalation, and its exit is marked.

    Core dumps are always off (``RLIMIT_CORE`` = 0): a dump could hold data of the trial and
    fill the disk.
    """

    memory_bytes: int | None = 16 * GiB
    cpu_seconds: int | None = None
    file_bytes: int | None = 8 * GiB
    open_files: int | None = 4096
    processes: int | None = None
    wall_seconds: float | None = 24 * 3600.0
    wall_grace_seconds: float = 5.0

    def __post_init__(self) -> None:
        _check_int("memory_bytes", self.memory_bytes, MIN_MEMORY_BYTES)
        _check_int("cpu_seconds", self.cpu_seconds, 1)
        _check_int("file_bytes", self.file_bytes, 1)
        _check_int("open_files", self.open_files, MIN_OPEN_FILES)
        _check_int("processes", self.processes, 1)
        _check_seconds("wall_seconds", self.wall_seconds, optional=True)
        _check_seconds("wall_grace_seconds", self.wall_grace_seconds, optional=False)


def _check_int(name: str, value: object, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInputError(f"limits.{name}", value,
                                f"an integer >= {minimum}, or None for unlimited")


def _check_seconds(name: str, value: object, *, optional: bool) -> None:
    if value is None and optional:
        return
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value) and value > 0)
    if not ok:
        allowed = "a finite number of seconds > 0" + (", or None for unlimited" if optional else "")
        raise InvalidInputError(f"limits.{name}", value, allowed)


@dataclass(frozen=True)
class Account:
    """A resolved user account that children run as."""

    name: str
    uid: int
    gid: int


class AccountPool:
    """Accounts of their own for the children of an agent that runs as root.

    Contract: the accounts are the user ids from ``first`` up (each with the group id of the
    same number) that the user database does not know, so no person or service owns them;
    their name is ``tunefleet-<uid>``. :meth:`take` hands out one that is not in use (raising
    ``OSError`` when ``size`` are); :meth:`release` (or :meth:`give_back`, which leaves the
    clearing to the next :meth:`take`) returns it. A child started with an
    account from the pool kills every process of that account first (``exclusive`` in
    :func:`launch_command`), so nothing a previous child left behind shares it.

    Before an account is handed out again it is *cleared*: every process of that uid is
    killed (by a launcher that switched to it, see ``exclusive`` in :func:`launch_command`) and
    whatever the uid owns at the top of ``/tmp``, ``/var/tmp`` and ``/dev/shm`` is removed, so
    nothing a previous holder left can reach the next one's work directory, which is handed
    over only after that. Files it left deeper in other writable places are not found.

    Several agents on one machine never share an account: a pool holds an exclusive lock
    (``flock``) on ``lock_dir/<uid>.lock`` for every uid it has used, until its process ends,
    and skips uids another process holds. ``lock_dir`` must be the same for every agent of the
    machine (the default is) and must be private to the agent's user (created 0700; checked
    when the pool is made). :meth:`take` and :meth:`give_back` may be called from any thread.
    """

    def __init__(self, first: int = DEFAULT_UID_BASE, size: int = 64,
                 lock_dir: Path | None = None,
                 clear: Callable[[Account], None] | None = None) -> None:
        """``clear`` replaces :func:`clear_account` (for tests that do not run as root)."""
        if not 1000 <= first <= MAX_UID - size:
            raise InvalidInputError("uid_base", first, f"must be in [1000, {MAX_UID - size}]")
        if size < 1:
            raise InvalidInputError("size", size, "must be >= 1")
        self.first = first
        self.size = size
        self.lock_dir = lock_dir or _default_lock_dir()
        _private_dir(self.lock_dir)
        self._clear = clear or clear_account
        self._mutex = threading.Lock()
        self._clean: list[int] = []  # returned and cleared
        self._dirty: list[int] = []  # returned, to be cleared when taken
        self._next = first
        self._in_use: set[int] = set()
        self._locks: dict[int, int] = {}  # uid -> descriptor of its held lock file

    def take(self) -> Account:
        """A cleared account: one :meth:`release` cleared, else one given back or a fresh uid,
        cleared now (a short process run: call it off an event loop)."""
        with self._mutex:
            if len(self._in_use) >= self.size:
                raise OSError(f"all {self.size} sandbox accounts are in use")
            clean = bool(self._clean)
            if clean:
                uid = self._clean.pop()
            elif self._dirty:
                uid = self._dirty.pop()
            else:
                uid = self._fresh_uid()
            self._in_use.add(uid)
        account = Account(f"tunefleet-{uid}", uid, uid)
        if not clean:
            try:
                self._clear(account)
            except BaseException:
                self.give_back(account)
                raise
        return account

    def _fresh_uid(self) -> int:
        uid = self._next
        while _known_uid(uid) or not self._lock(uid):
            uid += 1
            if uid > MAX_UID:
                raise OSError(f"no free user id left above {self.first}")
        self._next = uid + 1
        return uid

    def reserve(self, count: int) -> None:
        """Clear accounts ahead, so that the next ``count`` :meth:`take` calls do not wait."""
        taken: list[Account] = []
        try:
            for _ in range(max(0, min(count, self.size - self.in_use))):
                taken.append(self.take())
        except BaseException:
            for account in taken:
                self.give_back(account)
            raise
        with self._mutex:
            for account in taken:
                self._in_use.discard(account.uid)
                self._clean.append(account.uid)

    def release(self, account: Account) -> None:
        """Clear ``account`` and return it, ready for the next :meth:`take` (blocks)."""
        try:
            self._clear(account)
        except BaseException:
            self.give_back(account)
            raise
        with self._mutex:
            if account.uid in self._in_use:
                self._in_use.remove(account.uid)
                self._clean.append(account.uid)

    def give_back(self, account: Account) -> None:
        """Return ``account`` without clearing it now: it is cleared when next taken."""
        with self._mutex:
            if account.uid in self._in_use:
                self._in_use.remove(account.uid)
                self._dirty.append(account.uid)

    def _lock(self, uid: int) -> bool:
        fd = os.open(self.lock_dir / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False  # another agent of this machine uses it
        self._locks[uid] = fd
        return True

    def close(self) -> None:
        """Release the locks (the process ending does the same)."""
        for fd in self._locks.values():
            os.close(fd)
        self._locks.clear()

    @property
    def in_use(self) -> int:
        return len(self._in_use)


def _default_lock_dir() -> Path:
    run = Path("/run")
    return (run if run.is_dir() and os.access(run, os.W_OK) else Path("/tmp")) / "tunefleet-uids"


SHARED_WRITABLE = (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"), Path("/run/lock"))


CLEAR_ROUNDS = 200  # rounds of killing an account's processes before it is called dirty


def _uid_processes(uid: int) -> list[int]:
    """Pids of live processes (not zombies) whose real, effective or saved uid is ``uid``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        if _runs_as(int(entry.name), uid):
            found.append(int(entry.name))
    return found


def _runs_as(pid: int, uid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
    except (OSError, ValueError):
        return False  # gone, or not readable
    uids = fields.get("Uid", "").split()[:3]
    return str(uid) in uids and not fields.get("State", "").strip().startswith(("Z", "X"))


def _kill_as_root(pid: int, uid: int) -> None:
    """SIGKILL ``pid`` if it still runs as ``uid`` (through a pidfd where the kernel has them,
    so that a pid reused since the scan is never hit)."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        if _runs_as(pid, uid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        return
    try:
        if _runs_as(pid, uid):
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
    finally:
        os.close(fd)


def clear_account(account: Account) -> None:
    """Kill every process of ``account`` and remove what it owns at the top of the shared
    writable directories (:data:`SHARED_WRITABLE`). Needs root; raises ``OSError`` if its
    processes are not all gone after :data:`CLEAR_ROUNDS` rounds.

    The agent kills them itself, as root, finding them in ``/proc`` round after round until
    none is left (a process forked between two rounds is found in the next). A process of the
    account cannot resist: before, a launcher switched to the account to kill its processes,
    and a process left behind could kill that launcher first and keep the account dirty."""
    for _ in range(CLEAR_ROUNDS):
        pids = _uid_processes(account.uid)
        if not pids:
            break
        for pid in pids:
            _kill_as_root(pid, account.uid)
        time.sleep(0.01)  # the kills land; their zombies are skipped
    else:
        if _uid_processes(account.uid):
            raise OSError(f"could not clear sandbox account {account.name}: its processes "
                          f"were still there after {CLEAR_ROUNDS} rounds of SIGKILL")
    for directory in SHARED_WRITABLE:
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
                if info.st_uid != account.uid:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            except OSError:
                continue


def _private_dir(path: Path) -> None:
    """Create ``path`` (0700) or check that it is a directory of this user that nobody else
    may write to; raise ``PermissionError`` otherwise."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise PermissionError(f"{path} must be a directory of user {os.geteuid()} that no one "
                              "else may write to; remove it or fix its owner and mode")


def _known_uid(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def resolve_account(name: str) -> Account:
    """Look ``name`` up in the user database; it must exist and must not be root (uid 0)."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise InvalidInputError("run_as", name, "the name of an existing user account") from None
    if entry.pw_uid == 0:
        raise InvalidInputError("run_as", name, "an unprivileged account (uid other than 0)")
    return Account(name, entry.pw_uid, entry.pw_gid)


def sandbox_user(name: str | None = None) -> str | None:
    """The account that children should run as, for :attr:`ChildSpec.run_as`.

    As root: ``name``, or ``nobody`` when none is given; the account must exist and be
    unprivileged. Otherwise children run as the agent's own user and the answer is ``None``
    (no switch); asking for another account then is an error, since only root can switch.
    """
    if os.geteuid() == 0:
        return resolve_account(name or DEFAULT_ACCOUNT).name
    if name is not None:
        try:
            own = pwd.getpwnam(name).pw_uid == os.geteuid()
        except KeyError:
            own = False
        if not own:
            raise InvalidInputError("run_as", name,
                                    "another account only when the agent runs as root")
    return None


def rlimits_for(limits: SandboxLimits, *, gpus: bool) -> tuple[Rlimit, ...]:
    """The ``setrlimit`` calls for a child, computed in the agent, not in the child.

    Limits only ever go down: each is clamped to the agent's current hard limit, so applying
    them never needs a privilege and never fails for that reason.
    """
    wanted: list[Rlimit] = [(resource.RLIMIT_CORE, 0, 0)]
    if limits.memory_bytes is not None and not gpus:
        wanted.append((resource.RLIMIT_AS, limits.memory_bytes, limits.memory_bytes))
    if limits.cpu_seconds is not None:
        wanted.append((resource.RLIMIT_CPU, limits.cpu_seconds,
                       limits.cpu_seconds + CPU_KILL_AFTER))
    for res, value in ((resource.RLIMIT_FSIZE, limits.file_bytes),
                       (resource.RLIMIT_NOFILE, limits.open_files),
                       (resource.RLIMIT_NPROC, limits.processes)):
        if value is not None:
            wanted.append((res, value, value))
    result = []
    for res, soft, hard in wanted:
        _, current_hard = resource.getrlimit(res)
        if current_hard != resource.RLIM_INFINITY:
            hard = min(hard, current_hard)
        result.append((res, min(soft, hard), hard))
    return tuple(result)


def grant_access(workdir: Path, account: Account) -> None:
    """Give ``workdir`` and everything in it to ``account``; make every parent traversable.

    The tree is handed over bottom-up without following links, so that while it is walked no
    directory the account already owns lies on a path still to be changed. A file with more
    than one hard link is refused with ``PermissionError`` (bundles never hold links, and
    changing its owner would hand over whatever else it is, the agent's key for instance).
    ``workdir`` itself becomes mode 0700. Parents get only the search bit for others
    (``o+x``), never read: the account can then reach its work directory but not list the
    agent's home or open files there that are not readable to others, such as the 0600 key.
    """
    workdir = workdir.resolve()
    for top, dirs, files, top_fd in os.fwalk(workdir, topdown=False, follow_symlinks=False):
        for name in (*files, *dirs):
            info = os.stat(name, dir_fd=top_fd, follow_symlinks=False)
            if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
                raise PermissionError(f"{os.path.join(top, name)} has {info.st_nlink} hard "
                                      f"links; refusing to hand it to {account.name}")
            os.chown(name, account.uid, account.gid, dir_fd=top_fd, follow_symlinks=False)
    os.chown(workdir, account.uid, account.gid, follow_symlinks=False)
    os.chmod(workdir, 0o700)
    grant_traversal(workdir.parents)


def grant_traversal(directories: Iterable[Path]) -> None:
    """Add the search bit for others (``o+x``, nothing else) to each directory lacking it."""
    for directory in directories:
        mode = os.stat(directory).st_mode
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            os.chmod(directory, stat.S_IMODE(mode) | stat.S_IXOTH)
            log.warning("made %s traversable (o+x) so that sandboxed trials reach the Python "
                        "interpreter or their work directory: a trial can now read any "
                        "world-readable file in it whose path it knows (install Python and "
                        "the agent's home outside private directories to avoid this)",
                        directory)


def runtime_directories() -> tuple[Path, ...]:
    """Directories the interpreter needs to reach: those holding it, its prefix and base."""
    found: list[Path] = []
    for path in (Path(sys.executable).resolve(), Path(sys.prefix).resolve(),
                 Path(sys.base_prefix).resolve()):
        for directory in (path, *path.parents) if path.is_dir() else path.parents:
            if directory not in found:
                found.append(directory)
    return tuple(found)


_LAUNCHER = """\
import os, sys, resource, signal
if sys.platform.startswith("linux"):
    import ctypes
    prctl = ctypes.CDLL(None, use_errno=True).prctl
else:
    prctl = None
limits, uid, gid, parent = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
exclusive = sys.argv[5] == "1"
try:
    for item in filter(None, limits.split(";")):
        res, soft, hard = (int(x) for x in item.split(","))
        resource.setrlimit(res, (soft, hard))
    if uid >= 0:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        if exclusive:  # the account is this child's alone: end whatever else runs as it
            with open("/proc/self/status") as status:
                caps = [l for l in status if l.startswith("CapEff:")]
            if os.getresuid() != (uid, uid, uid) or not caps or int(caps[0].split()[1], 16):
                raise OSError("still privileged after the switch: refusing to kill as it")
            try:
                os.kill(-1, signal.SIGKILL)  # every process of this uid but this one
            except ProcessLookupError:
                pass
    if prctl is not None:
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG, after the credential change that clears it
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
    os.execv(sys.argv[6], sys.argv[6:])
except OSError as exc:
    sys.stderr.write(f"tunefleet sandbox: {exc}\\n")
    os._exit(126)
"""


def launch_command(command: list[str], rlimits: tuple[Rlimit, ...], account: Account | None,
                   parent_pid: int, exclusive: bool = False) -> list[str]:
    """The argv that starts ``command`` inside the sandbox.

    A small launcher runs first, as a fresh isolated interpreter (``-I -S``: nothing is imported
    from the work directory, the environment or site-packages while it still has the agent's
    privileges). In this order it applies ``rlimits``; drops privileges to ``account`` when one
    is given (supplementary groups cleared, then gid, then uid, so none can be regained), and
    with ``exclusive`` (an account no other child uses) SIGKILLs every other process of it; only
    then asks for SIGKILL when the agent dies (``PR_SET_PDEATHSIG``, which a credential change
    clears), killing itself if the agent is already gone; and finally execs ``command`` in the
    same process, so the pid, process group and pipes stay. It exits 126 with a
    ``tunefleet sandbox:`` line on stderr if a step fails.

    Why not ``preexec_fn``: it forces a plain ``fork()`` of the agent, whose at-fork handlers
    (gRPC's among them) then run in the child and were seen to abort it (SIGABRT,
    ``ev_epoll1_linux.cc ... Check failed``). Without it the child is spawned with ``vfork``.
    """
    if exclusive and (account is None or account.uid == 0):
        raise InvalidInputError("account", account, "an unprivileged account when exclusive")
    encoded = ";".join(f"{res},{soft},{hard}" for res, soft, hard in rlimits)
    uid, gid = (account.uid, account.gid) if account is not None else (-1, -1)
    return [sys.executable, "-I", "-S", "-c", _LAUNCHER, encoded, str(uid), str(gid),
            str(parent_pid), "1" if exclusive else "0", *command]
