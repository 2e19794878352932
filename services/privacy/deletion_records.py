"""Deletion records in the vault's store: what was shredded, who confirmed their purge, the certificate."""

from __future__ import annotations

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
    certificate BLOB
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
           " announced, certified_at, certificate")


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

    @property
    def waiting_for(self) -> list[str]:
        confirmed = {confirmation.service for confirmation in self.confirmations}
        return [service for service in self.expected_services if service not in confirmed]


def insert(db: sqlite3.Connection, record: DeletionRecord) -> None:
    db.execute(
        f"INSERT INTO deletions ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, 0, NULL, NULL)",
        (record.deletion_id, record.tenant_id, record.subject_id, record.reason, record.requested_at,
         record.key_shredded_at, json.dumps(list(record.expected_services))),
    )


def find(db: sqlite3.Connection, where: str, args: tuple) -> DeletionRecord | None:
    row = db.execute(f"SELECT {COLUMNS} FROM deletions WHERE {where}", args).fetchone()
    return None if row is None else _record(db, row)


def pending(db: sqlite3.Connection) -> list[DeletionRecord]:
    rows = db.execute(f"SELECT {COLUMNS} FROM deletions WHERE certified_at IS NULL").fetchall()
    return [_record(db, row) for row in rows]


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
     certified_at, certificate) = row
    confirmations = tuple(
        Confirmation(service, confirmed_at, json.loads(destroyed))
        for service, confirmed_at, destroyed in db.execute(
            "SELECT service, confirmed_at, destroyed FROM purge_confirmations WHERE deletion_id = ?"
            " ORDER BY confirmed_at", (deletion_id,))
    )
    return DeletionRecord(
        deletion_id, tenant_id, subject_id, reason, requested_at, key_shredded_at, tuple(json.loads(expected)),
        bool(announced), certified_at, certificate, confirmations,
    )
