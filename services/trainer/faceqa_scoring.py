"""Validation scoring through faceqa's ScoreIdentity RPC (the trainer worker's scorer).

faceqa cannot open the subject's sealed crops, so the first call sends the decrypted crops the
trainer already holds as reference images; faceqa answers with their consensus embedding, which
later calls send instead (no re-detection). The consensus is kept in memory only, never
checkpointed: a resumed job sends the crops again.

faceqa unreachable (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED): up to ATTEMPTS tries with
a growing pause, then the point is unscored (None) and training goes on; any other refusal is not
retried. Validation must never fail a training job.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Sequence

import grpc
from PIL import Image
from prometheus_client import Counter
from studio.v1 import faceqa_pb2, faceqa_pb2_grpc

from services.trainer.scoring import score_from_distance

log = logging.getLogger(__name__)
VALIDATIONS = Counter("studio_trainer_validation_scores_total", "Validation points by outcome", ["outcome"])

ATTEMPTS = 3
FIRST_PAUSE_S = 1.0
CALL_TIMEOUT_S = 60.0
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED)
# faceqa takes at most 64 images of each kind per call, under gRPC's 4 MB message limit: crops are
# sent at 256 px (their face still spans ~170 px, more than dlib's 150 px embedding chip).
MAX_REFERENCES = 64
REFERENCE_SIDE = 256
IMAGE_SIDE = 1024
JPEG_QUALITY = 95


def encode_for_scoring(image: Image.Image, max_side: int) -> bytes:
    """The JPEG faceqa is sent: RGB, long side at most `max_side`."""
    copy = image.convert("RGB")
    copy.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    copy.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def reference_images(crops: Sequence[Image.Image]) -> list[bytes]:
    """At most MAX_REFERENCES crops, evenly spread over the set."""
    stride = max(1, -(-len(crops) // MAX_REFERENCES))
    return [encode_for_scoring(crop, REFERENCE_SIDE) for crop in list(crops)[::stride][:MAX_REFERENCES]]


class FaceQAScorer:
    """An IdentityScorer for one job; its calls run on `loop`, which owns the channel."""

    def __init__(self, stub: faceqa_pb2_grpc.FaceQAStub, crops: Sequence[Image.Image],
                 loop: asyncio.AbstractEventLoop, first_pause_s: float = FIRST_PAUSE_S) -> None:
        self.stub = stub
        self.loop = loop
        self.first_pause_s = first_pause_s
        self._reference_images = reference_images(crops)
        self._reference: faceqa_pb2.FaceEmbedding | None = None

    def score(self, images: Sequence[Image.Image]) -> list[float] | None:
        encoded = [encode_for_scoring(image, IMAGE_SIDE) for image in images]
        scores = asyncio.run_coroutine_threadsafe(self.score_encoded(encoded), self.loop).result()
        VALIDATIONS.labels("scored" if scores is not None else "unscored").inc()
        return scores

    async def score_encoded(self, images: list[bytes]) -> list[float] | None:
        response = await self._call(images)
        if response is None:
            return None
        self._reference = response.reference
        return [score_from_distance(s.distance) if s.face_found else 0.0 for s in response.scores]

    async def _call(self, images: list[bytes]) -> faceqa_pb2.ScoreIdentityResponse | None:
        request = faceqa_pb2.ScoreIdentityRequest(images=images)
        if self._reference is not None:
            request.reference_embeddings.append(self._reference)
        else:
            request.reference_images.extend(self._reference_images)
        pause = self.first_pause_s
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return await self.stub.ScoreIdentity(request, timeout=CALL_TIMEOUT_S)
            except grpc.aio.AioRpcError as error:
                retry = error.code() in RETRYABLE and attempt < ATTEMPTS
                log.warning("faceqa ScoreIdentity failed (%s, try %d of %d)%s", error.code().name, attempt,
                            ATTEMPTS, "; retrying" if retry else "; this validation point stays unscored")
                if not retry:
                    return None
            await asyncio.sleep(pause)
            pause *= 2
        return None
