"""Renderer worker: RENDER jobs → the subject's LoRA (decrypted in memory only) → Triton renders
each portrait → sealed portraits, progress n of m, then done. Triton down: the job waits."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image
from studio.v1 import common_pb2, events_pb2, privacy_pb2

from services.common.bus import Bus
from services.common.cancellation import order_cancelled
from services.common.lora_file import require_base_model
from services.common.order_events import publish_order_event
from services.common.styles import catalogue
from services.common.vault_client import SealedStore
from services.common.workqueue import PermanentJobError, WorkerState
from services.renderer.provenance import PortraitProvenance
from services.renderer.triton_client import RenderRejected, RenderRequest, TritonUnavailable, render_via_triton

log = logging.getLogger(__name__)

TRITON_RETRY_S = (1.0, 2.0, 5.0, 10.0)


def encode_png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class RenderWorker:
    bus: Bus
    sealed: SealedStore
    triton_url: str
    state: WorkerState
    provenance: PortraitProvenance  # issue 9: every delivered portrait labelled and signed
    base_model_id: str = ""  # when set, LoRAs trained on another base model are refused

    async def handle(self, payload: bytes) -> None:
        job = events_pb2.RenderJob.FromString(payload)
        adapter = await self.sealed.get(
            job.tenant_id, job.subject_id, job.lora_key, privacy_pb2.KEY_PURPOSE_DECRYPT_LORA
        )
        if self.base_model_id:
            try:
                require_base_model(adapter, self.base_model_id)
            except ValueError as error:  # WrongBaseModel, or not a LoRA file at all
                raise PermanentJobError(str(error)) from error
        adapter_id = f"{job.subject_id}/{hashlib.sha256(adapter).hexdigest()[:24]}"
        portraits = []
        for index, item in enumerate(job.items, start=1):
            if await order_cancelled(self.bus, job.order_id):
                log.info("order %s was cancelled; dropping its render job", job.order_id)
                return
            portrait = await self._render_item(job, item, adapter_id, adapter)
            portraits.append(portrait)
            await publish_order_event(
                self.bus, job.order_id, job.tenant_id, job.subject_id,
                rendering=events_pb2.RenderingProgress(rendered=index, total=len(job.items), portrait=portrait),
            )
        await publish_order_event(
            self.bus, job.order_id, job.tenant_id, job.subject_id, done=events_pb2.OrderDone(portraits=portraits)
        )

    async def on_failure(self, payload: bytes, reason: str) -> None:
        job = events_pb2.RenderJob.FromString(payload)
        await publish_order_event(
            self.bus, job.order_id, job.tenant_id, job.subject_id,
            failed=events_pb2.OrderFailed(stage="rendering", reason=reason),
        )

    async def _render_item(
        self, job: events_pb2.RenderJob, item: events_pb2.RenderItem, adapter_id: str, adapter: bytes
    ) -> common_pb2.Portrait:
        preset = catalogue().get(item.style)
        if preset is None:
            raise PermanentJobError(f"unknown style '{item.style}'")
        request = RenderRequest(
            prompt=item.prompt or preset.prompt_for(), negative_prompt=item.negative_prompt or preset.negative_prompt,
            adapter_id=adapter_id, adapter=adapter, seed=item.seed, steps=item.steps or preset.steps,
            guidance=item.guidance or preset.guidance, width=item.width, height=item.height,
        )
        pixels = await self._render_when_triton_is_up(request)
        portrait_png = await self.provenance.portrait_png(pixels, job, item)  # label + XMP + C2PA (issue 9)
        await self.sealed.put(
            job.tenant_id, job.subject_id, item.portrait_key, portrait_png, privacy_pb2.KEY_PURPOSE_ENCRYPT_PORTRAIT,
        )
        return common_pb2.Portrait(
            portrait_id=item.portrait_id, style=item.style, seed=item.seed,
            width=int(pixels.shape[1]), height=int(pixels.shape[0]),
        )

    async def _render_when_triton_is_up(self, request: RenderRequest) -> np.ndarray:
        attempt = 0
        while True:
            try:
                return await render_via_triton(self.triton_url, request)
            except TritonUnavailable as error:
                delay = TRITON_RETRY_S[min(attempt, len(TRITON_RETRY_S) - 1)]
                log.warning("Triton unavailable (%s); retrying in %.0f s", error, delay)
                await asyncio.sleep(delay)
                attempt += 1
            except RenderRejected as error:
                raise PermanentJobError(f"Triton refused the request: {error}") from error
