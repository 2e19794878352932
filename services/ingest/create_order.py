"""CreateOrder: an order for styled portraits. Trains a LoRA first unless the subject already has
one for this base model; idempotent on the tenant's idempotency key."""

from __future__ import annotations

import logging
import secrets
from contextlib import suppress

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from studio.v1 import common_pb2, events_pb2, state_pb2, studio_pb2

from services.common import topology
from services.common.holding import hold
from services.common.objects import lora_key, new_id, portrait_key
from services.common.order_events import publish_order_event
from services.common.shielding import completed_even_if_cancelled
from services.common.store_space import store_is_full
from services.common.styles import catalogue, unknown_styles
from services.ingest import fields, idempotency, jobs, quotas
from services.ingest.context import IngestContext
from services.ingest.listing import add_to_index, order_index_key

log = logging.getLogger(__name__)

MAX_PORTRAITS_PER_STYLE = 8
MAX_STYLES_PER_ORDER = 10
QUEUEING_STAGE = "queueing"
NOT_QUEUED = "its job could not be queued; create the order again"


def _order_problem(request: studio_pb2.CreateOrderRequest) -> str | None:
    if not request.styles:
        return "at least one style is required"
    if len(request.styles) > MAX_STYLES_PER_ORDER:
        return f"at most {MAX_STYLES_PER_ORDER} styles per order"
    problem = idempotency.key_problem(request) or _long_style(request.styles)
    if problem:
        return problem
    unknown = unknown_styles(list(request.styles))
    if unknown:
        return f"unknown style(s): {', '.join(unknown)}; known: {', '.join(sorted(catalogue()))}"
    if not 1 <= request.count <= MAX_PORTRAITS_PER_STYLE:
        return f"count must be 1..{MAX_PORTRAITS_PER_STYLE} portraits per style"
    if request.tier not in common_pb2.PriorityTier.values():
        known = ", ".join(common_pb2.PriorityTier.keys())
        return f"unknown priority tier {request.tier}; known: {known}"
    return None


def _long_style(styles: list[str]) -> str | None:
    """Style names are echoed in the reason for an unknown one: bounded first."""
    for style in styles:
        problem = fields.too_long("style name", style, fields.MAX_STYLE_CHARS)
        if problem:
            return problem
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
    try:
        claimed = await idempotency.claim(ctx.bus, tenant.tenant_id, "order", request, new_id("order"))
    except idempotency.KeyReused as error:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
    order_id = claimed.resource_id
    if not claimed.first:
        existing = await _repeated(ctx, tenant, subject, claimed, context)
        if existing is not None:
            return studio_pb2.CreateOrderResponse(order=existing)
    try:
        await quotas.admit_order(ctx.bus, tenant, order_id)
    except quotas.QuotaExceeded as error:
        await idempotency.release(ctx.bus, claimed)
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
    # The subject lists its orders first, so a deletion can always find everything it must purge.
    subject = await ctx.update_subject(request.subject_id, lambda record: _list_order(record, order_id, claimed.entry))
    if subject is None:
        await context.abort(grpc.StatusCode.NOT_FOUND, fields.subject_not_found(request.subject_id))
    order = _new_order(ctx, order_id, request)
    order.created_at.FromMilliseconds(claimed.created_ms)
    # Once its record is written the order holds a concurrent-order slot until it finishes: a caller that hangs
    # up (deadline, cancel) must not stop it half-way, between a QUEUED record and its job.
    if not await completed_even_if_cancelled(_record_and_queue(ctx, tenant, subject, order, claimed.created_ms)):
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"order {order_id} failed: {NOT_QUEUED}")
    return studio_pb2.CreateOrderResponse(order=order)


async def _repeated(
    ctx: IngestContext, tenant: state_pb2.TenantRecord, subject: state_pb2.SubjectRecord, claimed: idempotency.Claim,
    context: grpc.aio.ServicerContext,
) -> common_pb2.Order | None:
    """The order a repeat of the key gets; None when the first request died before writing it (the repeat
    completes the creation)."""
    order_id = claimed.resource_id
    if await idempotency.wait_for(ctx.bus, topology.ORDERS_BUCKET, order_id, state_pb2.OrderRecord) is None:
        if await idempotency.abandoned(ctx.bus, claimed):
            await context.abort(grpc.StatusCode.ABORTED, idempotency.ABANDONED)
        return None
    order = (await ctx.owned_order(tenant, order_id, context)).order
    if not await _requeue_if_lost(ctx, tenant, subject, order):
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"order {order_id} failed: {NOT_QUEUED}")
    return order


async def _record_and_queue(
    ctx: IngestContext, tenant: state_pb2.TenantRecord, subject: state_pb2.SubjectRecord, order: common_pb2.Order,
    created_ms: int,
) -> bool:
    """Write the order's record, then hold its job; False when the job could not be held (the order failed)."""
    record = state_pb2.OrderRecord(tenant_id=tenant.tenant_id, order=order)
    await add_to_index(ctx.bus, order_index_key(tenant.tenant_id, created_ms, order.subject_id, order.order_id))
    await ctx.bus.kv_put(topology.ORDERS_BUCKET, order.order_id, record)
    return await _queue_or_fail(ctx, tenant, subject, order)


async def _queue_or_fail(
    ctx: IngestContext, tenant: state_pb2.TenantRecord, subject: state_pb2.SubjectRecord, order: common_pb2.Order
) -> bool:
    try:
        await _enqueue(ctx, tenant, subject, order)
    except Exception as error:
        log.warning("order %s: its job could not be queued: %s", order.order_id, type(error).__name__)
        await _fail_unqueued(ctx, tenant, order)
        if store_is_full(error):  # RESOURCE_EXHAUSTED (the interceptor): creating it again at once would not help
            raise
        return False
    return True


async def _requeue_if_lost(
    ctx: IngestContext, tenant: state_pb2.TenantRecord, subject: state_pb2.SubjectRecord, order: common_pb2.Order
) -> bool:
    """A repeat finds its order QUEUED with no job anywhere when the first request could neither hold the job nor
    record the failure: the job is held again. Harmless if the first request's hold is in flight: the job id is
    the message id (holding.hold), so PENDING drops the second copy. False when it could not be held."""
    if order.state != common_pb2.ORDER_STATE_QUEUED or await jobs.order_has_job(ctx.bus, order.order_id):
        return True
    log.info("order %s: queued without a job; holding it again", order.order_id)
    return await _queue_or_fail(ctx, tenant, subject, order)


async def _fail_unqueued(ctx: IngestContext, tenant: state_pb2.TenantRecord, order: common_pb2.Order) -> None:
    """An order whose job was never queued would stay QUEUED forever and keep a concurrent-order slot: it fails
    instead (a finished order holds no slot). Its idempotency key stays its own: a retry with the key gets this
    order, failed, with the reason, or, when this failure could not be recorded either (the bus may be what
    failed), the order with its job held again (_requeue_if_lost)."""
    with suppress(Exception):
        await publish_order_event(ctx.bus, order.order_id, tenant.tenant_id, order.subject_id,
                                  failed=events_pb2.OrderFailed(stage=QUEUEING_STAGE, reason=NOT_QUEUED))


def _list_order(record: state_pb2.SubjectRecord, order_id: str, entry: str) -> None:
    if order_id not in record.order_ids:
        record.order_ids.append(order_id)
    if entry and entry not in record.idempotency_entries:
        record.idempotency_entries.append(entry)


def _new_order(ctx: IngestContext, order_id: str, request: studio_pb2.CreateOrderRequest) -> common_pb2.Order:
    now = Timestamp()
    now.GetCurrentTime()
    return common_pb2.Order(
        order_id=order_id, subject_id=request.subject_id, styles=request.styles, count=request.count,
        state=common_pb2.ORDER_STATE_QUEUED, created_at=now, updated_at=now, base_model_id=ctx.base_model_id,
        progress_total=len(request.styles) * request.count,
        tier=request.tier or common_pb2.PRIORITY_TIER_STANDARD,
    )


async def _enqueue(
    ctx: IngestContext, tenant: state_pb2.TenantRecord, subject: state_pb2.SubjectRecord, order: common_pb2.Order
) -> None:
    """Held for the scheduler, which announces the order's position and ETA (services/ingest/scheduling)."""
    tenant_id, subject_id = tenant.tenant_id, subject.subject.subject_id
    render = events_pb2.RenderJob(
        job_id=f"render-{order.order_id}", order_id=order.order_id, tenant_id=tenant_id, subject_id=subject_id,
        lora_key=lora_key(tenant_id, subject_id, ctx.base_model_id),
        items=_render_items(ctx, tenant_id, order), visible_label=tenant.visible_label, tier=order.tier,
        crop_keys=sorted(subject.crop_keys.values()),
    )
    if ctx.base_model_id in subject.lora_keys:
        await hold(ctx.bus, topology.RENDER_QUEUE, render)
        return
    train = events_pb2.TrainJob(
        job_id=f"train-{order.order_id}", order_id=order.order_id, tenant_id=tenant_id, subject_id=subject_id,
        base_model_id=ctx.base_model_id, crop_keys=sorted(subject.crop_keys.values()),
        steps=ctx.train_steps, seed=secrets.randbelow(2**31), lora_key=render.lora_key, render=render, tier=order.tier,
    )
    await hold(ctx.bus, topology.TRAIN_QUEUE, train)
