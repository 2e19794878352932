"""UploadPhotos within a tenant's limits when streams race each other, and when the subject record
cannot be written or is gone: what a refused or failed stream stored and reserved is given back. A
stream bound to be refused is refused before it is read."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from pathlib import Path

import grpc
import pytest
from studio.v1 import state_pb2

from services.cli.stack import EmbeddedStack
from services.common import topology
from services.common.bus import Bus
from services.ingest import photo_digests
from studio_client import NO_RETRIES, Photo, StudioClient
from tests.fixtures_tenants import (  # noqa: F401  (fixtures)
    HEADSHOT,
    REFERENCE,
    Tenants,
    admin,
    lisa_headshot,
    lisa_references,
    tenants,
)
from tests.nats_faults import messages_capped

pytestmark = pytest.mark.asyncio(loop_scope="session")


def subject_blobs(stack: EmbeddedStack, subject_id: str, area: str) -> list[Path]:
    return [p for p in (stack.data_dir / "blobs").rglob("*") if f"/{subject_id}/{area}/" in str(p) and p.is_file()]


async def tenant_without_retries(tenants: Tenants, **settings) -> StudioClient:  # noqa: F811
    _, client = await tenants.new(**settings)
    return tenants.client(client.metadata[0][1], retry=NO_RETRIES)


async def test_concurrent_streams_stay_within_the_photos_per_subject_quota(
    stack: EmbeddedStack, tenants: Tenants  # noqa: F811
) -> None:
    streams = [[Photo.from_path(path, REFERENCE) for path in pair] for pair in (lisa_references()[:2],
                                                                                 lisa_references()[2:4])]
    all_bytes = sum(len(photo.data) for photos in streams for photo in photos)
    client = await tenant_without_retries(tenants, max_photos_per_subject=3, max_upload_bytes_per_day=all_bytes)
    subject_id = (await client.create_subject()).subject_id
    results = await asyncio.gather(*(client.upload_photos(subject_id, photos) for photos in streams),
                                   return_exceptions=True)
    refused = [result for result in results if isinstance(result, grpc.aio.AioRpcError)]
    assert len(refused) == 1, results
    assert refused[0].code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_photos_per_subject" in refused[0].details() and "would pass 3" in refused[0].details()
    stored = (await client.get_subject(subject_id)).photos
    assert len(stored) == 2
    assert len(subject_blobs(stack, subject_id, "photos")) == sum(1 for s in stored if s.verdict.accepted)
    # The refused stream's bytes were given back: another subject takes its photos within the day's quota.
    other_id = (await client.create_subject()).subject_id
    await client.upload_photos(other_id, streams[results.index(refused[0])])


async def test_a_commit_that_fails_gives_back_blobs_quota_and_client_photo_id(
    stack: EmbeddedStack, tenants: Tenants  # noqa: F811
) -> None:
    photo = dataclasses.replace(Photo.from_path(lisa_headshot(), HEADSHOT), client_photo_id="d-1")
    tenant_id, direct = await tenants.new(max_upload_bytes_per_day=len(photo.data))
    client = tenants.client(direct.metadata[0][1], retry=NO_RETRIES)
    subject_id = (await client.create_subject()).subject_id
    bus = await Bus.connect(stack.nats.url, name="test-refusing-subject-records")
    # The stream first lists d-1's digest entry on the subject record, then commits the checked photo to it: a
    # record size limit between the two lets the listing through and refuses the commit (a photo adds far more).
    listed = await bus.kv_get(topology.SUBJECTS_BUCKET, subject_id, state_pb2.SubjectRecord)
    entry = photo_digests.entry_name(tenant_id, subject_id, "d-1")
    listed.idempotency_entries.append(entry)
    try:
        async with messages_capped(bus, f"KV_{topology.SUBJECTS_BUCKET}", listed.ByteSize() + 100):
            with pytest.raises(grpc.aio.AioRpcError):
                await client.upload_photos(subject_id, [photo])
            kept = await bus.kv_get(topology.SUBJECTS_BUCKET, subject_id, state_pb2.SubjectRecord)
    finally:
        await bus.close()
    assert entry in kept.idempotency_entries, "the stream failed before its commit"
    assert list((await client.get_subject(subject_id)).photos) == []
    assert subject_blobs(stack, subject_id, "photos") == [] and subject_blobs(stack, subject_id, "crops") == []
    # The day's bytes (exactly this photo) were given back, and d-1 is free for another photo.
    smallest = min(lisa_references(), key=lambda path: path.stat().st_size)
    other = Photo(smallest.read_bytes(), REFERENCE, "other.jpg", "d-1")
    assert len(other.data) <= len(photo.data)
    [summary] = (await client.upload_photos(subject_id, [other])).photos
    assert not summary.already_uploaded and summary.client_photo_id == "d-1"


@pytest.mark.parametrize("case", ["missing subject", "byte quota used up"])
async def test_a_stream_bound_to_be_refused_is_refused_before_its_chunks_are_sent(
    tenants: Tenants, case: str  # noqa: F811
) -> None:
    smallest = min(lisa_references(), key=lambda path: path.stat().st_size)
    client = await tenant_without_retries(tenants, max_upload_bytes_per_day=smallest.stat().st_size)
    subject_id = f"subj_{secrets.token_hex(10)}"
    if case == "byte quota used up":
        subject_id = (await client.create_subject()).subject_id
        await client.upload_photos(subject_id, [Photo.from_path(smallest, REFERENCE)])
    big = Photo(b"\xff\xd8\xff" + bytes(19 * 1024 * 1024), REFERENCE, "big.jpg")
    sent: list[int] = []
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await client.upload_photos(subject_id, [big], on_bytes=sent.append)
    if case == "missing subject":
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND and subject_id in raised.value.details()
    else:
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_upload_bytes_per_day" in raised.value.details()
        assert len((await client.get_subject(subject_id)).photos) == 1
    assert sum(sent) == 0, f"the stream was answered after {sum(sent)} of {len(big.data)} bytes"


async def test_a_stream_past_the_byte_quota_half_way_is_refused_and_keeps_nothing(
    stack: EmbeddedStack, tenants: Tenants  # noqa: F811
) -> None:
    """Refused once sent whole (its bytes past the quota are not kept): the client sees the quota, not a broken call."""
    photos = [Photo.from_path(path, REFERENCE) for path in lisa_references()[:2]]
    client = await tenant_without_retries(tenants, max_upload_bytes_per_day=len(photos[0].data) + 1)
    subject_id = (await client.create_subject()).subject_id
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await client.upload_photos(subject_id, photos)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_upload_bytes_per_day" in raised.value.details()
    assert list((await client.get_subject(subject_id)).photos) == []
    assert subject_blobs(stack, subject_id, "photos") == []


async def test_an_upload_whose_subject_goes_during_its_check_is_not_found_and_keeps_nothing(
    stack: EmbeddedStack, tenants: Tenants  # noqa: F811
) -> None:
    client = await tenant_without_retries(tenants)
    subject_id = (await client.create_subject()).subject_id
    upload = asyncio.create_task(client.upload_photos(subject_id, [Photo.from_path(path, REFERENCE)
                                                                   for path in lisa_references()[:3]]))
    bus = await Bus.connect(stack.nats.url, name="test-subject-gone-mid-upload")
    try:
        while not subject_blobs(stack, subject_id, "photos"):  # sealed and stored: faceqa checks them next
            assert not upload.done(), "the upload ended before its photos were stored"
            await asyncio.sleep(0.005)
        await bus.kv_purge(topology.SUBJECTS_BUCKET, subject_id)  # as the purge of a deletion does
    finally:
        await bus.close()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await upload
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND and subject_id in raised.value.details()
    assert subject_blobs(stack, subject_id, "photos") == [] and subject_blobs(stack, subject_id, "crops") == []


async def test_twin_streams_of_one_photo_both_answer_with_the_photo_stored(
    stack: EmbeddedStack, tenants: Tenants  # noqa: F811
) -> None:
    client = await tenant_without_retries(tenants)
    subject_id = (await client.create_subject()).subject_id
    photo = Photo.from_path(lisa_references()[0], REFERENCE)  # the same client_photo_id in both streams
    results = await asyncio.gather(*(client.upload_photos(subject_id, [photo]) for _ in range(2)))
    [stored] = (await client.get_subject(subject_id)).photos
    assert [result.photos[0].photo_id for result in results] == [stored.photo_id] * 2
    assert sorted(result.photos[0].already_uploaded for result in results) == [False, True]
    assert len(subject_blobs(stack, subject_id, "photos")) == int(stored.verdict.accepted)
