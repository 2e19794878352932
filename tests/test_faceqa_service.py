"""Face checks through the running services: the public UploadPhotos/GetSubject/CreateOrder path
(ingest -> faceqa over gRPC, photos sealed in the store) and faceqa's own API, up to its largest requests."""

from __future__ import annotations

import asyncio
import io
import re
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pillow_heif
import pytest
from PIL import Image, ImageFilter
from studio.v1 import common_pb2, faceqa_pb2, faceqa_pb2_grpc, state_pb2, studio_pb2

from services.cli.client import StudioClient
from services.cli.stack import EmbeddedStack
from services.common import topology
from services.common.bus import Bus
from services.common.identity_scoring import (
    IMAGE_SIDE,
    MAX_REFERENCES,
    MAX_REQUEST_BYTES,
    REFERENCE_SIDE,
    SCORING_BATCH,
    IdentityClient,
    IdentityRefused,
    encode_for_scoring,
)
from services.common.objects import photo_key
from services.ingest.context import ensure_tenant
from tests.fixtures_stack import FACES_DIR, faces

pytestmark = pytest.mark.asyncio(loop_scope="session")
pillow_heif.register_heif_opener()
HEADSHOT, REFERENCE = common_pb2.PHOTO_ROLE_HEADSHOT, common_pb2.PHOTO_ROLE_REFERENCE


def london(name: str) -> bytes:
    path = FACES_DIR / "london" / f"{name}.jpg"
    if not path.exists():
        pytest.skip(f"no London photos in {FACES_DIR}")
    return path.read_bytes()


def transformed(name: str, image_format: str = "JPEG", blur: float = 0, size: int = 1350) -> bytes:
    with Image.open(io.BytesIO(london(name))) as opened:
        image = opened.convert("RGB").resize((size, size))
    if blur:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, quality=80)
    return buffer.getvalue()


async def upload(client: StudioClient, subject_id: str, photos: list[tuple[str, bytes, int]]):
    async def stream() -> AsyncIterator[studio_pb2.UploadPhotosRequest]:
        for filename, data, role in photos:
            header = studio_pb2.PhotoHeader(subject_id=subject_id, role=role, filename=filename)
            yield studio_pb2.UploadPhotosRequest(header=header)
            yield studio_pb2.UploadPhotosRequest(chunk=data)

    return await client.stub.UploadPhotos(stream(), metadata=client.metadata, timeout=300)


def stored(stack: EmbeddedStack) -> set[Path]:
    return {p for p in (stack.data_dir / "blobs").rglob("*") if p.is_file()}


async def test_upload_verdicts_set_verdict_and_a_later_upload(client: StudioClient, stack: EmbeddedStack):
    subject = await client.create_subject()
    response = await upload(client, subject.subject_id, [
        ("headshot.heic", transformed("001_neutral", "HEIF", size=900), HEADSHOT),
        ("smiling.jpg", london("001_smiling"), REFERENCE),
        ("friend.jpg", london("002_neutral"), REFERENCE),
        ("smiling-copy.jpg", transformed("001_smiling", size=1200), REFERENCE),
        ("shaky.jpg", transformed("001_smiling", blur=4), REFERENCE),
    ])
    reasons = [list(p.verdict.reasons) for p in response.photos]
    assert reasons == [[], [], ["IDENTITY_MISMATCH"], ["DUPLICATE"], ["BLURRY"]]
    friend, copy = response.photos[2].verdict, response.photos[3].verdict
    assert friend.measurements.identity_distance > 0.5 and friend.messages[0].startswith("This looks like")
    assert copy.measurements.duplicate_of == response.photos[1].photo_id
    assert response.photos[1].verdict.measurements.HasField("identity_distance")
    verdict = response.set_verdict
    assert verdict.accepted_photos == 2 and verdict.headshot_accepted and verdict.sufficient
    assert verdict.min_accepted_photos == 1 and verdict.recommended_photos == 20
    assert verdict.diversity.luminance_max >= verdict.diversity.luminance_min > 0

    kept = {p.name for p in stored(stack) if f"/{subject.subject_id}/photos/" in str(p)}
    assert kept == {response.photos[0].photo_id, response.photos[1].photo_id}

    later = await upload(client, subject.subject_id, [
        ("neutral-again.jpg", transformed("001_neutral", size=1100), REFERENCE),
        ("friend-smiling.jpg", london("002_smiling"), REFERENCE),
    ])
    assert [list(p.verdict.reasons) for p in later.photos] == [["DUPLICATE"], ["IDENTITY_MISMATCH"]]
    assert later.photos[0].verdict.measurements.duplicate_of == response.photos[0].photo_id
    assert later.set_verdict.accepted_photos == 2
    fetched = await client.stub.GetSubject(
        studio_pb2.GetSubjectRequest(subject_id=subject.subject_id), metadata=client.metadata, timeout=30
    )
    assert fetched.subject.set_verdict == later.set_verdict and len(fetched.subject.photos) == 7


async def subject_record(stack: EmbeddedStack, subject_id: str) -> state_pb2.SubjectRecord:
    bus = await Bus.connect(stack.nats.url, name="test")
    try:
        return await bus.kv_get(topology.SUBJECTS_BUCKET, subject_id, state_pb2.SubjectRecord)
    finally:
        await bus.close()


async def test_photos_sent_before_the_headshot_are_judged_again_with_it(client: StudioClient, stack: EmbeddedStack):
    subject = await client.create_subject()
    first = await upload(client, subject.subject_id, [
        ("mine.jpg", london("001_smiling"), REFERENCE), ("theirs.jpg", london("002_smiling"), REFERENCE),
    ])
    assert [p.verdict.accepted for p in first.photos] == [True, True]  # no headshot to match yet
    mine, theirs = (p.photo_id for p in first.photos)
    later = await upload(client, subject.subject_id, [("headshot.jpg", london("001_neutral"), HEADSHOT)])
    headshot = later.photos[0].photo_id
    assert later.photos[0].verdict.accepted and later.set_verdict.accepted_photos == 2
    someone_else = await upload(client, subject.subject_id, [("other.jpg", london("002_neutral"), HEADSHOT)])
    assert list(someone_else.photos[0].verdict.reasons) == ["IDENTITY_MISMATCH"]
    assert someone_else.set_verdict.accepted_photos == 2

    record = await subject_record(stack, subject.subject_id)
    verdicts = {p.photo_id: p.verdict for p in record.subject.photos}
    assert verdicts[mine].accepted and verdicts[mine].measurements.identity_distance < 0.5
    assert list(verdicts[theirs].reasons) == ["IDENTITY_MISMATCH"] and not verdicts[theirs].accepted
    assert set(record.crop_keys) == {mine, headshot}  # what training reads
    kept = {p.name for p in stored(stack) if f"/{subject.subject_id}/" in str(p)}
    assert kept == {mine, headshot, f"{mine}.png", f"{headshot}.png"}  # photos and crops


async def test_tenant_minimum_and_headshot_gate_orders(stack: EmbeddedStack):
    bus = await Bus.connect(stack.nats.url, name="test")
    await ensure_tenant(bus, "strict", "Strict Studio", "sk_strict_key", min_accepted_photos=3)
    await bus.close()
    strict = StudioClient(stack.public_endpoint, "sk_strict_key")
    try:
        subject = await strict.create_subject()
        response = await upload(strict, subject.subject_id, [("smiling.jpg", london("003_smiling"), REFERENCE)])
        verdict = response.set_verdict
        assert list(verdict.problems) == ["TOO_FEW_PHOTOS", "NO_HEADSHOT"] and not verdict.sufficient
        assert verdict.min_accepted_photos == 3 and len(verdict.messages) == 2
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await strict.create_order(subject.subject_id, ["studio-frontal-soft"], 1)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "1 accepted photo(s); 3 needed" in refused.value.details() and "headshot" in refused.value.details()
    finally:
        await strict.close()


async def test_faceqa_refuses_bad_requests(stack: EmbeddedStack):
    async with grpc.aio.insecure_channel(stack.addresses["faceqa"]) as channel:
        faceqa = faceqa_pb2_grpc.FaceQAStub(channel)
        photo = faceqa_pb2.StoredPhoto(photo_id="p", object_key="k", role=REFERENCE, crop_key="c")
        bad = [
            (faceqa_pb2.CheckPhotoSetRequest(subject_id="s", photos=[photo], crop_size=64), "tenant_id"),
            (faceqa_pb2.CheckPhotoSetRequest(tenant_id="t", subject_id="s", crop_size=64), "photos"),
            (faceqa_pb2.CheckPhotoSetRequest(tenant_id="t", subject_id="s", photos=[photo], crop_size=4), "crop_size"),
            (faceqa_pb2.CheckPhotoSetRequest(
                tenant_id="t", subject_id="s", crop_size=64,
                photos=[faceqa_pb2.StoredPhoto(photo_id="p", object_key="k", crop_key="c")]), "role"),
        ]
        for request, field in bad:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await faceqa.CheckPhotoSet(request, timeout=30)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in refused.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await faceqa.ScoreIdentity(faceqa_pb2.ScoreIdentityRequest(reference_images=[london("001_neutral")]))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_checking_a_photo_that_is_not_stored_is_not_found(client: StudioClient, stack: EmbeddedStack):
    subject = await client.create_subject()
    tenant = "default"
    missing = faceqa_pb2.StoredPhoto(
        photo_id="photo_gone", object_key=photo_key(tenant, subject.subject_id, "photo_gone"), role=HEADSHOT,
        crop_key=f"tenants/{tenant}/subjects/{subject.subject_id}/crops/photo_gone.png",
    )
    async with grpc.aio.insecure_channel(stack.addresses["faceqa"]) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await faceqa_pb2_grpc.FaceQAStub(channel).CheckPhotoSet(faceqa_pb2.CheckPhotoSetRequest(
                tenant_id=tenant, subject_id=subject.subject_id, photos=[missing], crop_size=64), timeout=30)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND


async def test_score_identity(stack: EmbeddedStack):
    no_face = faces("no_face")[0].read_bytes()
    async with grpc.aio.insecure_channel(stack.addresses["faceqa"]) as channel:
        faceqa = faceqa_pb2_grpc.FaceQAStub(channel)
        scored = await faceqa.ScoreIdentity(faceqa_pb2.ScoreIdentityRequest(
            reference_images=[london("001_neutral"), london("001_smiling")],
            images=[transformed("001_smiling", size=512), london("002_neutral"), no_face],
        ), timeout=60)
        same, stranger, nothing = scored.scores
        assert same.face_found and same.same_person and same.distance < scored.threshold
        assert stranger.face_found and not stranger.same_person and stranger.distance > scored.threshold
        assert not nothing.face_found and same.face_box.right > same.face_box.left
        again = await faceqa.ScoreIdentity(faceqa_pb2.ScoreIdentityRequest(
            reference_embeddings=[scored.reference], images=[london("002_neutral")]), timeout=60)
        assert again.scores[0].distance == pytest.approx(stranger.distance, abs=1e-4)


async def test_single_photo_check_still_serves_old_callers(client: StudioClient, stack: EmbeddedStack):
    subject = await client.create_subject()
    tilted = next(p for p in faces("lisa") if p.name == "lisa_lisa3.jpg").read_bytes()
    [summary] = (await upload(client, subject.subject_id, [("tilted.jpg", tilted, REFERENCE)])).photos
    assert summary.verdict.accepted
    request = faceqa_pb2.CheckPhotoRequest(
        tenant_id="default", subject_id=subject.subject_id, photo_id=summary.photo_id,
        object_key=photo_key("default", subject.subject_id, summary.photo_id), role=HEADSHOT,
        crop_key=f"tenants/default/subjects/{subject.subject_id}/crops/again.png", crop_size=64,
    )
    async with grpc.aio.insecure_channel(stack.addresses["faceqa"]) as channel:
        checked = await faceqa_pb2_grpc.FaceQAStub(channel).CheckPhoto(request, timeout=60)
    # lisa3's head is tilted: fine as a reference, not as the headshot.
    assert list(checked.verdict.reasons) == ["NOT_FRONTAL"] and checked.crop_key == ""
    assert checked.verdict.measurements.roll_deg < -15


def noise(side: int, seed: int) -> bytes:
    """The worst case of a JPEG sent for scoring: noise, at the largest side sent."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    return encode_for_scoring(Image.fromarray(pixels), side)


def london_at(name: str, side: int) -> bytes:
    return encode_for_scoring(Image.open(io.BytesIO(london(name))), side)


async def score_identity_calls(stack: EmbeddedStack) -> float:
    url = f"http://127.0.0.1:{stack.processes['faceqa']._env['STUDIO_METRICS_PORT']}/metrics"
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read().decode())
    found = re.search(r'^studio_rpc_total\{[^}]*method="/studio.v1.FaceQA/ScoreIdentity"[^}]*\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


async def test_score_identity_takes_the_largest_request_and_the_client_splits_larger_ones(stack: EmbeddedStack):
    """A renderer's batch of candidates and the most reference crops, all as large as a JPEG of their size gets:
    far over gRPC's default 4 MiB. A turned-away request would read as faceqa unreachable, and be tried forever."""
    references = [london_at("001_neutral", REFERENCE_SIDE),
                  *(noise(REFERENCE_SIDE, seed) for seed in range(MAX_REFERENCES - 1))]
    images = [london_at("001_smiling", IMAGE_SIDE), *(noise(IMAGE_SIDE, seed) for seed in range(SCORING_BATCH - 1))]
    largest = faceqa_pb2.ScoreIdentityRequest(reference_images=references, images=images)
    assert 4 * 2**20 < largest.ByteSize() <= MAX_REQUEST_BYTES
    async with grpc.aio.insecure_channel(stack.addresses["faceqa"]) as channel:
        faceqa = faceqa_pb2_grpc.FaceQAStub(channel)
        scored = await faceqa.ScoreIdentity(largest, timeout=300)
        assert len(scored.scores) == SCORING_BATCH and scored.scores[0].same_person

        client = IdentityClient(faceqa, [Image.open(io.BytesIO(london("001_neutral")))])
        more = [*images, *images[1:9], images[0]]  # more than one request holds; the face again, last
        assert faceqa_pb2.ScoreIdentityRequest(images=more).ByteSize() > MAX_REQUEST_BYTES
        calls_before = await score_identity_calls(stack)
        answer = await client.score_encoded(more)
        assert await score_identity_calls(stack) == calls_before + 2
        first, again = answer.scores[0], answer.scores[-1]  # the second call sent faceqa's consensus instead
        assert len(answer.scores) == len(more) and first.same_person and again.same_person
        assert again.distance == pytest.approx(first.distance, abs=1e-4)
        with pytest.raises(IdentityRefused):  # no request could hold it: refused here, not sent
            await client.score_encoded([b"\xff" * MAX_REQUEST_BYTES])
        assert await score_identity_calls(stack) == calls_before + 2
