"""Identity scoring through faceqa's ScoreIdentity RPC, shared by the trainer (validation renders)
and the renderer (ranking candidates).

faceqa cannot open a subject's sealed crops, so the first call sends the decrypted crops the caller
holds as reference images; faceqa answers with their consensus embedding, which later calls send
instead (no re-detection). The consensus is kept in memory only, never written anywhere.

faceqa unreachable (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED): up to `attempts` tries with a
growing pause, then None (the caller decides: the trainer leaves a point unscored, the renderer
waits and tries again); any other refusal (e.g. no face in any reference) raises IdentityRefused.

faceqa takes requests of up to MAX_REQUEST_BYTES (its server's receive limit). The client sends the
images in as many calls as that takes, and refuses an image that could never fit (IdentityRefused), so
no request is turned away for its size: that would read as "faceqa unreachable" and be tried forever.
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
# faceqa takes at most 64 images of each kind per call. Crops are sent at 256 px (their face still spans
# ~170 px, more than dlib's 150 px embedding chip).
MAX_IMAGES_PER_CALL = 64
MAX_REFERENCES = MAX_IMAGES_PER_CALL
REFERENCE_SIDE = 256
IMAGE_SIDE = 1024
JPEG_QUALITY = 95
# The most images a caller scores at once: the renderer's chunk of candidates (SCORE_CHUNK in
# services/renderer/ranking.py); the trainer scores its two validation renders.
SCORING_BATCH = 16
# At quality 95 a JPEG of pure noise, the worst case, takes 1.18 bytes a pixel; photos and renders far less.
WORST_JPEG_BYTES_PER_PIXEL = 1.25
REQUEST_OVERHEAD_BYTES = 64 * 1024  # field tags and lengths, a reference embedding
# The largest legitimate ScoreIdentity request (about 25 MiB, over gRPC's default 4 MiB): SCORING_BATCH images
# and MAX_REFERENCES crops, all at the worst case. faceqa's server receives up to this much.
LARGEST_REQUEST_PIXELS = SCORING_BATCH * IMAGE_SIDE**2 + MAX_REFERENCES * REFERENCE_SIDE**2
MAX_REQUEST_BYTES = int(WORST_JPEG_BYTES_PER_PIXEL * LARGEST_REQUEST_PIXELS) + REQUEST_OVERHEAD_BYTES


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
        """faceqa's answer for the encoded images (in several calls where one would be too large), or None when it
        could not be reached; IdentityRefused when it refused them."""
        answer: faceqa_pb2.ScoreIdentityResponse | None = None
        sent = 0
        while sent < len(images) or answer is None:
            request = self._request(images[sent:])
            response = await self._call(request)
            if response is None:
                return None
            self._reference = response.reference  # later calls send it instead of the crops
            answer = _joined(answer, response)
            sent += len(request.images)
        return answer

    def _request(self, images: list[bytes]) -> faceqa_pb2.ScoreIdentityRequest:
        """A request with as many of `images` as faceqa takes in one call: at least one, or IdentityRefused."""
        request = faceqa_pb2.ScoreIdentityRequest()
        if self._reference is not None:
            request.reference_embeddings.append(self._reference)
        else:
            request.reference_images.extend(self._reference_images)
        for image in images[:MAX_IMAGES_PER_CALL]:
            request.images.append(image)
            if request.ByteSize() > MAX_REQUEST_BYTES:
                del request.images[-1]
                break
        if images and not request.images:
            raise IdentityRefused(f"an image of {len(images[0])} bytes does not fit in faceqa's "
                                  f"{MAX_REQUEST_BYTES}-byte requests")
        return request

    async def _call(self, request: faceqa_pb2.ScoreIdentityRequest) -> faceqa_pb2.ScoreIdentityResponse | None:
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


def _joined(earlier: faceqa_pb2.ScoreIdentityResponse | None,
            later: faceqa_pb2.ScoreIdentityResponse) -> faceqa_pb2.ScoreIdentityResponse:
    """One answer for the images of several calls, in order, with the latest reference."""
    if earlier is None:
        return later
    earlier.scores.extend(later.scores)
    earlier.reference.CopyFrom(later.reference)
    return earlier
