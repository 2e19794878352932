"""The audit log at production length, over a real socket and a real store: an export (and a verification)
streams in bounded memory, does not hold key requests up, stops at the head it began with; a subject's entries
are read by index; a full store refuses with RESOURCE_EXHAUSTED naming the vault's storage, then recovers."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import tracemalloc

import grpc
import pytest
from prometheus_client import REGISTRY
from studio.v1 import privacy_pb2

from services.common.audit_chain import ChainWalk
from services.privacy import audit_log
from services.privacy.audit_log import AuditEntry
from services.privacy.server_test import (
    Running,
    data_key,
    expect_status,
    register,
    token,
    vault,  # noqa: F401  (fixture)
)

ENTRIES = 20_000
# The old export built one list of every record: ~1.2 KB an entry, ~25 MB here. A page is ~0.6 MB.
EXPORT_PEAK_BYTES = 6 * 2**20


def fill_log(running: Running, entries: int = ENTRIES) -> int:
    """Append `entries` to the vault's log through its own append (a valid chain, periodic checkpoints), in one
    transaction on a second connection; returns the head."""
    store = running.servicer.vault
    with sqlite3.connect(store.path, isolation_level=None) as db:
        db.execute("BEGIN IMMEDIATE")
        for index in range(entries):
            entry = AuditEntry("renderer", "GetDataKey", "tenant-a", f"subject-{index % 3000}",
                               "KEY_PURPOSE_DECRYPT_LORA", "ALLOWED")
            head = audit_log.append(db, entry, store.signer, 64)
        db.execute("COMMIT")
    return head


def export_call(running: Running, batch: int = 0):
    request = privacy_pb2.ExportAuditRequest(batch=batch)
    return running.stub.ExportAudit(request, metadata=token("operator"), timeout=300)


def lines_of(reply: privacy_pb2.ExportAuditResponse) -> list[str]:
    return list(reply.records) or [reply.json]


async def walk_export(running: Running, batch: int = 500) -> tuple[ChainWalk, int]:
    """Consume the export as the operator's CLI does, checking the chain record by record (constant memory)."""
    walk, last_entry = ChainWalk(running.servicer.vault.signer.public_key), 0
    async for reply in export_call(running, batch):
        assert len(reply.records) <= batch and bool(reply.json) == (not batch)
        for line in lines_of(reply):
            record = json.loads(line)
            assert walk.feed(record), walk.verdict()
            last_entry = record["seq"] if record["type"] == "entry" else last_entry
    assert walk.verdict().ok and not walk.behind  # each checkpoint right after its entry: nothing kept back
    return walk, last_entry


async def test_a_long_export_streams_in_bounded_memory_and_verifies(vault: Running) -> None:  # noqa: F811
    head = await asyncio.to_thread(fill_log, vault)
    tracemalloc.start()  # the vault's side and the caller's, in this process
    try:
        received = 0
        async for reply in export_call(vault, batch=500):
            received += len(lines_of(reply))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < EXPORT_PEAK_BYTES, f"the export peaked at {peak / 2**20:.1f} MiB"
    walk, last_entry = await walk_export(vault)
    # Each export ends at the head it signed: the second has the first's ExportAudit entry, not its own.
    assert last_entry == head + 1 == walk.next_seq - 1
    assert received > head + ENTRIES // 64 and walk.checkpoints > ENTRIES // 64
    assert (await vault.servicer.vault.verify_audit()).ok


async def test_key_requests_go_on_while_an_export_is_read(vault: Running, monkeypatch) -> None:  # noqa: F811
    """The export is parked in the middle of reading the log (its worker thread waits): a key request, a
    registration and their audit entries go through meanwhile. The old export read the whole log under the
    vault's lock, so the key request waited for it."""
    await register(vault.stub)
    head = await asyncio.to_thread(fill_log, vault, 5_000)
    parked, release = threading.Event(), threading.Event()
    record = audit_log.entry_record

    def slow_record(seq: int, *args):
        if seq == 2_500 and not parked.is_set():
            parked.set()
            release.wait(timeout=60)
        return record(seq, *args)

    monkeypatch.setattr(audit_log, "entry_record", slow_record)
    export = asyncio.ensure_future(walk_export(vault, batch=0))
    try:
        assert await asyncio.to_thread(parked.wait, 30), "the export never reached entry 2500"
        assert len((await data_key(vault.stub)).data_key) == 32  # 10 s deadline: not held up by the export
        await register(vault.stub, subject="subject-during-export")
        assert not export.done()
    finally:
        release.set()
    walk, last_entry = await export
    # The head was signed before the first page: what was appended during the export is left for the next.
    assert last_entry == head and walk.next_seq == head + 1
    assert (await vault.servicer.vault.verify_audit()).ok


async def test_a_slow_reader_holds_one_page_and_no_lock(vault: Running) -> None:  # noqa: F811
    """A caller that stops reading (flow control stalls the stream) blocks nothing: keys are handed out and
    audited while it waits, and the export it then finishes is exact. One record a reply: as older callers ask."""
    await register(vault.stub)
    head = await asyncio.to_thread(fill_log, vault, 2_000)
    call = export_call(vault)
    walk = ChainWalk(vault.servicer.vault.signer.public_key)
    assert walk.feed(json.loads((await call.read()).json))
    for _ in range(20):
        await data_key(vault.stub)
    while (reply := await call.read()) is not grpc.aio.EOF:
        assert walk.feed(json.loads(reply.json))
    assert walk.verdict().ok
    assert walk.next_seq == head + 1  # not its own ExportAudit entry nor the 20 key requests after it


def test_a_subjects_entries_are_read_by_index(tmp_path) -> None:
    """On a store made before the index (as the last release left it), the vault's opening builds it and the
    subject export's query searches it: no scan of the log, no sort."""
    from services.common.signatures import SigningKey
    from services.privacy.kek import FileKek
    from services.privacy.vault import Vault, vault_path

    path = vault_path(tmp_path)
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as db:
        db.executescript(audit_log.SCHEMA)  # the tables alone, no index
    Vault.open(tmp_path, FileKek(tmp_path / "kek.json"), SigningKey.from_file(tmp_path / "signing.pem")).close()
    statements: list[str] = []
    with sqlite3.connect(path) as db:
        db.set_trace_callback(statements.append)
        audit_log.subject_records(db, "tenant-a", "subject-1")
        db.set_trace_callback(None)
        [query] = [statement for statement in statements if "FROM audit" in statement]
        plan = [row[-1] for row in db.execute(f"EXPLAIN QUERY PLAN {query}")]
    assert len(plan) == 1 and plan[0].startswith("SEARCH audit USING INDEX audit_subject"), plan


async def test_a_full_store_refuses_with_resource_exhausted_and_recovers(
    vault: Running, caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    await register(vault.stub)
    store = vault.servicer.vault
    # The size limit of the vault's own connection stands in for a full volume: sqlite answers SQLITE_FULL.
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")
    refusals_before = REGISTRY.get_sample_value("studio_vault_storage_full_total", {"method": "GetDataKey"}) or 0
    handed_out = 0
    with caplog.at_level(logging.ERROR, logger="services.privacy.server"):
        for _ in range(200):
            try:
                await data_key(vault.stub)
            except grpc.aio.AioRpcError as error:
                refused = error
                break
            handed_out += 1
        else:
            pytest.fail("the store never filled")
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.details()
    assert "vault's storage is full" in refused.details() and "studio-vault" in refused.details()
    assert any(str(store.path) in record.getMessage() and "storage is full" in record.getMessage()
               for record in caplog.records)
    assert REGISTRY.get_sample_value("studio_vault_storage_full_total", {"method": "GetDataKey"}) == refusals_before + 1
    shred = privacy_pb2.ShredSubjectRequest(tenant_id="tenant-a", subject_id="subject-1")
    await expect_status(vault.stub.ShredSubject(shred, metadata=token("ingest"), timeout=10),
                        grpc.StatusCode.RESOURCE_EXHAUSTED)
    await expect_status(register(vault.stub, subject="subject-2"), grpc.StatusCode.RESOURCE_EXHAUSTED)

    store._db.execute(f"PRAGMA max_page_count = {2**30}")  # the operator grew the volume
    assert len((await data_key(vault.stub)).data_key) == 32
    entries = [record async for record in await store.export_audit() if record["type"] == "entry"]
    allowed = [e for e in entries if e["action"] == "GetDataKey" and e["outcome"] == "ALLOWED"]
    assert len(allowed) == handed_out + 1  # every key handed out was audited; the refused ones left no trace
    assert (await store.verify_audit()).ok
