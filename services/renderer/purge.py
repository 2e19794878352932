"""The renderer's part of a deletion: queued render jobs, portraits, their render records (seeds,
settings, identity scores), the marks of its finished render jobs, and the subject's LoRA adapters
held decrypted in Triton's memory.
Candidates and the subject's reference embedding live only in a job's memory."""

from __future__ import annotations

from studio.v1 import events_pb2

from services.common import topology
from services.common.bus import Bus
from services.common.objects import subject_area
from services.common.vault_client import SealedStore
from services.renderer.records import RECORDS_FILE
from services.renderer.triton_client import evict_on_every_instance


def adapter_prefix(subject_id: str) -> str:
    return f"{subject_id}/"


def purge_handler(bus: Bus, sealed: SealedStore, triton_url: str):
    """`triton_url`: a name that resolves to every Triton server (STUDIO_TRITON_PODS in deploy/k8s), or the one."""
    async def purge(request: events_pb2.DeletionRequested) -> dict[str, int]:
        def of_subject(payload: bytes) -> bool:
            return events_pb2.RenderJob.FromString(payload).subject_id == request.subject_id

        jobs = await bus.delete_queued_jobs(topology.RENDER_QUEUE, of_subject)
        evicted = await evict_on_every_instance(triton_url, adapter_prefix(request.subject_id))
        orders = subject_area(request.tenant_id, request.subject_id, "orders")
        records = [key for key in await sealed.blobs.list(orders) if key.endswith(RECORDS_FILE)]
        for key in records:
            await sealed.blobs.delete(key)
        portraits = await sealed.blobs.delete_prefix(orders)
        finished = await bus.kv_purge_matching(topology.RENDERS_DONE_BUCKET, f"{request.subject_id}.>")
        return {"queued_render_jobs": jobs, "triton_adapters": evicted, "portraits": portraits,
                "render_records": len(records), "finished_render_jobs": finished}

    return purge
