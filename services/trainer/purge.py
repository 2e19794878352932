"""The trainer's part of a deletion: queued training jobs, their records, LoRA weights and checkpoints."""

from __future__ import annotations

from studio.v1 import events_pb2, trainer_pb2

from services.common import topology
from services.common.bus import Bus
from services.common.objects import subject_area, subject_prefix
from services.common.vault_client import SealedStore


def purge_handler(bus: Bus, sealed: SealedStore):
    async def purge(request: events_pb2.DeletionRequested) -> dict[str, int]:
        def of_subject(payload: bytes) -> bool:
            return events_pb2.TrainJob.FromString(payload).subject_id == request.subject_id

        jobs = await bus.delete_queued_jobs(topology.TRAIN_QUEUE, of_subject)
        destroyed = {"queued_training_jobs": jobs, "job_records": await _purge_job_records(bus, request)}
        for area in ("loras", "checkpoints"):
            destroyed[area] = await sealed.blobs.delete_prefix(
                subject_area(request.tenant_id, request.subject_id, area)
            )
        return destroyed

    return purge


async def _purge_job_records(bus: Bus, request: events_pb2.DeletionRequested) -> int:
    """The subject's job records, finished ones included (the bucket holds one small record per job).
    Records written before they named their subject are matched by their checkpoint's location."""
    prefix = subject_prefix(request.tenant_id, request.subject_id)
    purged = 0
    for job_id in await bus.kv_keys(topology.TRAIN_JOBS_BUCKET):
        record = await bus.kv_get(topology.TRAIN_JOBS_BUCKET, job_id, trainer_pb2.TrainJobRecord)
        if record is not None and (_names_subject(record, request) or record.checkpoint_key.startswith(prefix)):
            await bus.kv_purge(topology.TRAIN_JOBS_BUCKET, job_id)
            purged += 1
    return purged


def _names_subject(record: trainer_pb2.TrainJobRecord, request: events_pb2.DeletionRequested) -> bool:
    return record.subject_id == request.subject_id and record.tenant_id == request.tenant_id
