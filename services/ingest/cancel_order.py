"""CancelOrder: stop an order that has not finished. The order is marked cancelled for the workers
(they drop its training or render job, queued or running) and fails with stage "cancelled"."""

from __future__ import annotations

import grpc
from studio.v1 import common_pb2, events_pb2, studio_pb2

from services.common import topology
from services.common.cancellation import mark_cancelled
from services.common.order_events import publish_order_event
from services.ingest.context import IngestContext
from services.ingest.order_view import TERMINAL_STATES

CANCELLED_STAGE = "cancelled"
MAX_REASON_CHARS = 500


async def cancel_order(
    ctx: IngestContext, request: studio_pb2.CancelOrderRequest, context: grpc.aio.ServicerContext
) -> studio_pb2.CancelOrderResponse:
    tenant = await ctx.authenticate(context)
    record = await ctx.owned_order(tenant, request.order_id, context)
    if len(request.reason) > MAX_REASON_CHARS:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"reason is longer than {MAX_REASON_CHARS} characters")
    order = record.order
    if order.state in TERMINAL_STATES:
        if order.failure_stage == CANCELLED_STAGE:
            return studio_pb2.CancelOrderResponse(order=order)  # cancelling twice is not an error
        state = common_pb2.OrderState.Name(order.state)
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"order already finished ({state})")
    reason = request.reason or "cancelled by the tenant"
    await mark_cancelled(ctx.bus, order.order_id, reason)
    # A job still held for the scheduler goes now; a released one is dropped by its worker.
    await ctx.bus.purge_subject(topology.PENDING_STREAM.name, topology.pending_of_order(order.order_id))
    await publish_order_event(
        ctx.bus, order.order_id, tenant.tenant_id, order.subject_id,
        failed=events_pb2.OrderFailed(stage=CANCELLED_STAGE, reason=reason),
    )
    order.state, order.failure_stage, order.failure_reason = common_pb2.ORDER_STATE_FAILED, CANCELLED_STAGE, reason
    return studio_pb2.CancelOrderResponse(order=order)
