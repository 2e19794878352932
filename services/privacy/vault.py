"""The vault's store: subjects with their wrapped data keys and consent, and a hash-chained audit log.

One sqlite connection, serialised by a lock and used only from worker threads so the event loop
never blocks on disk. Data keys exist in plaintext only in memory, between unwrap and reply.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from studio.v1 import common_pb2

from services.privacy.kek import KekProvider

T = TypeVar("T")

DEK_BYTES = 32
GENESIS_HASH = "0" * 64

SCHEMA = """
CREATE TABLE IF NOT EXISTS subjects (
    subject_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    key_id TEXT NOT NULL UNIQUE,
    key_version INTEGER NOT NULL,
    kek_version INTEGER NOT NULL,
    wrapped_dek BLOB NOT NULL,
    consent_proto BLOB NOT NULL,
    created_at TEXT NOT NULL
);
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
    hash TEXT NOT NULL
);
"""


class VaultError(Exception):
    pass


class SubjectNotFound(VaultError):
    """Unknown subject, or a subject of another tenant (callers must not be able to tell which)."""


class SubjectIdTaken(VaultError):
    """The subject id is already registered under another tenant."""


@dataclass(frozen=True)
class DataKey:
    key: bytes = field(repr=False)
    key_id: str
    key_version: int


@dataclass(frozen=True)
class Registration:
    key_id: str
    key_version: int
    created: bool


@dataclass(frozen=True)
class AuditEntry:
    service: str
    action: str
    tenant_id: str
    subject_id: str
    purpose: str
    outcome: str


def vault_path(data_dir: Path) -> Path:
    return Path(data_dir) / "privacy" / "vault.sqlite3"


def key_aad(tenant_id: str, subject_id: str, key_id: str) -> bytes:
    # JSON keeps the binding unambiguous even when ids contain separators.
    return json.dumps(["studio-dek", tenant_id, subject_id, key_id], separators=(",", ":")).encode()


def audit_hash(prev_hash: str, seq: int, at: str, entry: AuditEntry) -> str:
    fields = [seq, at, entry.service, entry.action, entry.tenant_id, entry.subject_id,
              entry.purpose, entry.outcome]
    canonical = json.dumps(fields, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(f"{prev_hash}|{canonical}".encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _create_private_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)


class Vault:
    def __init__(self, path: Path, kek: KekProvider) -> None:
        self._path = Path(path)
        self._kek = kek
        _create_private_file(self._path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    @classmethod
    def open(cls, data_dir: Path, kek: KekProvider) -> Vault:
        return cls(vault_path(data_dir), kek)

    @property
    def path(self) -> Path:
        return self._path

    def close(self) -> None:
        with self._lock:
            self._db.close()

    async def register_subject(
        self, tenant_id: str, subject_id: str, consent: common_pb2.ConsentRecord
    ) -> Registration:
        return await self._run(lambda: self._register_subject(tenant_id, subject_id, consent))

    async def data_key(self, tenant_id: str, subject_id: str) -> DataKey:
        return await self._run(lambda: self._data_key(tenant_id, subject_id))

    async def consent(self, tenant_id: str, subject_id: str) -> common_pb2.ConsentRecord:
        return await self._run(lambda: self._consent(tenant_id, subject_id))

    async def append_audit(self, entry: AuditEntry) -> int:
        return await self._run(lambda: self._append_audit(entry))

    async def verify_audit_chain(self) -> bool:
        return await self._run(self._verify_audit_chain)

    async def _run(self, operation: Callable[[], T]) -> T:
        def locked() -> T:
            with self._lock:
                return operation()

        return await asyncio.to_thread(locked)

    def _register_subject(
        self, tenant_id: str, subject_id: str, consent: common_pb2.ConsentRecord
    ) -> Registration:
        with self._transaction():
            row = self._db.execute(
                "SELECT tenant_id, key_id, key_version FROM subjects WHERE subject_id = ?", (subject_id,)
            ).fetchone()
            if row is not None:
                if row[0] != tenant_id:
                    raise SubjectIdTaken(f"subject id {subject_id!r} belongs to another tenant")
                return Registration(key_id=row[1], key_version=row[2], created=False)
            key_id = f"dek-{uuid.uuid4().hex}"
            kek_version = self._kek.current_version()
            wrapped = self._kek.wrap(
                kek_version, AESGCM.generate_key(bit_length=DEK_BYTES * 8),
                key_aad(tenant_id, subject_id, key_id),
            )
            self._db.execute(
                "INSERT INTO subjects (subject_id, tenant_id, key_id, key_version, kek_version,"
                " wrapped_dek, consent_proto, created_at) VALUES (?, ?, ?, 1, ?, ?, ?, ?)",
                (subject_id, tenant_id, key_id, kek_version, wrapped,
                 consent.SerializeToString(deterministic=True), _now()),
            )
            return Registration(key_id=key_id, key_version=1, created=True)

    def _data_key(self, tenant_id: str, subject_id: str) -> DataKey:
        key_id, key_version, kek_version, wrapped = self._subject_row(
            tenant_id, subject_id, "key_id, key_version, kek_version, wrapped_dek"
        )
        dek = self._kek.unwrap(kek_version, wrapped, key_aad(tenant_id, subject_id, key_id))
        return DataKey(key=dek, key_id=key_id, key_version=key_version)

    def _consent(self, tenant_id: str, subject_id: str) -> common_pb2.ConsentRecord:
        (raw,) = self._subject_row(tenant_id, subject_id, "consent_proto")
        return common_pb2.ConsentRecord.FromString(raw)

    def _subject_row(self, tenant_id: str, subject_id: str, columns: str) -> tuple:
        row = self._db.execute(
            f"SELECT {columns} FROM subjects WHERE subject_id = ? AND tenant_id = ?",
            (subject_id, tenant_id),
        ).fetchone()
        if row is None:
            raise SubjectNotFound(f"subject {subject_id!r} not found for tenant {tenant_id!r}")
        return row

    def _append_audit(self, entry: AuditEntry) -> int:
        with self._transaction():
            last = self._db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            prev_seq, prev_hash = last if last else (0, GENESIS_HASH)
            seq, at = prev_seq + 1, _now()
            self._db.execute(
                "INSERT INTO audit (seq, at, service, action, tenant_id, subject_id, purpose, outcome,"
                " prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, at, entry.service, entry.action, entry.tenant_id, entry.subject_id, entry.purpose,
                 entry.outcome, prev_hash, audit_hash(prev_hash, seq, at, entry)),
            )
            return seq

    def _verify_audit_chain(self) -> bool:
        rows = self._db.execute(
            "SELECT seq, at, service, action, tenant_id, subject_id, purpose, outcome, prev_hash, hash"
            " FROM audit ORDER BY seq"
        )
        expected_seq, expected_prev = 1, GENESIS_HASH
        for seq, at, *fields, prev_hash, row_hash in rows:
            entry = AuditEntry(*fields)
            if seq != expected_seq or prev_hash != expected_prev:
                return False
            if audit_hash(prev_hash, seq, at, entry) != row_hash:
                return False
            expected_seq, expected_prev = seq + 1, row_hash
        return True

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT/ROLLBACK on an autocommit connection (the caller holds the lock)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, traceback) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
