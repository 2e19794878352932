"""Job records under `<subject>.<job>`, against a real nats-server: a record an earlier version keyed by job id alone
is read until it is re-keyed, and re-keying loses none, whoever else re-keys, writes or deletes meanwhile."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from studio.v1 import trainer_pb2

from services.common import topology
from services.common.blobstore import LocalDirBlobStore
from services.common.bus import Bus
from services.common.deletion_guard import DeletionGuard
from services.common.launchers.nats import NatsServer
from services.common.launchers.process import free_port
from services.common.vault_client import SealedStore, VaultClient
from services.common.write_leases import WriteLeases
from services.trainer.job_keys import (
    BUCKET,
    UNATTRIBUTED,
    old_scheme_keys,
    purge_through,
    read_record,
    record_key,
    rekey_old_records,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")
TRAINERS = 3


def subject(name: str) -> str:
    return f"subj_{name}_{secrets.token_hex(4)}"


def job_record(subject_id: str, job_id: str, **fields) -> trainer_pb2.TrainJobRecord:
    return trainer_pb2.TrainJobRecord(job_id=job_id, tenant_id="tenant_keys", subject_id=subject_id, **fields)


def object_of(subject_id: str, area: str) -> str:
    return f"tenants/tenant_keys/subjects/{subject_id}/{area}/x"


async def put_old(bus: Bus, record: trainer_pb2.TrainJobRecord) -> None:
    """As the earlier version kept it: under the job id alone."""
    await bus.kv_put(BUCKET, record.job_id, record)


async def stored(bus: Bus, key: str) -> trainer_pb2.TrainJobRecord | None:
    return await bus.kv_get(BUCKET, key, trainer_pb2.TrainJobRecord)


@pytest_asyncio.fixture(loop_scope="session")
async def trainer_store(bus: Bus, tmp_path: Path) -> AsyncIterator[SealedStore]:
    """A trainer's sealed store: its deletion guard and write leases are what re-keying needs (no vault asked)."""
    vault = VaultClient(f"127.0.0.1:{free_port()}", "unused")
    try:
        yield SealedStore(LocalDirBlobStore(tmp_path), vault, DeletionGuard(), WriteLeases(bus))
    finally:
        await vault.close()


async def test_a_record_is_found_under_its_old_key_until_a_later_write(bus: Bus) -> None:
    job_id, owner = f"train-read-{secrets.token_hex(4)}", subject("read")
    assert await read_record(bus, owner, job_id) is None
    await put_old(bus, job_record(owner, job_id, checkpoint_step=50))
    assert (await read_record(bus, owner, job_id)).checkpoint_step == 50  # a job the earlier version started
    await bus.kv_put(BUCKET, record_key(owner, job_id), job_record(owner, job_id, checkpoint_step=100))
    assert (await read_record(bus, owner, job_id)).checkpoint_step == 100
    await put_old(bus, job_record(owner, job_id, checkpoint_step=150))  # a trainer of the earlier version, later
    assert (await read_record(bus, owner, job_id)).checkpoint_step == 150


async def test_old_records_are_rekeyed_once_and_none_is_lost(bus: Bus, trainer_store: SealedStore) -> None:
    named, other, tag = subject("named"), subject("other"), secrets.token_hex(4)
    by_field = job_record(named, f"train-field-{tag}", state=2)
    by_checkpoint = job_record("", f"train-ckpt-{tag}", checkpoint_key=object_of(named, "checkpoints"))
    by_lora = job_record("", f"train-lora-{tag}", completion={"lora_key": object_of(other, "loras")})
    nobody = job_record("", f"train-nobody-{tag}", state=4)
    superseded, stale_copy = job_record(named, f"train-sup-{tag}"), job_record(named, f"train-stale-{tag}")
    await bus.kv_put(BUCKET, record_key(named, stale_copy.job_id), job_record(named, stale_copy.job_id, attempts=1))
    for record in (by_field, by_checkpoint, by_lora, nobody, superseded, stale_copy):
        await put_old(bus, record)
    # Written after its old record: by a job of this version (or a re-key cut short after its copy).
    newer = job_record(named, superseded.job_id, attempts=3)
    await bus.kv_put(BUCKET, record_key(named, superseded.job_id), newer)

    assert await rekey_old_records(bus, trainer_store) >= 6
    assert await old_scheme_keys(bus) == []
    assert await stored(bus, record_key(named, by_field.job_id)) == by_field
    assert await stored(bus, record_key(named, by_checkpoint.job_id)) == by_checkpoint
    assert await stored(bus, record_key(other, by_lora.job_id)) == by_lora
    assert await stored(bus, f"{UNATTRIBUTED}.{nobody.job_id}") == nobody
    assert await stored(bus, record_key(named, superseded.job_id)) == newer
    assert await stored(bus, record_key(named, stale_copy.job_id)) == stale_copy  # the old one was the later write
    assert await bus.kv_keys_matching(topology.WRITE_LEASES_BUCKET, f"{named}.>") == []
    assert await rekey_old_records(bus, trainer_store) == 0  # idempotent: nothing left to move


async def test_trainers_rekeying_at_once_lose_no_record(bus: Bus, nats_server: NatsServer, tmp_path: Path) -> None:
    tag = secrets.token_hex(4)
    records = [job_record(f"subj_many{n % 7}_{tag}", f"train-{n}-{tag}", attempts=n) for n in range(300)]
    for record in records:
        await put_old(bus, record)
    for record in records[:40]:  # where a trainer stopped between a record's copy and its old key's removal
        await bus.kv_put(BUCKET, record_key(record.subject_id, record.job_id), record)
    old_keys = len(await old_scheme_keys(bus))  # other tests' too
    trainers = [await Bus.connect(nats_server.url, name=f"trainer-{n}") for n in range(TRAINERS)]
    vault = VaultClient(f"127.0.0.1:{free_port()}", "unused")
    try:
        stores = [SealedStore(LocalDirBlobStore(tmp_path), vault, DeletionGuard(), WriteLeases(t)) for t in trainers]
        moved = await asyncio.gather(*(rekey_old_records(t, s) for t, s in zip(trainers, stores, strict=True)))
    finally:
        await vault.close()
        for trainer in trainers:
            await trainer.close()
    assert sum(moved) == old_keys  # each old key went once
    assert await old_scheme_keys(bus) == []
    assert [await stored(bus, record_key(r.subject_id, r.job_id)) for r in records] == records


async def test_a_deleted_subjects_old_record_is_erased_not_rekeyed(bus: Bus, trainer_store: SealedStore) -> None:
    gone, kept = subject("deleted"), subject("alive")
    old = [job_record(gone, f"train-gone-{secrets.token_hex(4)}"), job_record(kept, f"train-kept-{gone[-8:]}")]
    for record in old:
        await put_old(bus, record)
    trainer_store.guard.mark_deleted(gone)  # its deletion reached this trainer; the purge may have run already
    await rekey_old_records(bus, trainer_store)
    assert await stored(bus, old[0].job_id) is None
    assert not await bus.holds_messages_on(f"KV_{BUCKET}", f"$KV.{BUCKET}.{gone}.>")
    assert await stored(bus, record_key(kept, old[1].job_id)) == old[1]


async def test_an_old_key_goes_only_as_it_was_read(bus: Bus) -> None:
    """A trainer of the earlier version that writes the record after it was read for re-keying keeps its write."""
    job_id = f"train-through-{secrets.token_hex(4)}"
    await put_old(bus, job_record("subj_x", job_id, attempts=1))
    _, read_at = await bus.kv_entry(BUCKET, job_id)
    await put_old(bus, job_record("subj_x", job_id, attempts=2))
    assert await purge_through(bus, job_id, read_at) == 0
    assert (await stored(bus, job_id)).attempts == 2
    _, latest = await bus.kv_entry(BUCKET, job_id)
    assert await purge_through(bus, job_id, latest) == 1 and await stored(bus, job_id) is None
