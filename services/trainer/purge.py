"""The trainer's part of a deletion: queued training jobs, LoRA weights and checkpoints."""

from __future__ import annotations

from studio.v1 import events_pb2

from services.common import bus as topology
from services.common.bus import Bus
from services.common.objects import subject_area
from services.common.vault_client import SealedStore


def purge_handler(bus: Bus, sealed: SealedStore):
    async def purge(request: events_pb2.DeletionRequested) -> dict[str, int]:
        def of_subject(payload: bytes) -> bool:
            return events_pb2.TrainJob.FromString(payload).subject_id == request.subject_id

        jobs = await bus.delete_queued_jobs(topology.TRAIN_QUEUE, of_subject)
        destroyed = {"queued_training_jobs": jobs}
        for area in ("loras", "checkpoints"):
            destroyed[area] = await sealed.blobs.delete_prefix(
                subject_area(request.tenant_id, request.subject_id, area)
            )
        return destroyed

    return purge
