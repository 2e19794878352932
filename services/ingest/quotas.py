"""Per-tenant quotas. A refused call is refused before anything is written, with RESOURCE_EXHAUSTED
naming the limit. Counters live in the studio_tenant_usage bucket and change by compare-and-set, so
replicas of ingest never lose an increment.

Defaults (a tenant's own setting wins; `studio tenants set` changes them):
  max_concurrent_orders     20      orders not yet done or failed
  max_subjects_per_day      1000    subjects created per UTC day
  max_photos_per_subject    60      photos uploaded for one subject, accepted and refused
  max_upload_bytes_per_day  10 GiB  photo bytes uploaded per UTC day
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from studio.v1 import admin_pb2, common_pb2, state_pb2

from services.common import topology
from services.common.bus import Bus
from services.ingest import jobs

DEFAULT_QUOTAS = admin_pb2.TenantQuotas(
    max_concurrent_orders=20, max_subjects_per_day=1000, max_photos_per_subject=60,
    max_upload_bytes_per_day=10 * 1024**3,
)
# An admitted order whose record never appeared (its creation crashed), or that is QUEUED with its job nowhere (its
# creation crashed between the record and the job, and no retry came), stops counting after this.
ORPHAN_ORDER_GRACE_S = 120
FINISHED = (common_pb2.ORDER_STATE_DONE, common_pb2.ORDER_STATE_FAILED)
CAS_ATTEMPTS = 50


class QuotaExceeded(Exception):
    def __init__(self, limit: str, detail: str) -> None:
        super().__init__(f"quota {limit} exceeded: {detail}")
        self.limit = limit


def effective_quotas(tenant: state_pb2.TenantRecord) -> admin_pb2.TenantQuotas:
    quotas = admin_pb2.TenantQuotas()
    for field in DEFAULT_QUOTAS.DESCRIPTOR.fields:
        own = getattr(tenant.quotas, field.name)
        setattr(quotas, field.name, own or getattr(DEFAULT_QUOTAS, field.name))
    return quotas


def _day_key(tenant_id: str, limit: str) -> str:
    return f"{tenant_id}.{limit}.{datetime.now(UTC).strftime('%Y%m%d')}"


async def _add_to_counter(bus: Bus, key: str, amount: int, limit: int | None) -> int | None:
    """Add `amount` unless that would pass `limit`; the new value, or None when refused."""
    for _ in range(CAS_ATTEMPTS):
        raw, revision = await bus.kv_entry(topology.TENANT_USAGE_BUCKET, key)
        current = state_pb2.UsageCounter.FromString(raw).value if raw else 0
        updated = max(0, current + amount)
        if limit is not None and amount > 0 and updated > limit:
            return None
        value = state_pb2.UsageCounter(value=updated).SerializeToString()
        if await bus.kv_compare_and_set(topology.TENANT_USAGE_BUCKET, key, value, revision):
            if not revision:
                await _drop_earlier_days(bus, key)
            return updated
    raise RuntimeError(f"usage counter {key} is contended")


async def _drop_earlier_days(bus: Bus, day_key: str) -> None:
    """A new day's counter makes the earlier days' counters of its quota history, which nothing reads: they go,
    or every tenant would leave two keys a day in the bucket for as long as it exists."""
    quota, day = day_key.rsplit(".", 1)
    for key in await bus.kv_keys_matching(topology.TENANT_USAGE_BUCKET, f"{quota}.*"):
        if key.rsplit(".", 1)[1] < day:  # never a later day's: a reservation made just before midnight lands late
            await bus.kv_purge(topology.TENANT_USAGE_BUCKET, key)


async def reserve_daily(bus: Bus, tenant: state_pb2.TenantRecord, limit: str, amount: int, unit: str) -> None:
    """Count `amount` against today's `limit` (a TenantQuotas field name) or raise QuotaExceeded."""
    allowed = getattr(effective_quotas(tenant), limit)
    if await _add_to_counter(bus, _day_key(tenant.tenant_id, limit), amount, allowed) is None:
        raise _daily_exceeded(limit, amount, unit, allowed)


async def check_daily_room(bus: Bus, tenant: state_pb2.TenantRecord, limit: str, amount: int, unit: str) -> int:
    """Raise QuotaExceeded if `amount` more would pass today's `limit` now; else the room left. A look that
    reserves nothing: reserve_daily has the last word."""
    allowed = getattr(effective_quotas(tenant), limit)
    raw = await bus.kv_raw(topology.TENANT_USAGE_BUCKET, _day_key(tenant.tenant_id, limit))
    used = state_pb2.UsageCounter.FromString(raw).value if raw else 0
    if used + amount > allowed:
        raise _daily_exceeded(limit, amount, unit, allowed)
    return allowed - used


def _daily_exceeded(limit: str, amount: int, unit: str, allowed: int) -> QuotaExceeded:
    return QuotaExceeded(limit, f"{amount} more {unit} would pass the limit of {allowed} per UTC day")


async def release_daily(bus: Bus, tenant: state_pb2.TenantRecord, limit: str, amount: int) -> None:
    """Give back a reservation whose work did not happen."""
    await _add_to_counter(bus, _day_key(tenant.tenant_id, limit), -amount, None)


def check_photos_per_subject(tenant: state_pb2.TenantRecord, stored: int, incoming: int) -> None:
    allowed = effective_quotas(tenant).max_photos_per_subject
    if stored + incoming > allowed:
        raise QuotaExceeded(
            "max_photos_per_subject", f"the subject has {stored} photo(s); {incoming} more would pass {allowed}"
        )


def _active_key(tenant_id: str) -> str:
    return f"{tenant_id}.active_orders"


async def _ended_orders(bus: Bus, active: state_pb2.ActiveOrders, order_id: str) -> list[str]:
    """The admitted orders other than `order_id` that hold a slot no longer: finished, never recorded, or QUEUED
    past the grace with their job nowhere (each work queue read once for all of those)."""
    ended, unsure = [], []
    for other, admitted_ms in active.admitted_ms.items():
        if other == order_id:
            continue
        record = await bus.kv_get(topology.ORDERS_BUCKET, other, state_pb2.OrderRecord)
        in_grace = time.time() * 1000 - admitted_ms < ORPHAN_ORDER_GRACE_S * 1000
        if (record is None and not in_grace) or (record is not None and record.order.state in FINISHED):
            ended.append(other)
        elif record is not None and record.order.state == common_pb2.ORDER_STATE_QUEUED and not in_grace:
            unsure.append(other)
    return ended + sorted(await jobs.without_jobs(bus, unsure))


async def admit_order(bus: Bus, tenant: state_pb2.TenantRecord, order_id: str) -> None:
    """Count the order as running, or raise QuotaExceeded when the tenant runs its maximum already."""
    allowed = effective_quotas(tenant).max_concurrent_orders
    key = _active_key(tenant.tenant_id)
    for _ in range(CAS_ATTEMPTS):
        raw, revision = await bus.kv_entry(topology.TENANT_USAGE_BUCKET, key)
        active = state_pb2.ActiveOrders.FromString(raw) if raw else state_pb2.ActiveOrders()
        for ended in await _ended_orders(bus, active, order_id):
            del active.admitted_ms[ended]
        if order_id not in active.admitted_ms and len(active.admitted_ms) >= allowed:
            raise QuotaExceeded("max_concurrent_orders", f"{len(active.admitted_ms)} order(s) are running; "
                                f"the limit is {allowed}")
        active.admitted_ms.setdefault(order_id, int(time.time() * 1000))
        if await bus.kv_compare_and_set(topology.TENANT_USAGE_BUCKET, key, active.SerializeToString(), revision):
            return
    raise RuntimeError(f"active orders of {tenant.tenant_id} are contended")


async def forget_orders(bus: Bus, tenant_id: str, order_ids: list[str]) -> int:
    """Drop a deleted subject's orders from the tenant's running orders; how many were there."""
    key = _active_key(tenant_id)
    for _ in range(CAS_ATTEMPTS):
        raw, revision = await bus.kv_entry(topology.TENANT_USAGE_BUCKET, key)
        if raw is None:
            return 0
        active = state_pb2.ActiveOrders.FromString(raw)
        present = [order_id for order_id in order_ids if order_id in active.admitted_ms]
        if not present:
            return 0
        for order_id in present:
            del active.admitted_ms[order_id]
        if await bus.kv_compare_and_set(topology.TENANT_USAGE_BUCKET, key, active.SerializeToString(), revision):
            return len(present)
    raise RuntimeError(f"active orders of {tenant_id} are contended")
