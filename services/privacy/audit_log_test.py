"""The audit log: hash chain plus signed checkpoints. Editing, deleting, reordering, rewriting or
truncating entries is found, at the entry where it happened, in the store and in an export."""

from __future__ import annotations

import copy
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from studio.v1 import common_pb2

from services.common.audit_chain import ChainWalk, checkpoint_body, entry_hash, parse_export, verify_records
from services.common.signatures import SigningKey
from services.privacy.audit_export import AuditExport, verify_store
from services.privacy.audit_log import AuditEntry
from services.privacy.kek import FileKek
from services.privacy.vault import SubjectNotFound, Vault

ENTRIES = 25
CHECKPOINT_EVERY = 10


@pytest_asyncio.fixture(loop_scope="session")
async def vault(tmp_path: Path) -> AsyncIterator[Vault]:
    store = Vault.open(tmp_path / "data", FileKek(tmp_path / "kek.json"),
                       SigningKey.from_file(tmp_path / "signing.pem"), checkpoint_every=CHECKPOINT_EVERY)
    for index in range(ENTRIES):
        await store.append_audit(AuditEntry("ingest", "GetDataKey", "t", f"s{index}", "KEY_PURPOSE_X", "ALLOWED"))
    try:
        yield store
    finally:
        store.close()


async def exported(vault: Vault) -> list[dict]:
    return [record async for record in await vault.export_audit()]


def entries(records: list[dict]) -> list[dict]:
    return [r for r in records if r["type"] == "entry"]


async def test_untouched_log_verifies_with_periodic_and_head_checkpoints(vault: Vault) -> None:
    records = await exported(vault)
    verdict = verify_records(records, vault.signer.public_key)
    assert verdict.ok and verdict.entries == ENTRIES
    assert [r["seq"] for r in records if r["type"] == "checkpoint"] == [10, 20, 25]
    assert (await vault.verify_audit()).ok


def checkpoints_last(records: list[dict]) -> list[dict]:
    """The layout of exports before they streamed: every entry, then every checkpoint."""
    return entries(records) + [r for r in records if r["type"] == "checkpoint"]


@pytest.mark.parametrize("layout", ["streamed", "checkpoints_last"])
@pytest.mark.parametrize("tamper, broken_at", [
    ("edit", 7), ("delete", 7), ("reorder", 7), ("rewrite_tail", 10), ("truncate", 21),
])
async def test_tampered_export_names_the_entry(vault: Vault, tamper: str, broken_at: int, layout: str) -> None:
    records = copy.deepcopy(await exported(vault))
    records = checkpoints_last(records) if layout == "checkpoints_last" else records
    rows = entries(records)
    if tamper == "edit":
        rows[6]["outcome"] = "DENIED_POLICY"
    elif tamper == "delete":
        records.remove(rows[6])
    elif tamper == "reorder":
        i, j = records.index(rows[6]), records.index(rows[7])
        records[i], records[j] = records[j], records[i]
    elif tamper == "rewrite_tail":  # consistent new hashes from entry 7 on: only a checkpoint can tell
        rows[6]["outcome"] = "DENIED_POLICY"
        for row in rows[6:]:
            row["prev_hash"] = rows[row["seq"] - 2]["hash"]
            row["hash"] = entry_hash(row["prev_hash"], row["seq"], row["at"], row)
    elif tamper == "truncate":  # drop the newest entries, keep the signed head checkpoint
        records = [r for r in records if r["type"] == "checkpoint" or r["seq"] <= 20]
    verdict = verify_records(records, vault.signer.public_key)
    assert not verdict.ok and verdict.first_broken_seq == broken_at, verdict


@pytest.mark.parametrize("page_entries", [1, 3, 10, 11, 500])
async def test_pages_join_into_one_exact_chain(vault: Vault, page_entries: int) -> None:
    """Whatever the page size, the export is the same records, each checkpoint right after the entry it pins,
    and verifies in one pass holding nothing back."""
    records = await exported(vault)
    paged = [record async for record in AuditExport(vault.path, ENTRIES, page_entries)]
    assert paged == records
    assert [(r["type"], r["seq"]) for r in records[9:12]] == [("entry", 10), ("checkpoint", 10), ("entry", 11)]
    walk = ChainWalk(vault.signer.public_key)
    assert walk.walk(paged).ok and not walk.behind
    assert verify_records(checkpoints_last(records), vault.signer.public_key).ok  # older exports verify too


async def test_a_checkpoint_contradicting_another_breaks_the_chain(vault: Vault) -> None:
    records = await exported(vault)
    forged = vault.signer.sign(checkpoint_body(5, "ab" * 32, "2030-01-01T00:00:00+00:00"))
    records.insert(0, forged)  # signed by the vault, but not the chain's hash at entry 5
    verdict = verify_records(records, vault.signer.public_key)
    assert not verdict.ok and verdict.first_broken_seq == 5 and "checkpoint" in verdict.reason


async def test_checkpoints_need_the_vaults_key(vault: Vault, tmp_path: Path) -> None:
    records = await exported(vault)
    impostor = SigningKey.from_file(tmp_path / "impostor.pem")
    verdict = verify_records(records, impostor.public_key)
    assert not verdict.ok and "another key" in verdict.reason


@pytest.mark.parametrize("statement, broken_at", [
    ("UPDATE audit SET outcome = 'DENIED_POLICY' WHERE seq = 3", 3),
    ("DELETE FROM audit WHERE seq = 12", 12),
    ("UPDATE audit SET seq = 1000 WHERE seq = 4; UPDATE audit SET seq = 4 WHERE seq = 5;"
     " UPDATE audit SET seq = 5 WHERE seq = 1000", 4),
])
@pytest.mark.parametrize("page_entries", [4, 500])  # 4: the tampered entry sits at a page boundary
async def test_tampered_store_names_the_entry(vault: Vault, statement: str, broken_at: int, page_entries: int) -> None:
    with sqlite3.connect(vault.path) as db:
        db.executescript(statement)
    verdict = verify_store(vault.path, vault.signer.public_key, page_entries)
    assert not verdict.ok and verdict.first_broken_seq == broken_at, verdict
    assert not (await vault.verify_audit()).ok


async def test_export_round_trips_through_json_lines(vault: Vault) -> None:
    lines = [json.dumps(record) for record in await exported(vault)]
    assert verify_records(parse_export(lines), vault.signer.public_key).ok
    with pytest.raises(ValueError, match="line 2"):
        parse_export([lines[0], "{not json"])


async def test_failed_audit_write_fails_the_operation(vault: Vault) -> None:
    with sqlite3.connect(vault.path) as db:  # make the log unwritable: fail closed
        db.execute("CREATE TRIGGER no_audit BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    consent = common_pb2.ConsentRecord(agreement_version="v", scopes=[1], retention_days=1)
    with pytest.raises(sqlite3.DatabaseError):
        await vault.register_subject("t", "s-new", consent, audit=AuditEntry("ingest", "Register", "t", "s", "", "OK"))
    with pytest.raises(SubjectNotFound):
        await vault.data_key("t", "s-new")  # the registration rolled back with its audit entry
