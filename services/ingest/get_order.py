"""GetOrder and WatchOrder: the order view, and its live event stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from studio.v1 import common_pb2, events_pb2, state_pb2, studio_pb2

from services.common import topology
from services.ingest import fields
from services.ingest.context import IngestContext
from services.ingest.order_view import TERMINAL_STATES

TERMINAL_EVENTS = ("done", "failed")
VIEW_CATCH_UP_S = 10.0
# How often a watch re-reads its order's record: the events may be gone, or the order with its subject.
RECHECK_S = 5.0


async def get_order(
    ctx: IngestContext, request: studio_pb2.GetOrderRequest, context: grpc.aio.ServicerContext
) -> studio_pb2.GetOrderResponse:
    tenant = await ctx.authenticate(context)
    record = await ctx.owned_order(tenant, request.order_id, context)
    return studio_pb2.GetOrderResponse(order=record.order, history=record.history)


async def watch_order(
    ctx: IngestContext, request: studio_pb2.WatchOrderRequest, context: grpc.aio.ServicerContext
) -> AsyncIterator[studio_pb2.WatchOrderResponse]:
    """The order's events until its done or failed event. An order that finished before its events were gone
    (expired, erased) ends with its last state from the record, so no watch outlives its order."""
    tenant = await ctx.authenticate(context)
    record = await ctx.owned_order(tenant, request.order_id, context)
    events = topology.order_events_subject(request.order_id)
    finished = record.order.state in TERMINAL_STATES
    if finished and not await ctx.bus.holds_messages_on(topology.EVENTS_STREAM.name, events):
        yield studio_pb2.WatchOrderResponse(event=final_event(record))
        return
    subscription = await ctx.bus.js.subscribe(events, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    try:
        async for response in _followed(ctx, subscription, request.order_id, context):
            yield response
    finally:
        await subscription.unsubscribe()


async def _followed(
    ctx: IngestContext, subscription: JetStreamContext.PushSubscription, order_id: str,
    context: grpc.aio.ServicerContext,
) -> AsyncIterator[studio_pb2.WatchOrderResponse]:
    checked_at = time.monotonic()
    while True:
        event = await _next_event(subscription)
        if event is not None:
            if event.WhichOneof("kind") in TERMINAL_EVENTS:
                await _until_view_is_final(ctx, order_id)
                yield studio_pb2.WatchOrderResponse(event=event)
                return
            yield studio_pb2.WatchOrderResponse(event=event)
        if time.monotonic() - checked_at < RECHECK_S:
            continue
        checked_at = time.monotonic()
        record = await ctx.bus.kv_get(topology.ORDERS_BUCKET, order_id, state_pb2.OrderRecord)
        if record is None or ctx.being_deleted(record.order.subject_id):  # its subject was deleted meanwhile
            await context.abort(grpc.StatusCode.NOT_FOUND, fields.order_not_found(order_id))
        if event is None and record.order.state in TERMINAL_STATES:  # finished; its terminal event is gone
            yield studio_pb2.WatchOrderResponse(event=final_event(record))
            return


async def _next_event(subscription: JetStreamContext.PushSubscription) -> events_pb2.OrderEvent | None:
    """The next event, or None after a quiet RECHECK_S (quiet stretches, a long queue, are normal)."""
    try:
        message = await subscription.next_msg(timeout=RECHECK_S)
    except TimeoutError:
        return None
    return events_pb2.OrderEvent.FromString(message.data)


def final_event(record: state_pb2.OrderRecord) -> events_pb2.OrderEvent:
    """A finished order's last event: its terminal one from the history, else one made from the record."""
    if record.history and record.history[-1].WhichOneof("kind") in TERMINAL_EVENTS:
        return record.history[-1]
    order = record.order
    event = events_pb2.OrderEvent(order_id=order.order_id, tenant_id=record.tenant_id, subject_id=order.subject_id)
    event.at.CopyFrom(order.updated_at)
    if order.state == common_pb2.ORDER_STATE_DONE:
        event.done.portraits.extend(order.portraits)
    else:
        event.failed.stage, event.failed.reason = order.failure_stage, order.failure_reason
    return event


async def _until_view_is_final(ctx: IngestContext, order_id: str) -> None:
    """The order view trails the event stream by a moment; a client that saw the order finish
    should find GetOrder and DownloadPortrait agreeing."""
    deadline = asyncio.get_running_loop().time() + VIEW_CATCH_UP_S
    while asyncio.get_running_loop().time() < deadline:
        record = await ctx.bus.kv_get(topology.ORDERS_BUCKET, order_id, state_pb2.OrderRecord)
        if record and record.order.state in TERMINAL_STATES:
            return
        await asyncio.sleep(0.05)
