"""Identity scoring through faceqa's ScoreIdentity RPC, shared by the trainer (validation renders)
and the renderer (ranking candidates).

faceqa cannot open a subject's sealed crops, so the first call sends the decrypted crops the caller
holds as reference images; faceqa answers with their consensus embedding, which later calls send
instead (no re-detection). The consensus is kept in memory only, never written anywhere.

faceqa unreachable (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED): up to `attempts` tries with a
growing pause, then None (the caller decides: the trainer leaves a point unscored, the renderer
waits and tries again); any other refusal (e.g. no face in any reference) raises IdentityRefused.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Sequence

import grpc
from PIL import Image
from studio.v1 import faceqa_pb2, faceqa_pb2_grpc

log = logging.getLogger(__name__)

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


def score_from_distance(distance: float) -> float:
    """1 − embedding distance, clipped to [0, 1]: above ~0.45 reads as the same person."""
    return float(min(1.0, max(0.0, 1.0 - distance)))


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


class IdentityRefused(RuntimeError):
    """faceqa refused the request (not a transient fault): asking again will not help."""


class IdentityClient:
    """Scores images against one subject's reference (their crops, then faceqa's consensus)."""

    def __init__(self, stub: faceqa_pb2_grpc.FaceQAStub, crops: Sequence[Image.Image],
                 first_pause_s: float = FIRST_PAUSE_S, attempts: int = ATTEMPTS) -> None:
        self.stub = stub
        self.first_pause_s = first_pause_s
        self.attempts = attempts
        self._reference_images = reference_images(crops)
        self._reference: faceqa_pb2.FaceEmbedding | None = None

    async def score_encoded(self, images: list[bytes]) -> faceqa_pb2.ScoreIdentityResponse | None:
        """faceqa's answer for the encoded images, or None when it could not be reached;
        IdentityRefused when it refused them."""
        response = await self._call(images)
        if response is not None:
            self._reference = response.reference
        return response

    async def _call(self, images: list[bytes]) -> faceqa_pb2.ScoreIdentityResponse | None:
        request = faceqa_pb2.ScoreIdentityRequest(images=images)
        if self._reference is not None:
            request.reference_embeddings.append(self._reference)
        else:
            request.reference_images.extend(self._reference_images)
        pause = self.first_pause_s
        for attempt in range(1, self.attempts + 1):
            try:
                return await self.stub.ScoreIdentity(request, timeout=CALL_TIMEOUT_S)
            except grpc.aio.AioRpcError as error:
                if error.code() not in RETRYABLE:
                    raise IdentityRefused(f"faceqa refused ScoreIdentity: {error.code().name}: "
                                          f"{error.details()}") from error
                retry = attempt < self.attempts
                log.warning("faceqa ScoreIdentity failed (%s, try %d of %d)%s", error.code().name, attempt,
                            self.attempts, "; retrying" if retry else "; giving up for now")
                if not retry:
                    return None
            await asyncio.sleep(pause)
            pause *= 2
        return None
