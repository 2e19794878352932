"""Idempotent retries under injected faults: a TCP proxy between the client library and ingest
cuts the connection after the request went out (the reply is lost) or in the middle of an upload
stream; the client retries, and every resource exists exactly once, within the tenant's quotas. A job
queue that refuses an order's job leaves no order queued forever."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from studio.v1 import common_pb2

from services.cli.stack import EmbeddedStack
from services.common import topology
from services.common.bus import Bus
from studio_client import NO_RETRIES, Photo, RetryPolicy, StudioClient
from tests.fixtures_tenants import (  # noqa: F401  (fixtures)
    HEADSHOT,
    REFERENCE,
    STYLE,
    Tenants,
    admin,
    lisa_headshot,
    lisa_references,
    tenants,
)
from tests.nats_faults import messages_capped
from tests.tcp_proxy import DOWN, UP, CuttingProxy

pytestmark = pytest.mark.asyncio(loop_scope="session")
FAST_RETRIES = RetryPolicy(max_attempts=8, initial_backoff_s=0.1, max_backoff_s=1.0)
# More than a few HTTP/2 control frames (window updates, pings), less than a reply.
REPLY_BYTES = 60


@pytest_asyncio.fixture(loop_scope="session")
async def proxy(stack: EmbeddedStack) -> AsyncIterator[CuttingProxy]:
    host, port = stack.public_endpoint.rsplit(":", 1)
    cutting = CuttingProxy(host, int(port))
    await cutting.start()
    try:
        yield cutting
    finally:
        await cutting.close()


async def proxied_tenant(tenants: Tenants, proxy: CuttingProxy) -> tuple[StudioClient, StudioClient, list]:  # noqa: F811
    """The tenant's client through the proxy (with the retries it made), and one straight to ingest."""
    _, direct = await tenants.new()
    retries: list = []
    endpoint = proxy.endpoint
    through = tenants.client(direct.metadata[0][1], endpoint, retry=FAST_RETRIES,
                             on_retry=lambda error, attempt: retries.append(error.code()))
    return through, direct, retries


async def test_create_subject_reply_lost_is_retried_into_the_same_subject(
    tenants: Tenants, proxy: CuttingProxy  # noqa: F811
) -> None:
    client, direct, retries = await proxied_tenant(tenants, proxy)
    await client.list_subjects()  # the connection is up, so the cut hits the call's own bytes
    proxy.cut_after(DOWN, REPLY_BYTES)
    subject = await client.create_subject(external_ref="lost-reply", idempotency_key="cs-1")
    assert proxy.cuts == 1 and retries and set(retries) == {grpc.StatusCode.UNAVAILABLE}
    listed = (await direct.list_subjects(external_ref="lost-reply")).subjects
    assert [s.subject_id for s in listed] == [subject.subject_id]


async def test_concurrent_twins_get_one_subject_and_one_order(tenants: Tenants) -> None:  # noqa: F811
    _, client = await tenants.new()
    subjects = await asyncio.gather(*(client.create_subject(external_ref="twins", idempotency_key="twin")
                                      for _ in range(8)))
    assert len({s.subject_id for s in subjects}) == 1
    assert len((await client.list_subjects(external_ref="twins")).subjects) == 1
    subject_id = subjects[0].subject_id
    await client.upload(subject_id, [(lisa_headshot(), HEADSHOT)])
    orders = await asyncio.gather(*(client.create_order(subject_id, STYLE, 1, idempotency_key="o-twin")
                                    for _ in range(4)))
    assert len({o.order_id for o in orders}) == 1
    listed = (await client.list_orders(subject_id=subject_id)).orders
    assert [o.order_id for o in listed] == [orders[0].order_id]
    await client.cancel_order(orders[0].order_id)
    with pytest.raises(grpc.aio.AioRpcError) as raised:  # the same key for another request
        await client.create_order(subject_id, STYLE, 2, idempotency_key="o-twin")
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "different" in raised.value.details()


async def test_create_order_reply_lost(tenants: Tenants, proxy: CuttingProxy) -> None:  # noqa: F811
    client, direct, retries = await proxied_tenant(tenants, proxy)
    subject = await direct.create_subject()
    await direct.upload(subject.subject_id, [(lisa_headshot(), HEADSHOT)])
    await client.list_orders()
    proxy.cut_after(DOWN, REPLY_BYTES)
    order = await client.create_order(subject.subject_id, STYLE, 1, idempotency_key="co-1")
    assert proxy.cuts == 1 and retries
    assert [o.order_id for o in (await direct.list_orders(subject_id=subject.subject_id)).orders] == [order.order_id]
    await direct.cancel_order(order.order_id)


async def test_an_upload_cut_mid_stream_resumes(tenants: Tenants, proxy: CuttingProxy) -> None:  # noqa: F811
    client, direct, retries = await proxied_tenant(tenants, proxy)
    subject = await direct.create_subject()
    photos = [Photo.from_path(lisa_headshot(), HEADSHOT)] + [Photo.from_path(p, REFERENCE)
                                                           for p in lisa_references()[:3]]
    first_batch = sum(len(photo.data) for photo in photos[:2])
    await client.get_subject(subject.subject_id)
    proxy.cut_after(UP, first_batch + len(photos[2].data) // 2)  # in the middle of the second stream
    sent: list[int] = []
    result = await client.upload_photos(subject.subject_id, photos, batch_size=2, on_bytes=sent.append)
    assert proxy.cuts == 1 and retries
    assert sum(sent) == sum(len(photo.data) for photo in photos)  # the resent batch counted once: a bar ends at 100%
    assert [s.client_photo_id for s in result.photos] == [p.id_for(subject.subject_id) for p in photos]
    stored = (await direct.get_subject(subject.subject_id)).photos
    assert sorted(s.photo_id for s in stored) == sorted(s.photo_id for s in result.photos)

    again = await direct.upload_photos(subject.subject_id, photos, batch_size=4)  # the whole set once more
    assert again.resumed == 4 and all(s.already_uploaded for s in again.photos)
    assert [s.photo_id for s in again.photos] == [s.photo_id for s in result.photos]
    assert len((await direct.get_subject(subject.subject_id)).photos) == 4


async def test_an_upload_whose_reply_is_lost_is_not_stored_twice(
    stack: EmbeddedStack, tenants: Tenants, proxy: CuttingProxy  # noqa: F811
) -> None:
    client, direct, retries = await proxied_tenant(tenants, proxy)
    subject = await direct.create_subject()
    photos = [Photo.from_path(p, REFERENCE) for p in lisa_references()[3:5]]
    await client.get_subject(subject.subject_id)
    total, sent = sum(len(photo.data) for photo in photos), []

    def arm_after_the_last_byte(count: int) -> None:
        sent.append(count)
        if sum(sent) == total:
            proxy.cut_after(DOWN, REPLY_BYTES)

    result = await client.upload_photos(subject.subject_id, photos, on_bytes=arm_after_the_last_byte)
    assert proxy.cuts == 1 and retries
    assert all(s.already_uploaded for s in result.photos)  # the first stream was kept; its reply was lost
    stored = (await direct.get_subject(subject.subject_id)).photos
    assert len(stored) == 2 and {s.photo_id for s in stored} == {s.photo_id for s in result.photos}
    kept = [p for p in (stack.data_dir / "blobs").rglob("*") if f"/{subject.subject_id}/photos/" in str(p)]
    assert len(kept) == sum(1 for s in stored if s.verdict.accepted)


def photo_blobs(stack: EmbeddedStack, subject_id: str) -> list:
    return [p for p in (stack.data_dir / "blobs").rglob("*") if f"/{subject_id}/photos/" in str(p) and p.is_file()]


async def test_a_client_photo_id_reused_for_another_photo_is_refused(
    stack: EmbeddedStack, tenants: Tenants  # noqa: F811
) -> None:
    _, client = await tenants.new()
    subject_id = (await client.create_subject()).subject_id
    first, other, extra = (Photo(path.read_bytes(), REFERENCE, path.name) for path in lisa_references()[:3])
    first = dataclasses.replace(first, client_photo_id="p-1")
    [kept] = (await client.upload_photos(subject_id, [first])).photos
    reuses = [
        [dataclasses.replace(other, client_photo_id="p-1")],  # other bytes
        [dataclasses.replace(first, role=HEADSHOT)],  # another role
        [dataclasses.replace(extra, client_photo_id="p-2"), dataclasses.replace(other, client_photo_id="p-1")],
    ]
    for photos in reuses:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await client.upload_photos(subject_id, photos)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "client_photo_id 'p-1' was used for a different photo" in raised.value.details()
    assert [s.photo_id for s in (await client.get_subject(subject_id)).photos] == [kept.photo_id]
    assert len(photo_blobs(stack, subject_id)) == int(kept.verdict.accepted)
    again = await client.upload_photos(subject_id, [dataclasses.replace(first, filename="renamed.jpg")])
    assert again.photos[0].already_uploaded and again.photos[0].photo_id == kept.photo_id
    # p-2 was refused with its stream: it is free for any photo.
    [fresh] = (await client.upload_photos(subject_id, [dataclasses.replace(other, client_photo_id="p-2")])).photos
    assert not fresh.already_uploaded


async def test_concurrent_streams_reusing_a_client_photo_id_keep_one_photo(
    stack: EmbeddedStack, tenants: Tenants  # noqa: F811
) -> None:
    _, client = await tenants.new()
    subject_id = (await client.create_subject()).subject_id
    photos = [Photo(path.read_bytes(), REFERENCE, path.name, "same") for path in lisa_references()[:2]]
    results = await asyncio.gather(*(client.upload_photos(subject_id, [photo]) for photo in photos),
                                   return_exceptions=True)
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(refused) == 1, results
    assert refused[0].code() == grpc.StatusCode.INVALID_ARGUMENT and "different photo" in refused[0].details()
    [stored] = (await client.get_subject(subject_id)).photos
    [uploaded] = next(r for r in results if not isinstance(r, BaseException)).photos
    assert stored.photo_id == uploaded.photo_id
    assert len(photo_blobs(stack, subject_id)) == int(stored.verdict.accepted)


async def test_retries_stop_at_the_deadline(tenants: Tenants) -> None:  # noqa: F811
    _, direct = await tenants.new()
    nowhere = tenants.client(direct.metadata[0][1], "127.0.0.1:9", retry=FAST_RETRIES)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await nowhere.create_subject(timeout=2)
    assert raised.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert loop.time() - started < 4


async def test_an_order_whose_job_cannot_be_queued_fails_instead_of_waiting_forever(
    stack: EmbeddedStack, tenants: Tenants  # noqa: F811
) -> None:
    _, direct = await tenants.new(max_concurrent_orders=1)
    client = tenants.client(direct.metadata[0][1], retry=NO_RETRIES)
    subject = await direct.create_subject()
    await direct.upload(subject.subject_id, [(lisa_headshot(), HEADSHOT)])
    bus = await Bus.connect(stack.nats.url, name="test-refusing-queue")
    try:
        async with messages_capped(bus, topology.PENDING_STREAM.name, 16):  # every job is larger
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await client.create_order(subject.subject_id, STYLE, 1, idempotency_key="unqueued")
    finally:
        await bus.close()
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "could not be queued; create the order again" in raised.value.details()
    [order] = (await direct.list_orders(subject_id=subject.subject_id)).orders
    assert order.order_id in raised.value.details()
    for _ in range(100):
        if (order := await direct.get_order(order.order_id)).state == common_pb2.ORDER_STATE_FAILED:
            break
        await asyncio.sleep(0.1)
    assert (order.state, order.failure_stage) == (common_pb2.ORDER_STATE_FAILED, "queueing")
    again = await client.create_order(subject.subject_id, STYLE, 1, idempotency_key="unqueued")
    assert again.order_id == order.order_id  # the key keeps its order
    # The failed order holds none of the tenant's one concurrent-order slot: the next order is placed and queued.
    placed = await client.create_order(subject.subject_id, STYLE, 1, idempotency_key="queued")
    assert placed.state == common_pb2.ORDER_STATE_QUEUED and placed.order_id != order.order_id
    await direct.cancel_order(placed.order_id)


async def test_a_retry_after_a_failed_registration_stays_within_the_subjects_per_day_quota(
    stack: EmbeddedStack, tenants: Tenants  # noqa: F811
) -> None:
    _, direct = await tenants.new(max_subjects_per_day=1)
    client = tenants.client(direct.metadata[0][1], retry=NO_RETRIES)
    vault = stack.processes["privacy"].pid
    os.kill(vault, signal.SIGSTOP)  # RegisterSubject hangs: the caller's deadline ends the request inside it
    try:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await client.create_subject(external_ref="vault-paused", idempotency_key="paused", timeout=2)
    finally:
        os.kill(vault, signal.SIGCONT)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    subject = await client.create_subject(external_ref="vault-paused", idempotency_key="paused")
    with pytest.raises(grpc.aio.AioRpcError) as refused:  # the retry completed the first subject's reservation
        await client.create_subject(idempotency_key="another")
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_subjects_per_day" in refused.value.details()
    assert [s.subject_id for s in (await direct.list_subjects()).subjects] == [subject.subject_id]


async def test_an_order_left_queued_without_a_job_is_queued_again_by_its_retry(
    stack: EmbeddedStack, tenants: Tenants  # noqa: F811
) -> None:
    _, direct = await tenants.new()
    client = tenants.client(direct.metadata[0][1], retry=NO_RETRIES)
    subject = await direct.create_subject()
    await direct.upload(subject.subject_id, [(lisa_headshot(), HEADSHOT)])
    bus = await Bus.connect(stack.nats.url, name="test-refusing-queue-and-events")
    try:  # neither the job nor the order's failure can be stored: the order stays QUEUED, with no job
        async with messages_capped(bus, topology.PENDING_STREAM.name, 16), \
                messages_capped(bus, topology.EVENTS_STREAM.name, 16):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await client.create_order(subject.subject_id, STYLE, 1, idempotency_key="stuck")
    finally:
        await bus.close()
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    [order] = (await direct.list_orders(subject_id=subject.subject_id)).orders
    assert order.state == common_pb2.ORDER_STATE_QUEUED
    again = await client.create_order(subject.subject_id, STYLE, 1, idempotency_key="stuck")
    assert again.order_id == order.order_id
    try:  # its job is held again: the scheduler announces it, or a worker reports on it
        first = await anext(aiter(direct.watch(order.order_id, timeout_s=30)))
        assert first.event.WhichOneof("kind") in ("queued", "training", "trained", "rendering")
    finally:
        await direct.cancel_order(order.order_id)
