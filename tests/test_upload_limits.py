"""UploadPhotos within a tenant's limits when streams race each other, and when the subject record
cannot be written: what a refused or failed stream stored and reserved is given back."""

from __future__ import annotations

import asyncio
import dataclasses
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
