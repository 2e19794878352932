"""GetOrder and WatchOrder: the order view, and its live event stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from nats.js.api import DeliverPolicy
from studio.v1 import events_pb2, state_pb2, studio_pb2

from services.common import topology
from services.ingest.context import IngestContext
from services.ingest.order_view import TERMINAL_STATES

TERMINAL_EVENTS = ("done", "failed")
VIEW_CATCH_UP_S = 10.0


async def get_order(
    ctx: IngestContext, request: studio_pb2.GetOrderRequest, context: grpc.aio.ServicerContext
) -> studio_pb2.GetOrderResponse:
    tenant = await ctx.authenticate(context)
    record = await ctx.owned_order(tenant, request.order_id, context)
    return studio_pb2.GetOrderResponse(order=record.order, history=record.history)


async def watch_order(
    ctx: IngestContext, request: studio_pb2.WatchOrderRequest, context: grpc.aio.ServicerContext
) -> AsyncIterator[studio_pb2.WatchOrderResponse]:
    tenant = await ctx.authenticate(context)
    await ctx.owned_order(tenant, request.order_id, context)
    subscription = await ctx.bus.js.subscribe(
        topology.order_events_subject(request.order_id), ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
    )
    try:
        while True:
            try:
                message = await subscription.next_msg(timeout=30)
            except TimeoutError:
                continue  # quiet stretches (a long queue) are normal; the client's deadline bounds the call
            event = events_pb2.OrderEvent.FromString(message.data)
            if event.WhichOneof("kind") in TERMINAL_EVENTS:
                await _until_view_is_final(ctx, request.order_id)
                yield studio_pb2.WatchOrderResponse(event=event)
                return
            yield studio_pb2.WatchOrderResponse(event=event)
    finally:
        await subscription.unsubscribe()


async def _until_view_is_final(ctx: IngestContext, order_id: str) -> None:
    """The order view trails the event stream by a moment; a client that saw the order finish
    should find GetOrder and DownloadPortrait agreeing."""
    deadline = asyncio.get_running_loop().time() + VIEW_CATCH_UP_S
    while asyncio.get_running_loop().time() < deadline:
        record = await ctx.bus.kv_get(topology.ORDERS_BUCKET, order_id, state_pb2.OrderRecord)
        if record and record.order.state in TERMINAL_STATES:
            return
        await asyncio.sleep(0.05)
