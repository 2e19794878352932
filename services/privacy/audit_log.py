"""The vault's append-only audit log in its sqlite store: hash-chained entries and signed checkpoints.

Functions here run inside the vault's lock (and, for appends, inside the caller's transaction, so an
operation and its audit entry commit together or not at all: the vault fails closed)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from services.common.audit_chain import (
    ENTRY_FIELDS,
    GENESIS_HASH,
    ChainVerdict,
    checkpoint_body,
    entry_hash,
    entry_record,
    verify_records,
)
from services.common.signatures import SigningKey

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    service TEXT NOT NULL,
    action TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    purpose TEXT NOT NULL,
    outcome TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    seq INTEGER PRIMARY KEY,
    document TEXT NOT NULL
);
"""
COLUMNS = f"seq, at, {', '.join(ENTRY_FIELDS)}, prev_hash, hash"


@dataclass(frozen=True)
class AuditEntry:
    """One decision or step. `detail` is short JSON (ids, counts), never key material or photos."""

    service: str
    action: str
    tenant_id: str
    subject_id: str
    purpose: str
    outcome: str
    detail: str = ""

    def fields(self) -> dict[str, str]:
        return asdict(self)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def migrate(db: sqlite3.Connection) -> None:
    db.executescript(SCHEMA)
    columns = {row[1] for row in db.execute("PRAGMA table_info(audit)")}
    if "detail" not in columns:
        db.execute("ALTER TABLE audit ADD COLUMN detail TEXT NOT NULL DEFAULT ''")


def append(db: sqlite3.Connection, entry: AuditEntry, signer: SigningKey | None, checkpoint_every: int) -> int:
    last = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    prev_seq, prev_hash = last if last else (0, GENESIS_HASH)
    seq, at = prev_seq + 1, now_iso()
    row_hash = entry_hash(prev_hash, seq, at, entry.fields())
    db.execute(
        f"INSERT INTO audit ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (seq, at, entry.service, entry.action, entry.tenant_id, entry.subject_id, entry.purpose,
         entry.outcome, entry.detail, prev_hash, row_hash),
    )
    if signer and checkpoint_every and seq % checkpoint_every == 0:
        _store_checkpoint(db, signer, seq, row_hash)
    return seq


def checkpoint_head(db: sqlite3.Connection, signer: SigningKey) -> int:
    """Sign the current head (done on export), so entries after the last periodic checkpoint count too."""
    last = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    if last is None:
        return 0
    _store_checkpoint(db, signer, last[0], last[1])
    return last[0]


def _store_checkpoint(db: sqlite3.Connection, signer: SigningKey, seq: int, row_hash: str) -> None:
    document = signer.sign(checkpoint_body(seq, row_hash, now_iso()))
    db.execute(
        "INSERT OR REPLACE INTO audit_checkpoints (seq, document) VALUES (?, ?)",
        (seq, json.dumps(document, sort_keys=True)),
    )


def records(db: sqlite3.Connection) -> list[dict]:
    """Entries then checkpoints, as the export writes them (JSON-lines records)."""
    entries = [
        entry_record(seq, at, dict(zip(ENTRY_FIELDS, fields, strict=True)), prev_hash, row_hash)
        for seq, at, *fields, prev_hash, row_hash in db.execute(f"SELECT {COLUMNS} FROM audit ORDER BY rowid")
    ]
    checkpoints = [json.loads(document) for (document,) in
                   db.execute("SELECT document FROM audit_checkpoints ORDER BY seq")]
    return entries + checkpoints


def subject_records(db: sqlite3.Connection, tenant_id: str, subject_id: str) -> list[dict]:
    """The entries about one subject of one tenant, oldest first (chain fields included, so each can be
    matched against a full export)."""
    rows = db.execute(
        f"SELECT {COLUMNS} FROM audit WHERE tenant_id = ? AND subject_id = ? ORDER BY seq", (tenant_id, subject_id)
    )
    return [
        entry_record(seq, at, dict(zip(ENTRY_FIELDS, fields, strict=True)), prev_hash, row_hash)
        for seq, at, *fields, prev_hash, row_hash in rows
    ]


def verify(db: sqlite3.Connection, signer: SigningKey) -> ChainVerdict:
    return verify_records(records(db), signer.public_key)
