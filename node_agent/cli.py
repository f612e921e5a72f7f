"""The provider's command line: ``node-agent start``, ``inventory``, ``drain``, ``id``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import importlib.util
import json
import logging
import math
import os
import signal
import sys
from pathlib import Path
from typing import IO

from google.protobuf.json_format import MessageToDict

from node_agent.agent import Agent, AgentConfig
from node_agent.bytecode import compile_advice
from node_agent.inventory import ENV_VISIBLE, read_inventory
from node_agent.sandbox import DEFAULT_UID_BASE, MAX_UID, SandboxLimits, sandbox_user
from tunefleet.connection import add_connection_args, connection_from
from tunefleet.errors import InvalidInputError, TunefleetError
from tunefleet.keys import load_or_create

MAX_SLOTS = 1024  # CPU slots a coordinator takes from one node
MAX_NAME_CHARS = 128  # a node's name, as a coordinator takes it

__all__ = ["main"]

ENV_HOME = "TUNEFLEET_NODE_HOME"


def default_home() -> Path:
    """``$TUNEFLEET_NODE_HOME``, or ``~/.tunefleet/node`` when it is unset or empty."""
    return Path(os.environ.get(ENV_HOME) or Path.home() / ".tunefleet" / "node")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="node-agent",
        description="Offer this machine's GPUs (or CPU slots) to a tunefleet coordinator and "
        "run the signed training bundles it leases, one trial per GPU or slot.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    home_help = f"agent home: key, bundle cache, work dirs (default: ${ENV_HOME} or ~/.tunefleet/node)"
    start = sub.add_parser("start", help="connect to a coordinator and run trials until stopped")
    add_connection_args(start)
    start.add_argument("--home", type=Path, default=None, help=home_help)
    start.add_argument("--name", default="", help="a name operators see (default: the hostname)")
    start.add_argument(
        "--slots", type=int, default=None,
        help="CPU slots to offer (default: none beside GPUs; one per 2 cores without a GPU)",
    )
    start.add_argument(
        "--gpus", default=None, metavar="LIST",
        help="the GPUs to offer: indices as nvidia-smi numbers them (PCI bus order) or UUIDs, "
        "comma-separated, or none (default: those CUDA_VISIBLE_DEVICES leaves visible, read as "
        "CUDA reads it, when set; else all); give each agent on one machine GPUs of its own",
    )
    start.add_argument(
        "--trust", action="append", default=[], metavar="KEY_ID",
        help="run only bundles signed by this publisher key id (repeatable; default: any "
        "researcher the coordinator admits)",
    )
    start.add_argument(
        "--stop-grace", type=float, default=5.0,
        help="seconds a stopped trial gets before SIGTERM, and again before SIGKILL (default: 5)",
    )
    start.add_argument(
        "--max-backoff", type=float, default=30.0,
        help="longest wait in seconds between reconnect attempts (default: 30)",
    )
    start.add_argument(
        "--run-as", default=None, metavar="USER",
        help="as root: run every trial as this one existing unprivileged account, shared by "
        "all of them (default: each trial gets an account of its own, see --uid-base); "
        "ignored otherwise",
    )
    start.add_argument(
        "--uid-base", type=int, default=DEFAULT_UID_BASE, metavar="UID",
        help="as root without --run-as: each trial, and each warm runtime, runs as an account "
        "of its own, the user ids from UID up that the user database does not know (three per "
        "slot); whatever a trial leaves running is killed before its account is used again "
        f"(default: {DEFAULT_UID_BASE})",
    )
    start.add_argument(
        "--allow-same-user", action="store_true",
        help="when not root, run trials as this agent's own user: they could then read the "
        "node key (fine for your own code on your own machine; otherwise run the agent as root)",
    )
    start.add_argument("--memory-gb", type=float, default=16.0,
                       help="address-space limit of a CPU trial in GiB, 0 for none (default: 16)")
    start.add_argument("--cpu-hours", type=float, default=0.0,
                       help="CPU-time limit of a trial in hours, 0 for none (default: none)")
    start.add_argument("--max-file-gb", type=float, default=8.0,
                       help="largest file (and output log) a trial may write, in GiB (default: 8)")
    start.add_argument("--open-files", type=int, default=4096,
                       help="open-file limit of a trial (default: 4096)")
    start.add_argument("--max-processes", type=int, default=4096,
                       help="processes and threads a trial may run at once, 0 for no limit "
                       "(default: 4096); applies where each trial runs as an account of its "
                       "own (as root without --run-as), as it counts every process of the "
                       "account: a fork bomb stops there")
    start.add_argument("--wall-hours", type=float, default=24.0,
                       help="wall-time limit of a trial in hours, 0 for none (default: 24)")
    start.add_argument(
        "--preload", action="append", default=[], metavar="MODULE",
        help="keep one sandboxed interpreter per slot that has imported MODULE, so a trial "
        "starts without paying for the import (repeatable; e.g. --preload torch, which also "
        "preloads torch._dynamo; default: torch where GPUs are offered, else none)",
    )
    start.add_argument("--no-preload", action="store_true",
                       help="start every trial in a fresh interpreter (no warm runtimes)")
    start.add_argument(
        "--ack-log", type=Path, default=None, metavar="FILE",
        help="append a JSON line for every report the coordinator acknowledged (for audits)",
    )
    start.add_argument("-v", "--verbose", action="store_true", help="log every trial")
    inv = sub.add_parser("inventory", help="show the GPUs NVML reports and exit")
    inv.add_argument("--json", action="store_true", help="print JSON")
    inv.add_argument("--gpus", default=None, metavar="LIST",
                     help="show only these GPUs, as node-agent start --gpus would offer them")
    drain = sub.add_parser("drain", help="tell a running agent to finish its trials and exit")
    drain.add_argument("--home", type=Path, default=None, help=home_help)
    ident = sub.add_parser("id", help="print this node's id (creating its key if needed)")
    ident.add_argument("--home", type=Path, default=None, help=home_help)
    return parser


def _home_lock(home: Path) -> IO[str]:
    """``HOME/agent.pid``, locked and holding this process's pid while the agent runs; one
    agent per home (two would share a node id and a key). Raises :class:`TunefleetError`
    naming the other agent."""
    lock = (home / "agent.pid").open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        other = lock.read().strip() or "?"
        lock.close()
        raise TunefleetError(f"another agent (pid {other}) is using {home}; stop it, or give "
                             "this one another --home") from None
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


async def _start(args: argparse.Namespace, home: Path) -> None:
    lock = _home_lock(home)
    try:
        await _run_agent(args, home)
    finally:
        with contextlib.suppress(OSError):
            (home / "agent.pid").unlink()
        lock.close()


async def _run_agent(args: argparse.Namespace, home: Path) -> None:
    key = home / "node.key"
    if key.is_file() and key.stat().st_mode & 0o077:  # trials run as other accounts
        key.chmod(0o600)
        print(f"node key {key} was readable by others: made it 0600", flush=True)
    identity, created = load_or_create(key)
    address, security = connection_from(args)
    config = AgentConfig(
        coordinator=address, home=home, security=security, name=args.name or os.uname().nodename,
        cpu_slots=args.slots, gpus=args.gpus, trusted_publishers=set(args.trust), stop_grace=args.stop_grace,
        max_backoff=args.max_backoff, ack_log=args.ack_log, limits=_limits(args),
        run_as=sandbox_user(args.run_as) if os.geteuid() == 0 and args.run_as else None,
        uid_base=args.uid_base if os.geteuid() == 0 and not args.run_as else None,
        preload=() if args.no_preload else tuple(args.preload) or None,
    )
    agent = Agent(config, identity)
    if created:
        print(f"created node key {home / 'node.key'}", flush=True)
    inv = agent.inventory
    print(f"inventory: {agent.inventory_note}; {len(inv.gpus)} GPU slot(s), "
          f"{inv.cpu_slots} CPU slot(s)", flush=True)
    if agent.preload:
        print(f"warm runtimes: one per slot, preloading {', '.join(agent.preload)}", flush=True)
    for line in compile_advice(("torch", *agent.preload), sys.executable):
        print(line, flush=True)
    print(f"node {agent.node_id} connecting to {args.coordinator}", flush=True)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, agent.shutdown)
    loop.add_signal_handler(signal.SIGUSR1, agent.drain)
    await agent.run()
    if agent.exit_reason is not None:
        raise TunefleetError(f"the coordinator refused this node: {agent.exit_reason}")


def _start_flag_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with ``start``'s flags (``FLAG: got VALUE; ALLOWED``); None if nothing."""
    if args.slots is not None and not 0 <= args.slots <= MAX_SLOTS:
        return f"--slots: got {args.slots}; must be in [0, {MAX_SLOTS}]"
    for flag, value in (("--max-backoff", args.max_backoff), ("--stop-grace", args.stop_grace)):
        if not (math.isfinite(value) and value > 0):
            return f"{flag}: got {value}; must be a finite number of seconds > 0"
    name = args.name  # empty: this machine's host name
    if name and (len(name) > MAX_NAME_CHARS or not name.isprintable()):
        return f"--name: got {name!r}; must be printable text of at most {MAX_NAME_CHARS} characters"
    if args.ack_log is not None:
        try:
            with args.ack_log.open("a"):
                pass
        except OSError as exc:
            return f"--ack-log: got {str(args.ack_log)!r}; must be a file it can append to ({exc})"
    for key_id in args.trust:
        if len(key_id) != 32 or any(c not in "0123456789abcdef" for c in key_id):
            return (f"--trust: got {key_id!r}; must be a researcher's 32-character key id in "
                    "lowercase hex (`tunefleet keygen` prints it)")
    return None


def _limits(args: argparse.Namespace) -> SandboxLimits:
    """Sandbox limits from the flags; 0 means unlimited. Bad values name their flag."""
    def scaled(flag: str, value: float, unit: float) -> int | None:
        if not (math.isfinite(value) and value >= 0):
            raise InvalidInputError(flag, value, "must be a finite number >= 0 (0 for no limit)")
        return int(value * unit) if value else None

    try:
        return SandboxLimits(
            memory_bytes=scaled("--memory-gb", args.memory_gb, 1024**3),
            cpu_seconds=scaled("--cpu-hours", args.cpu_hours, 3600),
            file_bytes=scaled("--max-file-gb", args.max_file_gb, 1024**3),
            open_files=args.open_files,
            processes=(scaled("--max-processes", args.max_processes, 1)
                       if os.geteuid() == 0 and not args.run_as else None),
            wall_seconds=(scaled("--wall-hours", args.wall_hours, 3600) or None),
        )
    except InvalidInputError as exc:
        flag = {"limits.memory_bytes": "--memory-gb", "limits.cpu_seconds": "--cpu-hours",
                "limits.file_bytes": "--max-file-gb", "limits.open_files": "--open-files",
                "limits.processes": "--max-processes",
                "limits.wall_seconds": "--wall-hours"}.get(exc.field, exc.field)
        raise InvalidInputError(flag, exc.value, exc.allowed) from None


def _is_agent(argv: list[bytes]) -> bool:
    """Whether a process's arguments are a running ``node-agent start`` (the console script,
    or ``python -m node_agent``)."""
    names = [os.path.basename(arg) for arg in argv]
    return b"start" in argv and (b"node-agent" in names or (
        b"-m" in argv and b"node_agent" in argv))


def _drain(home: Path) -> int:
    """Signal the agent whose pid ``HOME/agent.pid`` holds, once it is sure to be a node agent
    (a stale file's pid may since be any process's)."""
    pid_file = home / "agent.pid"
    try:
        pid = int(pid_file.read_text())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if pid > 1 else []
        if not _is_agent(argv):
            raise ValueError(f"process {pid} named in {pid_file} is no node agent (a stale "
                             "file)")
        os.kill(pid, signal.SIGUSR1)
    except (OSError, ValueError) as exc:
        print(f"node-agent: error: no running agent under {home} ({exc})", file=sys.stderr)
        return 1
    print(f"agent {pid} is draining: it finishes its running trials, then exits")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    home = getattr(args, "home", None) or default_home()
    try:
        if args.command == "start":
            try:  # refuse bad flags before creating anything; a usage error exits 2
                connection_from(args)
                _limits(args)
            except InvalidInputError as exc:
                print(f"node-agent: error: {exc}", file=sys.stderr)
                return 2
            if os.geteuid() != 0 and not args.allow_same_user:
                print("node-agent: error: not running as root, so trials would run as this "
                      "user and could read the node key; run the agent as root (trials then "
                      "run as an unprivileged account), or pass --allow-same-user to accept "
                      "that", file=sys.stderr)
                return 2
            if not 1000 <= args.uid_base <= MAX_UID - 1024:
                print(f"node-agent: error: --uid-base: got {args.uid_base}; must be a user id "
                      f"in [1000, {MAX_UID - 1024}]", file=sys.stderr)
                return 2
            if args.gpus is not None or ENV_VISIBLE in os.environ:
                try:  # a GPU this machine does not have: refused before anything is created
                    read_inventory(0, args.gpus)
                except InvalidInputError as exc:
                    print(f"node-agent: error: {exc}", file=sys.stderr)
                    return 2
            problem = _start_flag_problem(args)
            if problem is not None:
                print(f"node-agent: error: {problem}", file=sys.stderr)
                return 2
            if args.no_preload and args.preload:
                print(f"node-agent: error: --no-preload: given with --preload "
                      f"{' '.join(args.preload)}; use one or the other", file=sys.stderr)
                return 2
            for module in args.preload:
                if not all(part.isidentifier() for part in module.split(".")):
                    print(f"node-agent: error: --preload: got {module!r}; must be a module "
                          "name such as torch or numpy.linalg", file=sys.stderr)
                    return 2
                top = module.split(".")[0]  # its package, found without importing anything
                if importlib.util.find_spec(top) is None:
                    print(f"node-agent: error: --preload: got {module!r}; {top} is not "
                          f"installed for {sys.executable}, the interpreter trials run in",
                          file=sys.stderr)
                    return 2
            home.mkdir(parents=True, exist_ok=True, mode=0o711)
            with contextlib.suppress(KeyboardInterrupt):
                asyncio.run(_start(args, home))
        elif args.command == "inventory":
            result = read_inventory(gpus=args.gpus)
            if args.json:
                print(json.dumps(MessageToDict(result.inventory), indent=2))
            else:
                print(result.note)
                for g in result.inventory.gpus:
                    print(f"  [{g.index}] {g.name} {g.uuid} {g.memory_total_gb:.1f} GiB "
                          f"({g.memory_free_gb:.1f} free) sm_{g.compute_capability}")
        elif args.command == "drain":
            return _drain(home)
        elif args.command == "id":
            identity, _ = load_or_create(home / "node.key")
            print(identity.key_id)
    except (TunefleetError, OSError) as exc:
        print(f"node-agent: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
