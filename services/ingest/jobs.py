"""Where an order's job is: held for the scheduler (PENDING) or released to its work queue (TRAIN, RENDER),
waiting or running. A job leaves its work queue only when its worker is done with it."""

from __future__ import annotations

from nats.js.errors import NotFoundError

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
    info = await bus.js.stream_info(topology.PENDING_STREAM.name, subjects_filter=topology.pending_of_order(order_id))
    return bool(info.state.subjects)


async def _in_work_queue(bus: Bus, queue: WorkQueue, order_id: str) -> bool:
    """A scan: the dispatcher keeps a work queue as short as its workers are few."""
    info = await bus.js.stream_info(queue.stream)
    remaining = info.state.messages
    seq = info.state.first_seq
    while remaining > 0 and seq <= info.state.last_seq:
        try:
            message = await bus.js.get_msg(queue.stream, seq)
        except NotFoundError:  # acknowledged, or deleted by a purge
            seq += 1
            continue
        remaining -= 1
        seq += 1
        if message.data and job_type(queue).FromString(message.data).order_id == order_id:
            return True
    return False
