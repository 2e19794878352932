"""Identity ranking of render candidates against a real faceqa gRPC service: real photos stand in for
rendered candidates (the tiny model never draws a face). The subject's other photos, a stranger and a
photo without a face go in; the stranger and the no-face photo are dropped and the rest come out
best first, with the scores faceqa gives."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from PIL import Image
from studio.v1 import faceqa_pb2, faceqa_pb2_grpc

from services.cli.stack import EmbeddedStack
from services.common.identity_scoring import (
    IMAGE_SIDE,
    IdentityClient,
    IdentityRefused,
    encode_for_scoring,
    score_from_distance,
)
from services.renderer.ranking import Candidate, rank
from tests.fixtures_stack import faces

pytestmark = pytest.mark.asyncio(loop_scope="session")


def photo(path) -> np.ndarray:
    image = Image.open(path).convert("RGB")
    image.thumbnail((640, 640))
    return np.asarray(image)


async def test_ranking_drops_the_stranger_and_the_no_face_and_orders_the_rest_by_score(stack: EmbeddedStack) -> None:
    lisa = {path.name: path for path in faces("lisa")}
    references = [Image.open(lisa[name]).convert("RGB") for name in ("lisa_lisa1.jpg", "lisa_lisa2.jpg")]
    subject_photos = ["lisa_lisa4.jpg", "zoom_30cm.jpg", "zoom_60cm.jpg"]
    candidates = [Candidate(seed=1, image=photo(lisa[subject_photos[0]])),
                  Candidate(seed=2, image=photo(faces("london")[0])),  # someone else
                  Candidate(seed=3, image=photo(lisa[subject_photos[1]])),
                  Candidate(seed=4, image=photo(faces("no_face")[0])),  # nobody
                  Candidate(seed=5, image=photo(lisa[subject_photos[2]]))]
    async with grpc.aio.insecure_channel(stack.addresses["faceqa"]) as channel:
        stub = faceqa_pb2_grpc.FaceQAStub(channel)
        kept = await rank(IdentityClient(stub, references), candidates, keep=3)
        direct = await stub.ScoreIdentity(faceqa_pb2.ScoreIdentityRequest(
            reference_images=[encode_for_scoring(image, 256) for image in references],
            images=[encode_for_scoring(Image.fromarray(c.image), IMAGE_SIDE) for c in candidates]), timeout=60)

    assert sorted(c.seed for c in kept) == [1, 3, 5]  # stranger (2) and no face (4) dropped
    scores = [c.score for c in kept]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)
    expected = {c.seed: score_from_distance(s.distance) for c, s in zip(candidates, direct.scores, strict=True)}
    assert scores == pytest.approx([expected[c.seed] for c in kept], abs=1e-4)
    assert not direct.scores[1].same_person and not direct.scores[3].face_found


async def test_ranking_keeps_at_most_the_ordered_count(stack: EmbeddedStack) -> None:
    lisa = faces("lisa")
    candidates = [Candidate(seed=index, image=photo(path)) for index, path in enumerate(lisa[2:5])]
    async with grpc.aio.insecure_channel(stack.addresses["faceqa"]) as channel:
        kept = await rank(IdentityClient(faceqa_pb2_grpc.FaceQAStub(channel), [Image.open(lisa[0])]), candidates, 1)
    assert len(kept) == 1 and kept[0].score == max(c.score for c in candidates)


async def test_a_reference_without_a_face_is_refused_not_waited_on(stack: EmbeddedStack) -> None:
    nobody = Image.open(faces("no_face")[1]).convert("RGB")
    candidates = [Candidate(seed=1, image=photo(faces("lisa")[0]))]
    async with grpc.aio.insecure_channel(stack.addresses["faceqa"]) as channel:
        with pytest.raises(IdentityRefused, match="INVALID_ARGUMENT: no face found in any reference"):
            await rank(IdentityClient(faceqa_pb2_grpc.FaceQAStub(channel), [nobody]), candidates, 1)
