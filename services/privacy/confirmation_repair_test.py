"""A store written by an older vault, holding a purge confirmation time no certificate can state: the
vault started on it repairs the time, audits the repair, and certifies the deletion (real vault over
gRPC, real NATS, the sqlite file on disk)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import grpc
import pytest
from studio.v1 import privacy_pb2, privacy_pb2_grpc

from services.common import topology
from services.common.bus import Bus
from services.common.config import Settings
from services.common.signatures import load_public_key, verify_certificate
from services.privacy.deletion_records import Confirmation
from services.privacy.kek import FileKek
from services.privacy.server import add_to_server, build_servicer
from services.privacy.server_test import consent, token, write_tokens
from services.privacy.vault import ShredRequest, Vault, vault_path

TENANT, SUBJECT = "tenant-a", "stored-by-an-older-vault"
*CONFIRMED, LAST = topology.PURGING_SERVICES
# Out of the calendar (either side), not a number, not a time at all; and 1970 (in the calendar, before the
# request): what an older vault stored as the service claimed it.
STORED = {"year-33658": 1e12, "before-year-1": -1e12, "infinite": float("inf"), "text": "not a time",
          "epoch": 0.0}


@dataclasses.dataclass(frozen=True)
class OldStore:
    data_dir: Path
    kek_file: Path
    deletion_id: str
    requested_at: float


async def older_store(tmp_path: Path, stored: object) -> OldStore:
    """A deletion every service confirmed, `LAST` with `stored` as its time, not certified yet."""
    data_dir, kek_file = tmp_path / "data", tmp_path / "kek.json"
    vault = Vault.open(data_dir, FileKek(kek_file))
    try:
        await vault.register_subject(TENANT, SUBJECT, consent())
        record = await vault.shred(ShredRequest(TENANT, SUBJECT, privacy_pb2.DELETION_REASON_REQUESTED, "ingest",
                                                topology.PURGING_SERVICES))
        await vault.mark_announced(record.deletion_id)
        for service in CONFIRMED:
            await vault.record_confirmation(record.deletion_id, Confirmation(service, time.time(), {"things": 1}))
    finally:
        vault.close()
    with contextlib.closing(sqlite3.connect(vault_path(data_dir))) as db, db:
        db.execute("INSERT INTO purge_confirmations (deletion_id, service, confirmed_at, destroyed)"
                   " VALUES (?, ?, ?, ?)", (record.deletion_id, LAST, stored, json.dumps({"things": 1})))
    return OldStore(data_dir, kek_file, record.deletion_id, record.requested_at)


@contextlib.asynccontextmanager
async def vault_serving(store: OldStore, bus: Bus, tmp_path: Path) -> AsyncIterator[privacy_pb2_grpc.PrivacyStub]:
    """The vault as `python -m services.privacy` runs it: gRPC, and its confirmation consumer (which first
    takes every unfinished deletion further)."""
    settings = dataclasses.replace(Settings.from_env("privacy"), data_dir=store.data_dir)
    servicer = build_servicer(settings, kek_file=store.kek_file, tokens_file=write_tokens(tmp_path))
    servicer.attach_bus(bus)
    server = grpc.aio.server()
    add_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    confirmations = asyncio.ensure_future(servicer.deletions.run_confirmations())
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield privacy_pb2_grpc.PrivacyStub(channel)
    finally:
        confirmations.cancel()
        await asyncio.gather(confirmations, return_exceptions=True)
        await server.stop(grace=None)
        servicer.close()


async def certified(stub: privacy_pb2_grpc.PrivacyStub, deletion_id: str, timeout_s: float = 10) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        response = await stub.GetDeletionStatus(privacy_pb2.GetDeletionStatusRequest(
            tenant_id=TENANT, deletion_id=deletion_id), metadata=token("ingest"), timeout=5)
        if response.deletion.certificate:
            return json.loads(response.deletion.certificate)
        assert time.monotonic() < deadline, f"never certified; waiting for {list(response.deletion.waiting_for)}"
        await asyncio.sleep(0.05)


async def subject_audit(stub: privacy_pb2_grpc.PrivacyStub) -> list[dict]:
    call = stub.ExportSubjectAudit(privacy_pb2.ExportSubjectAuditRequest(tenant_id=TENANT, subject_id=SUBJECT),
                                   metadata=token("ingest"), timeout=5)
    return [json.loads(item.json) async for item in call]


@pytest.mark.parametrize("stored", STORED.values(), ids=STORED.keys())
async def test_a_stored_confirmation_time_no_certificate_can_state_is_repaired_and_certified(
    tmp_path: Path, bus: Bus, stored: object
) -> None:
    store = await older_store(tmp_path, stored)
    started = time.time()
    async with vault_serving(store, bus, tmp_path) as stub:
        certificate = await certified(stub, store.deletion_id)
        public_key = load_public_key((await stub.GetSigningKey(privacy_pb2.GetSigningKeyRequest(), timeout=5))
                                     .public_key_pem)
        verify_certificate(certificate, public_key)
        [entry] = [entry for entry in certificate["destroyed"] if entry["service"] == LAST]
        stated_at = datetime.fromisoformat(entry["at"]).timestamp()
        assert store.requested_at < started and started - 1 <= stated_at <= time.time()  # the time of repair
        repairs = [entry for entry in await subject_audit(stub) if entry["action"] == "ConfirmationTimeRepaired"]
    [repair] = repairs
    detail = json.loads(repair["detail"])
    assert (repair["service"], repair["outcome"], detail["deletion_id"], detail["service"]) == (
        "privacy", "REPAIRED", store.deletion_id, LAST)
    assert set(detail) == {"deletion_id", "service", "stored_confirmed_at", "confirmed_at"}  # ids and times only
    assert detail["confirmed_at"] == entry["at"]


async def test_sound_times_and_a_certificate_s_stated_times_are_left_as_they_are(tmp_path: Path, bus: Bus) -> None:
    store = await older_store(tmp_path, time.time())
    async with vault_serving(store, bus, tmp_path) as stub:
        first = await certified(stub, store.deletion_id)
    with contextlib.closing(sqlite3.connect(vault_path(store.data_dir))) as db, db:
        # In the calendar, if implausible: a certified deletion keeps it (no time of repair could be signed).
        db.execute("UPDATE purge_confirmations SET confirmed_at = 0 WHERE service = ?", (LAST,))
    async with vault_serving(store, bus, tmp_path) as stub:
        assert await certified(stub, store.deletion_id) == first
        response = await stub.GetDeletionStatus(privacy_pb2.GetDeletionStatusRequest(
            tenant_id=TENANT, deletion_id=store.deletion_id), metadata=token("ingest"), timeout=5)
        assert {c.service: c.confirmed_at.seconds for c in response.deletion.confirmations}[LAST] == 0
        assert not [entry for entry in await subject_audit(stub) if entry["action"] == "ConfirmationTimeRepaired"]
