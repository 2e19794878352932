"""CreateOrder: an order for styled portraits. Trains a LoRA first unless the subject already has
one for this base model; idempotent on the tenant's idempotency key."""

from __future__ import annotations

import secrets

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from studio.v1 import common_pb2, events_pb2, state_pb2, studio_pb2

from services.common import bus as topology
from services.common.objects import lora_key, new_id, portrait_key
from services.common.styles import catalogue, unknown_styles
from services.ingest.context import IngestContext
from services.ingest.create_subject import idempotency_entry

MAX_PORTRAITS_PER_STYLE = 8
MAX_STYLES_PER_ORDER = 10


def _order_problem(request: studio_pb2.CreateOrderRequest) -> str | None:
    if not request.styles:
        return "at least one style is required"
    if len(request.styles) > MAX_STYLES_PER_ORDER:
        return f"at most {MAX_STYLES_PER_ORDER} styles per order"
    unknown = unknown_styles(list(request.styles))
    if unknown:
        return f"unknown style(s): {', '.join(unknown)}; known: {', '.join(sorted(catalogue()))}"
    if not 1 <= request.count <= MAX_PORTRAITS_PER_STYLE:
        return f"count must be 1..{MAX_PORTRAITS_PER_STYLE} portraits per style"
    return None


def _set_not_ready(ctx: IngestContext, tenant: state_pb2.TenantRecord, subject: state_pb2.SubjectRecord) -> str:
    """Why the subject's photos cannot train yet ('' when they can): enough accepted, one a headshot."""
    needed = ctx.min_accepted_for(tenant)
    problems = []
    if len(subject.crop_keys) < needed:
        problems.append(f"subject has {len(subject.crop_keys)} accepted photo(s); {needed} needed")
    headshot = common_pb2.PHOTO_ROLE_HEADSHOT
    if not any(p.role == headshot and p.verdict.accepted for p in subject.subject.photos):
        problems.append("no accepted headshot: upload a frontal headshot")
    return "; ".join(problems)


def _render_items(ctx: IngestContext, tenant_id: str, order: common_pb2.Order) -> list[events_pb2.RenderItem]:
    items = []
    for style_name in order.styles:
        width, height = catalogue()[style_name].size_for(ctx.base_resolution)
        for _ in range(order.count):
            portrait_id = new_id("portrait")
            items.append(events_pb2.RenderItem(
                portrait_id=portrait_id, style=style_name, seed=secrets.randbelow(2**31),
                steps=ctx.render_steps, width=width, height=height,
                portrait_key=portrait_key(tenant_id, order.subject_id, order.order_id, portrait_id),
            ))
    return items


async def create_order(
    ctx: IngestContext, request: studio_pb2.CreateOrderRequest, context: grpc.aio.ServicerContext
) -> studio_pb2.CreateOrderResponse:
    tenant = await ctx.authenticate(context)
    subject = await ctx.owned_subject(tenant, request.subject_id, context)
    problem = _order_problem(request)
    if problem:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
    unready = _set_not_ready(ctx, tenant, subject)
    if unready:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, unready)
    order_id = new_id("order")
    entry = ""
    if request.idempotency_key:
        entry = idempotency_entry(tenant.tenant_id, "order", request.idempotency_key)
        if not await ctx.bus.kv_create(topology.IDEMPOTENCY_BUCKET, entry, order_id.encode()):
            existing = (await ctx.bus.kv_raw(topology.IDEMPOTENCY_BUCKET, entry) or b"").decode()
            return studio_pb2.CreateOrderResponse(order=(await ctx.owned_order(tenant, existing, context)).order)
    # The subject lists its orders first, so a deletion can always find everything it must purge.
    subject.order_ids.append(order_id)
    if entry:
        subject.idempotency_entries.append(entry)
    await ctx.bus.kv_put(topology.SUBJECTS_BUCKET, request.subject_id, subject)
    order = _new_order(ctx, order_id, request)
    record = state_pb2.OrderRecord(tenant_id=tenant.tenant_id, order=order)
    await ctx.bus.kv_put(topology.ORDERS_BUCKET, order_id, record)
    await _enqueue(ctx, tenant.tenant_id, subject, order)
    return studio_pb2.CreateOrderResponse(order=order)


def _new_order(ctx: IngestContext, order_id: str, request: studio_pb2.CreateOrderRequest) -> common_pb2.Order:
    now = Timestamp()
    now.GetCurrentTime()
    return common_pb2.Order(
        order_id=order_id, subject_id=request.subject_id, styles=request.styles, count=request.count,
        state=common_pb2.ORDER_STATE_QUEUED, created_at=now, updated_at=now, base_model_id=ctx.base_model_id,
        progress_total=len(request.styles) * request.count,
    )


async def _enqueue(
    ctx: IngestContext, tenant_id: str, subject: state_pb2.SubjectRecord, order: common_pb2.Order
) -> None:
    subject_id = subject.subject.subject_id
    render = events_pb2.RenderJob(
        job_id=f"render-{order.order_id}", order_id=order.order_id, tenant_id=tenant_id, subject_id=subject_id,
        lora_key=lora_key(tenant_id, subject_id, ctx.base_model_id),
        items=_render_items(ctx, tenant_id, order), crop_keys=sorted(subject.crop_keys.values()),
    )
    if ctx.base_model_id in subject.lora_keys:
        await ctx.bus.publish(topology.RENDER_SUBJECT, render, msg_id=render.job_id)
        position = await _pending(ctx, topology.RENDER_QUEUE)
    else:
        train = events_pb2.TrainJob(
            job_id=f"train-{order.order_id}", order_id=order.order_id, tenant_id=tenant_id, subject_id=subject_id,
            base_model_id=ctx.base_model_id, crop_keys=sorted(subject.crop_keys.values()),
            steps=ctx.train_steps, seed=secrets.randbelow(2**31), lora_key=render.lora_key, render=render,
        )
        await ctx.bus.publish(topology.TRAIN_SUBJECT, train, msg_id=train.job_id)
        position = await _pending(ctx, topology.TRAIN_QUEUE)
    event = events_pb2.OrderEvent(
        order_id=order.order_id, tenant_id=tenant_id, subject_id=subject_id,
        queued=events_pb2.OrderQueued(position=position),
    )
    event.at.GetCurrentTime()
    await ctx.bus.publish(topology.order_events_subject(order.order_id), event)


async def _pending(ctx: IngestContext, queue: topology.WorkQueue) -> int:
    info = await ctx.bus.js.consumer_info(queue.stream, queue.durable)
    return int(info.num_pending or 0) + int(info.num_ack_pending or 0)
