"""Bad input gets a specific status and reason, and leaves nothing stored."""

from __future__ import annotations

import asyncio
import io
import tarfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from studio.v1 import common_pb2, state_pb2, studio_pb2

from services.cli.client import PORTRAIT_CONSENT, StudioClient
from services.cli.stack import EmbeddedStack
from services.common.bus import Bus
from services.common.topology import IDEMPOTENCY_BUCKET, PENDING_STREAM, SUBJECTS_BUCKET
from services.ingest.context import ensure_tenant
from services.ingest.upload_stream import MAX_STREAM_MESSAGES
from tests.fixtures_stack import faces
from tests.fixtures_tenants import lisa_headshot
from tests.nats_faults import store_full

pytestmark = pytest.mark.asyncio(loop_scope="session")

REFERENCE = common_pb2.PHOTO_ROLE_REFERENCE


def stored_blobs(stack: EmbeddedStack) -> set[Path]:
    return {p for p in (stack.data_dir / "blobs").rglob("*") if p.is_file()}


async def expect_status(code: grpc.StatusCode, call) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == code, raised.value.details()
    assert raised.value.details()
    return raised.value.details()


async def raw_upload(client: StudioClient, messages: list[studio_pb2.UploadPhotosRequest]):
    async def stream() -> AsyncIterator[studio_pb2.UploadPhotosRequest]:
        for message in messages:
            yield message

    return await client.stub.UploadPhotos(stream(), metadata=client.metadata, timeout=60)


def header(subject_id: str, filename: str = "x.jpg", role: int = REFERENCE) -> studio_pb2.UploadPhotosRequest:
    return studio_pb2.UploadPhotosRequest(
        header=studio_pb2.PhotoHeader(subject_id=subject_id, role=role, filename=filename)
    )


async def test_non_image_upload_is_refused_and_nothing_is_stored(client: StudioClient, stack: EmbeddedStack):
    subject = await client.create_subject()
    before = stored_blobs(stack)
    messages = [header(subject.subject_id, "notes.txt"), studio_pb2.UploadPhotosRequest(chunk=b"%PDF-1.7 not a photo")]
    details = await expect_status(grpc.StatusCode.INVALID_ARGUMENT, raw_upload(client, messages))
    assert "notes.txt" in details
    assert stored_blobs(stack) == before
    response = await client.stub.GetSubject(
        studio_pb2.GetSubjectRequest(subject_id=subject.subject_id), metadata=client.metadata
    )
    assert list(response.subject.photos) == []


async def test_a_bad_photo_in_a_stream_stores_none_of_the_stream(client: StudioClient, stack: EmbeddedStack):
    subject = await client.create_subject()
    good = faces("lisa")[0].read_bytes()
    before = stored_blobs(stack)
    messages = [
        header(subject.subject_id, "good.jpg"), studio_pb2.UploadPhotosRequest(chunk=good),
        header(subject.subject_id, "bad.bin"), studio_pb2.UploadPhotosRequest(chunk=b"\x00" * 100),
    ]
    await expect_status(grpc.StatusCode.INVALID_ARGUMENT, raw_upload(client, messages))
    assert stored_blobs(stack) == before


@pytest.mark.parametrize(
    "messages, reason",
    [
        ([], "empty upload"),
        ([studio_pb2.UploadPhotosRequest(chunk=b"\xff\xd8\xff")], "must start with a photo header"),
        ([header("SUBJECT")], "has no bytes"),
        ([header("SUBJECT", role=common_pb2.PHOTO_ROLE_UNSPECIFIED)], "role"),
        ([header("SUBJECT", filename="")], "filename"),
    ],
)
async def test_malformed_upload_streams(client: StudioClient, messages, reason):
    subject = await client.create_subject()
    for message in messages:
        if message.HasField("header"):
            message.header.subject_id = subject.subject_id
    details = await expect_status(grpc.StatusCode.INVALID_ARGUMENT, raw_upload(client, messages))
    assert reason in details


async def test_oversized_photo_is_refused(client: StudioClient, stack: EmbeddedStack):
    subject = await client.create_subject()
    before = stored_blobs(stack)
    chunk = b"\xff\xd8\xff" + bytes(1024 * 1024 - 3)
    messages = [header(subject.subject_id, "huge.jpg")] + [studio_pb2.UploadPhotosRequest(chunk=chunk)] * 26
    assert "exceeds" in await expect_status(grpc.StatusCode.INVALID_ARGUMENT, raw_upload(client, messages))
    assert stored_blobs(stack) == before


def chunk(data: bytes) -> studio_pb2.UploadPhotosRequest:
    return studio_pb2.UploadPhotosRequest(chunk=data)


async def test_empty_chunks_and_messages_are_refused_and_nothing_is_stored(client: StudioClient, stack: EmbeddedStack):
    subject = await client.create_subject()
    good = faces("lisa")[0].read_bytes()
    before = stored_blobs(stack)
    cases = [
        ([header(subject.subject_id), chunk(good[:100]), chunk(b""), chunk(good[100:])],
         "chunk 2 of photo 'x.jpg' is empty"),
        ([header(subject.subject_id), studio_pb2.UploadPhotosRequest(), chunk(good)],
         "message 2 of the stream is empty"),
    ]
    for messages, reason in cases:
        assert reason in await expect_status(grpc.StatusCode.INVALID_ARGUMENT, raw_upload(client, messages))
    assert stored_blobs(stack) == before
    assert list((await client.get_subject(subject.subject_id)).photos) == []


async def test_a_stream_of_tiny_chunks_is_refused(client: StudioClient, stack: EmbeddedStack):
    subject = await client.create_subject()
    before = stored_blobs(stack)
    photo = b"\xff\xd8\xff" + bytes(MAX_STREAM_MESSAGES)  # one byte a message: a few hundred KiB in all
    messages = [header(subject.subject_id)] + [chunk(photo[i : i + 1]) for i in range(MAX_STREAM_MESSAGES)]
    details = await expect_status(grpc.StatusCode.INVALID_ARGUMENT, raw_upload(client, messages))
    assert f"at most {MAX_STREAM_MESSAGES} messages" in details
    assert stored_blobs(stack) == before


async def test_unknown_subject(client: StudioClient):
    photo = faces("lisa")[0]
    await expect_status(grpc.StatusCode.NOT_FOUND, client.upload("subj_doesnotexist", [(photo, REFERENCE)]))
    await expect_status(grpc.StatusCode.NOT_FOUND, client.create_order("subj_doesnotexist", ["studio-frontal-soft"], 1))


async def test_missing_and_wrong_api_key(stack: EmbeddedStack):
    for api_key in ("", "sk_wrong"):
        stranger = StudioClient(stack.public_endpoint, api_key)
        try:
            await expect_status(grpc.StatusCode.UNAUTHENTICATED, stranger.create_subject())
        finally:
            await stranger.close()


async def test_a_full_event_store_is_resource_exhausted_naming_it_and_not_retried(stack: EmbeddedStack):
    """The idempotency keys' bucket at its budget: CreateSubject's first write is refused. The caller is told the
    studio's event store is full (no internals), the client does not retry it, and the subject is created once
    there is space again."""
    retries: list[int] = []
    studio = StudioClient(stack.public_endpoint, stack.paths.api_key_file.read_text().strip(),
                          on_retry=lambda error, attempt: retries.append(attempt))
    bus = await Bus.connect(stack.nats.url, name="test")
    try:
        async with store_full(bus, f"KV_{IDEMPOTENCY_BUCKET}"):
            details = await expect_status(grpc.StatusCode.RESOURCE_EXHAUSTED, studio.create_subject())
        assert "event store is full" in details and "KV_" not in details and retries == []
        assert (await studio.create_subject()).subject_id
    finally:
        await bus.close()
        await studio.close()


async def test_an_order_whose_queue_is_full_is_resource_exhausted_and_fails(client: StudioClient, stack: EmbeddedStack):
    """PENDING at its budget: the order's job cannot be held. The caller is told the event store is full (not to
    create the order again at once), and the order fails instead of holding a concurrent-order slot."""
    subject = await client.create_subject()
    await client.upload(subject.subject_id, [(lisa_headshot(), common_pb2.PHOTO_ROLE_HEADSHOT)])
    bus = await Bus.connect(stack.nats.url, name="test")
    try:
        async with store_full(bus, PENDING_STREAM.name):
            details = await expect_status(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                          client.create_order(subject.subject_id, ["studio-frontal-soft"], 1))
    finally:
        await bus.close()
    assert "event store is full" in details
    [order] = (await client.list_orders(subject_id=subject.subject_id)).orders
    for _ in range(100):
        if (order := await client.get_order(order.order_id)).state == common_pb2.ORDER_STATE_FAILED:
            break
        await asyncio.sleep(0.1)
    assert (order.state, order.failure_stage) == (common_pb2.ORDER_STATE_FAILED, "queueing")


async def test_photo_without_a_face_gets_a_verdict_and_is_not_kept(client: StudioClient, stack: EmbeddedStack):
    subject = await client.create_subject()
    before = stored_blobs(stack)
    [summary] = await client.upload(subject.subject_id, [(faces("no_face")[0], REFERENCE)])
    assert not summary.verdict.accepted and list(summary.verdict.reasons) == ["NO_FACE"]
    assert summary.verdict.messages[0]
    assert stored_blobs(stack) == before


async def test_order_without_accepted_photos_queues_nothing(client: StudioClient, stack: EmbeddedStack):
    subject = await client.create_subject()
    await client.upload(subject.subject_id, [(faces("no_face")[0], REFERENCE)])
    bus = await Bus.connect(stack.nats.url, name="test")
    try:
        queued_before = (await bus.js.stream_info(PENDING_STREAM.name)).state.messages
        details = await expect_status(
            grpc.StatusCode.FAILED_PRECONDITION, client.create_order(subject.subject_id, ["studio-frontal-soft"], 1)
        )
        assert "accepted photo" in details
        assert (await bus.js.stream_info(PENDING_STREAM.name)).state.messages == queued_before
    finally:
        await bus.close()


async def test_bad_orders_and_consent(client: StudioClient):
    subject = await client.create_subject()
    assert "unknown style" in await expect_status(
        grpc.StatusCode.INVALID_ARGUMENT, client.create_order(subject.subject_id, ["disco"], 1)
    )
    assert "count" in await expect_status(
        grpc.StatusCode.INVALID_ARGUMENT, client.create_order(subject.subject_id, ["studio-frontal-soft"], 0)
    )
    no_scope = common_pb2.ConsentRecord(agreement_version="2026-01", retention_days=30)
    await expect_status(grpc.StatusCode.FAILED_PRECONDITION, client.create_subject(consent=no_scope))
    no_version = common_pb2.ConsentRecord(scopes=PORTRAIT_CONSENT.scopes, retention_days=30)
    await expect_status(grpc.StatusCode.INVALID_ARGUMENT, client.create_subject(consent=no_version))


async def test_create_subject_is_idempotent(client: StudioClient):
    first = await client.create_subject(idempotency_key="customer-42")
    again = await client.create_subject(idempotency_key="customer-42")
    other = await client.create_subject(idempotency_key="customer-43")
    assert first.subject_id == again.subject_id != other.subject_id


async def test_another_tenant_sees_nothing(client: StudioClient, stack: EmbeddedStack):
    subject = await client.create_subject()
    await client.upload(subject.subject_id, [(faces("lisa")[0], common_pb2.PHOTO_ROLE_HEADSHOT)])
    order = await client.create_order(subject.subject_id, ["studio-frontal-soft"], 1, idempotency_key="o-1")
    assert (await client.create_order(subject.subject_id, ["studio-frontal-soft"], 1, "o-1")).order_id == order.order_id
    bus = await Bus.connect(stack.nats.url, name="test")
    await ensure_tenant(bus, "rival", "Rival Photo", "sk_rival_key")
    await bus.close()
    rival = StudioClient(stack.public_endpoint, "sk_rival_key")
    try:
        await expect_status(grpc.StatusCode.NOT_FOUND, rival.stub.GetSubject(
            studio_pb2.GetSubjectRequest(subject_id=subject.subject_id), metadata=rival.metadata))
        photo = faces("lisa")[0]
        await expect_status(grpc.StatusCode.NOT_FOUND, rival.upload(subject.subject_id, [(photo, REFERENCE)]))
        style = ["studio-frontal-soft"]
        await expect_status(grpc.StatusCode.NOT_FOUND, rival.create_order(subject.subject_id, style, 1))
        await expect_status(grpc.StatusCode.NOT_FOUND, rival.get_order(order.order_id))
        await expect_status(grpc.StatusCode.NOT_FOUND, rival.download(order.order_id, "portrait_x"))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in rival.watch(order.order_id, timeout_s=10):
                pass
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await rival.close()
    async for response in client.watch(order.order_id, timeout_s=300):
        last = response.event.WhichOneof("kind")
    assert last == "done"


async def subject_count(client: StudioClient) -> int:
    return len([subject async for subject in client.all_subjects()])


def consent(**changes) -> common_pb2.ConsentRecord:
    record = common_pb2.ConsentRecord()
    record.CopyFrom(PORTRAIT_CONSENT)  # retention_days=30
    for name, value in changes.items():
        if name == "granted_at":
            record.granted_at.seconds = value
        else:
            setattr(record, name, value)
    return record


DAY_S = 86400


@pytest.mark.parametrize("external_ref, consent_changes, field", [
    ("r" * 257, {}, "external_ref is longer than 256"),
    ("", {"agreement_version": "v" * 257}, "consent.agreement_version is longer than 256"),
    ("", {"granted_at": int(time.time()) + 3600}, "consent.granted_at"),  # extends the retention
    ("", {"granted_at": int(time.time()) - 31 * DAY_S}, "consent.granted_at"),  # retention already over
    ("", {"granted_at": 10**12}, "consent.granted_at"),  # out of the Timestamp range
])
async def test_bad_subject_fields_are_refused_before_anything_is_written(
    client: StudioClient, external_ref: str, consent_changes: dict, field: str
):
    before = await subject_count(client)
    details = await expect_status(
        grpc.StatusCode.INVALID_ARGUMENT, client.create_subject(external_ref, consent(**consent_changes))
    )
    assert field in details
    assert await subject_count(client) == before


async def test_subject_fields_at_their_limits_are_kept(client: StudioClient):
    granted = int(time.time()) - 29 * DAY_S
    subject = await client.create_subject("r" * 256, consent(agreement_version="v" * 256, granted_at=granted))
    kept = await client.get_subject(subject.subject_id)
    assert kept.external_ref == "r" * 256 and kept.consent.agreement_version == "v" * 256
    assert kept.consent.granted_at.seconds == granted


@pytest.mark.parametrize("filename, client_photo_id, reason", [
    ("f" * 257 + ".jpg", "", "filename is longer than 256"),
    ("x.jpg", "c" * 129, "client_photo_id is longer than 128"),
    ("../escape.jpg", "", "filename"),
    ("dir/x.jpg", "", "filename"),
    ("dir\\x.jpg", "", "filename"),
    ("..", "", "filename"),
    ("new\nline.jpg", "", "filename"),
])
async def test_bad_photo_headers_store_nothing(
    client: StudioClient, stack: EmbeddedStack, filename: str, client_photo_id: str, reason: str
):
    subject = await client.create_subject()
    before = stored_blobs(stack)
    message = header(subject.subject_id, filename)
    message.header.client_photo_id = client_photo_id
    messages = [message, studio_pb2.UploadPhotosRequest(chunk=faces("lisa")[0].read_bytes())]
    assert reason in await expect_status(grpc.StatusCode.INVALID_ARGUMENT, raw_upload(client, messages))
    assert stored_blobs(stack) == before
    assert list((await client.get_subject(subject.subject_id)).photos) == []


async def test_export_names_a_photo_by_the_base_of_its_stored_name(client: StudioClient, stack: EmbeddedStack):
    subject = await client.create_subject()
    [summary] = await client.upload(subject.subject_id, [(faces("lisa")[0], common_pb2.PHOTO_ROLE_HEADSHOT)])
    assert summary.verdict.accepted
    bus = await Bus.connect(stack.nats.url, name="test")
    try:  # a name stored before uploads were checked
        record = await bus.kv_get(SUBJECTS_BUCKET, subject.subject_id, state_pb2.SubjectRecord)
        record.subject.photos[0].filename = "../../../escape.jpg"
        await bus.kv_put(SUBJECTS_BUCKET, subject.subject_id, record)
    finally:
        await bus.close()
    buffer = io.BytesIO()
    await client.export_subject(subject.subject_id, buffer)
    with tarfile.open(fileobj=io.BytesIO(buffer.getvalue())) as tar:
        names = tar.getnames()
    assert f"photos/{summary.photo_id}-escape.jpg" in names
    assert not any(".." in name for name in names), names


async def test_long_values_are_refused_with_a_short_reason(client: StudioClient):
    """A reason that echoed a 20 KB value would pass gRPC's metadata limit and arrive as RESOURCE_EXHAUSTED."""
    long = "x" * 20_000
    subject = await client.create_subject()
    [photo] = await client.upload(subject.subject_id, [(faces("lisa")[0], common_pb2.PHOTO_ROLE_HEADSHOT)])
    assert photo.verdict.accepted
    refusals = [
        (client.create_order(subject.subject_id, [long], 1), "style name is longer than 64"),
        (client.create_order(subject.subject_id, ["studio-frontal-soft"], 1, idempotency_key=long),
         "idempotency_key is longer than 256"),
        (client.create_subject(idempotency_key=long), "idempotency_key is longer than 256"),
    ]
    for call, reason in refusals:
        details = await expect_status(grpc.StatusCode.INVALID_ARGUMENT, call)
        assert reason in details and len(details) < 500
    key = "k" * 256  # at the limit: kept, and shortened where a reason shows it
    await client.create_subject(idempotency_key=key)
    details = await expect_status(grpc.StatusCode.INVALID_ARGUMENT,
                                  client.create_subject(external_ref="other", idempotency_key=key))
    assert "was used for a different subject request" in details and len(details) < 200
    order = await client.create_order(subject.subject_id, ["studio-frontal-soft"], 1)
    try:
        details = await expect_status(grpc.StatusCode.NOT_FOUND, client.download(order.order_id, long))
        assert "not found in this order" in details and len(details) < 500
    finally:
        await client.cancel_order(order.order_id)
