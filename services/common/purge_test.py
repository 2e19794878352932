"""A deletion reaching a service that runs as several replicas, against a real nats-server: every replica stops
the subject at once, exactly one purges, and only once every replica's writes have ended and no data key a
replica may cache can still be used."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from studio.v1 import events_pb2

from services.common import topology
from services.common.blobstore import open_blob_store
from services.common.bus import Bus
from services.common.deletion_guard import SubjectDeleted
from services.common.launchers.nats import NatsServer
from services.common.purge import KEY_EXPIRY_MARGIN_S, PurgeListener
from services.common.vault_client import SealedStore, VaultClient
from services.common.write_leases import WriteLeases

pytestmark = pytest.mark.asyncio(loop_scope="session")

SERVICE = "replicated"  # a consumer of its own: the session's other tests never read its deletions


@dataclass
class Replica:
    bus: Bus
    sealed: SealedStore
    task: asyncio.Task
    listener: PurgeListener
    purged: list[tuple[str, float]] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)

    @classmethod
    async def start(cls, url: str, blobs: Path, service: str = SERVICE) -> Replica:
        bus = await Bus.connect(url, name="replica")
        vault = VaultClient("127.0.0.1:9", "")  # never asked: nothing here fetches a key
        sealed = SealedStore(await open_blob_store(f"file://{blobs}"), vault, bus.guard, WriteLeases(bus))
        purged: list[tuple[str, float]] = []
        stopped: list[str] = []

        async def purge(request: events_pb2.DeletionRequested) -> dict[str, int]:
            purged.append((request.subject_id, time.time()))
            return {"things": 1}

        listener = PurgeListener(bus, service, sealed, purge, on_stop=stopped.append)
        task = asyncio.create_task(listener.run())
        return cls(bus, sealed, task, listener, purged, stopped)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.sealed.vault.close()
        await self.bus.close()


async def until(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_every_replica_stops_and_one_purges_after_every_write(nats_server: NatsServer, tmp_path: Path) -> None:
    admin = await Bus.connect(nats_server.url, name="deleter")
    await admin.js.add_consumer(topology.DELETIONS_STREAM.name, topology.purge_consumer(SERVICE))
    replicas = [await Replica.start(nats_server.url, tmp_path) for _ in range(2)]
    subject_id, deletion_id = f"subject_{secrets.token_hex(6)}", f"deletion_{secrets.token_hex(6)}"
    writing = replicas[1].sealed.leases.holding(subject_id)  # a write under way on the other replica
    await writing.__aenter__()
    try:
        request = events_pb2.DeletionRequested(deletion_id=deletion_id, tenant_id="t", subject_id=subject_id)
        request.requested_at.GetCurrentTime()
        await admin.publish(topology.deletion_requested_subject(deletion_id), request, msg_id=deletion_id)
        await until(lambda: all(r.bus.guard.is_deleted(subject_id) for r in replicas), timeout_s=2)
        assert [r.stopped for r in replicas] == [[subject_id], [subject_id]]  # e.g. faceqa's cache, on each
        with pytest.raises(SubjectDeleted):  # neither replica starts another write
            await replicas[0].sealed.put("t", subject_id, "k", b"x", 0)

        # A replica started while another holds the deletion (its purge waits) still starts its workers.
        joining = await Replica.start(nats_server.url, tmp_path)
        await asyncio.wait_for(joining.listener.caught_up.wait(), timeout=5)
        assert joining.bus.guard.is_deleted(subject_id) and joining.stopped == [subject_id]
        await joining.stop()

        key_ttl_s = replicas[0].sealed.vault.key_ttl_s
        await asyncio.sleep(key_ttl_s + KEY_EXPIRY_MARGIN_S + 0.5)
        assert [purged for r in replicas for purged in r.purged] == []  # the write has not ended
    finally:
        await writing.__aexit__(None, None, None)
    await until(lambda: sum(len(r.purged) for r in replicas) == 1)
    assert [purged[0] for r in replicas for purged in r.purged] == [subject_id]
    assert await replicas[0].sealed.leases.held(subject_id) == []  # no lease names the subject

    # No write under way: the purge still waits until a data key cached before the shred has expired everywhere.
    second = events_pb2.DeletionRequested(deletion_id=deletion_id + "b", tenant_id="t", subject_id=subject_id + "b")
    second.requested_at.GetCurrentTime()
    await admin.publish(topology.deletion_requested_subject(second.deletion_id), second, msg_id=second.deletion_id)
    await until(lambda: sum(len(r.purged) for r in replicas) == 2, timeout_s=key_ttl_s + KEY_EXPIRY_MARGIN_S + 5)
    [purged_at] = [at for r in replicas for subject, at in r.purged if subject == second.subject_id]
    assert purged_at >= second.requested_at.ToNanoseconds() / 1e9 + key_ttl_s + KEY_EXPIRY_MARGIN_S

    late = await Replica.start(nats_server.url, tmp_path)  # started after the deletion: stops the subject too
    replicas.append(late)
    await until(lambda: late.bus.guard.is_deleted(subject_id))
    await asyncio.sleep(0.5)
    assert sum(len(r.purged) for r in replicas) == 2  # each purged once, whichever replica came and went
    for replica in replicas:
        await replica.stop()
    await admin.close()


async def test_a_purge_longer_than_the_ack_wait_is_not_delivered_to_another_replica(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    service = "slow-purges"  # a consumer of its own, acknowledged within 1 s: each purge here waits 3 s
    admin = await Bus.connect(nats_server.url, name="deleter")
    await admin.js.add_consumer(topology.DELETIONS_STREAM.name,
                                dataclasses.replace(topology.purge_consumer(service), ack_wait=1.0))
    replicas = [await Replica.start(nats_server.url, tmp_path, service) for _ in range(2)]
    request = events_pb2.DeletionRequested(deletion_id=f"deletion_{secrets.token_hex(6)}", tenant_id="t",
                                           subject_id=f"subject_{secrets.token_hex(6)}")
    request.requested_at.GetCurrentTime()
    await admin.publish(topology.deletion_requested_subject(request.deletion_id), request, msg_id=request.deletion_id)
    key_ttl_s = replicas[0].sealed.vault.key_ttl_s
    def purges() -> list[str]:  # the session's earlier deletions are on record too: this consumer reads them all
        return [subject for r in replicas for subject, _ in r.purged if subject == request.subject_id]

    await until(purges, timeout_s=30)
    await asyncio.sleep(key_ttl_s + KEY_EXPIRY_MARGIN_S + 1)  # a second delivery would have been purged by now
    assert purges() == [request.subject_id]
    for replica in replicas:
        await replica.stop()
    await admin.close()
