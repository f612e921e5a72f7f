"""Numbered schema migrations of the coordinator's SQLite store.

Each migration is a list of SQL statements applied in one transaction; the table
``schema_migrations`` records which numbers have run. Never edit a released migration: add one.
"""

from __future__ import annotations

import sqlite3
import time

from tunefleet.errors import StateError

__all__ = ["MIGRATIONS", "check_usable", "migrate", "current_version"]

MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE bundles (
            digest TEXT PRIMARY KEY,
            size INTEGER NOT NULL,
            publisher_key BLOB NOT NULL,
            publisher_key_id TEXT NOT NULL,
            signature BLOB NOT NULL,
            data BLOB NOT NULL,
            uploaded_at REAL NOT NULL
        )""",
        """CREATE TABLE studies (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            owner_key_id TEXT NOT NULL,
            spec BLOB NOT NULL,
            bundle_digest TEXT NOT NULL REFERENCES bundles(digest),
            state TEXT NOT NULL,
            created_at REAL NOT NULL,
            ended_at REAL,
            end_reason TEXT
        )""",
        """CREATE TABLE trials (
            study_id TEXT NOT NULL REFERENCES studies(id),
            number INTEGER NOT NULL,
            params TEXT NOT NULL,
            state TEXT NOT NULL,
            value REAL,
            step INTEGER,
            attempts INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            created_at REAL NOT NULL,
            ended_at REAL,
            PRIMARY KEY (study_id, number)
        )""",
        """CREATE TABLE nodes (
            id TEXT PRIMARY KEY,
            public_key BLOB NOT NULL,
            name TEXT NOT NULL,
            inventory BLOB NOT NULL,
            registered_at REAL NOT NULL,
            last_seen REAL NOT NULL
        )""",
        """CREATE TABLE attempts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            study_id TEXT NOT NULL,
            trial_number INTEGER NOT NULL,
            node_id TEXT NOT NULL REFERENCES nodes(id),
            state TEXT NOT NULL,
            gpu_uuids TEXT NOT NULL,
            lease_deadline REAL NOT NULL,
            started_at REAL NOT NULL,
            ended_at REAL,
            exit_code INTEGER,
            error TEXT,
            gpu_seconds REAL,
            wall_seconds REAL,
            late_reports INTEGER NOT NULL DEFAULT 0,
            FOREIGN KEY (study_id, trial_number) REFERENCES trials(study_id, number)
        )""",
        "CREATE INDEX attempts_by_state ON attempts(state, node_id)",
        "CREATE INDEX attempts_by_trial ON attempts(study_id, trial_number)",
        """CREATE TABLE reports (
            attempt_id INTEGER NOT NULL REFERENCES attempts(id),
            seq INTEGER NOT NULL,
            study_id TEXT NOT NULL,
            trial_number INTEGER NOT NULL,
            step INTEGER NOT NULL,
            metrics TEXT NOT NULL,
            decision TEXT NOT NULL,
            envelope BLOB NOT NULL,
            received_at REAL NOT NULL,
            PRIMARY KEY (attempt_id, seq)
        )""",
        "CREATE INDEX reports_by_trial ON reports(study_id, trial_number, step)",
        """CREATE TABLE scheduler_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            study_id TEXT NOT NULL REFERENCES studies(id),
            kind TEXT NOT NULL,
            trial_number INTEGER NOT NULL,
            step INTEGER,
            value REAL
        )""",
        "CREATE INDEX scheduler_events_by_study ON scheduler_events(study_id, id)",
    ],
    2: [
        """CREATE TABLE access (
            key_id TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            reason TEXT NOT NULL,
            changed_at REAL NOT NULL
        )""",
        """CREATE TABLE signer_seq (
            key_id TEXT PRIMARY KEY,
            last_seq INTEGER NOT NULL
        )""",
    ],
    3: [
        "ALTER TABLE attempts ADD COLUMN purpose TEXT NOT NULL DEFAULT 'trial'",
        "ALTER TABLE nodes ADD COLUMN reputation REAL NOT NULL DEFAULT 1.0",
        "ALTER TABLE nodes ADD COLUMN flagged INTEGER NOT NULL DEFAULT 0",
        """CREATE TABLE verifications (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            study_id TEXT NOT NULL REFERENCES studies(id),
            trial_number INTEGER NOT NULL,
            original_node_id TEXT NOT NULL,
            original_value REAL NOT NULL,
            reason TEXT NOT NULL,
            state TEXT NOT NULL,
            attempt_id INTEGER,
            node_id TEXT,
            value REAL,
            tries INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            ended_at REAL,
            UNIQUE (study_id, trial_number)
        )""",
    ],
    # the version of the schedulers' defaults a study was submitted with (1: before Hyperband's
    # lean to bracket 0); see coordinator.scheduling.DEFAULTS_VERSION
    4: [
        "ALTER TABLE studies ADD COLUMN scheduling_defaults INTEGER NOT NULL DEFAULT 1",
    ],
    # how hard an attempt used its GPUs, as its node measured it (NULL: not measured)
    5: [
        "ALTER TABLE attempts ADD COLUMN gpu_utilization REAL",
        "ALTER TABLE attempts ADD COLUMN gpu_memory_peak_gb REAL",
    ],
    # the prices an attempt was leased at (credits per hour): the ledger is attempts x prices
    6: [
        "ALTER TABLE attempts ADD COLUMN price_gpu_hour REAL NOT NULL DEFAULT 0",
        "ALTER TABLE attempts ADD COLUMN price_slot_hour REAL NOT NULL DEFAULT 0",
    ],
    # when an attempt last showed life (NULL: from before; its lease deadline tells instead)
    7: [
        "ALTER TABLE attempts ADD COLUMN seen_at REAL",
    ],
}


def current_version(conn: sqlite3.Connection) -> int:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL)"
    )
    row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
    return int(row[0] or 0)


def check_usable(conn: sqlite3.Connection) -> None:
    """Raise :class:`StateError`, reading only, for a database of a newer tunefleet or one that
    holds tables but is not tunefleet's (an empty one is a new database)."""
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    if tables and "schema_migrations" not in tables:
        raise StateError(f"this database is not a tunefleet coordinator's: it holds tables "
                         f"({', '.join(sorted(tables)[:5])}) but no schema_migrations")
    if tables:
        version = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] or 0
        newest = max(MIGRATIONS)
        if version > newest:
            raise StateError(f"database schema version {version} is newer than this "
                             f"coordinator knows ({newest}); upgrade tunefleet")


def migrate(conn: sqlite3.Connection) -> int:
    """Apply every migration newer than the database's version; return the new version.
    Raises as :func:`check_usable` does, changing nothing."""
    check_usable(conn)
    version = current_version(conn)
    newest = max(MIGRATIONS)
    for number in sorted(n for n in MIGRATIONS if n > version):
        with conn:
            for statement in MIGRATIONS[number]:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                (number, time.time()),
            )
    return newest
