"""Validation scoring through faceqa's ScoreIdentity RPC (the trainer worker's scorer), on the
shared client in services/common/identity_scoring.py.

faceqa unreachable after the client's tries: the point is unscored (None) and training goes on.
Validation must never fail a training job.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from PIL import Image
from prometheus_client import Counter
from studio.v1 import faceqa_pb2_grpc

from services.common.identity_scoring import (
    FIRST_PAUSE_S,
    IMAGE_SIDE,
    IdentityClient,
    IdentityRefused,
    encode_for_scoring,
    reference_images,
    score_from_distance,
)

log = logging.getLogger(__name__)
__all__ = ["IMAGE_SIDE", "FaceQAScorer", "encode_for_scoring", "reference_images"]
VALIDATIONS = Counter("studio_trainer_validation_scores_total", "Validation points by outcome", ["outcome"])


class FaceQAScorer:
    """An IdentityScorer for one job; its calls run on `loop`, which owns the channel."""

    def __init__(self, stub: faceqa_pb2_grpc.FaceQAStub, crops: Sequence[Image.Image],
                 loop: asyncio.AbstractEventLoop, first_pause_s: float = FIRST_PAUSE_S) -> None:
        self.loop = loop
        self.client = IdentityClient(stub, crops, first_pause_s)

    def score(self, images: Sequence[Image.Image]) -> list[float] | None:
        encoded = [encode_for_scoring(image, IMAGE_SIDE) for image in images]
        scores = asyncio.run_coroutine_threadsafe(self.score_encoded(encoded), self.loop).result()
        VALIDATIONS.labels("scored" if scores is not None else "unscored").inc()
        return scores

    async def score_encoded(self, images: list[bytes]) -> list[float] | None:
        try:
            response = await self.client.score_encoded(images)
        except IdentityRefused as error:
            log.warning("%s; this validation point stays unscored", error)
            return None
        if response is None:
            return None
        return [score_from_distance(s.distance) if s.face_found else 0.0 for s in response.scores]
