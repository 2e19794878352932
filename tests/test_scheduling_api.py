"""Scheduling through the public API of the embedded stack (one trainer): the priority tier is
checked and kept, WatchOrder shows a held order's position and ETA, and a held job is removed by
cancellation and by deletion, never reaching a worker. A watch ends with its order: finished (even with its
events gone) or deleted."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from studio.v1 import common_pb2, events_pb2, studio_pb2

from services.cli.client import StudioClient
from services.cli.stack import EmbeddedStack
from services.common import topology
from services.common.bus import Bus
from services.trainer.job_keys import read_record
from tests.fixtures_stack import faces

pytestmark = pytest.mark.asyncio(loop_scope="session")
STYLE = ["studio-frontal-soft"]


async def subject_with_headshot(client: StudioClient) -> str:
    subject = await client.create_subject(external_ref="scheduling")
    headshot = next(path for path in faces("lisa") if path.name == "lisa_lisa1.jpg")
    [photo] = await client.upload(subject.subject_id, [(headshot, common_pb2.PHOTO_ROLE_HEADSHOT)])
    assert photo.verdict.accepted
    return subject.subject_id


async def held(bus: Bus, filter_subject: str) -> int:
    info = await bus.js.stream_info(topology.PENDING_STREAM.name, subjects_filter=filter_subject)
    return sum((info.state.subjects or {}).values())


async def first_queued(client: StudioClient, order_id: str) -> events_pb2.OrderQueued:
    async for response in client.watch(order_id, timeout_s=60):
        if response.event.WhichOneof("kind") == "queued":
            return response.event.queued
    raise AssertionError("the order finished without a queued event")


async def test_tier_is_validated_and_kept(client: StudioClient) -> None:
    subject_id = await subject_with_headshot(client)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await client.create_order(subject_id, STYLE, 1, tier=7)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "priority tier" in raised.value.details()
    express = await client.create_order(subject_id, STYLE, 1, tier=common_pb2.PRIORITY_TIER_EXPRESS)
    standard = await client.create_order(subject_id, STYLE, 1)
    assert express.tier == common_pb2.PRIORITY_TIER_EXPRESS and standard.tier == common_pb2.PRIORITY_TIER_STANDARD
    assert (await client.get_order(express.order_id)).tier == common_pb2.PRIORITY_TIER_EXPRESS
    for order in (express, standard):
        await client.stub.CancelOrder(studio_pb2.CancelOrderRequest(order_id=order.order_id),
                                      metadata=client.metadata, timeout=10)


async def test_held_orders_show_position_and_leave_on_cancel_and_delete(
    client: StudioClient, stack: EmbeddedStack
) -> None:
    subject_id = await subject_with_headshot(client)
    bus = await Bus.connect(stack.nats.url, name="scheduling-api-test")
    try:
        running, waiting, cancelled = [await client.create_order(subject_id, STYLE, 1) for _ in range(3)]
        # One trainer: one of these runs, the other two are held.
        await client.stub.CancelOrder(studio_pb2.CancelOrderRequest(order_id=cancelled.order_id),
                                      metadata=client.metadata, timeout=10)
        assert await held(bus, topology.pending_of_order(cancelled.order_id)) == 0
        queued = await first_queued(client, waiting.order_id)
        assert queued.stage == "training" and queued.workers == 1 and queued.position <= 1
        assert queued.eta_seconds >= queued.starts_in_seconds and queued.expected_done_at.seconds > 0

        await client.create_order(subject_id, STYLE, 1)
        await client.create_order(subject_id, STYLE, 1)
        assert await held(bus, topology.pending_of_subject(subject_id)) >= 1
        deletion = await client.wait_for_certificate((await client.delete_subject(subject_id)).deletion_id)
        ingest = next(dict(c.destroyed) for c in deletion.confirmations if c.service == "ingest")
        # Held jobs go with the purge, or earlier: the dispatcher drops a deleted subject's jobs the moment the
        # deletion reaches it, while the purge waits out the services' key caches.
        assert "held_jobs" in ingest
        assert await held(bus, topology.pending_of_subject(subject_id)) == 0
        # The cancelled order's job never reached the trainer.
        assert await read_record(bus, subject_id, f"train-{cancelled.order_id}") is None
    finally:
        await bus.close()


async def test_a_watch_of_a_finished_order_whose_events_are_gone_ends_with_its_last_state(
    client: StudioClient, stack: EmbeddedStack
) -> None:
    subject_id = await subject_with_headshot(client)
    order = await client.create_order(subject_id, STYLE, 1)
    await client.cancel_order(order.order_id, reason="changed my mind")
    for _ in range(200):
        if (await client.get_order(order.order_id)).state == common_pb2.ORDER_STATE_FAILED:
            break
        await asyncio.sleep(0.05)
    bus = await Bus.connect(stack.nats.url, name="scheduling-api-test")
    try:  # as the event stream's max_age does after 30 days
        await bus.purge_subject(topology.EVENTS_STREAM.name, topology.order_events_subject(order.order_id))
    finally:
        await bus.close()
    events = [response.event async for response in client.watch(order.order_id, timeout_s=20)]
    assert [event.WhichOneof("kind") for event in events] == ["failed"]
    assert (events[0].failed.stage, events[0].failed.reason) == ("cancelled", "changed my mind")


async def test_a_watch_ends_not_found_when_its_subject_is_deleted(client: StudioClient) -> None:
    subject_id = await subject_with_headshot(client)
    order = await client.create_order(subject_id, STYLE, 1)
    watched = []

    async def watch() -> None:
        async for response in client.watch(order.order_id, timeout_s=60):
            watched.append(response.event.WhichOneof("kind"))

    watching = asyncio.create_task(watch())
    await asyncio.sleep(1)
    await client.delete_subject(subject_id)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await asyncio.wait_for(watching, timeout=30)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND and order.order_id in raised.value.details()
    assert "done" not in watched and "failed" not in watched
