"""What the trainer keeps per training job: its TrainJobRecord in KV, its sealed checkpoint and
the subject's sealed crops, with every way they can be missing turned into a clear, final error."""

from __future__ import annotations

import asyncio
import io
import logging
import struct
import time
from dataclasses import dataclass

import grpc
from PIL import Image
from studio.v1 import events_pb2, privacy_pb2, trainer_pb2

from services.common.blobstore import BlobNotFound
from services.common.bus import Bus
from services.common.envelope import EnvelopeError
from services.common.vault_client import SealedStore
from services.common.workqueue import PermanentJobError, vault_refusal
from services.trainer.checkpoint import CheckpointUnreadable, checkpoint_bytes, checkpoint_key, read_checkpoint
from services.trainer.job_keys import BUCKET, read_record, record_key
from services.trainer.training import RunState

log = logging.getLogger(__name__)

# Checkpoints are the trainer's own output: sealed and reopened by the trainer alone.
CHECKPOINT_PURPOSE = privacy_pb2.KEY_PURPOSE_TRAINER_CHECKPOINT
# What Pillow raises for malformed, truncated or oversized files (not only OSError; as faceqa's
# decode.DECODE_ERRORS, which a service may not import).
CROP_DECODE_ERRORS = (
    OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error, RuntimeError, Image.DecompressionBombError,
)


def decoded_crop(data: bytes, name: str) -> Image.Image:
    """A sealed crop's bytes as RGB; a crop that is no readable image is a permanent job error."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except CROP_DECODE_ERRORS as error:
        raise PermanentJobError(f"a training crop is not a readable image ({name})") from error


@dataclass
class JobStore:
    bus: Bus
    sealed: SealedStore
    base_model_id: str

    async def record(self, job: events_pb2.TrainJob) -> trainer_pb2.TrainJobRecord:
        """The job's record (under its earlier key too: a job an earlier version started resumes from there)."""
        found = await read_record(self.bus, job.subject_id, job.job_id)
        record = found or trainer_pb2.TrainJobRecord(job_id=job.job_id)
        record.tenant_id, record.subject_id = job.tenant_id, job.subject_id  # what a deletion purges by
        return record

    async def save_record(self, record: trainer_pb2.TrainJobRecord) -> None:
        self.sealed.guard.check(record.subject_id)  # a purged record must not come back
        await self.bus.kv_put(BUCKET, record_key(record.subject_id, record.job_id), record)

    async def crops(self, job: events_pb2.TrainJob) -> list[Image.Image]:
        images = []
        for key in job.crop_keys:
            try:
                data = await self.sealed.get(job.tenant_id, job.subject_id, key, privacy_pb2.KEY_PURPOSE_DECRYPT_CROP)
            except BlobNotFound as error:
                raise PermanentJobError("the subject's training photos were deleted") from error
            except grpc.aio.AioRpcError as error:
                raise vault_refusal(error) from error
            # Decoded apart from the read: a store that is down (BlobStoreUnavailable, an OSError) is no bad image.
            # On a thread: a few hundred crops would hold the event loop (heartbeats, cancel watch) for seconds.
            images.append(await asyncio.to_thread(decoded_crop, data, key.rsplit("/", 1)[-1]))
        return images

    async def save_checkpoint(self, job: events_pb2.TrainJob, state: RunState) -> None:
        started = time.monotonic()
        key = checkpoint_key(job.tenant_id, job.subject_id, job.job_id)
        data = await asyncio.to_thread(checkpoint_bytes, state, job.job_id, self.base_model_id)  # torch.save: CPU
        async with self.sealed.writing(job.subject_id):  # a deletion's purge waits for the checkpoint and its record
            await self.sealed.put(job.tenant_id, job.subject_id, key, data, CHECKPOINT_PURPOSE)
            record = await self.record(job)
            record.checkpoint_key, record.checkpoint_step = key, state.step
            await self.save_record(record)
        log.info("job %s: checkpoint of step %d sealed (%d bytes) in %.1f s", job.job_id, state.step, len(data),
                 time.monotonic() - started)

    async def load_checkpoint(self, job: events_pb2.TrainJob, record: trainer_pb2.TrainJobRecord) -> RunState | None:
        if not record.checkpoint_key:
            return None
        try:
            data = await self.sealed.get(job.tenant_id, job.subject_id, record.checkpoint_key, CHECKPOINT_PURPOSE)
            return read_checkpoint(data, job.job_id, self.base_model_id)
        except BlobNotFound as error:
            raise PermanentJobError(f"checkpoint of step {record.checkpoint_step} is missing from the store") from error
        except grpc.aio.AioRpcError as error:
            raise vault_refusal(error) from error
        except (EnvelopeError, CheckpointUnreadable) as error:
            raise PermanentJobError(
                f"checkpoint of step {record.checkpoint_step} is corrupt and cannot be resumed: {error}"
            ) from error

    async def drop_checkpoint(self, job: events_pb2.TrainJob) -> None:
        await self.sealed.blobs.delete(checkpoint_key(job.tenant_id, job.subject_id, job.job_id))
