"""Concurrent-order admission against a real nats-server: orders that can no longer run stop holding a slot."""

from __future__ import annotations

import time

import pytest
from studio.v1 import common_pb2, events_pb2, state_pb2

from services.common import topology
from services.common.bus import Bus
from services.common.holding import hold
from services.common.objects import new_id
from services.ingest import quotas

pytestmark = pytest.mark.asyncio(loop_scope="session")


def tenant_allowing_one() -> state_pb2.TenantRecord:
    record = state_pb2.TenantRecord(tenant_id=new_id("tenant"))
    record.quotas.max_concurrent_orders = 1
    return record


async def queued_order(bus: Bus, tenant: state_pb2.TenantRecord, admitted_s_ago: float) -> str:
    """An order admitted ADMITTED_S_AGO whose record says QUEUED."""
    order_id = new_id("order")
    order = common_pb2.Order(order_id=order_id, subject_id=new_id("subject"), state=common_pb2.ORDER_STATE_QUEUED)
    await bus.kv_put(topology.ORDERS_BUCKET, order_id, state_pb2.OrderRecord(tenant_id=tenant.tenant_id, order=order))
    active = state_pb2.ActiveOrders()
    active.admitted_ms[order_id] = int((time.time() - admitted_s_ago) * 1000)
    await bus.kv_put(topology.TENANT_USAGE_BUCKET, f"{tenant.tenant_id}.active_orders", active)
    return order_id


async def test_an_old_queued_order_whose_job_is_nowhere_stops_holding_its_slot(bus: Bus) -> None:
    tenant = tenant_allowing_one()
    await queued_order(bus, tenant, admitted_s_ago=quotas.ORPHAN_ORDER_GRACE_S + 60)
    await quotas.admit_order(bus, tenant, new_id("order"))


async def test_an_old_queued_order_whose_job_is_held_keeps_its_slot(bus: Bus) -> None:
    tenant = tenant_allowing_one()
    order_id = await queued_order(bus, tenant, admitted_s_ago=quotas.ORPHAN_ORDER_GRACE_S + 60)
    job = events_pb2.TrainJob(job_id=new_id("job"), tenant_id=tenant.tenant_id, subject_id=new_id("subject"),
                              order_id=order_id)
    await hold(bus, topology.TRAIN_QUEUE, job)
    try:
        with pytest.raises(quotas.QuotaExceeded):
            await quotas.admit_order(bus, tenant, new_id("order"))
    finally:
        await bus.purge_subject(topology.PENDING_STREAM.name, topology.pending_of_order(order_id))


async def test_a_young_queued_order_keeps_its_slot_while_its_job_is_being_held(bus: Bus) -> None:
    tenant = tenant_allowing_one()
    await queued_order(bus, tenant, admitted_s_ago=1)
    with pytest.raises(quotas.QuotaExceeded):
        await quotas.admit_order(bus, tenant, new_id("order"))


async def test_a_new_days_counter_drops_the_earlier_days(bus: Bus) -> None:
    tenant = tenant_allowing_one()
    quota = f"{tenant.tenant_id}.max_subjects_per_day"
    for day in ("20260101", "20260102"):
        await bus.kv_put(topology.TENANT_USAGE_BUCKET, f"{quota}.{day}", state_pb2.UsageCounter(value=3))
    await quotas.reserve_daily(bus, tenant, "max_subjects_per_day", 1, "subjects")
    today = quotas._day_key(tenant.tenant_id, "max_subjects_per_day")
    assert await bus.kv_keys_matching(topology.TENANT_USAGE_BUCKET, f"{quota}.*") == [today]
    await quotas.reserve_daily(bus, tenant, "max_subjects_per_day", 1, "subjects")
    assert await bus.kv_get(topology.TENANT_USAGE_BUCKET, today, state_pb2.UsageCounter) == state_pb2.UsageCounter(
        value=2)


async def test_a_counter_created_late_for_the_day_before_keeps_todays(bus: Bus) -> None:
    """A reservation computed its day just before midnight and lands after today's first: today's count stays."""
    tenant = tenant_allowing_one()
    quota = f"{tenant.tenant_id}.max_subjects_per_day"
    later = f"{quota}.99991231"
    await bus.kv_put(topology.TENANT_USAGE_BUCKET, later, state_pb2.UsageCounter(value=3))
    await quotas.reserve_daily(bus, tenant, "max_subjects_per_day", 1, "subjects")
    assert later in await bus.kv_keys_matching(topology.TENANT_USAGE_BUCKET, f"{quota}.*")


async def test_an_old_queued_order_whose_job_waits_in_its_work_queue_keeps_its_slot(bus: Bus) -> None:
    tenant = tenant_allowing_one()
    order_id = await queued_order(bus, tenant, admitted_s_ago=quotas.ORPHAN_ORDER_GRACE_S + 60)
    job = events_pb2.TrainJob(job_id=new_id("job"), tenant_id=tenant.tenant_id, subject_id=new_id("subject"),
                              order_id=order_id)
    await bus.publish(topology.TRAIN_SUBJECT, job, msg_id=job.job_id)
    try:
        with pytest.raises(quotas.QuotaExceeded):
            await quotas.admit_order(bus, tenant, new_id("order"))
    finally:
        await bus.delete_queued_jobs(topology.TRAIN_QUEUE, lambda payload: events_pb2.TrainJob.FromString(
            payload).order_id == order_id)
