"""Deletion records in the vault's store: what was shredded, who confirmed their purge, the certificate."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from dataclasses import dataclass, field

SCHEMA = """
CREATE TABLE IF NOT EXISTS deletions (
    deletion_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    subject_id TEXT NOT NULL UNIQUE,
    reason INTEGER NOT NULL,
    requested_at REAL NOT NULL,
    key_shredded_at REAL NOT NULL,
    expected_services TEXT NOT NULL,
    announced INTEGER NOT NULL DEFAULT 0,
    certified_at REAL,
    certificate BLOB,
    purged INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS purge_confirmations (
    deletion_id TEXT NOT NULL,
    service TEXT NOT NULL,
    confirmed_at REAL NOT NULL,
    destroyed TEXT NOT NULL,
    PRIMARY KEY (deletion_id, service)
);
"""
COLUMNS = ("deletion_id, tenant_id, subject_id, reason, requested_at, key_shredded_at, expected_services,"
           " announced, certified_at, certificate, purged")
# How far a service's clock may run ahead of the vault's, or its confirmation precede the request.
MAX_CLOCK_SKEW_S = 300.0


@dataclass(frozen=True)
class Confirmation:
    service: str
    confirmed_at: float
    destroyed: dict[str, int]


@dataclass(frozen=True)
class DeletionRecord:
    deletion_id: str
    tenant_id: str
    subject_id: str
    reason: int
    requested_at: float
    key_shredded_at: float
    expected_services: tuple[str, ...]
    announced: bool
    certified_at: float | None = None
    certificate: bytes | None = None
    confirmations: tuple[Confirmation, ...] = field(default=())
    # Whether the deletion's messages were erased from NATS after certification.
    purged: bool = False

    @property
    def waiting_for(self) -> list[str]:
        confirmed = {confirmation.service for confirmation in self.confirmations}
        return [service for service in self.expected_services if service not in confirmed]


def migrate(db: sqlite3.Connection) -> None:
    db.executescript(SCHEMA)
    if "purged" not in {row[1] for row in db.execute("PRAGMA table_info(deletions)")}:
        # Certified before this column existed: purged again once (purging is idempotent) to be sure.
        db.execute("ALTER TABLE deletions ADD COLUMN purged INTEGER NOT NULL DEFAULT 0")


def insert(db: sqlite3.Connection, record: DeletionRecord) -> None:
    db.execute(
        f"INSERT INTO deletions ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, 0, NULL, NULL, 0)",
        (record.deletion_id, record.tenant_id, record.subject_id, record.reason, record.requested_at,
         record.key_shredded_at, json.dumps(list(record.expected_services))),
    )


def find(db: sqlite3.Connection, where: str, args: tuple) -> DeletionRecord | None:
    row = db.execute(f"SELECT {COLUMNS} FROM deletions WHERE {where}", args).fetchone()
    return None if row is None else _record(db, row)


def unfinished(db: sqlite3.Connection) -> list[DeletionRecord]:
    rows = db.execute(f"SELECT {COLUMNS} FROM deletions WHERE certified_at IS NULL OR purged = 0").fetchall()
    return [_record(db, row) for row in rows]


def mark(db: sqlite3.Connection, deletion_id: str, flag: str) -> None:
    assert flag in ("announced", "purged")
    db.execute(f"UPDATE deletions SET {flag} = 1 WHERE deletion_id = ?", (deletion_id,))


def certify(db: sqlite3.Connection, deletion_id: str, certificate: bytes, certified_at: float) -> bool:
    """False when the deletion already has a certificate (two certifications raced)."""
    cursor = db.execute(
        "UPDATE deletions SET certificate = ?, certified_at = ? WHERE deletion_id = ? AND certificate IS NULL",
        (certificate, certified_at, deletion_id),
    )
    return cursor.rowcount == 1


def plausible(confirmation: Confirmation, requested_at: float, received_at: float) -> Confirmation:
    """The confirmation with a time a certificate can state: the service's own, unless it precedes the
    request or lies ahead of the vault's receipt (beyond clock skew); then the time of receipt."""
    if requested_at - MAX_CLOCK_SKEW_S <= confirmation.confirmed_at <= received_at + MAX_CLOCK_SKEW_S:
        return confirmation
    return dataclasses.replace(confirmation, confirmed_at=received_at)


def add_confirmation(db: sqlite3.Connection, deletion_id: str, confirmation: Confirmation) -> bool:
    """False when this service had already confirmed (a redelivered confirmation)."""
    cursor = db.execute(
        "INSERT OR IGNORE INTO purge_confirmations (deletion_id, service, confirmed_at, destroyed)"
        " VALUES (?, ?, ?, ?)",
        (deletion_id, confirmation.service, confirmation.confirmed_at,
         json.dumps(confirmation.destroyed, sort_keys=True)),
    )
    return cursor.rowcount == 1


def _record(db: sqlite3.Connection, row: tuple) -> DeletionRecord:
    (deletion_id, tenant_id, subject_id, reason, requested_at, key_shredded_at, expected, announced,
     certified_at, certificate, purged) = row
    confirmations = tuple(
        Confirmation(service, confirmed_at, json.loads(destroyed))
        for service, confirmed_at, destroyed in db.execute(
            "SELECT service, confirmed_at, destroyed FROM purge_confirmations WHERE deletion_id = ?"
            " ORDER BY confirmed_at", (deletion_id,))
    )
    return DeletionRecord(
        deletion_id, tenant_id, subject_id, reason, requested_at, key_shredded_at, tuple(json.loads(expected)),
        bool(announced), certified_at, certificate, confirmations, bool(purged),
    )
