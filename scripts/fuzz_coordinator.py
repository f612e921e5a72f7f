#!/usr/bin/env python
"""Fuzz run: generated, mutated and random messages to every endpoint of a real coordinator,
then the invariants.

    python scripts/fuzz_coordinator.py                      # 3000 messages, seed 0
    python scripts/fuzz_coordinator.py --messages 1200 --seed 7 --json

A real coordinator starts (``LocalCluster``, TLS, one admitted researcher key and the operator
key). The run seeds an anchor study (it needs 8 GPUs of 1 PB, so no node is ever leased it), a
work study that the fuzzed node sessions take trials of, and one registered node. Then it
sends ``--messages`` messages over the twelve endpoints from three generators (the mutation and
random ones go round the endpoints, sessions three times as often; Hypothesis draws them):

- ``hypothesis``: messages built field by field from the protobuf descriptors by Hypothesis
  (``st.data()`` inside ``@given``), with field-aware hints (known ids, enum-like strings, edge
  numbers), sealed by a known or unknown key, sealed at a drawn time, sealed as another message
  type, or not sealed at all;
- ``mutation``: valid messages, sent as they are or mutated: bit flips and truncation of the
  signed body, the signature, the public key and the serialized envelope; stale, future,
  infinite and NaN times; old, zero, negative and replayed sequence numbers; swapped message
  types; payloads over the 4 MiB limit; empty streams; unknown enum-like strings;
- ``random``: random bytes through a generic ``channel.unary_unary(method,
  request_serializer=None, ...)`` (and its streaming kin), so undecodable requests are covered.

Every message goes out as raw bytes through such generic calls. A session keeps its stream open,
as an agent does, until a closing report for a nonexistent attempt is answered: node events are
answered (or refused) only once their batch commits.

Checked at the end: the coordinator is alive and serves the anchor study unchanged (unless a
validly signed stop from its owner was accepted); ``PRAGMA integrity_check`` and
``foreign_key_check`` pass; no trial, attempt or report references a missing study, trial or
attempt; trial and attempt states agree; no result counts twice; every status is a proper
refusal (no UNKNOWN or INTERNAL; DEADLINE_EXCEEDED only from WatchStudy); no forged, stale or
replayed envelope was accepted; the coordinator's log holds no Traceback; and a restart on the
same database replays every study and serves the anchor study unchanged.
Exit status 0 when all hold, 1 otherwise.

``--exclude FAMILY`` leaves out inputs that hit a known, reported defect, so that the rest still
guards against regressions: ``undecodable`` (request bytes that do not parse as the method's
message: the server answers UNKNOWN or INTERNAL), ``nan-time`` (an envelope signed with a NaN
time: it is accepted), ``median`` (studies with the median stopping scheduler: a report at a
step below another trial's first reported step divides by zero, INTERNAL), ``negative-step``
(metric reports at a negative step: accepted, and once enough trials of a TPE or GP study have
only such reports every suggestion raises IndexError, INTERNAL or UNKNOWN) and
``declined-after-stop`` (a node declines an attempt of a study stopped meanwhile: its trial goes
back to pending in the stopped study). Drop each exclusion once its defect is fixed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from client.local import LocalCluster
from client.sdk import Client, build_bundle
from tunefleet import serde
from tunefleet.bundle import digest_of, sign_digest
from tunefleet.envelope import seal
from tunefleet.keys import Identity, load
from tunefleet.read_auth import READ_AUTH_METADATA, read_metadata
from tunefleet.study import SCHEDULERS, SEARCHERS, StudySpec
from tunefleet.v1 import common_pb2, node_pb2, operator_pb2, researcher_pb2

MAX_MESSAGE = 4 * 1024 * 1024
WATCH_DEADLINE = 0.15
SESSION_LINGER = 2.0
MARKER_ATTEMPT = 2**62
CALL_TIMEOUT = 15.0
REFUSALS = {"INVALID_ARGUMENT", "UNAUTHENTICATED", "PERMISSION_DENIED", "NOT_FOUND",
            "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED", "OUT_OF_RANGE"}
FAMILIES = ("undecodable", "nan-time", "median", "negative-step", "declined-after-stop")
READ_ONLY = {"DownloadBundle", "ListAccess"}  # signed, but they change nothing
SEQUENCE_KINDS = {"replay", "seq-old", "seq-zero", "seq-negative"}
TRAIN = "from tunefleet import trial\ntrial.report(1, loss=trial.params['x'])\n"


@dataclass(frozen=True)
class Endpoint:
    name: str
    path: str
    kind: str                        # unary_unary | unary_stream | stream_unary | stream_stream
    request: type[Message]           # one request message on the wire
    inner: type[Message] | None      # the signed body of an envelope endpoint


def _endpoints() -> dict[str, Endpoint]:
    res, node, op = ("/tunefleet.v1.ResearcherService/", "/tunefleet.v1.NodeService/",
                     "/tunefleet.v1.OperatorService/")
    env = common_pb2.SignedEnvelope
    table = [
        ("UploadBundle", res, "stream_unary", common_pb2.BundleChunk, None),
        ("SubmitStudy", res, "unary_unary", env, common_pb2.StudySpec),
        ("GetStudy", res, "unary_unary", researcher_pb2.StudyRef, None),
        ("ListStudies", res, "unary_unary", researcher_pb2.ListStudiesRequest, None),
        ("ListTrials", res, "unary_unary", researcher_pb2.ListTrialsRequest, None),
        ("StopStudy", res, "unary_unary", env, researcher_pb2.StopStudyRequest),
        ("WatchStudy", res, "unary_stream", researcher_pb2.StudyRef, None),
        ("Register", node, "unary_unary", env, node_pb2.RegisterRequest),
        ("Session", node, "stream_stream", env, node_pb2.NodeEvent),
        ("DownloadBundle", node, "unary_stream", env, node_pb2.BundleRequest),
        ("ChangeAccess", op, "unary_unary", env, operator_pb2.AccessRequest),
        ("ListAccess", op, "unary_unary", env, operator_pb2.ListAccessRequest),
    ]
    return {n: Endpoint(n, p + n, k, r, i) for n, p, k, r, i in table}


ENDPOINTS = _endpoints()
INNER_TYPES = [e.inner for e in ENDPOINTS.values() if e.inner is not None]


@dataclass
class Probe:
    """One fuzzed message (or stream) and what must become of it."""

    endpoint: str
    generator: str
    label: str
    payload: list[bytes]             # the request, or the stream's requests in order
    forged: bool = False             # must be refused: forged, stale, replayed or mistyped
    families: set[str] = field(default_factory=set)
    stop_target: str | None = None   # the study a validly signed stop names
    metadata: tuple[tuple[str, bytes], ...] = ()  # a read's signature (tunefleet.read_auth)


# ---- small byte and message helpers -----------------------------------------------------

def _flip(rng: random.Random, data: bytes) -> bytes:
    if not data:
        return b"\x01"
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 8))):
        i = rng.randrange(len(out))
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def _cut(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.randrange(len(data))] if data else b""


def _unknown_field(payload: bytes, size: int = 3) -> bytes:
    """``payload`` with an unknown length-delimited field 99 appended (still decodable)."""
    length, n = b"", size
    while True:
        byte, n = n & 0x7F, n >> 7
        length += bytes([byte | (0x80 if n else 0)])
        if not n:
            break
    return payload + b"\x9a\x06" + length + b"u" * size


def _decodes(kind: type[Message], data: bytes) -> bool:
    try:
        kind.FromString(data)
    except (DecodeError, ValueError):
        return False
    return True


def _fields(e: common_pb2.SignedEnvelope) -> tuple[Any, ...]:
    return e.body, e.public_key, e.signature, e.seq, e.time


def _clamp_inventory(inventory: node_pb2.Inventory) -> None:
    """Keep the fuzzed node's claims modest: no GPU big enough for the anchor study, at most a
    few CPU slots (a node may claim 2**31 slots and be leased every pending trial at once)."""
    inventory.cpu_slots = max(-2, min(inventory.cpu_slots, 3))
    for gpu in inventory.gpus:
        if not gpu.memory_total_gb <= 80.0:
            gpu.memory_total_gb = 80.0


# ---- the fuzzer -------------------------------------------------------------------------

class Fuzzer:
    def __init__(self, cluster: LocalCluster, researcher: Identity, seed: int, exclude: set[str],
                 train_dir: Path) -> None:
        self.cluster = cluster
        self.rng = random.Random(seed)
        self.exclude = exclude
        self.channel = self.open_channel()
        self.researcher = researcher
        self.node, self.stranger = Identity.generate(), Identity.generate()
        self.operator = load(cluster.tls_dir / "operator.key")
        self.keys = {"researcher": self.researcher, "node": self.node,
                     "stranger": self.stranger, "operator": self.operator}
        self.train_dir = train_dir
        self.db = sqlite3.connect(cluster.db_path, isolation_level=None, timeout=10)
        self.db.execute("PRAGMA query_only = 1")
        self.outcomes: list[tuple[Probe, str, str]] = []
        self.created: list[str] = []
        self.seed_stopped = False
        self.counter = 0

    def open_channel(self) -> grpc.Channel:
        return grpc.secure_channel(
            self.cluster.address, self.cluster.security.credentials(),  # type: ignore[arg-type]
            options=[("grpc.max_receive_message_length", 16 * MAX_MESSAGE)])

    # -- sending --

    def send(self, probe: Probe) -> tuple[str, str, list[bytes]]:
        ep = ENDPOINTS[probe.endpoint]
        timeout = WATCH_DEADLINE if ep.name == "WatchStudy" else CALL_TIMEOUT
        factory = getattr(self.channel, ep.kind)
        call = factory(ep.path, request_serializer=None, response_deserializer=None)
        try:
            if ep.kind == "unary_unary":
                replies = [call(probe.payload[0], timeout=timeout, metadata=probe.metadata)]
            elif ep.kind == "unary_stream":
                replies = list(call(probe.payload[0], timeout=timeout, metadata=probe.metadata))
            elif ep.kind == "stream_unary":
                replies = [call(iter(probe.payload), timeout=timeout)]
            else:
                replies = self.session(call, probe.payload)
            code, detail = "OK", ""
        except grpc.RpcError as exc:
            code, detail, replies = exc.code().name, exc.details() or "", []  # type: ignore[attr-defined]
        self.outcomes.append((probe, code, detail))
        if code == "OK" and ep.name == "SubmitStudy":
            self.created.append(researcher_pb2.StudyInfo.FromString(replies[0]).study_id)
        if code == "OK" and probe.stop_target == self.seed_id:
            self.seed_stopped = True
        return code, detail, replies

    def session(self, call: Any, payload: list[bytes]) -> list[bytes]:
        """Run a session as an agent does, keeping the stream open until the coordinator has
        handled every event: node events are answered (or refused) only once their batch
        commits, and a stream that ends sooner loses those answers (see the report). A last
        report for an attempt that does not exist marks the end: its stop order comes last."""
        if not payload:
            return list(call(iter(payload), timeout=CALL_TIMEOUT))
        marker = self.sign("node", node_pb2.NodeEvent(node_id=self.node.key_id, report=node_pb2.MetricReport(
            attempt_id=MARKER_ATTEMPT, seq=1, step=1))).SerializeToString()
        answered = threading.Event()

        def requests() -> Any:
            yield from payload
            yield marker
            answered.wait(SESSION_LINGER)

        replies: list[bytes] = []
        try:
            for raw in call(requests(), timeout=CALL_TIMEOUT):
                message = node_pb2.CoordinatorMessage.FromString(raw)
                if message.WhichOneof("kind") == "stop" and message.stop.attempt_id == MARKER_ATTEMPT:
                    answered.set()
                else:
                    replies.append(raw)
        finally:
            answered.set()
        return replies

    def admissible(self, probe: Probe) -> bool:
        ep = ENDPOINTS[probe.endpoint]
        if not all(_decodes(ep.request, item) for item in probe.payload):
            probe.families.add("undecodable")
        return not (probe.families & self.exclude)

    def sign(self, who: str, message: Message, **kw: Any) -> common_pb2.SignedEnvelope:
        return seal(self.keys[who], message, **kw)

    def scalar(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self.db.execute(sql, params).fetchone()[0]

    # -- seeding --

    def seed_state(self) -> None:
        base = {"name": "fuzz-seed", "entrypoint": "train.py",
                "objective": {"metric": "loss", "mode": "min"}, "budget": {"max_trials": 10},
                "search": {"searcher": "random", "scheduler": "fifo", "seed": 1},
                "fidelity": {"min": 1, "max": 3, "eta": 3},
                "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
                "resources": {"gpus": 8, "min_gpu_memory_gb": 4096}}
        spec = StudySpec.from_mapping(base)
        self.bundle = build_bundle(spec, self.train_dir, self.researcher)
        self.digest = self.bundle.digest
        self.anchor = serde.spec_to_proto(spec, self.digest)
        work = StudySpec.from_mapping({**base, "name": "fuzz-work", "budget": {"max_trials": 1000},
                                       "resources": {"gpus": 0}})
        self.work = serde.spec_to_proto(work, self.digest)
        with Client(self.cluster.address, self.researcher, self.cluster.security) as client:
            client.upload(self.bundle)
            self.seed_id = client.submit_spec(self.anchor).study_id
            self.work_id = client.submit_spec(self.work).study_id
        register = node_pb2.RegisterRequest(name="fuzz-node",
                                            inventory=node_pb2.Inventory(cpu_slots=2))
        for probe in (
            Probe("Register", "seed", "seed", [self.sign("node", register).SerializeToString()]),
            Probe("ChangeAccess", "seed", "seed", [self.sign("operator", operator_pb2.AccessRequest(
                key_id=self.researcher.key_id, action="admit", reason="fuzz seed"))
                .SerializeToString()]),
        ):
            code, detail, _ = self.send(probe)
            if code != "OK":
                raise RuntimeError(f"seeding failed: {probe.endpoint} -> {code}: {detail}")
        self.outcomes.clear()
        self.seed_row = self.study_row(self.seed_id)
        self.seed_info = self.get_study(self.seed_id)

    def study_row(self, study_id: str) -> tuple[Any, ...]:
        return tuple(self.db.execute(
            "SELECT id, name, owner_key_id, spec, bundle_digest, state, created_at FROM studies "
            "WHERE id = ?", (study_id,)).fetchone() or ())

    def get_study(self, study_id: str) -> researcher_pb2.StudyInfo:
        stub = self.channel.unary_unary(ENDPOINTS["GetStudy"].path,
                                        request_serializer=None, response_deserializer=None)
        request = researcher_pb2.StudyRef(study_id=study_id)
        reply = stub(request.SerializeToString(), timeout=CALL_TIMEOUT,
                     metadata=read_metadata(self.researcher, request))
        return researcher_pb2.StudyInfo.FromString(reply)

    # -- values the generators draw from --

    def study_ids(self) -> list[str]:
        recent = [*self.created[-3:], "nope", "nope", "nope"][:3]  # a fixed length: Hypothesis
        return [self.seed_id, self.work_id, *recent, "", "' OR 1=1 --", self.seed_id + "x",
                "\u00df\u202e\x00"]

    def stoppable(self) -> str:
        """A study that a valid stop may name: any but the anchor, often one whose trials the
        node runs right now."""
        busy = [r[0] for r in self.db.execute(
            "SELECT DISTINCT study_id FROM attempts WHERE node_id = ? AND state = 'running'",
            (self.node.key_id,))]
        return self.rng.choice([*busy, *busy, self.work_id, *self.created[-4:], "nope"])

    def decline_blocked(self, attempt_id: int) -> bool:
        """Whether declining this attempt hits the declined-after-stop defect (when excluded)."""
        if "declined-after-stop" not in self.exclude:
            return False
        row = self.db.execute("SELECT s.state FROM attempts a JOIN studies s ON s.id = a.study_id "
                              "WHERE a.id = ?", (attempt_id,)).fetchone()
        return row is not None and row[0] != "running"

    def has_work(self) -> bool:
        """Whether a running study (not the anchor) with trials left runs on CPU slots."""
        for spec, trials in self.db.execute(
                "SELECT spec, (SELECT COUNT(*) FROM trials t WHERE t.study_id = s.id) FROM studies s "
                "WHERE state = 'running' AND id != ?", (self.seed_id,)):
            message = common_pb2.StudySpec.FromString(spec)
            if message.resources.gpus == 0 and trials < message.budget.max_trials:
                return True
        return False

    def next_attempt(self) -> int:
        return int(self.scalar("SELECT COALESCE(MAX(id), 0) FROM attempts")) + 1

    def running_attempts(self) -> list[int]:
        return [r[0] for r in self.db.execute(
            "SELECT id FROM attempts WHERE node_id = ? AND state = 'running'", (self.node.key_id,))]

    def hints(self) -> dict[str, list[Any]]:
        """Values worth drawing, by field name. Each list has a fixed length, as Hypothesis wants
        the same draws to make the same choices."""
        attempt = self.next_attempt()
        held = [*self.running_attempts()[:2], 0, 0][:2]
        return {
            "searcher": [*SEARCHERS, "annealing", ""],
            "scheduler": [*self.schedulers(), "fifo", "sometimes"][:5],
            "mode": ["min", "max", "sideways"], "type": ["float", "int", "categorical", "complex"],
            "action": ["admit", "ban", "unban", "nuke"], "reason": ["", "fuzz"],
            "outcome": ["completed", "failed", "stopped", "exploded"],
            "name": ["x", "fuzz", "", " ", "a" * 101], "metric": ["loss", "", "not an id"],
            "entrypoint": ["train.py", "../up.py", "/abs.py", "train.sh", "a\\b.py"],
            "study_id": self.study_ids(),
            "digest": [self.digest, "0" * 64, "xyz", self.digest.upper()],
            "bundle_digest": [self.digest, self.digest, "0" * 64, "xyz"],
            "key_id": [self.stranger.key_id, self.operator.key_id, "0" * 32, "zz"],
            "node_id": [self.node.key_id, self.node.key_id, self.stranger.key_id, ""],
            "public_key": [k.public_key for k in self.keys.values()] + [b"", bytes(32)],
            "publisher_key": [self.researcher.public_key, self.stranger.public_key, b""],
            "signature": [b"", bytes(64), sign_digest(self.researcher, self.digest)],
            "attempt_id": [attempt, attempt, attempt + 1, *held, 0, -1],
            "running_attempts": [attempt, *held, 0],
            "step": [1, 2, 3, 0, -1, 10**9], "seq": [1, 2, 3, 0, -1],
            "max_trials": [1, 5, 10**6, 10**6 + 1, 0], "eta": [2, 3, 1, 1000, 1001],
            "min": [1, 2, 0, 10**9], "max": [1, 3, 27, 10**9 + 1], "gpus": [0, 1, 65, -1],
            "cpu_slots": [0, 1, 2, -1],
            "size": [len(self.bundle.data), 0, -1, 64 * 1024 * 1024 + 1],
        }

    # -- (a) Hypothesis --

    def draw_value(self, data: st.DataObject, fd: FieldDescriptor, hints: dict[str, list[Any]]
                   ) -> Any:
        t, pool = fd.type, hints.get(fd.name)
        if t in (fd.TYPE_DOUBLE, fd.TYPE_FLOAT):
            edges = [0.0, -0.0, 1.0, 0.5, 1e-300, 1e300, math.inf, -math.inf, math.nan]
            return data.draw(st.sampled_from(edges) | st.floats())
        if t == fd.TYPE_BOOL:
            return data.draw(st.booleans())
        if t == fd.TYPE_STRING:
            pool = [p for p in (pool or []) if isinstance(p, str)] or [""]
            return data.draw(st.sampled_from(pool) | st.text(max_size=24))
        if t == fd.TYPE_BYTES:
            pool = [p for p in (pool or []) if isinstance(p, bytes)] or [b""]
            return data.draw(st.sampled_from(pool) | st.binary(max_size=80))
        bits = 64 if t in (fd.TYPE_INT64, fd.TYPE_SINT64, fd.TYPE_SFIXED64) else 32
        edges = [0, 1, -1, 2, 2**(bits - 1) - 1, -(2**(bits - 1))]
        pool = [p for p in (pool or []) if isinstance(p, int) and abs(p) < 2**(bits - 1)]
        return data.draw(st.sampled_from(pool or edges) | st.sampled_from(edges)
                         | st.integers(-(2**(bits - 1)), 2**(bits - 1) - 1))

    def fill(self, data: st.DataObject, message: Message, hints: dict[str, list[Any]],
             depth: int = 0) -> Message:
        """Set a drawn subset of ``message``'s fields; repeated fields get at most 3 items,
        which also keeps grids and categorical choices small (see the report on those)."""
        for fd in message.DESCRIPTOR.fields:
            if not data.draw(st.booleans()):
                continue
            target = getattr(message, fd.name)
            entry = fd.message_type
            if entry is not None and entry.GetOptions().map_entry:
                for _ in range(data.draw(st.integers(0, 3))):
                    key = self.draw_value(data, entry.fields_by_name["key"], {"key": ["loss"]})
                    value_fd = entry.fields_by_name["value"]
                    if value_fd.message_type is not None:
                        if depth < 3:
                            self.fill(data, target[key], hints, depth + 1)
                    else:
                        target[key] = self.draw_value(data, value_fd, hints)
            elif fd.is_repeated:
                for _ in range(data.draw(st.integers(0, 3))):
                    if entry is not None:
                        if depth < 3:
                            self.fill(data, target.add(), hints, depth + 1)
                    else:
                        target.append(self.draw_value(data, fd, hints))
            elif entry is not None:
                if depth < 3:
                    self.fill(data, target, hints, depth + 1)
                    target.SetInParent()
            else:
                setattr(message, fd.name, self.draw_value(data, fd, hints))
        return message

    def draw_envelope(self, data: st.DataObject, message: Message, hints: dict[str, list[Any]],
                      who: str | None = None) -> tuple[common_pb2.SignedEnvelope, str, bool, set[str]]:
        """``message`` sealed in a drawn way by a drawn key (or ``who``): the envelope, a label,
        whether it must be refused, its families."""
        who = who or data.draw(st.sampled_from(sorted(self.keys)))
        style = data.draw(st.sampled_from(["sealed"] * 4 + ["sealed-at", "other-type", "random"]))
        if style == "sealed":
            return self.sign(who, message), f"sealed-by-{who}", False, set()
        if style == "sealed-at":
            now = time.time()
            when = data.draw(st.sampled_from([now - 5, now + 5, now - 3600, now + 3600, 0.0, 1e300,
                                              math.inf, -math.inf, math.nan]) | st.floats())
            families = {"nan-time"} if math.isnan(when) else set()
            forged = not abs(now - when) <= 120
            return self.sign(who, message, when=when), "sealed-at-time", forged, families
        if style == "other-type":
            others = [t for t in INNER_TYPES if t is not type(message)]
            other = self.fill(data, data.draw(st.sampled_from(others))(), hints)
            return self.sign(who, other), "other-type", True, set()
        envelope = self.fill(data, common_pb2.SignedEnvelope(), hints)
        envelope.body = message.SerializeToString()
        return envelope, "unsigned", True, set()

    def hypothesis_probe(self, data: st.DataObject) -> Probe:
        name = data.draw(st.sampled_from(list(ENDPOINTS)))
        ep, hints = ENDPOINTS[name], self.hints()
        if name == "UploadBundle":
            chunks = [self.fill(data, common_pb2.BundleChunk(), hints)
                      for _ in range(data.draw(st.integers(0, 3)))]
            return Probe(name, "hypothesis", "chunks", [c.SerializeToString() for c in chunks])
        if ep.inner is None:
            message = self.fill(data, ep.request(), hints)
            return Probe(name, "hypothesis", "message", [message.SerializeToString()])
        if name == "Session":
            items, forged, families = [], False, set()
            for i in range(data.draw(st.integers(1, 4))):
                event = self.fill(data, node_pb2.NodeEvent(), hints)
                if i == 0 and data.draw(st.booleans()):
                    event.node_id = self.node.key_id
                    event.hello.SetInParent()
                if event.WhichOneof("kind") == "hello":
                    _clamp_inventory(event.hello.inventory)
                if event.report.step < 0 and "negative-step" in self.exclude:
                    event.report.step = 1
                if event.WhichOneof("kind") == "declined" and self.decline_blocked(
                        event.declined.attempt_id):
                    event.heartbeat.SetInParent()
                who = "node" if data.draw(st.integers(0, 3)) else None
                envelope, _, bad, fam = self.draw_envelope(data, event, hints, who)
                items.append(envelope.SerializeToString())
                forged, families = forged or bad, families | fam
            return Probe(name, "hypothesis", "session", items, forged, families)
        inner = self.fill(data, ep.inner(), hints)
        if isinstance(inner, common_pb2.StudySpec) and inner.search.scheduler == "median" \
                and "median" in self.exclude:
            inner.search.scheduler = "fifo"
        who = data.draw(st.sampled_from(sorted(self.keys)))
        if isinstance(inner, researcher_pb2.StopStudyRequest) and who in ("researcher", "operator") \
                and inner.study_id == self.seed_id:
            inner.study_id = self.stoppable()  # the owner and the operator leave the anchor be
        envelope, label, forged, families = self.draw_envelope(data, inner, hints, who)
        stop = inner.study_id if isinstance(inner, researcher_pb2.StopStudyRequest) else None
        return Probe(name, "hypothesis", label, [envelope.SerializeToString()], forged,
                     families, stop)

    def run_hypothesis(self, count: int, seed: int) -> int:
        sent = 0

        @hypothesis_seed(seed)
        @settings(max_examples=count, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(st.data())
        def run(data: st.DataObject) -> None:
            nonlocal sent
            if sent >= count:
                return
            probe = self.hypothesis_probe(data)
            if self.admissible(probe):
                self.send(probe)
                sent += 1

        run()
        return sent

    # -- (b) mutations of valid messages --

    def valid_inner(self, name: str, forged_kind: bool) -> tuple[Message, str]:
        rng = self.rng
        if name == "SubmitStudy":
            spec = common_pb2.StudySpec()
            spec.CopyFrom(self.work)
            spec.name = f"fuzz-{rng.randrange(10**6)}"
            spec.budget.max_trials = rng.choice((3, 20, 200))
            spec.search.searcher = rng.choice(SEARCHERS)
            spec.search.scheduler = rng.choice(self.schedulers())
            spec.search.seed = rng.randrange(2**31)
            return spec, "researcher"
        if name == "StopStudy":
            target = self.seed_id if forged_kind else self.stoppable()
            return researcher_pb2.StopStudyRequest(study_id=target), "researcher"
        if name == "Register":
            inventory = node_pb2.Inventory(cpu_slots=rng.randrange(0, 3), hostname="fuzz")
            return node_pb2.RegisterRequest(name="fuzz-node", inventory=inventory), "node"
        if name == "DownloadBundle":
            return node_pb2.BundleRequest(digest=self.digest), rng.choice(("node", "researcher"))
        if name == "ChangeAccess":
            return operator_pb2.AccessRequest(key_id=self.stranger.key_id, reason="fuzz",
                                              action=rng.choice(("admit", "ban", "unban"))), "operator"
        return operator_pb2.ListAccessRequest(), "operator"

    def schedulers(self) -> list[str]:
        return [s for s in SCHEDULERS if s != "median" or "median" not in self.exclude]

    def unknown_enum(self, message: Message) -> None:
        if isinstance(message, common_pb2.StudySpec):
            field_ = self.rng.choice(("searcher", "scheduler", "mode", "type"))
            if field_ == "mode":
                message.objective.mode = "sideways"
            elif field_ == "type":
                message.space[0].type = "complex"
            else:
                setattr(message.search, field_, "annealing")
        elif isinstance(message, operator_pb2.AccessRequest):
            message.action = "nuke"
        elif isinstance(message, researcher_pb2.StopStudyRequest):
            message.study_id = "no-such-study"

    ENVELOPE_MUTATIONS = (
        "valid", "valid", "valid", "unknown-enum", "body-bitflip", "body-truncate", "body-extend",
        "sig-bitflip", "sig-truncate", "sig-empty", "key-bitflip", "key-truncate", "key-swap",
        "stale-time", "future-time", "inf-time", "nan-time", "time-changed", "seq-changed",
        "seq-old", "seq-zero", "seq-negative", "replay", "other-type", "envelope-bitflip",
        "envelope-truncate", "oversize", "empty",
    )

    def mutate_envelope(self, message: Message, who: str, kind: str
                        ) -> tuple[list[bytes], bool, set[str]]:
        """The wire bytes of ``message`` sealed by ``who`` and mutated by ``kind``; whether the
        result must be refused; its families. ``replay`` gives the envelope twice."""
        rng, now = self.rng, time.time()
        if kind == "unknown-enum":
            self.unknown_enum(message)
        times = {"stale-time": now - 3600, "future-time": now + 3600, "inf-time": math.inf,
                 "nan-time": math.nan}
        seqs = {"seq-old": 1, "seq-zero": 0, "seq-negative": -rng.randrange(1, 2**40)}
        if kind == "other-type":
            others = [t for t in INNER_TYPES if t is not type(message)]
            other = rng.choice(others)()
            for fd in other.DESCRIPTOR.fields:  # same field numbers, another domain
                if fd.type == fd.TYPE_STRING and not fd.is_repeated:
                    setattr(other, fd.name, self.seed_id)
            envelope = self.sign(who, other)
        else:
            envelope = self.sign(who, message, when=times.get(kind), seq=seqs.get(kind))
        mutate: dict[str, Callable[[], None]] = {
            "body-bitflip": lambda: setattr(envelope, "body", _flip(rng, envelope.body)),
            "body-truncate": lambda: setattr(envelope, "body", _cut(rng, envelope.body)),
            "body-extend": lambda: setattr(envelope, "body", envelope.body + b"\x10\x01"),
            "sig-bitflip": lambda: setattr(envelope, "signature", _flip(rng, envelope.signature)),
            "sig-truncate": lambda: setattr(envelope, "signature", _cut(rng, envelope.signature)),
            "sig-empty": lambda: setattr(envelope, "signature", b""),
            "key-bitflip": lambda: setattr(envelope, "public_key", _flip(rng, envelope.public_key)),
            "key-truncate": lambda: setattr(envelope, "public_key", _cut(rng, envelope.public_key)),
            "key-swap": lambda: setattr(envelope, "public_key", self.stranger.public_key),
            "time-changed": lambda: setattr(envelope, "time", envelope.time + 1.0),
            "seq-changed": lambda: setattr(envelope, "seq", envelope.seq + 1),
            "oversize": lambda: setattr(envelope, "body", envelope.body + b"\x00" * (MAX_MESSAGE + 1)),
        }
        signed = _fields(envelope)
        if kind in mutate:
            mutate[kind]()
        wire = envelope.SerializeToString()
        # Cutting an empty body changes nothing: only a change must be refused.
        forged = kind not in ("valid", "unknown-enum", "replay") and (
            kind not in mutate or _fields(envelope) != signed)
        if kind == "replay":
            return [wire, wire], True, set()
        if kind in ("envelope-bitflip", "envelope-truncate"):
            for _ in range(20):
                mutated = (_flip if kind == "envelope-bitflip" else _cut)(rng, wire)
                if "undecodable" in self.exclude and not _decodes(common_pb2.SignedEnvelope, mutated):
                    continue
                break
            else:
                mutated = b""
            try:
                parsed = common_pb2.SignedEnvelope.FromString(mutated)
                forged = _fields(parsed) != _fields(envelope)
            except DecodeError:
                forged = True
            wire = mutated
        elif kind == "empty":
            wire = b""
        return [wire], forged, {"nan-time"} if kind == "nan-time" else set()

    def mutation_probes(self, name: str) -> list[Probe]:
        rng = self.rng
        if name == "UploadBundle":
            return [self.mutate_upload()]
        if name == "Session":
            if self.has_work():
                return [self.mutate_session()]
            # Keep a study that CPU slots can run, so that sessions get leases to report on.
            message, who = self.valid_inner("SubmitStudy", forged_kind=False)
            return [Probe("SubmitStudy", "mutation", "valid",
                          [self.sign(who, message).SerializeToString()]), self.mutate_session()]
        if ENDPOINTS[name].inner is None:
            return [self.mutate_plain(name)]
        kind = rng.choice(self.ENVELOPE_MUTATIONS)
        message, who = self.valid_inner(
            name, forged_kind=kind not in ("valid", "unknown-enum", "replay"))
        wires, forged, families = self.mutate_envelope(message, who, kind)
        if name in READ_ONLY and kind in SEQUENCE_KINDS:
            forged = False  # reads take no sequence number (they change nothing)
        stop = (message.study_id if isinstance(message, researcher_pb2.StopStudyRequest)
                and not forged else None)
        if kind == "replay":  # the first copy is a valid message, the second its replay
            return [Probe(name, "mutation", "valid", wires[:1], False, set(), stop),
                    Probe(name, "mutation", "replay", wires[1:], forged, set())]
        return [Probe(name, "mutation", kind, wires, forged, families, stop)]

    def mutate_plain(self, name: str) -> Probe:
        rng = self.rng
        kind = rng.choice(("valid", "valid", "unknown-id", "empty-id", "long-id", "odd-chars",
                           "unknown-field", "oversize", "bitflip", "truncate"))
        study_id = {"unknown-id": "no-such-study", "empty-id": "", "long-id": "s" * 100_000,
                    "odd-chars": rng.choice(["' OR 1=1 --", "%", "\x00", "\u202e\u00df"]),
                    }.get(kind, rng.choice([self.seed_id, self.work_id, *self.created[-3:]]))
        if name == "ListStudies":
            message: Message = researcher_pb2.ListStudiesRequest()
        elif name == "ListTrials":
            message = researcher_pb2.ListTrialsRequest(study_id=study_id,
                                                       include_reports=rng.random() < 0.5)
        else:
            message = researcher_pb2.StudyRef(study_id=study_id)
        wire = message.SerializeToString()
        if kind == "unknown-field":
            wire = _unknown_field(wire)
        elif kind == "oversize":
            wire = _unknown_field(wire, MAX_MESSAGE + 1)
        elif kind in ("bitflip", "truncate"):
            wire = self.decodable_mutation(ENDPOINTS[name].request, wire, kind)
        # reads are signed by the study's owner; some are not, or by a stranger, or the
        # signature covers another request, or is garbage: those must be refused
        signer = rng.choice(("owner", "owner", "owner", "none", "stranger", "other", "junk"))
        if signer == "owner":
            metadata = read_metadata(self.researcher, message)
        elif signer == "stranger":
            metadata = read_metadata(self.stranger, message)
        elif signer == "other":
            other = type(message)()
            other.CopyFrom(message)
            if hasattr(other, "study_id"):
                other.study_id += "x"
            else:
                other = researcher_pb2.StudyRef(study_id="x")  # another message type
            metadata = read_metadata(self.researcher, other)
        elif signer == "junk":
            metadata = ((READ_AUTH_METADATA, _flip(rng, rng.randbytes(rng.randrange(0, 200)))),)
        else:
            metadata = ()
        forged = signer in ("none", "other", "junk") or (
            signer == "stranger" and name != "ListStudies")
        return Probe(name, "mutation", f"{kind}/{signer}", [wire], forged, metadata=metadata)

    def decodable_mutation(self, kind_: type[Message], wire: bytes, kind: str) -> bytes:
        for _ in range(20):
            mutated = (_flip if kind == "bitflip" else _cut)(self.rng, wire)
            if "undecodable" not in self.exclude or _decodes(kind_, mutated):
                return mutated
        return wire

    def mutate_upload(self) -> Probe:
        rng, bundle = self.rng, self.bundle
        kind = rng.choice(("valid", "valid", "new-bundle", "many-chunks", "no-header",
                           "empty-stream", "size-zero", "size-negative", "size-huge", "size-short",
                           "data-bitflip", "digest-wrong", "sig-bitflip", "key-stranger",
                           "key-node", "oversize-chunk", "chunk-bitflip", "second-header"))
        data, digest, key, sig = bundle.data, bundle.digest, bundle.publisher_key, bundle.signature
        if kind == "new-bundle":
            data = rng.randbytes(rng.randrange(1, 4096))
            digest = digest_of(data)
            sig = sign_digest(self.researcher, digest)
        header = common_pb2.BundleHeader(digest=digest, size=len(data), publisher_key=key,
                                         signature=sig)
        if kind == "size-zero":
            header.size = 0
        elif kind == "size-negative":
            header.size = -1
        elif kind == "size-huge":
            header.size = 2**62
        elif kind == "size-short":
            header.size = len(data) - 1
        elif kind == "digest-wrong":
            header.digest = "0" * 64
        elif kind == "sig-bitflip":
            header.signature = _flip(rng, sig)
        elif kind == "key-stranger":
            header.publisher_key = self.stranger.public_key
        elif kind == "key-node":
            header.publisher_key = self.node.public_key
        elif kind == "data-bitflip":
            data = _flip(rng, data)
        pieces = [data[i: i + 97] for i in range(0, len(data), 97)] if kind == "many-chunks" else [data]
        chunks = [common_pb2.BundleChunk(header=header, data=pieces[0])]
        chunks += [common_pb2.BundleChunk(data=p) for p in pieces[1:]]
        if kind == "no-header":
            chunks[0].ClearField("header")
        elif kind == "oversize-chunk":
            chunks.append(common_pb2.BundleChunk(data=b"\x00" * (MAX_MESSAGE + 1)))
        elif kind == "second-header":
            chunks.append(common_pb2.BundleChunk(header=header, data=b""))
        wires = [c.SerializeToString() for c in chunks]
        if kind == "empty-stream":
            wires = []
        elif kind == "chunk-bitflip":
            wires = [self.decodable_mutation(common_pb2.BundleChunk, wires[0], "bitflip")]
        forged = kind in ("data-bitflip", "digest-wrong", "sig-bitflip", "key-stranger", "key-node")
        return Probe("UploadBundle", "mutation", kind, wires, forged)

    def session_events(self) -> list[node_pb2.NodeEvent]:
        """A plausible session of the registered node: hello, then reports with rising steps
        about the attempt it is about to be leased (or one it holds from an earlier session),
        and how that attempt ended; now and then a step, value or sequence number goes wrong."""
        rng, node_id = self.rng, self.node.key_id
        running = self.running_attempts()
        hello = node_pb2.Hello(inventory=node_pb2.Inventory(cpu_slots=rng.choice((1, 1, 2, 3, 0))),
                               draining=rng.random() < 0.05)
        if running and rng.random() < 0.5:
            hello.running_attempts.extend(running)
        if rng.random() < 0.2:
            hello.inventory.gpus.add(index=0, uuid="GPU-fuzz", memory_total_gb=16.0)
        events = [node_pb2.NodeEvent(node_id=node_id, hello=hello)]
        upcoming = self.next_attempt()
        attempt = rng.choice([upcoming] * 4 + [upcoming + 1] + running[:3] * 2 + [999_999])
        steps = sorted(rng.sample(range(1, 4), rng.randrange(0, 4)))
        if rng.random() < 0.2:
            odd = (0, 2, 10**9) if "negative-step" in self.exclude else (0, -1, 2, 10**9)
            steps.insert(rng.randrange(len(steps) + 1), rng.choice(odd))
        for seq, step in enumerate(steps, 1):
            value = rng.random() if rng.random() < 0.85 else rng.choice(
                (math.nan, math.inf, -math.inf, 1e308))
            events.append(node_pb2.NodeEvent(node_id=node_id, report=node_pb2.MetricReport(
                attempt_id=attempt, seq=seq if rng.random() < 0.9 else 1, step=step,
                metrics={"loss": value, "other": 1.0})))
        end = rng.choice(("finished", "finished", "finished", "declined", "heartbeat", "none"))
        if end == "declined" and self.decline_blocked(attempt):
            end = "finished"
        if end == "finished":
            events.append(node_pb2.NodeEvent(node_id=node_id, finished=node_pb2.AttemptFinished(
                attempt_id=attempt, outcome=rng.choice(("completed", "completed", "failed", "stopped")),
                exit_code=rng.choice((0, 1, -9)), gpu_seconds=rng.choice((0.0, 1.5, -1.0)),
                wall_seconds=rng.choice((0.2, math.nan)), reports_sent=len(steps))))
        elif end == "declined":
            events.append(node_pb2.NodeEvent(node_id=node_id, declined=node_pb2.AttemptDeclined(
                attempt_id=attempt, reason="untrusted publisher")))
        elif end == "heartbeat":
            events.append(node_pb2.NodeEvent(node_id=node_id, heartbeat=node_pb2.Heartbeat(
                running_attempts=[attempt])))
        return events

    def mutate_session(self) -> Probe:
        rng = self.rng
        kind = rng.choice(("valid",) * 24 + ("empty-stream", "no-hello", "unregistered",
                           "node-id-mismatch", "replay-within", "unknown-enum",
                           *self.ENVELOPE_MUTATIONS[4:]))
        events = self.session_events()
        if kind == "no-hello":
            events[0] = node_pb2.NodeEvent(node_id=self.node.key_id, heartbeat=node_pb2.Heartbeat())
        elif kind == "node-id-mismatch":
            events[0].node_id = self.stranger.key_id
        elif kind == "unknown-enum":
            events.append(node_pb2.NodeEvent(node_id=self.node.key_id, finished=node_pb2.AttemptFinished(
                attempt_id=self.next_attempt(), outcome="exploded")))
        who = "stranger" if kind == "unregistered" else "node"
        forged, families = kind in ("no-hello", "unregistered", "node-id-mismatch"), set()
        position = rng.randrange(len(events)) if kind in self.ENVELOPE_MUTATIONS else -1
        wires: list[bytes] = []
        for i, event in enumerate(events):  # sealed in order, so sequence numbers increase
            if i == position:
                mutated, forged, families = self.mutate_envelope(event, who, kind)
                wires += mutated
            else:
                wires.append(self.sign(who, event).SerializeToString())
        if kind == "empty-stream":
            wires = []
        elif kind == "replay-within":
            wires.insert(rng.randrange(1, len(wires) + 1), wires[0])
            forged = True
        return Probe("Session", "mutation", kind, wires, forged, families)

    def run_mutations(self, count: int) -> int:
        # Sessions weigh three times: their valid streams drive leases, reports and endings.
        sent, names = 0, [*ENDPOINTS, "Session", "Session"]
        while sent < count:
            for probe in self.mutation_probes(names[self.counter % len(names)]):
                if sent < count and self.admissible(probe):
                    self.send(probe)
                    sent += 1
            self.counter += 1
        return sent

    # -- (c) raw random bytes --

    def random_bytes(self, request: type[Message]) -> bytes:
        rng = self.rng
        for _ in range(200):
            data = rng.randbytes(rng.choice((0, 1, 2, 3, 5, 8, 16, 64, 300)))
            if "undecodable" not in self.exclude or _decodes(request, data):
                return data
        return b""

    def run_random(self, count: int) -> int:
        names = list(ENDPOINTS)
        for _ in range(count):
            ep = ENDPOINTS[names[self.counter % len(names)]]
            self.counter += 1
            streamed = ep.kind in ("stream_unary", "stream_stream")
            n = self.rng.randrange(0, 4) if streamed else 1
            self.send(Probe(ep.name, "random", "bytes",
                            [self.random_bytes(ep.request) for _ in range(n)]))
        return count


# ---- invariants -------------------------------------------------------------------------

CONSISTENCY = {
    "trials of a missing study":
        "SELECT COUNT(*) FROM trials t LEFT JOIN studies s ON s.id = t.study_id WHERE s.id IS NULL",
    "attempts of a missing trial":
        "SELECT COUNT(*) FROM attempts a LEFT JOIN trials t ON t.study_id = a.study_id "
        "AND t.number = a.trial_number WHERE t.number IS NULL",
    "attempts of a missing node":
        "SELECT COUNT(*) FROM attempts a LEFT JOIN nodes n ON n.id = a.node_id WHERE n.id IS NULL",
    "reports of a missing attempt":
        "SELECT COUNT(*) FROM reports r LEFT JOIN attempts a ON a.id = r.attempt_id WHERE a.id IS NULL",
    "reports filed under another trial than their attempt's":
        "SELECT COUNT(*) FROM reports r JOIN attempts a ON a.id = r.attempt_id "
        "WHERE r.study_id != a.study_id OR r.trial_number != a.trial_number",
    "scheduler events of a missing study":
        "SELECT COUNT(*) FROM scheduler_events e LEFT JOIN studies s ON s.id = e.study_id "
        "WHERE s.id IS NULL",
    "studies of a missing bundle":
        "SELECT COUNT(*) FROM studies s LEFT JOIN bundles b ON b.digest = s.bundle_digest "
        "WHERE b.digest IS NULL",
    "unknown states":
        "SELECT (SELECT COUNT(*) FROM studies WHERE state NOT IN ('running','completed','stopped'))"
        " + (SELECT COUNT(*) FROM trials WHERE state NOT IN "
        "('pending','running','completed','pruned','failed')) + (SELECT COUNT(*) FROM attempts "
        "WHERE state NOT IN ('running','completed','pruned','failed','lost'))",
    "end times that disagree with the study state":
        "SELECT COUNT(*) FROM studies WHERE (state = 'running') = (ended_at IS NOT NULL)",
    "running trials without a running attempt":
        "SELECT COUNT(*) FROM trials t WHERE t.state = 'running' AND NOT EXISTS (SELECT 1 FROM "
        "attempts a WHERE a.study_id = t.study_id AND a.trial_number = t.number "
        "AND a.state = 'running' AND a.purpose = 'trial')",
    "running attempts of a trial that is not running":
        "SELECT COUNT(*) FROM attempts a JOIN trials t ON t.study_id = a.study_id AND "
        "t.number = a.trial_number WHERE a.state = 'running' AND a.purpose = 'trial' "
        "AND t.state != 'running'",
    "trials with two running attempts":
        "SELECT COUNT(*) FROM (SELECT 1 FROM attempts WHERE state = 'running' AND "
        "purpose = 'trial' GROUP BY study_id, trial_number HAVING COUNT(*) > 1)",
    "pending trials of an ended study":
        "SELECT COUNT(*) FROM trials t JOIN studies s ON s.id = t.study_id "
        "WHERE s.state != 'running' AND t.state = 'pending'",
    "results counted twice (scheduler events)":
        "SELECT COUNT(*) FROM (SELECT 1 FROM scheduler_events GROUP BY study_id, trial_number, "
        "kind, CASE WHEN kind = 'report' THEN step END HAVING COUNT(*) > 1)",
}


def check(fuzzer: Fuzzer, cluster: LocalCluster) -> tuple[dict[str, dict[str, Any]], list[str]]:
    invariants: dict[str, dict[str, Any]] = {}
    problems: list[str] = []

    def verdict(name: str, ok: bool, detail: str = "") -> None:
        invariants[name] = {"ok": ok, "detail": detail}
        if not ok:
            problems.append(f"{name}: {detail}")

    proc = cluster.coordinator
    verdict("coordinator alive", proc is not None and proc.poll() is None,
            "" if proc is None or proc.poll() is None else f"exited with {proc.returncode}")
    seed_state = "stopped" if fuzzer.seed_stopped else "running"
    verdict("anchor study served unchanged", *_anchor(fuzzer, seed_state))
    row = fuzzer.study_row(fuzzer.seed_id)
    expected = (*fuzzer.seed_row[:5], seed_state, fuzzer.seed_row[6])
    trials = fuzzer.scalar("SELECT COUNT(*) FROM trials WHERE study_id = ?", (fuzzer.seed_id,))
    verdict("anchor study row unchanged", row == expected and trials == 0,
            f"state {row[5] if row else None!r}, {trials} trials")
    integrity = fuzzer.scalar("PRAGMA integrity_check")
    verdict("PRAGMA integrity_check", integrity == "ok", str(integrity))
    fk = fuzzer.db.execute("PRAGMA foreign_key_check").fetchall()
    verdict("PRAGMA foreign_key_check", not fk, str(fk[:5]))
    bad = {name: n for name, sql in CONSISTENCY.items() if (n := fuzzer.scalar(sql))}
    verdict("stored state consistent", not bad, json.dumps(bad))

    codes = Counter(code for _, code, _ in fuzzer.outcomes)
    verdict("no UNKNOWN or INTERNAL status", not (codes["UNKNOWN"] or codes["INTERNAL"]),
            f"UNKNOWN {codes['UNKNOWN']}, INTERNAL {codes['INTERNAL']}")
    improper: Counter[tuple[str, str, str, str]] = Counter()
    first: dict[tuple[str, str, str, str], str] = {}
    forged_accepted: list[str] = []
    for probe, code, detail in fuzzer.outcomes:
        allowed = REFUSALS | {"OK"} | ({"DEADLINE_EXCEEDED"} if probe.endpoint == "WatchStudy"
                                       else set())
        key = (probe.endpoint, probe.generator, probe.label, code)
        if code not in allowed:
            improper[key] += 1
            first.setdefault(key, detail[:160])
        if probe.forged and code == "OK":
            forged_accepted.append(f"{probe.endpoint} [{probe.generator}:{probe.label}]")
    verdict("every refusal has a proper status", not improper,
            f"{sum(improper.values())} replies with another status")
    for (endpoint, generator, label, code), n in sorted(improper.items()):
        problems.append(f"{endpoint} [{generator}:{label}] -> {code} x{n}: "
                        f"{first[(endpoint, generator, label, code)]}")
    verdict("no forged, stale, replayed or mistyped message accepted", not forged_accepted,
            "; ".join(sorted(set(forged_accepted))[:8]))
    log = (cluster.state_dir / "coordinator.log").read_text(errors="replace")
    verdict("no Traceback in the coordinator log", "Traceback" not in log,
            f"{log.count('Traceback')} tracebacks")

    # A restart replays every running study from the stored events.
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    try:
        cluster.start_coordinator(listen=cluster.address)
        fuzzer.channel.close()
        fuzzer.channel = fuzzer.open_channel()
        verdict("restart replays the stored state", *_anchor(fuzzer, seed_state))
    except Exception as exc:  # any failure to come back is the finding
        verdict("restart replays the stored state", False, f"{type(exc).__name__}: {exc}")
    log = (cluster.state_dir / "coordinator.log").read_text(errors="replace")
    if "Traceback" in log and invariants["no Traceback in the coordinator log"]["ok"]:
        verdict("no Traceback in the coordinator log", False, "after the restart")
    return invariants, problems


def _anchor(fuzzer: Fuzzer, state: str) -> tuple[bool, str]:
    try:
        info = fuzzer.get_study(fuzzer.seed_id)
    except grpc.RpcError as exc:
        return False, f"GetStudy: {exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]
    seed = fuzzer.seed_info
    same = (info.spec == seed.spec and info.name == seed.name and info.state == state
            and info.owner_key_id == seed.owner_key_id and info.created_at == seed.created_at
            and info.counts == seed.counts)
    counts = str(info.counts).replace("\n", " ").strip()
    return same, f"state {info.state!r} (expected {state!r}), counts {{{counts}}}"


# ---- the run ----------------------------------------------------------------------------

def run(messages: int, seed: int, exclude: set[str], keep: bool = False) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="tunefleet-fuzz-"))
    train = root / "bundle"
    train.mkdir()
    (train / "train.py").write_text(TRAIN)
    researcher = Identity.generate()
    cluster = LocalCluster(0, state_dir=root / "cluster", researchers=[researcher.key_id])
    started = time.monotonic()
    cluster.start()
    fuzzer = Fuzzer(cluster, researcher, seed, exclude, train)
    try:
        fuzzer.seed_state()
        shares = {"hypothesis": messages * 2 // 5, "mutation": messages * 2 // 5}
        shares["random"] = messages - sum(shares.values())
        rounds = 4
        done: Counter[str] = Counter()
        for r in range(rounds):
            part = {g: shares[g] * (r + 1) // rounds - shares[g] * r // rounds for g in shares}
            done["hypothesis"] += fuzzer.run_hypothesis(part["hypothesis"], seed * rounds + r)
            done["mutation"] += fuzzer.run_mutations(part["mutation"])
            done["random"] += fuzzer.run_random(part["random"])
        short = messages - sum(done.values())  # Hypothesis may end a run early
        done["mutation"] += fuzzer.run_mutations(short) if short > 0 else 0
        elapsed_fuzz = time.monotonic() - started
        invariants, problems = check(fuzzer, cluster)
        stored = {t: fuzzer.scalar(f"SELECT COUNT(*) FROM {t}")
                  for t in ("studies", "trials", "attempts", "reports", "nodes", "access")}
    finally:
        fuzzer.channel.close()
        fuzzer.db.close()
        cluster.close()
    if not problems and not keep:
        shutil.rmtree(root, ignore_errors=True)
    outcomes = fuzzer.outcomes
    by_endpoint_code: dict[str, Counter[str]] = defaultdict(Counter)
    for probe, code, _ in outcomes:
        by_endpoint_code[probe.endpoint][code] += 1
    return {
        "messages": len(outcomes), "seed": seed, "excluded": sorted(exclude),
        "elapsed_s": round(time.monotonic() - started, 1), "fuzz_s": round(elapsed_fuzz, 1),
        "by_endpoint": {n: sum(by_endpoint_code[n].values()) for n in ENDPOINTS},
        "by_code": dict(Counter(code for _, code, _ in outcomes).most_common()),
        "by_generator": dict(Counter(p.generator for p, _, _ in outcomes)),
        "by_endpoint_code": {n: dict(by_endpoint_code[n]) for n in ENDPOINTS},
        "forged_sent": sum(p.forged for p, _, _ in outcomes),
        "studies_created": len(fuzzer.created), "stored": stored,
        "invariants": invariants, "problems": problems, "state_dir": str(root),
        "kept": bool(problems) or keep,
    }


SHORT = {"INVALID_ARGUMENT": "INVALID_ARG", "UNAUTHENTICATED": "UNAUTHENT",
         "PERMISSION_DENIED": "PERM_DENIED", "FAILED_PRECONDITION": "FAILED_PRE",
         "RESOURCE_EXHAUSTED": "RES_EXHAUST", "DEADLINE_EXCEEDED": "DEADLINE"}


def print_table(result: dict[str, Any]) -> None:
    codes = list(result["by_code"])
    print(f"fuzzed {result['messages']} messages (seed {result['seed']}) in {result['fuzz_s']} s, "
          f"{result['elapsed_s']} s with setup and checks; excluded: "
          f"{', '.join(result['excluded']) or 'nothing'}")
    print(f"{'endpoint':<15}{'sent':>5}" + "".join(f"{SHORT.get(c, c):>12}" for c in codes))
    for name in ENDPOINTS:
        row = result["by_endpoint_code"][name]
        print(f"{name:<15}{result['by_endpoint'][name]:>5}"
              + "".join(f"{row.get(c, 0):>12}" for c in codes))
    print(f"{'total':<15}{result['messages']:>5}"
          + "".join(f"{result['by_code'][c]:>12}" for c in codes))
    print("by generator: " + ", ".join(f"{g} {n}" for g, n in result["by_generator"].items())
          + f"; must-refuse (forged, stale, replayed, mistyped) sent: {result['forged_sent']}; "
          f"studies created: {result['studies_created']}")
    print("stored at the end: " + ", ".join(f"{n} {t}" for t, n in result["stored"].items()))
    print("invariants:")
    for name, v in result["invariants"].items():
        print(f"  {'ok  ' if v['ok'] else 'FAIL'} {name}" + ("" if v["ok"] else f": {v['detail']}"))
    for problem in result["problems"]:
        print(f"problem: {problem}")
    print(f"{len(result['problems'])} problems" if result["problems"] else "all invariants hold")
    if result["kept"]:
        print(f"state and logs kept in {result['state_dir']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=3000, help="messages to send (default 3000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every generator (default 0)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--keep", action="store_true",
                        help="keep the state directory (it is kept anyway when a check fails)")
    parser.add_argument("--exclude", action="append", default=[], choices=FAMILIES,
                        help="leave out inputs that hit a known, reported defect (repeatable)")
    args = parser.parse_args(argv)
    if args.messages < len(ENDPOINTS):
        parser.error(f"--messages: got {args.messages}; must be >= {len(ENDPOINTS)}")
    result = run(args.messages, args.seed, set(args.exclude), args.keep)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print_table(result)
    return 0 if not result["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
