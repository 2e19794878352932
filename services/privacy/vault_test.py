"""Vault store: wrapped keys bound to their subject, tenant checks, and the audit hash chain."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from studio.v1 import common_pb2

from services.privacy.kek import FileKek, KekError
from services.privacy.vault import AuditEntry, SubjectIdTaken, SubjectNotFound, Vault

CONSENT = common_pb2.ConsentRecord(
    agreement_version="v1", scopes=[common_pb2.CONSENT_SCOPE_PORTRAIT_GENERATION], retention_days=30
)


@pytest_asyncio.fixture(loop_scope="session")
async def vault(tmp_path: Path) -> AsyncIterator[Vault]:
    store = Vault.open(tmp_path / "data", FileKek(tmp_path / "kek.json"))
    try:
        yield store
    finally:
        store.close()


def entry(outcome: str = "ALLOWED") -> AuditEntry:
    return AuditEntry("ingest", "GetDataKey", "t", "s", "KEY_PURPOSE_ENCRYPT_UPLOAD", outcome)


async def test_register_and_unwrap(vault: Vault) -> None:
    registration = await vault.register_subject("t", "s", CONSENT)
    assert registration.created and registration.key_version == 1
    again = await vault.register_subject("t", "s", CONSENT)
    assert again.key_id == registration.key_id and not again.created
    key = await vault.data_key("t", "s")
    assert len(key.key) == 32 and key.key_id == registration.key_id
    assert key.key.hex() not in repr(key)
    stored = await vault.consent("t", "s")
    assert stored.HasField("granted_at")  # stamped at registration where the caller named no time
    stored.ClearField("granted_at")
    assert stored == CONSENT


async def test_tenant_is_checked_on_every_read(vault: Vault) -> None:
    await vault.register_subject("t", "s", CONSENT)
    with pytest.raises(SubjectIdTaken):
        await vault.register_subject("other", "s", CONSENT)
    with pytest.raises(SubjectNotFound):
        await vault.data_key("other", "s")
    with pytest.raises(SubjectNotFound):
        await vault.consent("other", "s")


async def test_wrapped_key_does_not_open_for_another_subject(vault: Vault) -> None:
    await vault.register_subject("t", "s1", CONSENT)
    await vault.register_subject("t", "s2", CONSENT)
    with sqlite3.connect(vault.path) as db:
        db.execute("UPDATE subjects SET wrapped_dek = (SELECT wrapped_dek FROM subjects WHERE subject_id = 's1')"
                   " WHERE subject_id = 's2'")
    with pytest.raises(KekError):
        await vault.data_key("t", "s2")


async def test_audit_chain_detects_edits_and_deletions(vault: Vault) -> None:
    assert await vault.verify_audit_chain()
    assert [await vault.append_audit(entry()) for _ in range(3)] == [1, 2, 3]
    assert await vault.verify_audit_chain()
    with sqlite3.connect(vault.path) as db:
        db.execute("DELETE FROM audit WHERE seq = 1")
    assert not await vault.verify_audit_chain()


async def test_audit_chain_detects_rewritten_hash(vault: Vault) -> None:
    for outcome in ("ALLOWED", "DENIED_POLICY"):
        await vault.append_audit(entry(outcome))
    with sqlite3.connect(vault.path) as db:
        db.execute("UPDATE audit SET outcome = 'ALLOWED', hash = prev_hash WHERE seq = 2")
    assert not await vault.verify_audit_chain()


async def test_state_survives_reopen(tmp_path: Path) -> None:
    kek = FileKek(tmp_path / "kek.json")
    first = Vault.open(tmp_path / "data", kek)
    await first.register_subject("t", "s", CONSENT)
    key = await first.data_key("t", "s")
    await first.append_audit(entry())
    first.close()
    second = Vault.open(tmp_path / "data", FileKek(tmp_path / "kek.json"))
    try:
        assert (await second.data_key("t", "s")).key == key.key
        assert await second.append_audit(entry()) == 2
        assert await second.verify_audit_chain()
    finally:
        second.close()
