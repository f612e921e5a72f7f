"""The node agent: one long-lived session with the coordinator, one child per leased attempt.

The agent registers with its Ed25519 identity, keeps a bidirectional session open, and signs
every event it sends. Reports and completions stay in memory until the coordinator acknowledges
them and are sent again after a reconnect (the coordinator counts each ``(attempt, seq)`` once).
A lost connection is retried with jittered exponential backoff; running children go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc

from node_agent.bundle_cache import BundleCache, TrustPolicy
from node_agent.gpu_monitor import GpuMonitor
from node_agent.inventory import read_inventory
from node_agent.runner import Child, ChildSpec
from node_agent.sandbox import AccountPool, SandboxLimits
from node_agent.warm import WarmPool, default_preload, expand_preload
from tunefleet import serde
from tunefleet.bundle import MAX_BUNDLE_BYTES
from tunefleet.envelope import seal
from tunefleet.errors import BundleError
from tunefleet.keys import Identity
from tunefleet.tls import ChannelSecurity, open_channel
from tunefleet.trial import MAX_REPORT_BYTES
from tunefleet.v1 import common_pb2, node_pb2, node_pb2_grpc

__all__ = ["Agent", "AgentConfig", "exit_text"]

log = logging.getLogger(__name__)


@dataclass
class AgentConfig:
    coordinator: str
    home: Path
    security: ChannelSecurity = field(default_factory=lambda: ChannelSecurity(insecure=True))
    name: str = ""
    cpu_slots: int | None = None
    # the GPUs to offer (node_agent.inventory.select_gpus); None: CUDA_VISIBLE_DEVICES, else all
    gpus: str | None = None
    trusted_publishers: set[str] = field(default_factory=set)
    stop_grace: float = 5.0
    max_backoff: float = 30.0
    ack_log: Path | None = None  # appends one JSON line per acknowledged report (audits)
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    run_as: str | None = None  # the unprivileged account children run as (None: no switch)
    # as root: each child runs as an account of its own, uids from this one up (see
    # node_agent.sandbox.AccountPool); takes precedence over run_as
    uid_base: int | None = None
    # modules a warm runtime per slot imports ahead of trials; None: the machine's default
    # (node_agent.warm.default_preload: torch where GPUs are offered)
    preload: tuple[str, ...] | None = ()


@dataclass
class RunningAttempt:
    assignment: node_pb2.Assignment
    seq: int = 0
    unacked: dict[int, node_pb2.MetricReport] = field(default_factory=dict)
    final: node_pb2.NodeEvent | None = None  # the finished/declined event, kept until acked
    child: Child | None = None
    task: asyncio.Task[None] | None = None
    stop_reason: str | None = None


class Agent:
    def __init__(self, config: AgentConfig, identity: Identity) -> None:
        self.config = config
        self.identity = identity
        self.node_id = identity.key_id
        result = read_inventory(config.cpu_slots, config.gpus)
        self.inventory = result.inventory
        self.inventory_note = result.note
        self.cache = BundleCache(
            config.home / "bundles", self._fetch, TrustPolicy(config.trusted_publishers)
        )
        self.attempts: dict[int, RunningAttempt] = {}
        # trials may pass through the work directory to their own, not list it: the names of
        # the others' directories (and the warm runtimes' orders in them) stay unknown to them
        work = config.home / "work"
        work.mkdir(parents=True, exist_ok=True)
        os.chmod(work, 0o711)
        for left in work.iterdir():  # an agent that died left them: their accounts get reused
            if left.is_dir() and not left.is_symlink():
                shutil.rmtree(left, ignore_errors=True)
            else:
                left.unlink(missing_ok=True)
            if left.exists():
                log.warning("could not remove %s, left by an earlier agent", left)
        slots = self.inventory.cpu_slots + len(self.inventory.gpus)
        # per slot: a running trial, a warm runtime and one account being cleared
        self.accounts = (None if config.uid_base is None
                         else AccountPool(config.uid_base, size=3 * slots + 2))
        self.preload = expand_preload(
            default_preload(len(self.inventory.gpus)) if config.preload is None
            else config.preload
        )
        self.warm = WarmPool(work, self.preload, self.accounts) if self.preload else None
        self._warm_lock = asyncio.Lock()
        self.gpu_monitor: GpuMonitor | None = None  # started by run() where GPUs are offered
        self._tasks: set[asyncio.Task[None]] = set()
        self.draining = False
        self.lease_seconds = 30.0
        self.exit_reason: str | None = None
        self._out: asyncio.Queue[common_pb2.SignedEnvelope | None] | None = None
        self._stub: node_pb2_grpc.NodeServiceStub | None = None
        self._shutdown = asyncio.Event()
        self._sessions = 0  # sessions opened so far
        self.connected = asyncio.Event()

    # events --------------------------------------------------------------------------------

    def _event(self, **kind: object) -> node_pb2.NodeEvent:
        return node_pb2.NodeEvent(node_id=self.node_id, **kind)  # type: ignore[arg-type]

    def _send(self, event: node_pb2.NodeEvent) -> None:
        if self._out is not None:
            self._out.put_nowait(seal(self.identity, event))

    def _resend_pending(self) -> None:
        for attempt in self.attempts.values():
            for seq in sorted(attempt.unacked):
                self._send(self._event(report=attempt.unacked[seq]))
            if attempt.final is not None:
                kind = attempt.final.WhichOneof("kind") or "finished"
                self._send(self._event(**{kind: getattr(attempt.final, kind)}))

    # lifecycle -----------------------------------------------------------------------------

    def drain(self) -> None:
        """Finish running trials, take no new ones, then exit."""
        if not self.draining:
            log.warning("draining: finishing %d running trial(s), taking no new ones",
                        len(self.attempts))
        self.draining = True
        self._send(self._heartbeat())
        if not self.attempts:
            self._shutdown.set()

    def shutdown(self) -> None:
        self._shutdown.set()

    def _threads(self, gpu_uuids: tuple[str, ...]) -> int:
        """The CPU threads a child gets: the cores shared among the slots of its kind."""
        cores = os.cpu_count() or 1
        share = len(self.inventory.gpus) if gpu_uuids else max(1, self.inventory.cpu_slots)
        return max(1, cores // max(1, share))

    def _slot_shape(self, gpu_uuids: tuple[str, ...]) -> ChildSpec:
        return ChildSpec(workdir=self.config.home / "work", entrypoint="", trial={},
                         gpu_uuids=gpu_uuids, threads=self._threads(gpu_uuids),
                         limits=self.config.limits, run_as=self.config.run_as)

    async def _refill_warm(self) -> None:
        """Start warm runtimes until every slot has one waiting (none while draining, nor
        once they kept dying in their preload)."""
        if self.warm is None:
            return
        async with self._warm_lock:
            wanted: list[tuple[tuple[str, ...], int]] = [((g.uuid,), 1) for g in self.inventory.gpus]
            wanted.append(((), self.inventory.cpu_slots))
            for gpu_uuids, count in wanted:
                shape = self._slot_shape(gpu_uuids)
                while (self.warm.count(shape) < count and not self.draining
                       and not self._shutdown.is_set() and not self.warm.given_up):
                    try:
                        await self.warm.spawn(shape)
                    except (OSError, ValueError) as exc:  # cold starts go on working
                        log.warning("could not start a warm runtime: %s", exc)
                        return

    def _refill_warm_soon(self) -> None:
        task = asyncio.create_task(self._refill_warm())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self) -> None:
        """Hold a session until shut down (or drained), reconnecting with backoff."""
        if self.accounts is not None:  # cleared ahead: a trial or warm runtime never waits
            await asyncio.to_thread(self.accounts.reserve, self.accounts.size)
        if self.warm is not None:
            await self._refill_warm()
            log.info("warm runtimes: %d waiting, preloading %s", len(self.warm.waiting),
                     ", ".join(self.preload))
        self.gpu_monitor = GpuMonitor.start([g.uuid for g in self.inventory.gpus])
        try:
            await self._hold_sessions()
        finally:
            if self.warm is not None:
                self.warm.close()
            if self.gpu_monitor is not None:
                self.gpu_monitor.close()

    async def _hold_sessions(self) -> None:
        backoff = 0.25
        while not self._shutdown.is_set():
            session = asyncio.create_task(self._session())
            stopper = asyncio.create_task(self._shutdown.wait())
            done, _ = await asyncio.wait({session, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if session in done:
                exc = session.exception()
                if exc is None:
                    backoff = 0.25
                elif isinstance(exc, grpc.aio.AioRpcError):
                    log.warning("session ended: %s %s", exc.code().name, exc.details())
                    if exc.code() in (grpc.StatusCode.PERMISSION_DENIED,
                                      grpc.StatusCode.UNAUTHENTICATED):
                        self.exit_reason = f"{exc.code().name}: {exc.details()}"
                        self._shutdown.set()
                else:
                    log.error("session failed: %r", exc)
            stopper.cancel()
            if self._shutdown.is_set():
                if not session.done():
                    # Draining first, so the coordinator leases nothing more to this node;
                    # then stop children while the session is up, so their ends reach the
                    # coordinator and their trials are retried at once, elsewhere.
                    self.draining = True
                    self._send(self._heartbeat())
                    await self._stop_all("node agent shut down")
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._acknowledged(), 3.0)
                session.cancel()
                with contextlib.suppress(BaseException):
                    await session
                break
            delay = backoff * random.uniform(0.5, 1.5)
            backoff = min(backoff * 2, self.config.max_backoff)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._shutdown.wait(), delay)
        await self._stop_all("node agent shut down")

    async def _acknowledged(self) -> None:
        while self.attempts:
            await asyncio.sleep(0.05)

    async def _stop_all(self, reason: str) -> None:
        tasks = []
        for attempt in self.attempts.values():
            attempt.stop_reason = attempt.stop_reason or reason
            if attempt.child is not None:
                tasks.append(attempt.child.stop(self.config.stop_grace))
        await asyncio.gather(*tasks, return_exceptions=True)
        # Let each attempt's task see its child's exit and queue its final event.
        pending = [a.task for a in self.attempts.values() if a.task is not None]
        if pending:
            await asyncio.wait(pending, timeout=2.0)

    async def _session(self) -> None:
        async with open_channel(self.config.coordinator, self.config.security, aio=True) as channel:
            stub = node_pb2_grpc.NodeServiceStub(channel)
            request = node_pb2.RegisterRequest(
                name=self.config.name, inventory=self.inventory, time=time.time()
            )
            reply = await stub.Register(seal(self.identity, request), timeout=10)
            self.lease_seconds = reply.lease_seconds or self.lease_seconds
            queue: asyncio.Queue[common_pb2.SignedEnvelope | None] = asyncio.Queue()
            self._stub = stub
            self._out = queue
            hello = node_pb2.Hello(
                inventory=self.inventory, running_attempts=sorted(self.attempts),
                draining=self.draining,
            )
            self._send(self._event(hello=hello))
            self._resend_pending()
            call = stub.Session(_drain_queue(queue))
            beats = asyncio.create_task(self._heartbeats())
            if self._sessions:  # a provider sees the agent is back, not only that it was gone
                log.warning("connected to the coordinator again")
            self._sessions += 1
            self.connected.set()
            try:
                async for message in call:
                    self._on_message(message)
            finally:
                self.connected.clear()
                beats.cancel()
                self._out = None
                queue.put_nowait(None)

    def _heartbeat(self) -> node_pb2.NodeEvent:
        return self._event(heartbeat=node_pb2.Heartbeat(
            running_attempts=sorted(self.attempts), draining=self.draining
        ))

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(max(0.2, self.lease_seconds / 4))
            self._send(self._heartbeat())

    # coordinator messages ------------------------------------------------------------------

    def _on_message(self, message: node_pb2.CoordinatorMessage) -> None:
        kind = message.WhichOneof("kind")
        if kind == "assignment":
            a = message.assignment
            if a.attempt_id in self.attempts:
                return
            attempt = RunningAttempt(a)
            self.attempts[a.attempt_id] = attempt
            if self._shutdown.is_set():  # leased before the coordinator saw this node drain
                self._fail(attempt, "node agent shut down")
                return
            attempt.task = asyncio.create_task(self._run_attempt(attempt))
        elif kind == "report_ack":
            ack = message.report_ack
            running = self.attempts.get(ack.attempt_id)
            acked = None if running is None else running.unacked.pop(ack.seq, None)
            if running is not None and acked is not None:
                if self.config.ack_log is not None:
                    with open(self.config.ack_log, "a") as log_file:
                        log_file.write(json.dumps({"attempt": ack.attempt_id, "seq": ack.seq}) + "\n")
                if ack.decision == "stop":
                    self._stop_attempt(running, "stopped by the scheduler")
                elif running.child is not None:  # should_stop() waits for this
                    running.child.let_through(acked.step)
        elif kind == "stop":
            running = self.attempts.get(message.stop.attempt_id)
            if running is not None:
                self._stop_attempt(running, message.stop.reason or "stopped by the coordinator")
        elif kind == "finished_ack":
            done = self.attempts.get(message.finished_ack.attempt_id)
            if done is not None and done.final is not None:
                del self.attempts[message.finished_ack.attempt_id]
                if self.draining and not self.attempts:
                    self._shutdown.set()
        elif kind == "error":
            log.error("coordinator says: %s", message.error.message)

    def _stop_attempt(self, attempt: RunningAttempt, reason: str) -> None:
        if attempt.stop_reason is not None:
            return
        attempt.stop_reason = reason
        log.info("attempt %d: %s", attempt.assignment.attempt_id, reason)
        if attempt.child is not None:
            asyncio.create_task(attempt.child.stop(self.config.stop_grace))

    async def _fetch(self, digest: str) -> tuple[bytes, bytes, bytes]:
        if self._stub is None:
            raise BundleError("not connected to a coordinator")
        header: common_pb2.BundleHeader | None = None
        parts: list[bytes] = []
        size = 0
        request = seal(self.identity, node_pb2.BundleRequest(digest=digest))
        async for chunk in self._stub.DownloadBundle(request):
            if header is None:
                header = chunk.header
                if header.size > MAX_BUNDLE_BYTES:
                    raise BundleError(f"bundle of {header.size} bytes is over the limit")
            size += len(chunk.data)
            if size > header.size:
                raise BundleError("bundle download is longer than its header says")
            parts.append(chunk.data)
        if header is None:
            raise BundleError(f"bundle {digest} came without a header")
        return b"".join(parts), header.publisher_key, header.signature

    # running an attempt --------------------------------------------------------------------

    async def _run_attempt(self, attempt: RunningAttempt) -> None:
        """Run one attempt; whatever happens, exactly one final event is queued for it."""
        a = attempt.assignment
        workdir = self.config.home / "work" / f"attempt-{a.attempt_id}"
        try:
            await self._attempt_body(attempt, workdir)
        except BaseException as exc:
            if attempt.final is None:
                log.exception("attempt %d failed in the agent", a.attempt_id)
                if attempt.child is not None:
                    await attempt.child.stop(0.1)
                attempt.final = self._event(finished=node_pb2.AttemptFinished(
                    attempt_id=a.attempt_id, outcome="failed", exit_code=-1,
                    error=f"node agent error: {type(exc).__name__}: {exc}"[:2000],
                    reports_sent=attempt.seq))
                self._send(attempt.final)
            if not isinstance(exc, Exception):
                raise
        finally:
            if attempt.child is not None and attempt.child.spec.account is not None and (
                self.accounts is not None
            ):  # cleared first (whatever of it still runs dies, and writes no more), ready
                account = attempt.child.spec.account  # for the next trial
                try:
                    await asyncio.to_thread(self.accounts.release, account)
                except OSError as exc:
                    log.warning("could not clear %s (cleared when next used): %s",
                                account.name, exc)
            shutil.rmtree(workdir, ignore_errors=True)
            if attempt.child is not None and attempt.child.scratch is not None:
                shutil.rmtree(attempt.child.scratch, ignore_errors=True)
            if workdir.exists():
                log.warning("attempt %d: could not remove its work directory %s",
                            a.attempt_id, workdir)

    async def _start_cold(self, spec: ChildSpec) -> Child:
        """Start ``spec`` in a new child, as an account of its own when the agent has them."""
        if self.accounts is None:
            return await Child.start(spec)
        account = await asyncio.to_thread(self.accounts.take)
        try:
            return await Child.start(replace(spec, account=account))
        except BaseException:
            self.accounts.give_back(account)
            raise

    def _fail(self, attempt: RunningAttempt, error: str) -> None:
        attempt.final = self._event(finished=node_pb2.AttemptFinished(
            attempt_id=attempt.assignment.attempt_id, outcome="failed", exit_code=-1,
            error=error[:2000], reports_sent=attempt.seq))
        self._send(attempt.final)

    async def _attempt_body(self, attempt: RunningAttempt, workdir: Path) -> None:
        a = attempt.assignment
        try:
            await self.cache.unpack(a.bundle_digest, workdir)
        except BundleError as exc:
            # The bundle is refused (trust policy, signature, unsafe archive): decline, so the
            # coordinator records why and offers the trial to other nodes.
            log.error("attempt %d declined: %s", a.attempt_id, exc)
            attempt.final = self._event(declined=node_pb2.AttemptDeclined(
                attempt_id=a.attempt_id, reason=str(exc)))
            self._send(attempt.final)
            return
        except (grpc.aio.AioRpcError, OSError, asyncio.CancelledError) as exc:
            # A transient failure (network, disk): the attempt fails and the trial is retried.
            reason = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else repr(exc)
            self._fail(attempt, f"could not fetch the bundle: {reason}")
            return
        spec = ChildSpec(
            workdir=workdir, entrypoint=a.entrypoint,
            trial={"params": serde.params_from_proto(a.params), "fidelity_max": a.fidelity_max,
                   "trial_id": a.trial_id, "attempt_id": a.attempt_id, "study_id": a.study_id},
            gpu_uuids=tuple(a.gpu_uuids), threads=self._threads(tuple(a.gpu_uuids)),
            limits=self.config.limits, run_as=self.config.run_as,
        )
        try:
            if self.warm is not None:
                attempt.child = await self.warm.take(spec)
                self._refill_warm_soon()  # the slot gets a new warm runtime at once
            if attempt.child is None:
                attempt.child = await self._start_cold(spec)
        except OSError as exc:
            self._fail(attempt, f"could not start the entrypoint: {exc}")
            return
        if attempt.stop_reason is not None:  # a stop order came while we were unpacking
            asyncio.create_task(attempt.child.stop(self.config.stop_grace))
        watch = (self.gpu_monitor.watch(tuple(a.gpu_uuids))
                 if self.gpu_monitor is not None and a.gpu_uuids else None)
        try:
            async for report in attempt.child.reports():
                attempt.seq += 1
                message = node_pb2.MetricReport(
                    attempt_id=a.attempt_id, seq=attempt.seq, step=report.step,
                    metrics=report.metrics,
                )
                attempt.unacked[attempt.seq] = message
                self._send(self._event(report=message))
            exit_ = await attempt.child.wait()
        finally:  # the monitor samples for no attempt that is over, however it ended
            usage = (self.gpu_monitor.unwatch(watch)
                     if watch is not None and self.gpu_monitor is not None else None)
        if exit_.exit_code == 0:
            outcome = "completed"
        elif exit_.stopped:
            outcome = "stopped"
        else:
            outcome = "failed"
        error = ""
        if exit_.limit_exceeded is not None:
            outcome = "failed"
            error = f"{exit_.limit_exceeded}\n{exit_.stderr_tail}".strip()
        elif outcome == "failed":
            error = f"{exit_text(exit_.exit_code)}\n{exit_.stderr_tail}".strip()
        elif attempt.stop_reason == "node agent shut down":
            outcome, error = "failed", "node agent shut down"
        finished = node_pb2.AttemptFinished(
            attempt_id=a.attempt_id, outcome=outcome, exit_code=exit_.exit_code, error=error,
            gpu_seconds=exit_.wall_seconds * len(a.gpu_uuids), wall_seconds=exit_.wall_seconds,
            reports_sent=attempt.seq,
        )
        if usage is not None:
            finished.gpu_utilization = usage.utilization
            finished.gpu_memory_peak_gb = usage.memory_peak_gb
        attempt.final = self._event(finished=finished)
        self._send(attempt.final)
        log.info("attempt %d %s (exit %d, %.1fs, %d reports)", a.attempt_id, outcome,
                 exit_.exit_code, exit_.wall_seconds, attempt.seq)
        if attempt.child.bad_lines:
            log.warning("attempt %d: %d report line(s) dropped: malformed, over %d bytes, "
                        "beyond step %s or not after the previous step", a.attempt_id,
                        attempt.child.bad_lines, MAX_REPORT_BYTES, a.fidelity_max)


async def _drain_queue(
    queue: asyncio.Queue[common_pb2.SignedEnvelope | None],
) -> AsyncIterator[common_pb2.SignedEnvelope]:
    while True:
        item = await queue.get()
        if item is None:
            return
        yield item


def exit_text(code: int) -> str:
    """``exit code N``, naming the signal when one ended the process (a negative code)."""
    if code >= 0:
        return f"exit code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        return f"exit code {code} (killed by signal {-code})"
    if name == "SIGKILL":
        return (f"exit code {code} (killed by SIGKILL: the kernel's out-of-memory killer, a "
                "CPU-time limit the trial did not stop at, or someone on the node)")
    return f"exit code {code} (killed by {name})"
