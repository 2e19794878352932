"""The deletion protocol when a step fails, on a real NATS server: an announcement or a purge that NATS
did not take is retried while the vault runs; a confirmation that is undecodable or carries an
impossible time never stops the vault from certifying; a store from before `purged` existed is
migrated and its certified deletions purged."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import grpc
import nats.errors
import pytest
from nats.js.errors import NotFoundError
from studio.v1 import events_pb2, privacy_pb2

from services.common import topology
from services.common.bus import Bus
from services.common.launchers.nats import start_nats
from services.common.signatures import SigningKey
from services.privacy.deletion import DeletionCoordinator
from services.privacy.deletion_records import Confirmation, DeletionRecord
from services.privacy.kek import FileKek
from services.privacy.retention_test import announced
from services.privacy.server_test import (
    Running,
    consent,
    data_key,
    expect_status,
    register,
    token,
    vault,  # noqa: F401  (fixture)
)
from services.privacy.vault import ShredRequest, Vault, vault_path

T = TypeVar("T")
TENANT = "tenant-a"


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout_s: float = 10) -> T:
    """probe()'s first truthy answer; a probe that raises counts as not yet."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            answer = await probe()
        except Exception:
            answer = None
        if answer:
            return answer
        await asyncio.sleep(0.05)
    raise AssertionError("the condition never came true")


async def closed_bus(url: str) -> Bus:
    """A connection NATS no longer takes anything on: every publish and purge fails."""
    bus = await Bus.connect(url, name="closed")
    await bus.close()
    return bus


async def shred(stub, subject: str = "subject-1") -> privacy_pb2.ShredSubjectResponse:
    request = privacy_pb2.ShredSubjectRequest(tenant_id=TENANT, subject_id=subject)
    return await stub.ShredSubject(request, metadata=token("ingest"), timeout=10)


async def confirm(bus: Bus, deletion_id: str, service: str, seconds: int | None = None) -> None:
    confirmation = events_pb2.DeletionConfirmed(deletion_id=deletion_id, service=service, destroyed={"things": 1})
    if seconds is None:
        confirmation.confirmed_at.GetCurrentTime()
    else:
        confirmation.confirmed_at.seconds = seconds
    await bus.publish(topology.deletion_confirmed_subject(deletion_id, service), confirmation)


async def started(running: Running, bus: Bus, subject: str = "subject-1") -> str:
    running.servicer.attach_bus(bus)
    await register(running.stub, subject=subject)
    return (await shred(running.stub, subject)).deletion.deletion_id


async def certificate_of(running: Running, deletion_id: str) -> dict | None:
    record = await running.servicer.vault.deletion(TENANT, deletion_id=deletion_id)
    return json.loads(record.certificate) if record and record.certificate else None


async def test_a_failed_announcement_is_unavailable_and_announced_by_the_retry_loop(
    vault: Running, bus: Bus, nats_server  # noqa: F811
) -> None:
    await register(vault.stub)
    vault.servicer.attach_bus(await closed_bus(nats_server.url))
    details = await expect_status(shred(vault.stub), grpc.StatusCode.UNAVAILABLE)
    assert "shredded" in details and "proceeds" in details
    await expect_status(data_key(vault.stub), grpc.StatusCode.NOT_FOUND)  # the key is gone all the same
    [record] = await vault.servicer.vault.unfinished_deletions()
    assert not record.announced
    vault.servicer.attach_bus(bus)
    try:
        async with running(vault.servicer.deletions.run_unfinished(0.05)):
            requested = await eventually(lambda: announced(bus, record.deletion_id))
            assert requested.subject_id == "subject-1"
            assert (await vault.servicer.vault.deletion(TENANT, deletion_id=record.deletion_id)).announced
    finally:
        # No purge consumer of a later test should meet this deletion.
        await bus.purge_subject(topology.DELETIONS_STREAM.name, topology.deletion_subjects(record.deletion_id))


async def test_a_confirmation_time_outside_the_calendar_becomes_its_time_of_receipt(
    vault: Running, bus: Bus  # noqa: F811
) -> None:
    deletion_id = await started(vault, bus)
    async with running(vault.servicer.deletions.run_confirmations()) as confirmations:
        *others, last = topology.PURGING_SERVICES
        for service in others:
            await confirm(bus, deletion_id, service)
        before = time.time()
        await confirm(bus, deletion_id, last, seconds=10**12)
        certificate = await eventually(lambda: certificate_of(vault, deletion_id))
        [entry] = [entry for entry in certificate["destroyed"] if entry["service"] == last]
        assert before - 1 <= datetime.fromisoformat(entry["at"]).timestamp() <= time.time() + 1
        assert not confirmations.done()


@contextlib.asynccontextmanager
async def own_bus(root: Path) -> AsyncIterator[Bus]:
    """A nats-server of the test's own: the vault's confirmations consumer holds only what the test sent (the
    session's is shared with other tests, whose cancelled consumers may leave a delivery in flight)."""
    server = await start_nats(root / "nats", root / "nats-logs")
    try:
        bus = await Bus.connect(server.url, name="own")
        try:
            yield bus
        finally:
            await bus.close()
    finally:
        server.stop()


async def test_undecodable_and_mislabelled_confirmations_are_dropped_and_the_rest_certified(
    vault: Running, tmp_path: Path  # noqa: F811
) -> None:
    async with own_bus(tmp_path) as bus:
        await _dropped_and_certified(vault, bus)


async def _dropped_and_certified(vault: Running, bus: Bus) -> None:  # noqa: F811
    deletion_id = await started(vault, bus)
    async with running(vault.servicer.deletions.run_confirmations()) as confirmations:
        first, *others = topology.PURGING_SERVICES
        await bus.publish_raw(topology.deletion_confirmed_subject(deletion_id, first), b"\xff\xff not protobuf")
        # A payload claiming to be another service than its subject names counts for neither.
        forged = events_pb2.DeletionConfirmed(deletion_id=deletion_id, service=first)
        await bus.publish(topology.deletion_confirmed_subject(deletion_id, others[0]), forged)
        await asyncio.sleep(0.5)
        record = await vault.servicer.vault.deletion(TENANT, deletion_id=deletion_id)
        assert record.waiting_for == list(topology.PURGING_SERVICES) and not confirmations.done()
        for service in topology.PURGING_SERVICES:
            await confirm(bus, deletion_id, service)
        certificate = await eventually(lambda: certificate_of(vault, deletion_id))
        assert {entry["service"] for entry in certificate["destroyed"]} == {"privacy", *topology.PURGING_SERVICES}

        async def nothing_pending() -> bool:  # the last confirmation is acknowledged just after it certified
            info = await bus.js.consumer_info(topology.DELETIONS_STREAM.name,
                                              topology.VAULT_CONFIRMATIONS_CONSUMER.durable_name)
            return info.num_ack_pending == 0

        await eventually(nothing_pending)  # nothing left to come back


async def complete_uncertified(store: Vault, subject_id: str) -> DeletionRecord:
    """A deletion every service confirmed, not certified yet (the vault died before it could)."""
    await store.register_subject(TENANT, subject_id, consent())
    record = await store.shred(ShredRequest(TENANT, subject_id, privacy_pb2.DELETION_REASON_REQUESTED, "ingest",
                                            topology.PURGING_SERVICES))
    await store.mark_announced(record.deletion_id)
    for service in topology.PURGING_SERVICES:
        await store.record_confirmation(record.deletion_id, Confirmation(service, time.time(), {"things": 1}))
    return record


async def test_resume_certifies_the_others_past_a_record_it_cannot_certify(tmp_path: Path, bus: Bus) -> None:
    store = Vault.open(tmp_path / "data", FileKek(tmp_path / "kek.json"))
    try:
        broken = await complete_uncertified(store, "stored-before-the-fix")
        with sqlite3.connect(store.path) as db:  # a time out of the calendar, stored before receipt checks
            db.execute("UPDATE purge_confirmations SET confirmed_at = 1e12 WHERE deletion_id = ?",
                       (broken.deletion_id,))
        sound = await complete_uncertified(store, "sound")
        await DeletionCoordinator(store, bus).resume()
        assert (await store.deletion(TENANT, deletion_id=sound.deletion_id)).certificate
        assert (await store.deletion(TENANT, deletion_id=broken.deletion_id)).certificate is None
    finally:
        store.close()


async def test_a_purge_that_failed_after_certification_is_retried(
    vault: Running, bus: Bus, nats_server  # noqa: F811
) -> None:
    deletion_id = await started(vault, bus)
    store, coordinator = vault.servicer.vault, vault.servicer.deletions
    for service in topology.PURGING_SERVICES:
        await store.record_confirmation(deletion_id, Confirmation(service, time.time(), {"things": 1}))
    vault.servicer.attach_bus(await closed_bus(nats_server.url))
    with pytest.raises(nats.errors.Error):
        await coordinator.certify(await store.deletion(TENANT, deletion_id=deletion_id))
    record = await store.deletion(TENANT, deletion_id=deletion_id)
    assert record.certificate and not record.purged
    assert await announced(bus, deletion_id)  # NATS still names the subject
    vault.servicer.attach_bus(bus)
    async with running(coordinator.run_unfinished(0.05)):
        await eventually(lambda: _purged(store, deletion_id))
        with pytest.raises(NotFoundError):
            await announced(bus, deletion_id)
        assert await store.unfinished_deletions() == []


@contextlib.asynccontextmanager
async def running(loop: Awaitable[object]) -> AsyncIterator[asyncio.Task]:
    """`loop` (a coordinator's background loop) as a task for the block's length."""
    task = asyncio.ensure_future(loop)
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _purged(store: Vault, deletion_id: str) -> bool:
    return (await store.deletion(TENANT, deletion_id=deletion_id)).purged


OLD_DELETIONS = """
CREATE TABLE deletions (
    deletion_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, subject_id TEXT NOT NULL UNIQUE,
    reason INTEGER NOT NULL, requested_at REAL NOT NULL, key_shredded_at REAL NOT NULL,
    expected_services TEXT NOT NULL, announced INTEGER NOT NULL DEFAULT 0, certified_at REAL, certificate BLOB
);
INSERT INTO deletions VALUES ('del_old', 'tenant-a', 's-old', 1, 1.0, 1.0, '[]', 1, 2.0, X'7B7D');
"""


async def test_a_store_from_before_purge_tracking_purges_its_certified_deletions(tmp_path: Path, bus: Bus) -> None:
    path = vault_path(tmp_path / "data")
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as db:
        db.executescript(OLD_DELETIONS)
    await bus.publish(topology.deletion_requested_subject("del_old"), events_pb2.DeletionRequested(
        deletion_id="del_old", tenant_id=TENANT, subject_id="s-old"))
    # The old store holds a certificate: its signing key must be there (a missing one is refused).
    signer = SigningKey.from_file(tmp_path / "data" / "privacy" / "signing-key.pem")
    store = Vault.open(tmp_path / "data", FileKek(tmp_path / "kek.json"), signer)
    try:
        [record] = await store.unfinished_deletions()
        assert (record.deletion_id, record.certificate, record.purged) == ("del_old", b"{}", False)
        await DeletionCoordinator(store, bus).resume()
        assert (await store.deletion(TENANT, deletion_id="del_old")).purged
        with pytest.raises(NotFoundError):
            await announced(bus, "del_old")
    finally:
        store.close()
