"""ListSubjects and ListOrders: a tenant's own resources, newest first, a page at a time.

A KV index (studio_tenant_index) names each resource under its tenant with its creation time, so a
listing asks NATS for one tenant's keys only; page tokens are the last key a page returned."""

from __future__ import annotations

import base64
import binascii

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from studio.v1 import state_pb2, studio_pb2

from services.common import topology
from services.common.bus import Bus
from services.ingest.context import IngestContext

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


def subject_index_key(tenant_id: str, created_ms: int, subject_id: str) -> str:
    return f"{tenant_id}.s.{created_ms:013d}.{subject_id}"


def order_index_key(tenant_id: str, created_ms: int, subject_id: str, order_id: str) -> str:
    return f"{tenant_id}.o.{created_ms:013d}.{subject_id}.{order_id}"


def subject_index_patterns(tenant_id: str, subject_id: str) -> list[str]:
    """The index entries of a subject and of its orders (for purging)."""
    return [f"{tenant_id}.s.*.{subject_id}", f"{tenant_id}.o.*.{subject_id}.*"]


async def add_to_index(bus: Bus, key: str) -> None:
    await bus.bucket(topology.TENANT_INDEX_BUCKET).put(key, b"")


def _page_size(requested: int) -> int:
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _encode_token(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode()


async def _after_token(token: str, prefix: str, context: grpc.aio.ServicerContext) -> str | None:
    if not token:
        return None
    try:
        key = base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError):
        key = ""
    if not key.startswith(prefix):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "page_token is not one this listing returned")
    return key


async def _check_window(after: Timestamp, before: Timestamp, context: grpc.aio.ServicerContext) -> None:
    """An empty window is a caller's mistake (swapped bounds), not an empty listing."""
    if _is_set(after) and _is_set(before) and after.ToMilliseconds() >= before.ToMilliseconds():
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "created_after must be earlier than created_before")


def _is_set(timestamp: Timestamp) -> bool:
    return bool(timestamp.seconds or timestamp.nanos)


def _in_window(key: str, after: Timestamp, before: Timestamp) -> bool:
    created_ms = int(key.split(".")[2])
    if _is_set(after) and created_ms <= after.ToMilliseconds():
        return False
    return not (_is_set(before) and created_ms >= before.ToMilliseconds())


async def _page(ctx: IngestContext, request, context, prefix: str, pattern: str, load) -> tuple[list, str]:
    """Walk the index newest first from the page token; `load(key)` gives the item or None (filtered)."""
    await _check_window(request.created_after, request.created_before, context)
    after = await _after_token(request.page_token, prefix, context)
    keys = sorted(await ctx.bus.kv_keys_matching(topology.TENANT_INDEX_BUCKET, pattern), reverse=True)
    if after is not None:
        keys = [key for key in keys if key < after]
    size, items = _page_size(request.page_size), []
    for position, key in enumerate(keys):
        if not _in_window(key, request.created_after, request.created_before):
            continue
        item = await load(key)
        if item is not None:
            items.append(item)
        if len(items) == size:
            return items, _encode_token(key) if position + 1 < len(keys) else ""
    return items, ""


async def list_subjects(
    ctx: IngestContext, request: studio_pb2.ListSubjectsRequest, context: grpc.aio.ServicerContext
) -> studio_pb2.ListSubjectsResponse:
    tenant = await ctx.authenticate(context)

    async def load(key: str):
        record = await ctx.bus.kv_get(topology.SUBJECTS_BUCKET, key.split(".")[3], state_pb2.SubjectRecord)
        if record is None or record.tenant_id != tenant.tenant_id or ctx.being_deleted(record.subject.subject_id):
            return None
        if request.external_ref and record.subject.external_ref != request.external_ref:
            return None
        return record.subject

    prefix = f"{tenant.tenant_id}.s."
    subjects, token = await _page(ctx, request, context, prefix, prefix + ">", load)
    return studio_pb2.ListSubjectsResponse(subjects=subjects, next_page_token=token)


async def list_orders(
    ctx: IngestContext, request: studio_pb2.ListOrdersRequest, context: grpc.aio.ServicerContext
) -> studio_pb2.ListOrdersResponse:
    tenant = await ctx.authenticate(context)
    prefix = f"{tenant.tenant_id}.o."
    pattern = prefix + ">"
    if request.subject_id:
        await ctx.owned_subject(tenant, request.subject_id, context)
        pattern = f"{prefix}*.{request.subject_id}.*"
    states = set(request.states)

    async def load(key: str):
        record = await ctx.bus.kv_get(topology.ORDERS_BUCKET, key.split(".")[4], state_pb2.OrderRecord)
        if record is None or record.tenant_id != tenant.tenant_id or ctx.being_deleted(record.order.subject_id):
            return None
        return record.order if not states or record.order.state in states else None

    orders, token = await _page(ctx, request, context, prefix, pattern, load)
    return studio_pb2.ListOrdersResponse(orders=orders, next_page_token=token)
