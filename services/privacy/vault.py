"""The vault's store: subjects with their wrapped data keys, consent and expiry; deletions; and the
hash-chained audit log (audit_log.py).

One sqlite connection, serialised by a lock and used only from worker threads so the event loop
never blocks on disk. Data keys exist in plaintext only in memory, between unwrap and reply.
secure_delete overwrites a shredded key's bytes in the file; a WAL checkpoint clears its old copy.
Exports and verifications of the audit log read on connections of their own, a page at a time, outside the
lock (audit_export.py). A full store (SQLITE_FULL) is raised as StorageFull.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from studio.v1 import common_pb2

from services.common.audit_chain import ChainVerdict
from services.common.signatures import SigningKey
from services.privacy import audit_log, confirmation_repair, consent_terms, deletion_records
from services.privacy.audit_export import AuditExport, verify_store
from services.privacy.audit_log import AuditEntry, now_iso
from services.privacy.deletion_records import Confirmation, DeletionRecord
from services.privacy.kek import KekProvider
from services.privacy.store import StorageFull, Transaction, create_private_file, is_storage_full, stored_holdings
from services.privacy.vault_types import (
    ConsentConflict,
    DataKey,
    Registration,
    Rotation,
    RotationUnderWay,
    ShredRequest,
    SubjectIdTaken,
    SubjectNotFound,
)

T = TypeVar("T")

DEK_BYTES = 32

SCHEMA = """
CREATE TABLE IF NOT EXISTS subjects (
    subject_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    key_id TEXT NOT NULL UNIQUE,
    key_version INTEGER NOT NULL,
    kek_version INTEGER NOT NULL,
    wrapped_dek BLOB NOT NULL,
    consent_proto BLOB NOT NULL,
    created_at TEXT NOT NULL,
    expires_at REAL
);
"""
REWRAP_BATCH = 200


def vault_path(data_dir: Path) -> Path:
    return Path(data_dir) / "privacy" / "vault.sqlite3"


def key_aad(tenant_id: str, subject_id: str, key_id: str) -> bytes:
    # JSON keeps the binding unambiguous even when ids contain separators.
    return json.dumps(["studio-dek", tenant_id, subject_id, key_id], separators=(",", ":")).encode()


class Vault:
    def __init__(
        self, path: Path, kek: KekProvider, signer: SigningKey | None = None, *,
        clock: Callable[[], float] = time.time, checkpoint_every: int = 64,
    ) -> None:
        self._path = Path(path)
        self._kek = kek
        self.signer = signer or SigningKey.from_file(
            self._path.parent / "signing-key.pem", create=not stored_holdings(self._path).signed_documents
        )
        self.clock = clock
        self._checkpoint_every = checkpoint_every
        create_private_file(self._path)
        self._lock = threading.Lock()
        self._rotation = asyncio.Lock()
        self._db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.executescript(SCHEMA)
        deletion_records.migrate(self._db)
        audit_log.migrate(self._db)
        confirmation_repair.repair_confirmation_times(self._db, self.clock(), self._audit)
        if "expires_at" not in {row[1] for row in self._db.execute("PRAGMA table_info(subjects)")}:
            self._db.execute("ALTER TABLE subjects ADD COLUMN expires_at REAL")

    @classmethod
    def open(cls, data_dir: Path, kek: KekProvider, signer: SigningKey | None = None, **options) -> Vault:
        return cls(vault_path(data_dir), kek, signer, **options)

    @property
    def path(self) -> Path:
        return self._path

    def close(self) -> None:
        with self._lock:
            self._db.close()

    async def _run(self, operation: Callable[[], T]) -> T:
        def locked() -> T:
            with self._lock:
                try:
                    return operation()
                except sqlite3.Error as error:
                    if is_storage_full(error):
                        raise StorageFull(self._path) from error
                    raise

        return await asyncio.to_thread(locked)

    def _transaction(self) -> Transaction:
        return Transaction(self._db)

    # --- subjects and keys -------------------------------------------------------------------

    async def register_subject(
        self, tenant_id: str, subject_id: str, consent: common_pb2.ConsentRecord, audit: AuditEntry | None = None
    ) -> Registration:
        return await self._run(lambda: self._register_subject(tenant_id, subject_id, consent, audit))

    async def data_key(self, tenant_id: str, subject_id: str) -> DataKey:
        return await self._run(lambda: self._data_key(tenant_id, subject_id))

    async def consent(self, tenant_id: str, subject_id: str) -> common_pb2.ConsentRecord:
        return await self._run(lambda: self._consent(tenant_id, subject_id))

    async def expired_subjects(self) -> list[tuple[str, str]]:
        now = self.clock()
        return await self._run(lambda: self._db.execute(
            "SELECT tenant_id, subject_id FROM subjects WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
        ).fetchall())

    def _register_subject(
        self, tenant_id: str, subject_id: str, consent: common_pb2.ConsentRecord, audit: AuditEntry | None
    ) -> Registration:
        with self._transaction():
            row = self._db.execute(
                "SELECT tenant_id, key_id, key_version, consent_proto FROM subjects WHERE subject_id = ?",
                (subject_id,)
            ).fetchone()
            if row is not None:
                return self._registered_again(tenant_id, subject_id, consent, audit, row)
            if self._db.execute("SELECT 1 FROM deletions WHERE subject_id = ?", (subject_id,)).fetchone():
                raise SubjectIdTaken(f"subject id {subject_id!r} was deleted and cannot be reused")
            consent = consent_terms.stamped(consent, self.clock())
            key_id = f"dek-{uuid.uuid4().hex}"
            kek_version = self._kek.current_version()
            wrapped = self._kek.wrap(
                kek_version, AESGCM.generate_key(bit_length=DEK_BYTES * 8),
                key_aad(tenant_id, subject_id, key_id),
            )
            self._db.execute(
                "INSERT INTO subjects (subject_id, tenant_id, key_id, key_version, kek_version,"
                " wrapped_dek, consent_proto, created_at, expires_at) VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?)",
                (subject_id, tenant_id, key_id, kek_version, wrapped,
                 consent.SerializeToString(deterministic=True), now_iso(), consent_terms.expires_at(consent)),
            )
            if audit:
                self._audit(audit)
            return Registration(key_id=key_id, key_version=1, created=True)

    def _registered_again(
        self, tenant_id: str, subject_id: str, consent: common_pb2.ConsentRecord, audit: AuditEntry | None,
        row: tuple,
    ) -> Registration:
        """A repeat (ingest retrying a creation) is idempotent when it asks for the consent on record."""
        stored_tenant, key_id, key_version, stored_consent = row
        if stored_tenant != tenant_id:
            raise SubjectIdTaken(f"subject id {subject_id!r} belongs to another tenant")
        if not consent_terms.same(common_pb2.ConsentRecord.FromString(stored_consent), consent):
            raise ConsentConflict(f"subject {subject_id!r} is already registered with other consent terms")
        if audit:
            self._audit(dataclasses.replace(audit, detail=json.dumps({"already_registered": True})))
        return Registration(key_id=key_id, key_version=key_version, created=False)

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

    # --- master key rotation -----------------------------------------------------------------

    async def rotate_kek(self, requested_by: str) -> Rotation:
        """A new KEK version; every data key rewrapped under it in small transactions (so key reads
        go on in between); then every version no key uses any more is retired. One rotation at a time:
        a second request while one runs is refused (RotationUnderWay) rather than queued behind it."""
        if self._rotation.locked():
            raise RotationUnderWay("a master key rotation is under way; ask again once it has finished")
        async with self._rotation:
            return await self._rotate(requested_by)

    async def _rotate(self, requested_by: str) -> Rotation:
        new_version = await self._run(self._kek.add_version)
        rewrapped = 0
        while True:
            batch = await self._run(lambda: self._rewrap_batch(new_version))
            if not batch:
                break
            rewrapped += batch
        retired = await self._run(lambda: self._retire_unused(new_version))
        detail = json.dumps({"new_version": new_version, "rewrapped": rewrapped, "retired": retired})
        await self.append_audit(AuditEntry(requested_by, "RotateKek", "", "", "", "ALLOWED", detail))
        return Rotation(new_version, rewrapped, retired)

    def _rewrap_batch(self, version: int) -> int:
        with self._transaction():
            rows = self._db.execute(
                "SELECT subject_id, tenant_id, key_id, kek_version, wrapped_dek FROM subjects"
                " WHERE kek_version != ? LIMIT ?", (version, REWRAP_BATCH),
            ).fetchall()
            for subject_id, tenant_id, key_id, old_version, wrapped in rows:
                aad = key_aad(tenant_id, subject_id, key_id)
                rewrapped = self._kek.wrap(version, self._kek.unwrap(old_version, wrapped, aad), aad)
                self._db.execute(
                    "UPDATE subjects SET wrapped_dek = ?, kek_version = ? WHERE subject_id = ?",
                    (rewrapped, version, subject_id),
                )
        return len(rows)

    def _retire_unused(self, current: int) -> list[int]:
        in_use = {version for (version,) in self._db.execute("SELECT DISTINCT kek_version FROM subjects")}
        retired = [version for version in self._kek.versions() if version != current and version not in in_use]
        if retired:
            self._kek.retire(retired)
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # old wrappings leave the WAL too
        return retired

    # --- deletion ------------------------------------------------------------------------------

    async def shred(self, request: ShredRequest) -> DeletionRecord:
        """Destroy the subject's wrapped data key and open its deletion record, atomically with the
        audit entry. Idempotent: a subject already being deleted returns its existing record."""
        return await self._run(lambda: self._shred(request))

    def _shred(self, request: ShredRequest) -> DeletionRecord:
        with self._transaction():
            existing = deletion_records.find(
                self._db, "subject_id = ? AND tenant_id = ?", (request.subject_id, request.tenant_id)
            )
            if existing:
                return existing
            self._subject_row(request.tenant_id, request.subject_id, "1")
            now = self.clock()
            record = DeletionRecord(
                f"del_{uuid.uuid4().hex[:20]}", request.tenant_id, request.subject_id, request.reason,
                now, now, request.expected_services, announced=False,
            )
            deletion_records.insert(self._db, record)
            self._db.execute("DELETE FROM subjects WHERE subject_id = ?", (request.subject_id,))
            for entry in request.extra_audit:
                self._audit(entry)
            self._audit(AuditEntry(
                request.requested_by, "ShredKey", request.tenant_id, request.subject_id, "", "SHREDDED",
                json.dumps({"deletion_id": record.deletion_id, "reason": request.reason}),
            ))
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return record

    async def deletion(
        self, tenant_id: str, *, deletion_id: str = "", subject_id: str = ""
    ) -> DeletionRecord | None:
        where, args = ("deletion_id = ?", deletion_id) if deletion_id else ("subject_id = ?", subject_id)
        return await self._run(
            lambda: deletion_records.find(self._db, f"{where} AND tenant_id = ?", (args, tenant_id))
        )

    async def unfinished_deletions(self) -> list[DeletionRecord]:
        """Deletions not yet certified, or certified with their NATS messages not yet purged."""
        return await self._run(lambda: deletion_records.unfinished(self._db))

    async def mark_announced(self, deletion_id: str) -> None:
        await self._run(lambda: deletion_records.mark(self._db, deletion_id, "announced"))

    async def mark_purged(self, deletion_id: str) -> None:
        await self._run(lambda: deletion_records.mark(self._db, deletion_id, "purged"))

    async def record_confirmation(self, deletion_id: str, confirmation: Confirmation) -> DeletionRecord | None:
        """Store a service's confirmation (once per service). Its claimed time is kept only where it is
        plausible; otherwise the vault's time of receipt stands in (see deletion_records.plausible)."""
        received_at = self.clock()
        return await self._run(lambda: self._record_confirmation(deletion_id, confirmation, received_at))

    def _record_confirmation(
        self, deletion_id: str, confirmation: Confirmation, received_at: float
    ) -> DeletionRecord | None:
        with self._transaction():
            record = deletion_records.find(self._db, "deletion_id = ?", (deletion_id,))
            if record is None:
                return None
            confirmation = deletion_records.plausible(confirmation, record.requested_at, received_at)
            if deletion_records.add_confirmation(self._db, deletion_id, confirmation):
                self._audit(AuditEntry(
                    confirmation.service, "PurgeConfirmed", record.tenant_id, record.subject_id, "", "CONFIRMED",
                    json.dumps({"deletion_id": deletion_id, "destroyed": confirmation.destroyed}, sort_keys=True),
                ))
            return deletion_records.find(self._db, "deletion_id = ?", (deletion_id,))

    async def store_certificate(self, record: DeletionRecord, certificate: bytes, certified_at: float) -> bool:
        """False (nothing stored) when the deletion was certified meanwhile: it keeps its first certificate."""
        def store() -> bool:
            with self._transaction():
                if not deletion_records.certify(self._db, record.deletion_id, certificate, certified_at):
                    return False
                self._audit(AuditEntry(
                    "privacy", "CertificateIssued", record.tenant_id, record.subject_id, "", "CERTIFIED",
                    json.dumps({"deletion_id": record.deletion_id}),
                ))
                return True

        return await self._run(store)

    # --- audit -----------------------------------------------------------------------------------

    async def append_audit(self, entry: AuditEntry) -> int:
        def append() -> int:
            with self._transaction():
                return self._audit(entry)

        return await self._run(append)

    def _audit(self, entry: AuditEntry) -> int:
        return audit_log.append(self._db, entry, self.signer, self._checkpoint_every)

    async def export_audit(self) -> AuditExport:
        """Sign the head (so entries after the last periodic checkpoint count too); its records are read as they
        are consumed, a page at a time and outside the lock (audit_export.py). Entries appended meanwhile are not
        in this export."""
        def sign_head() -> int:
            with self._transaction():
                return audit_log.checkpoint_head(self._db, self.signer)

        return AuditExport(self._path, await self._run(sign_head))

    async def subject_audit(self, tenant_id: str, subject_id: str) -> list[dict]:
        return await self._run(lambda: audit_log.subject_records(self._db, tenant_id, subject_id))

    async def verify_audit(self) -> ChainVerdict:
        return await asyncio.to_thread(verify_store, self._path, self.signer.public_key)

    async def verify_audit_chain(self) -> bool:
        return (await self.verify_audit()).ok
