"""The vault's append-only audit log in its sqlite store: hash-chained entries and signed checkpoints.

Appends run inside the vault's lock and the caller's transaction, so an operation and its audit entry commit
together or not at all: the vault fails closed. Reads for an export or a verification (`page`) run on a
connection of their own (audit_export.py), a page at a time, outside the lock."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from services.common.audit_chain import ENTRY_FIELDS, GENESIS_HASH, checkpoint_body, entry_hash, entry_record
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
# A subject's export reads its entries by this index (its rowid, the seq, keeps them in order), not by a scan.
INDEXES = "CREATE INDEX IF NOT EXISTS audit_subject ON audit (tenant_id, subject_id);"
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
    db.executescript(INDEXES)  # on a store made before the index: built once, in place


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


def head(db: sqlite3.Connection) -> int:
    return db.execute("SELECT COALESCE(MAX(seq), 0) FROM audit").fetchone()[0]


def page(db: sqlite3.Connection, after: int, through: int, limit: int) -> tuple[list[dict], int]:
    """Up to `limit` entries with seq in (after, through], oldest first, each followed by the checkpoints
    that pin it (as the export writes them), and the last seq read (keyset pagination: a page is two short
    reads by primary key; entries and their checkpoints never change once written, and entries appended
    meanwhile are past `through`, so pages read at different moments join exactly)."""
    rows = db.execute(f"SELECT {COLUMNS} FROM audit WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                      (after, through, limit)).fetchall()
    if not rows:
        return [], through
    last = rows[-1][0] if len(rows) == limit else through
    pins: dict[int, list[dict]] = {}
    for seq, document in db.execute("SELECT seq, document FROM audit_checkpoints WHERE seq > ? AND seq <= ?"
                                    " ORDER BY seq", (after, last)):
        pins.setdefault(seq, []).append(json.loads(document))
    records = []
    for row in rows:
        records.append(_record(row))
        records += pins.pop(row[0], [])
    return records + [checkpoint for seq in sorted(pins) for checkpoint in pins[seq]], last


def subject_records(db: sqlite3.Connection, tenant_id: str, subject_id: str) -> list[dict]:
    """The entries about one subject of one tenant, oldest first (chain fields included, so each can be
    matched against a full export). Read through the audit_subject index, never by scanning the log."""
    rows = db.execute(
        f"SELECT {COLUMNS} FROM audit WHERE tenant_id = ? AND subject_id = ? ORDER BY seq", (tenant_id, subject_id)
    )
    return [_record(row) for row in rows]


def _record(row: tuple) -> dict:
    seq, at, *fields, prev_hash, row_hash = row
    return entry_record(seq, at, dict(zip(ENTRY_FIELDS, fields, strict=True)), prev_hash, row_hash)
