"""An embedded pool: a coordinator and N node agents as child processes on loopback.

``tunefleet run study.toml --local N`` uses it; so do the integration tests. Each part starts
through its public entry point (``python -m coordinator serve``, ``python -m node_agent
start``), exactly as an operator or a provider would start it. On Linux each part also dies
with the process that started it, even when that process is killed with SIGKILL
(``PR_SET_PDEATHSIG``, set by the agent's sandbox launcher before the entry point runs), so no
part is left orphaned. The kernel ties that signal to the thread that forks, so every part is
forked by one daemon thread that lives as long as the process: a cluster may be started from
any thread, a short-lived one included.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from node_agent.inventory import read_inventory
from node_agent.sandbox import launch_command
from tunefleet.bundle import RESULTS_MARKER
from tunefleet.connection import ENV_CA, ENV_COORDINATOR, ENV_INSECURE
from tunefleet.errors import TunefleetError
from tunefleet.tls import CA_FILE, ChannelSecurity, init_authority

__all__ = ["AgentWatch", "LocalCluster", "share_gpus"]

LISTEN_LINE = re.compile(rb"coordinator listening on (\S+)")


def share_gpus(indices: list[int], agents: int, block: int = 1) -> list[str]:
    """Each local agent's ``--gpus``: the GPUs dealt round-robin in blocks of ``block`` (the
    GPUs one trial needs), so that no two agents offer the same one (two trials on one GPU
    would each expect it whole) and a trial's GPUs stay on one agent; ``none`` for an agent
    left without one."""
    block = max(1, block)
    blocks = [indices[i:i + block] for i in range(0, len(indices), block)]
    return [",".join(str(i) for b in blocks[a::agents] for i in b) or "none"
            for a in range(agents)]


class LocalCluster:
    """Start with :meth:`start` (or ``with``); :attr:`address` is the coordinator's HOST:PORT."""

    def __init__(
        self, agents: int, state_dir: Path | None = None, slots_per_agent: int = 1,
        lease_seconds: float = 30.0, log_to: IO[str] | None = None,
        agent_args: Sequence[str] = (), coordinator_args: Sequence[str] = (),
        researchers: Sequence[str] = (), tls: bool = True, gpus_per_trial: int = 1,
    ) -> None:
        """``researchers`` are the key ids admitted at start (none: open admission). With
        ``tls`` (the default) a local CA is made in the state dir and every channel uses it.
        The machine's GPUs are dealt out among the agents in blocks of ``gpus_per_trial``."""
        if agents < 0:
            raise TunefleetError(f"--local: got {agents}; must be >= 0 agents")
        self._tmp = None if state_dir is not None else tempfile.TemporaryDirectory(
            prefix="tunefleet-local-"
        )
        self.state_dir = state_dir or Path(self._tmp.name)  # type: ignore[union-attr]
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # a state dir inside a study's directory must stay out of its bundle: its database
        # changes as the study runs, and with it the bundle's digest
        (self.state_dir / RESULTS_MARKER).write_text(
            "a local tunefleet coordinator's state; bundles leave this folder out\n")
        self.db_path = self.state_dir / "coordinator.db"
        self.n_agents = agents
        self.slots = slots_per_agent
        self.lease_seconds = lease_seconds
        self.agent_args = list(agent_args)
        self._gpu_shares: list[str] | None = None  # each agent's --gpus; [] without GPUs
        self.gpus_per_trial = gpus_per_trial
        self.coordinator_args = list(coordinator_args)
        self.researchers = list(researchers)
        self.tls_dir = self.state_dir / "tls"
        if tls and not (self.tls_dir / CA_FILE).exists():
            init_authority(self.tls_dir)
        self.security = (ChannelSecurity(ca=self.tls_dir / CA_FILE) if tls
                         else ChannelSecurity(insecure=True))
        self.address = ""
        self.coordinator: subprocess.Popen[bytes] | None = None
        self.agents: list[subprocess.Popen[bytes]] = []
        self._log_to = log_to

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.close()

    def _log_path(self, name: str) -> Path:
        return self.state_dir / f"{name}.log"

    def _open_log(self, name: str) -> IO[bytes]:
        """A log for appending, readable by this user only: the state directory is made
        traversable for the trials' accounts, so its files must not be readable by others."""
        return os.fdopen(os.open(self._log_path(name), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                                 0o600), "ab")

    def start_coordinator(self, listen: str = "127.0.0.1:0") -> str:
        """Start (or restart, on the same database) the coordinator; returns its address."""
        log = self._open_log("coordinator")
        self.coordinator = _spawn(  # its database and files readable by this user only
            _tied([sys.executable, "-m", "coordinator", "serve", "--db", str(self.db_path),
                   "--listen", listen, "--lease-seconds", str(self.lease_seconds),
                   *self._security_args(server=True), *self.coordinator_args]),
            stdout=subprocess.PIPE, stderr=log, start_new_session=True, umask=0o077,
        )
        stdout = self.coordinator.stdout
        if stdout is None:
            raise TunefleetError("coordinator started without a stdout pipe")
        line = stdout.readline()
        match = LISTEN_LINE.search(line)
        if match is None:
            self.coordinator.wait(timeout=10)
            raise TunefleetError(
                "the coordinator did not start; see " + str(self._log_path("coordinator"))
            )
        self.address = match.group(1).decode()
        threading.Thread(target=_pump, args=(stdout, log), daemon=True).start()
        return self.address

    @property
    def connection_args(self) -> list[str]:
        """The flags a client needs to reach this cluster's coordinator."""
        return ["--coordinator", self.address, *self._security_args()]

    def _security_args(self, server: bool = False) -> list[str]:
        if server:
            tls = (["--tls-dir", str(self.tls_dir)] if self.security.ca is not None
                   else ["--insecure"])
            admission = [a for key in self.researchers for a in ("--admit", key)] or ["--open"]
            return tls + admission
        args = (["--ca", str(self.security.ca)] if self.security.ca is not None
                else ["--insecure"])
        if os.geteuid() != 0:  # local agents run the researcher's own code as its own user
            args.append("--allow-same-user")
        return args

    def _gpu_args(self, index: int) -> list[str]:
        """``--gpus`` for local agent ``index`` where this machine offers GPUs (see
        :func:`share_gpus`), unless the caller's agent arguments choose them."""
        if "--gpus" in self.agent_args:
            return []
        if self._gpu_shares is None:
            indices = [g.index for g in read_inventory(0).inventory.gpus]
            self._gpu_shares = (share_gpus(indices, self.n_agents, self.gpus_per_trial)
                                if indices else [])
        if not self._gpu_shares:
            return []
        return ["--gpus", self._gpu_shares[index] if index < len(self._gpu_shares) else "none"]

    def start_agent(self, index: int) -> subprocess.Popen[bytes]:
        log = self._open_log(f"agent-{index}")
        home = self.state_dir / f"agent-{index}"
        proc = _spawn(
            _tied([sys.executable, "-m", "node_agent", "start", "--coordinator", self.address,
                   "--home", str(home), "--slots", str(self.slots), "--name", f"local-{index}",
                   *self._gpu_args(index), *self._security_args(), *self.agent_args]),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env=_agent_environment(),
        )
        return proc

    def start(self) -> None:
        self.start_coordinator()
        self.agents = [self.start_agent(i) for i in range(self.n_agents)]

    def wait_for_nodes(self, count: int, timeout: float = 30.0) -> None:
        """Block until ``count`` nodes have registered with the coordinator."""
        import sqlite3

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with sqlite3.connect(self.db_path) as conn:
                    if conn.execute("SELECT COUNT(*) FROM nodes").fetchone()[0] >= count:
                        return
            except sqlite3.Error:
                pass
            time.sleep(0.1)
        raise TunefleetError(f"{count} node agents did not register within {timeout}s")

    def largest_gpu_slot(self, min_memory_gb: float) -> int:
        """The most GPUs with at least ``min_memory_gb`` that one registered node offers."""
        import sqlite3

        from tunefleet.v1 import node_pb2

        with sqlite3.connect(self.db_path) as conn:
            rows = conn.execute("SELECT inventory FROM nodes").fetchall()
        counts = [sum(1 for g in node_pb2.Inventory.FromString(r[0]).gpus
                      if g.memory_total_gb >= min_memory_gb) for r in rows]
        return max(counts, default=0)

    def dead_agents(self) -> list[str]:
        """``agent N: LAST LOG LINE`` for every agent process that has exited."""
        dead = []
        for index, proc in enumerate(self.agents):
            if proc.poll() is not None:
                try:
                    lines = self._log_path(f"agent-{index}").read_text(errors="replace")
                    last = (lines.strip().splitlines() or ["(its log is empty)"])[-1]
                except OSError:
                    last = "(no log)"
                dead.append(f"agent {index}: {last[-300:]}")
        return dead

    def close(self) -> None:
        procs = [*self.agents, *([self.coordinator] if self.coordinator else [])]
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self._tmp is not None:
            self._tmp.cleanup()


class AgentWatch:
    """While entered, checks every ``interval`` seconds on its own thread whether every agent
    of ``cluster`` has exited; if so it calls ``on_all_dead`` once (to end a wait that would
    otherwise last forever) and :attr:`dead` holds what :meth:`LocalCluster.dead_agents`
    said."""

    def __init__(self, cluster: LocalCluster, on_all_dead: Callable[[], None],
                 interval: float = 1.0) -> None:
        self.cluster = cluster
        self.on_all_dead = on_all_dead
        self.interval = interval
        self.dead: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agent-watch", daemon=True)

    def __enter__(self) -> AgentWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            dead = self.cluster.dead_agents()
            if self.cluster.agents and len(dead) == len(self.cluster.agents):
                self.dead = dead
                self.on_all_dead()
                return


def _tied(command: list[str]) -> list[str]:
    """``command``, started so that it is SIGKILLed when the thread that forks it ends (Linux;
    elsewhere unchanged): fork it with :func:`_spawn`, whose thread ends with the process."""
    if not sys.platform.startswith("linux"):
        return command
    return launch_command(command, (), None, os.getpid())


_requests: queue.SimpleQueue[tuple[list[str], dict[str, Any], Future[subprocess.Popen[bytes]]]] = (
    queue.SimpleQueue())
_spawner_lock = threading.Lock()
_spawner: threading.Thread | None = None


def _agent_environment() -> dict[str, str]:
    """This process's environment less the connection variables: a local agent is told its
    coordinator and TLS by flags, which a researcher's ``TUNEFLEET_INSECURE`` (or CA, or
    coordinator) for another coordinator must not contradict."""
    return {k: v for k, v in os.environ.items()
            if k not in (ENV_COORDINATOR, ENV_CA, ENV_INSECURE)}


def _spawn(argv: list[str], **options: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(argv, **options)``, forked by the process's spawner thread (a daemon
    that lives until the process ends), whatever thread calls."""
    global _spawner
    with _spawner_lock:
        if _spawner is None or not _spawner.is_alive():
            _spawner = threading.Thread(target=_serve_spawns, name="tunefleet-spawner",
                                        daemon=True)
            _spawner.start()
    done: Future[subprocess.Popen[bytes]] = Future()
    _requests.put((argv, options, done))
    return done.result()


def _serve_spawns() -> None:
    while True:
        argv, options, done = _requests.get()
        try:
            done.set_result(subprocess.Popen(argv, **options))
        except BaseException as exc:  # the caller raises it
            done.set_exception(exc)


def _pump(source: IO[bytes], sink: IO[bytes]) -> None:
    for line in source:
        sink.write(line)
        sink.flush()
