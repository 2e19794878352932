"""The trainer's part of a deletion: queued training jobs, their records, LoRA weights and checkpoints."""

from __future__ import annotations

from studio.v1 import events_pb2, trainer_pb2

from services.common import topology
from services.common.bus import Bus
from services.common.objects import subject_area
from services.common.vault_client import SealedStore
from services.trainer.job_keys import BUCKET, is_token, old_scheme_keys, owner, subject_records


def purge_handler(bus: Bus, sealed: SealedStore):
    async def purge(request: events_pb2.DeletionRequested) -> dict[str, int]:
        def of_subject(payload: bytes) -> bool:
            return events_pb2.TrainJob.FromString(payload).subject_id == request.subject_id

        jobs = await bus.delete_queued_jobs(topology.TRAIN_QUEUE, of_subject)
        destroyed = {"queued_training_jobs": jobs, "job_records": await purge_job_records(bus, request.subject_id)}
        for area in ("loras", "checkpoints"):
            destroyed[area] = await sealed.blobs.delete_prefix(
                subject_area(request.tenant_id, request.subject_id, area)
            )
        return destroyed

    return purge


async def purge_job_records(bus: Bus, subject_id: str) -> int:
    """The subject's job records, finished ones included: any an earlier version keyed by job id alone (none once
    the trainers re-keyed them), then its `<subject>.<job>` keys, which the server lists without reading any other
    subject's. In this order: a record re-keyed while the first step runs is erased by the second."""
    purged = await _purge_old_scheme_records(bus, subject_id)
    if is_token(subject_id):  # anything else could be no key (nor a wildcard to purge by)
        purged += await bus.kv_purge_matching(BUCKET, subject_records(subject_id))
    return purged


async def _purge_old_scheme_records(bus: Bus, subject_id: str) -> int:
    purged = 0
    for key in await old_scheme_keys(bus):
        record = await bus.kv_get(BUCKET, key, trainer_pb2.TrainJobRecord)
        if record is not None and owner(record) == subject_id:
            await bus.kv_purge(BUCKET, key)
            purged += 1
    return purged
