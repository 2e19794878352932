"""Trainer worker: TRAIN jobs → a LoRA trained on the subject's sealed crops → sealed LoRA →
the order's render job on the RENDER queue."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from studio.v1 import events_pb2, privacy_pb2

from services.common import bus as topology
from services.common.bus import Bus
from services.common.order_events import publish_order_event
from services.common.vault_client import SealedStore
from services.common.workqueue import PermanentJobError, WorkerState
from services.trainer.training import TrainingProgress, train_lora

PROGRESS_EVENTS_PER_JOB = 10


@dataclass
class TrainerWorker:
    bus: Bus
    sealed: SealedStore
    base_model: Path
    base_model_id: str
    state: WorkerState

    async def handle(self, payload: bytes) -> None:
        job = events_pb2.TrainJob.FromString(payload)
        if job.base_model_id != self.base_model_id:
            raise PermanentJobError(f"job wants base model {job.base_model_id}; this worker has {self.base_model_id}")
        if not job.crop_keys:
            raise PermanentJobError("no training crops")
        images = [await self._crop(job, key) for key in job.crop_keys]
        lora = await asyncio.to_thread(
            train_lora, self.base_model, images, steps=job.steps, seed=job.seed,
            progress=self._progress_reporter(job, asyncio.get_running_loop()),
        )
        await self.sealed.put(
            job.tenant_id, job.subject_id, job.lora_key, lora.safetensors_bytes, privacy_pb2.KEY_PURPOSE_ENCRYPT_LORA
        )
        await publish_order_event(
            self.bus, job.order_id, job.tenant_id, job.subject_id,
            trained=events_pb2.TrainingDone(
                base_model_id=lora.base_model_id, seconds=lora.seconds, final_loss=lora.final_loss,
                lora_key=job.lora_key,
            ),
        )
        # The message id makes a redelivered training job's render job a duplicate NATS drops.
        await self.bus.publish(topology.RENDER_SUBJECT, job.render, msg_id=job.render.job_id)

    async def on_failure(self, payload: bytes, reason: str) -> None:
        job = events_pb2.TrainJob.FromString(payload)
        await publish_order_event(
            self.bus, job.order_id, job.tenant_id, job.subject_id,
            failed=events_pb2.OrderFailed(stage="training", reason=reason),
        )

    async def _crop(self, job: events_pb2.TrainJob, key: str) -> Image.Image:
        data = await self.sealed.get(job.tenant_id, job.subject_id, key, privacy_pb2.KEY_PURPOSE_DECRYPT_CROP)
        return Image.open(io.BytesIO(data)).convert("RGB")

    def _progress_reporter(self, job: events_pb2.TrainJob, loop: asyncio.AbstractEventLoop):
        every = max(1, job.steps // PROGRESS_EVENTS_PER_JOB)

        def report(progress: TrainingProgress) -> None:  # called on the training thread
            if progress.step % every and progress.step != progress.total_steps:
                return
            asyncio.run_coroutine_threadsafe(
                publish_order_event(
                    self.bus, job.order_id, job.tenant_id, job.subject_id,
                    training=events_pb2.TrainingProgress(
                        step=progress.step, total_steps=progress.total_steps, loss=progress.loss
                    ),
                ),
                loop,
            )

        return report
