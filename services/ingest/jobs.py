"""Where an order's job is: held for the scheduler (PENDING) or released to its work queue (TRAIN, RENDER),
waiting or running. A job leaves its work queue only when its worker is done with it."""

from __future__ import annotations

from services.common import topology
from services.common.bus import Bus
from services.common.holding import job_type
from services.common.topology import WorkQueue


async def order_has_job(bus: Bus, order_id: str) -> bool:
    if await _held(bus, order_id):
        return True
    for queue in topology.WORK_QUEUES:
        if await _in_work_queue(bus, queue, order_id):
            return True
    return False


async def _held(bus: Bus, order_id: str) -> bool:
    return await bus.holds_messages_on(topology.PENDING_STREAM.name, topology.pending_of_order(order_id))


async def _in_work_queue(bus: Bus, queue: WorkQueue, order_id: str) -> bool:
    async for _, payload in bus.queued_jobs(queue):
        if job_type(queue).FromString(payload).order_id == order_id:
            return True
    return False


async def without_jobs(bus: Bus, order_ids: list[str]) -> set[str]:
    """Those of ORDER_IDS whose job is nowhere: neither held nor in a work queue (each queue read once)."""
    missing = {order_id for order_id in order_ids if not await _held(bus, order_id)}
    for queue in topology.WORK_QUEUES:
        if not missing:
            break
        async for _, payload in bus.queued_jobs(queue):
            missing.discard(job_type(queue).FromString(payload).order_id)
    return missing
