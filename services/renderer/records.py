"""Render records: how each delivered portrait was rendered (seed, style, settings, adapter), kept
sealed under the subject's key beside the order's portraits so any portrait can be rendered again.
They live under the order's area (orders/), so a subject's deletion purges them with the portraits."""

from __future__ import annotations

from studio.v1 import events_pb2, privacy_pb2

from services.common.objects import subject_area
from services.common.vault_client import SealedStore
from services.renderer.triton_client import RenderRequest

RECORDS_FILE = "render-records.pb"


def records_key(tenant_id: str, subject_id: str, order_id: str) -> str:
    return f"{subject_area(tenant_id, subject_id, 'orders')}{order_id}/{RECORDS_FILE}"


def request_for(record: events_pb2.RenderRecord, adapter: bytes) -> RenderRequest:
    """The request that renders the recorded portrait again, given the LoRA's bytes."""
    return RenderRequest(
        prompt=record.prompt, negative_prompt=record.negative_prompt, adapter_id=record.adapter_id,
        adapter=adapter, seed=record.seed, steps=record.steps, guidance=record.guidance,
        width=record.width, height=record.height, scheduler=record.scheduler,
    )


def record_of(request: RenderRequest, portrait_id: str, style: str, lora_key: str,
              identity_score: float) -> events_pb2.RenderRecord:
    return events_pb2.RenderRecord(
        portrait_id=portrait_id, style=style, prompt=request.prompt, negative_prompt=request.negative_prompt,
        seed=request.seed, steps=request.steps, guidance=request.guidance, width=request.width,
        height=request.height, scheduler=request.scheduler, adapter_id=request.adapter_id, lora_key=lora_key,
        identity_score=identity_score,
    )


async def save_records(sealed: SealedStore, job: events_pb2.RenderJob, records: list[events_pb2.RenderRecord]) -> None:
    document = events_pb2.RenderRecords(order_id=job.order_id, records=records)
    await sealed.put(job.tenant_id, job.subject_id, records_key(job.tenant_id, job.subject_id, job.order_id),
                     document.SerializeToString(), privacy_pb2.KEY_PURPOSE_ENCRYPT_PORTRAIT)


async def load_records(sealed: SealedStore, tenant_id: str, subject_id: str, order_id: str,
                       purpose: int = privacy_pb2.KEY_PURPOSE_DECRYPT_PORTRAIT) -> events_pb2.RenderRecords:
    data = await sealed.get(tenant_id, subject_id, records_key(tenant_id, subject_id, order_id), purpose)
    return events_pb2.RenderRecords.FromString(data)
