"""The trainer's purge of a subject's job records, against a real nats-server: every record of the subject goes,
those an earlier version keyed by job id alone included, no other subject's goes, and the purge reads none of the
other subjects' records (the bucket holds every training job within retention)."""

from __future__ import annotations

import asyncio
import secrets

import pytest
from studio.v1 import trainer_pb2

from services.common.bus import Bus
from services.common.launchers.nats import NatsServer
from services.trainer.job_keys import BUCKET, old_scheme_keys, record_key
from services.trainer.purge import purge_job_records

pytestmark = pytest.mark.asyncio(loop_scope="session")
UNRELATED_RECORDS = 3000


def subject(name: str) -> str:
    return f"subj_{name}_{secrets.token_hex(4)}"


def job_record(subject_id: str, job_id: str, **fields) -> trainer_pb2.TrainJobRecord:
    return trainer_pb2.TrainJobRecord(job_id=job_id, tenant_id="tenant_purge", subject_id=subject_id, **fields)


async def put(bus: Bus, record: trainer_pb2.TrainJobRecord, old_scheme: bool = False) -> None:
    """Under the record's key, or under its job id alone as the earlier version kept it."""
    key = record.job_id if old_scheme else record_key(record.subject_id, record.job_id)
    await bus.kv_put(BUCKET, key, record)


async def stored(bus: Bus, key: str) -> trainer_pb2.TrainJobRecord | None:
    return await bus.kv_get(BUCKET, key, trainer_pb2.TrainJobRecord)


def checkpoint_of(subject_id: str, job_id: str) -> str:
    return f"tenants/tenant_purge/subjects/{subject_id}/checkpoints/{job_id}.ckpt"


async def test_a_deletion_purges_every_record_of_its_subject_and_none_of_another(bus: Bus) -> None:
    gone, kept = subject("gone"), subject("kept")
    tag = secrets.token_hex(4)
    ours = [job_record(gone, f"train-a{tag}"), job_record(gone, f"train-b{tag}", state=4)]
    theirs = job_record(kept, f"train-c{tag}")
    for record in (*ours, theirs):
        await put(bus, record)
    # As an earlier version left them: keyed by job id, naming the subject, or (older still) only its checkpoint.
    old_ours = [job_record(gone, f"train-d{tag}"), job_record("", f"train-e{tag}", checkpoint_key=checkpoint_of(
        gone, f"train-e{tag}"), checkpoint_step=50)]
    old_theirs = [job_record(kept, f"train-f{tag}"), job_record("", f"train-g{tag}", checkpoint_key=checkpoint_of(
        kept, f"train-g{tag}"))]
    for record in (*old_ours, *old_theirs):
        await put(bus, record, old_scheme=True)

    assert await purge_job_records(bus, gone) == 4
    assert await bus.kv_keys_matching(BUCKET, f"{gone}.>") == []
    assert [await stored(bus, r.job_id) for r in old_ours] == [None, None]
    assert not await bus.holds_messages_on(f"KV_{BUCKET}", f"$KV.{BUCKET}.{gone}.>")  # no marker naming it either
    assert await stored(bus, record_key(kept, theirs.job_id)) == theirs
    assert [await stored(bus, r.job_id) for r in old_theirs] == old_theirs
    assert await purge_job_records(bus, gone) == 0  # a deletion delivered again


async def test_the_purge_reads_no_other_subjects_records(bus: Bus, nats_server: NatsServer) -> None:
    """With thousands of other jobs' records in the bucket, the purge exchanges a handful of messages with the
    server: one listing of the keys of the earlier scheme (one read each of those left), one purge by key pattern.
    The full scan it replaces took a listing message and a read per record (0.5 ms each, quadratic in customers)."""
    gone, tag = subject("reads"), secrets.token_hex(4)
    limit = asyncio.Semaphore(64)

    async def put_unrelated(n: int) -> None:
        async with limit:
            await put(bus, job_record(f"subj_other{n % 500}_{tag}", f"train-{n}-{tag}", checkpoint_step=n))

    await asyncio.gather(*(put_unrelated(n) for n in range(UNRELATED_RECORDS)))
    for name in ("x", "y"):
        await put(bus, job_record(gone, f"train-{name}{tag}"))
    old_left = len(await old_scheme_keys(bus))  # whatever other tests of this session left
    purger = await Bus.connect(nats_server.url, name="trainer-purge")
    try:
        before = dict(purger.client.stats)
        purged = await purge_job_records(purger, gone)
        after = purger.client.stats
    finally:
        await purger.close()
    assert purged == 2
    received = after["in_msgs"] - before["in_msgs"]
    assert received <= old_left + 2, f"{received} messages for {old_left} old-scheme records"
    assert after["in_bytes"] - before["in_bytes"] < 2000 + 500 * old_left

