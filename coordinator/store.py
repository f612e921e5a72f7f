"""The coordinator's SQLite store (through sqlite-utils, WAL mode, numbered migrations).

The coordinator is the only writer. Every method runs on the caller's thread; the hub calls the
store from one dedicated thread only. :meth:`Store.atomic` groups writes into one transaction:
a state change is committed before anything acknowledges it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils

from coordinator.migrations import check_usable, migrate
from coordinator.models import (
    Attempt,
    AttemptState,
    Node,
    Study,
    StudyState,
    Trial,
    TrialState,
)
from tunefleet.errors import NotFoundError, StateError

__all__ = ["Store", "SchedulerEvent"]

SchedulerEvent = tuple[str, int, int | None, float | None]  # kind, trial, step, value


_HELD = "MAX(0, MIN(COALESCE(ended_at, :now), :now) - started_at)"
USAGE_COLUMNS = (
    f"COALESCE(SUM({_HELD} * json_array_length(gpu_uuids)), 0), "
    f"COALESCE(SUM({_HELD}), 0), "
    f"COALESCE(SUM({_HELD} * (json_array_length(gpu_uuids) * price_gpu_hour + price_slot_hour))"
    " / 3600.0, 0)"
)
"""GPU-seconds, slot-seconds and credits of the attempts a query selects, lease to end (running
ones to the parameter ``:now``), each at the prices it was leased at: the ledger's columns."""


class Store:
    """Persistent state: bundles, studies, trials, attempts, reports, nodes, scheduler events."""

    def __init__(self, path: str | Path) -> None:
        """Open (creating it if need be) and migrate the database at ``path``. Raises
        :class:`StateError` naming ``path`` when it is no tunefleet database this release
        can use."""
        self.path = str(path)
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.DatabaseError as exc:
            raise StateError(f"cannot open the database {self.path}: {exc}") from None
        try:
            self._open(conn)
        except (sqlite3.DatabaseError, StateError) as exc:
            conn.close()
            raise StateError(f"cannot use the database {self.path}: {exc}") from None

    def _open(self, conn: sqlite3.Connection) -> None:
        check_usable(conn)  # before WAL mode changes the file
        self.db = sqlite_utils.Database(conn)
        self.db.enable_wal()
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA busy_timeout = 5000")
        self.conn = conn
        self._depth = 0
        self._savepoints = 0
        conn.isolation_level = "DEFERRED"  # let migrate's `with conn:` own its transactions
        migrate(conn)
        conn.isolation_level = None

    def close(self) -> None:
        self.conn.close()

    @property
    def in_transaction(self) -> bool:
        """True inside :meth:`atomic`."""
        return self._depth > 0

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """One transaction (nested calls join the outer one); rolled back on any exception,
        a failed COMMIT included."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:  # the body failed, or COMMIT itself (busy, disk full)
                self.conn.execute("ROLLBACK")
            raise
        finally:
            self._depth = 0

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested unit inside :meth:`atomic`: on an exception only its own writes roll back."""
        if not self._depth:
            raise RuntimeError("savepoint() must be used inside atomic()")
        self._savepoints += 1
        name = f"sp{self._savepoints}"
        self.conn.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self.conn.execute(f"ROLLBACK TO {name}")
            self.conn.execute(f"RELEASE {name}")
            raise
        else:
            self.conn.execute(f"RELEASE {name}")

    def _insert(self, table: str, row: dict[str, Any], or_ignore: bool = False) -> None:
        # Plain SQL rather than Table.insert: sqlite-utils commits inside its own `with conn`,
        # which would end an enclosing atomic() transaction early.
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        verb = "INSERT OR IGNORE" if or_ignore else "INSERT"
        self.conn.execute(f"{verb} INTO {table} ({columns}) VALUES ({marks})", tuple(row.values()))

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> dict[str, Any] | None:
        # A plain cursor: this is on the path of every report, and db.query() costs twice as much.
        cursor = self.conn.execute(sql, params)
        row = cursor.fetchone()
        if row is None:
            return None
        return dict(zip([d[0] for d in cursor.description], row, strict=True))

    # bundles -------------------------------------------------------------------------------

    def bundle_publisher(self, digest: str) -> str | None:
        """The key id that signed the stored bundle ``digest``; None if there is none."""
        row = self._one("SELECT publisher_key_id FROM bundles WHERE digest = ?", (digest,))
        return None if row is None else str(row["publisher_key_id"])

    def put_bundle(
        self, digest: str, data: bytes, publisher_key: bytes, key_id: str, signature: bytes,
        now: float,
    ) -> None:
        self._insert(
            "bundles",
            {
                "digest": digest, "size": len(data), "publisher_key": publisher_key,
                "publisher_key_id": key_id, "signature": signature, "data": data,
                "uploaded_at": now,
            },
            or_ignore=True,
        )

    def get_bundle(self, digest: str) -> dict[str, Any]:
        row = self._one("SELECT * FROM bundles WHERE digest = ?", (digest,))
        if row is None:
            raise NotFoundError(f"bundle {digest} does not exist")
        return row

    # studies -------------------------------------------------------------------------------

    def insert_study(self, study: Study) -> None:
        self._insert(
            "studies",
            {
                "id": study.id, "name": study.name, "owner_key_id": study.owner_key_id,
                "spec": study.spec, "bundle_digest": study.bundle_digest,
                "state": study.state.value, "created_at": study.created_at,
                "ended_at": study.ended_at, "end_reason": study.end_reason,
                "scheduling_defaults": study.scheduling_defaults,
            }
        )

    @staticmethod
    def _study(row: dict[str, Any]) -> Study:
        return Study(
            id=row["id"], name=row["name"], owner_key_id=row["owner_key_id"], spec=row["spec"],
            bundle_digest=row["bundle_digest"], state=StudyState(row["state"]),
            created_at=row["created_at"], ended_at=row["ended_at"], end_reason=row["end_reason"],
            scheduling_defaults=row["scheduling_defaults"],
        )

    def get_study(self, study_id: str) -> Study:
        row = self._one("SELECT * FROM studies WHERE id = ?", (study_id,))
        if row is None:
            raise NotFoundError(f"study {study_id!r} does not exist")
        return self._study(row)

    def list_studies(self, state: StudyState | None = None) -> list[Study]:
        if state is None:
            rows = self.db.query("SELECT * FROM studies ORDER BY created_at")
        else:
            rows = self.db.query(
                "SELECT * FROM studies WHERE state = ? ORDER BY created_at", (state.value,)
            )
        return [self._study(r) for r in rows]

    def end_study(self, study_id: str, state: StudyState, now: float, reason: str) -> None:
        self.conn.execute(
            "UPDATE studies SET state = ?, ended_at = ?, end_reason = ? WHERE id = ?",
            (state.value, now, reason, study_id),
        )

    # trials --------------------------------------------------------------------------------

    def insert_trial(self, trial: Trial) -> None:
        self._insert(
            "trials",
            {
                "study_id": trial.study_id, "number": trial.number,
                "params": json.dumps(trial.params), "state": trial.state.value,
                "value": trial.value, "step": trial.step, "attempts": trial.attempts,
                "error": trial.error, "created_at": trial.created_at, "ended_at": trial.ended_at,
            }
        )

    def update_trial(self, trial: Trial) -> None:
        self.conn.execute(
            "UPDATE trials SET state = ?, value = ?, step = ?, attempts = ?, error = ?, "
            "ended_at = ? WHERE study_id = ? AND number = ?",
            (trial.state.value, trial.value, trial.step, trial.attempts, trial.error,
             trial.ended_at, trial.study_id, trial.number),
        )

    @staticmethod
    def _trial(row: dict[str, Any]) -> Trial:
        return Trial(
            study_id=row["study_id"], number=row["number"], params=json.loads(row["params"]),
            state=TrialState(row["state"]), value=row["value"], step=row["step"],
            attempts=row["attempts"], error=row["error"], created_at=row["created_at"],
            ended_at=row["ended_at"],
        )

    def get_trial(self, study_id: str, number: int) -> Trial:
        row = self._one(
            "SELECT * FROM trials WHERE study_id = ? AND number = ?", (study_id, number)
        )
        if row is None:
            raise NotFoundError(f"trial {number} of study {study_id!r} does not exist")
        return self._trial(row)

    def list_trials(self, study_id: str, state: TrialState | None = None, start: int = 0,
                    limit: int | None = None) -> list[Trial]:
        """The study's trials numbered ``start`` or more (in ``state``), in number order; at
        most ``limit`` of them."""
        sql = "SELECT * FROM trials WHERE study_id = ? AND number >= ?"
        params: tuple[Any, ...] = (study_id, start)
        if state is not None:
            sql += " AND state = ?"
            params += (state.value,)
        sql += " ORDER BY number"
        if limit is not None:
            sql += " LIMIT ?"
            params += (limit,)
        return [self._trial(r) for r in self.db.query(sql, params)]

    def trial_counts(self, study_id: str) -> dict[TrialState, int]:
        counts = {s: 0 for s in TrialState}
        for row in self.db.query(
            "SELECT state, COUNT(*) AS n FROM trials WHERE study_id = ? GROUP BY state",
            (study_id,),
        ):
            counts[TrialState(row["state"])] = row["n"]
        return counts

    # attempts ------------------------------------------------------------------------------

    def insert_attempt(self, attempt: Attempt) -> int:
        cursor = self.conn.execute(
            "INSERT INTO attempts (study_id, trial_number, node_id, state, gpu_uuids, "
            "lease_deadline, started_at, purpose, price_gpu_hour, price_slot_hour, seen_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (attempt.study_id, attempt.trial_number, attempt.node_id, attempt.state.value,
             json.dumps(attempt.gpu_uuids), attempt.lease_deadline, attempt.started_at,
             attempt.purpose, attempt.price_gpu_hour, attempt.price_slot_hour,
             attempt.started_at),
        )
        attempt.id = int(cursor.lastrowid or 0)
        return attempt.id

    def update_attempt(self, attempt: Attempt) -> None:
        self.conn.execute(
            "UPDATE attempts SET state = ?, lease_deadline = ?, ended_at = ?, exit_code = ?, "
            "error = ?, gpu_seconds = ?, wall_seconds = ?, late_reports = ?, "
            "gpu_utilization = ?, gpu_memory_peak_gb = ? WHERE id = ?",
            (attempt.state.value, attempt.lease_deadline, attempt.ended_at, attempt.exit_code,
             attempt.error, attempt.gpu_seconds, attempt.wall_seconds, attempt.late_reports,
             attempt.gpu_utilization, attempt.gpu_memory_peak_gb, attempt.id),
        )

    @staticmethod
    def _attempt(row: dict[str, Any]) -> Attempt:
        return Attempt(
            id=row["id"], study_id=row["study_id"], trial_number=row["trial_number"],
            node_id=row["node_id"], state=AttemptState(row["state"]),
            gpu_uuids=json.loads(row["gpu_uuids"]), lease_deadline=row["lease_deadline"],
            started_at=row["started_at"], ended_at=row["ended_at"], exit_code=row["exit_code"],
            error=row["error"], gpu_seconds=row["gpu_seconds"],
            wall_seconds=row["wall_seconds"], late_reports=row["late_reports"],
            purpose=row["purpose"], gpu_utilization=row["gpu_utilization"],
            gpu_memory_peak_gb=row["gpu_memory_peak_gb"], price_gpu_hour=row["price_gpu_hour"],
            price_slot_hour=row["price_slot_hour"], seen_at=row["seen_at"],
        )

    def get_attempt(self, attempt_id: int) -> Attempt:
        row = self._one("SELECT * FROM attempts WHERE id = ?", (attempt_id,))
        if row is None:
            raise NotFoundError(f"attempt {attempt_id} does not exist")
        return self._attempt(row)

    def running_attempts(self, node_id: str | None = None) -> list[Attempt]:
        sql = "SELECT * FROM attempts WHERE state = 'running'"
        params: tuple[Any, ...] = ()
        if node_id is not None:
            sql += " AND node_id = ?"
            params = (node_id,)
        return [self._attempt(r) for r in self.db.query(sql + " ORDER BY id", params)]

    def attempt_usage(self, study_id: str, now: float) -> tuple[float, float, float]:
        """``(GPU-seconds, slot-seconds, credits)`` a study's attempts held, lease to end
        (running ones to ``now``), at the prices each was leased at; one aggregate query."""
        row = self.conn.execute(
            f"SELECT {USAGE_COLUMNS} FROM attempts WHERE study_id = :study",
            {"now": now, "study": study_id},
        ).fetchone()
        return float(row[0]), float(row[1]), float(row[2])

    def running_count(self, study_id: str) -> int:
        """The study's attempts still running, re-runs that verify results included."""
        row = self.conn.execute("SELECT COUNT(*) FROM attempts WHERE study_id = ? AND "
                                "state = 'running'", (study_id,)).fetchone()
        return int(row[0])

    def attempts_of_trial(self, study_id: str, number: int) -> list[Attempt]:
        rows = self.db.query(
            "SELECT * FROM attempts WHERE study_id = ? AND trial_number = ? "
            "AND purpose = 'trial' ORDER BY id",
            (study_id, number),
        )
        return [self._attempt(r) for r in rows]

    def extend_leases(self, node_id: str, attempt_ids: list[int], deadline: float,
                      seen: float | None) -> None:
        """The node's running attempts' leases last to ``deadline``; they showed life at
        ``seen`` (None: no news of them, their last sign of life stays)."""
        self.conn.executemany(
            "UPDATE attempts SET lease_deadline = ?, seen_at = COALESCE(?, seen_at) "
            "WHERE id = ? AND node_id = ? AND state = 'running'",
            [(deadline, seen, a, node_id) for a in attempt_ids],
        )

    # reports -------------------------------------------------------------------------------

    def get_report_decision(self, attempt_id: int, seq: int) -> str | None:
        row = self._one(
            "SELECT decision FROM reports WHERE attempt_id = ? AND seq = ?", (attempt_id, seq)
        )
        return None if row is None else str(row["decision"])

    def insert_report(
        self, attempt: Attempt, seq: int, step: int, metrics: dict[str, float], decision: str,
        envelope: bytes, now: float,
    ) -> None:
        self.conn.execute(
            "INSERT INTO reports (attempt_id, seq, study_id, trial_number, step, metrics, "
            "decision, envelope, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (attempt.id, seq, attempt.study_id, attempt.trial_number, step,
             json.dumps(metrics), decision, envelope, now),
        )

    def shown_attempt(self, study_id: str, number: int, step: int) -> int | None:
        """The trial attempt whose reports researchers see: the latest that reported ``step``
        (the trial's step, so its value) or beyond, else the latest that reported; None if
        no trial attempt reported."""
        row = self._one(
            "SELECT r.attempt_id AS id FROM reports r JOIN attempts a ON a.id = r.attempt_id "
            "WHERE r.study_id = ? AND r.trial_number = ? AND a.purpose = 'trial' "
            "GROUP BY r.attempt_id ORDER BY MAX(r.step) >= ? DESC, r.attempt_id DESC LIMIT 1",
            (study_id, number, step),
        )
        return None if row is None else int(row["id"])

    def attempt_reports(self, attempt_id: int, offset: int, limit: int,
                        max_step: int = 2**62) -> list[dict[str, Any]]:
        """At most ``limit`` of an attempt's reports (step and metrics) at ``max_step`` or
        before, in the order sent, from the ``offset``-th."""
        rows = self.conn.execute(
            "SELECT step, metrics FROM reports WHERE attempt_id = ? AND step <= ? ORDER BY seq "
            "LIMIT ? OFFSET ?",
            (attempt_id, max_step, limit, offset),
        ).fetchall()
        return [{"step": step, "metrics": json.loads(metrics)} for step, metrics in rows]

    def reports_of_study(self, study_id: str) -> list[dict[str, Any]]:
        """The reports of the study's trial attempts (re-runs for verification left out)."""
        rows = self.db.query(
            "SELECT r.attempt_id, r.seq, r.trial_number, r.step, r.metrics FROM reports r "
            "JOIN attempts a ON a.id = r.attempt_id WHERE r.study_id = ? "
            "AND a.purpose = 'trial' ORDER BY r.trial_number, r.attempt_id, r.seq",
            (study_id,),
        )
        return [dict(r, metrics=json.loads(r["metrics"])) for r in rows]

    # nodes ---------------------------------------------------------------------------------

    def upsert_node(self, node: Node) -> None:
        self.conn.execute(
            "INSERT INTO nodes (id, public_key, name, inventory, registered_at, last_seen) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET name = excluded.name, "
            "inventory = excluded.inventory, last_seen = excluded.last_seen",
            (node.id, node.public_key, node.name, node.inventory, node.registered_at,
             node.last_seen),
        )

    def node_seen(self, node_id: str, now: float) -> None:
        """The node showed life (a session opened, a heartbeat) at ``now``."""
        self.conn.execute("UPDATE nodes SET last_seen = ? WHERE id = ?", (now, node_id))

    def get_node(self, node_id: str) -> Node:
        row = self._one("SELECT * FROM nodes WHERE id = ?", (node_id,))
        if row is None:
            raise NotFoundError(f"node {node_id!r} is not registered")
        return Node(**row)

    def list_nodes(self) -> list[Node]:
        return [Node(**r) for r in self.db.query("SELECT * FROM nodes ORDER BY registered_at")]

    # verification --------------------------------------------------------------------------

    def add_verification(self, study_id: str, trial: int, node_id: str, value: float,
                         reason: str, now: float) -> bool:
        """Queue a re-run of a finished trial; False if one exists already."""
        cursor = self.conn.execute(
            "INSERT OR IGNORE INTO verifications (study_id, trial_number, original_node_id, "
            "original_value, reason, state, created_at) VALUES (?, ?, ?, ?, ?, 'pending', ?)",
            (study_id, trial, node_id, value, reason, now),
        )
        return cursor.rowcount > 0

    def verifications(self, study_id: str, state: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM verifications WHERE study_id = ?"
        params: tuple[Any, ...] = (study_id,)
        if state is not None:
            sql += " AND state = ?"
            params += (state,)
        return list(self.db.query(sql + " ORDER BY id", params))

    def verification_of(self, study_id: str, trial: int) -> dict[str, Any] | None:
        return self._one("SELECT * FROM verifications WHERE study_id = ? AND trial_number = ?",
                         (study_id, trial))

    def verification_by_attempt(self, attempt_id: int) -> dict[str, Any] | None:
        return self._one("SELECT * FROM verifications WHERE attempt_id = ?", (attempt_id,))

    def update_verification(self, verification_id: int, **fields: Any) -> None:
        columns = ", ".join(f"{name} = ?" for name in fields)
        self.conn.execute(f"UPDATE verifications SET {columns} WHERE id = ?",
                          (*fields.values(), verification_id))

    def rate_node(self, node_id: str, reputation: float, flag: bool) -> None:
        self.conn.execute(
            "UPDATE nodes SET reputation = ?, flagged = MAX(flagged, ?) WHERE id = ?",
            (reputation, int(flag), node_id),
        )

    def last_value(self, attempt_id: int, metric: str) -> float | None:
        """The attempt's last reported value of ``metric``, if any."""
        for row in self.db.query(
            "SELECT metrics FROM reports WHERE attempt_id = ? ORDER BY seq DESC", (attempt_id,)
        ):
            value = json.loads(row["metrics"]).get(metric)
            if value is not None:
                return float(value)
        return None

    # access and replay protection ----------------------------------------------------------

    def set_access(self, key_id: str, state: str, reason: str, now: float) -> None:
        self.conn.execute(
            "INSERT INTO access (key_id, state, reason, changed_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(key_id) DO UPDATE SET state = excluded.state, reason = excluded.reason, "
            "changed_at = excluded.changed_at",
            (key_id, state, reason, now),
        )

    def remove_access(self, key_id: str) -> None:
        self.conn.execute("DELETE FROM access WHERE key_id = ?", (key_id,))

    def get_access(self, key_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM access WHERE key_id = ?", (key_id,))

    def list_access(self) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT * FROM access ORDER BY changed_at"))

    def last_seq(self, key_id: str) -> int | None:
        row = self._one("SELECT last_seq FROM signer_seq WHERE key_id = ?", (key_id,))
        return None if row is None else int(row["last_seq"])

    def save_seq(self, key_id: str, seq: int) -> None:
        self.conn.execute(
            "INSERT INTO signer_seq (key_id, last_seq) VALUES (?, ?) ON CONFLICT(key_id) "
            "DO UPDATE SET last_seq = excluded.last_seq",
            (key_id, seq),
        )

    # scheduler events ----------------------------------------------------------------------

    def append_event(
        self, study_id: str, kind: str, trial: int, step: int | None = None,
        value: float | None = None,
    ) -> None:
        self.conn.execute(
            "INSERT INTO scheduler_events (study_id, kind, trial_number, step, value) "
            "VALUES (?, ?, ?, ?, ?)",
            (study_id, kind, trial, step, value),
        )

    def events(self, study_id: str) -> list[SchedulerEvent]:
        rows = self.conn.execute(
            "SELECT kind, trial_number, step, value FROM scheduler_events WHERE study_id = ? "
            "ORDER BY id",
            (study_id,),
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]
