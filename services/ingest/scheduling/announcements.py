"""Position and ETA of every held order, published as OrderQueued events when they move enough
to matter: always for a newly held job, then when the position or the estimate moves by a tenth (or
the order is among the next ten). With 500 orders queued, announcing every one-place move would
put 500 events on the stream per dispatch."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from studio.v1 import events_pb2

from services.common import topology
from services.common.bus import Bus
from services.common.holding import STAGE_NAMES, HeldJob
from services.common.order_events import publish_order_event
from services.ingest.scheduling.estimates import ServiceTimes, _Worker, start_times
from services.ingest.scheduling.fair_queue import FairQueue

ALWAYS_ANNOUNCED_POSITIONS = 10
SIGNIFICANT_CHANGE = 0.1
MIN_ETA_CHANGE_S = 5
# Below this many held jobs a rehearsal takes a few milliseconds: not worth a thread.
REHEARSE_INLINE_BELOW = 2000


def estimate(queue: topology.WorkQueue, position: int, starts_in: float, workers: int,
             service: ServiceTimes) -> events_pb2.OrderQueued:
    """The order waits `starts_in`, runs this stage, and (when training) renders after it."""
    stage_s = service.mean(queue.stream)
    rest_s = service.mean(topology.RENDER_QUEUE.stream) if queue is topology.TRAIN_QUEUE else 0.0
    queued = events_pb2.OrderQueued(
        position=position, eta_seconds=round(starts_in + stage_s + rest_s), stage=STAGE_NAMES[queue.stream],
        starts_in_seconds=round(starts_in), workers=workers, service_seconds=stage_s,
    )
    now = time.time()
    queued.expected_start_at.FromNanoseconds(int((now + starts_in) * 1e9))
    queued.expected_done_at.FromNanoseconds(int((now + starts_in + stage_s + rest_s) * 1e9))
    return queued


def _moved(before: events_pb2.OrderQueued, now: events_pb2.OrderQueued) -> bool:
    if before.stage != now.stage:
        return True
    position_moved = before.position != now.position and (
        now.position < ALWAYS_ANNOUNCED_POSITIONS
        or abs(before.position - now.position) >= SIGNIFICANT_CHANGE * before.position)
    eta_change = abs(before.eta_seconds - now.eta_seconds)
    eta_moved = eta_change >= max(MIN_ETA_CHANGE_S, SIGNIFICANT_CHANGE * before.eta_seconds)
    return position_moved or eta_moved or before.workers != now.workers


@dataclass
class Announcer:
    bus: Bus
    _last: dict[str, events_pb2.OrderQueued] = field(default_factory=dict)

    async def announce_queue(self, queue: topology.WorkQueue, fair: FairQueue, workers: list[_Worker],
                             released_waiting: int, service: ServiceTimes, now: float) -> None:
        service_s = service.mean(queue.stream)
        seconds_per_dispatch = service_s / max(1, len(workers))
        if len(fair) < REHEARSE_INLINE_BELOW:
            order = fair.dispatch_order(now, seconds_per_dispatch)
        else:  # CPU-bound for long queues (bench/scheduling.py): off the event loop, which serves the API
            order = await asyncio.to_thread(fair.dispatch_order, now, seconds_per_dispatch)
        starts = start_times(workers, released_waiting, len(order), service_s)
        for position, (job, starts_in) in enumerate(zip(order, starts, strict=True)):
            await self.announce(job, estimate(queue, position, starts_in, len(workers), service))

    async def announce(self, job: HeldJob, queued: events_pb2.OrderQueued, force: bool = False) -> None:
        before = self._last.get(job.order_id)
        if not force and before is not None and not _moved(before, queued):
            return
        self._last[job.order_id] = queued
        await publish_order_event(self.bus, job.order_id, job.tenant_id, job.subject_id, queued=queued)

    def announced(self, order_id: str) -> bool:
        return order_id in self._last

    def forget(self, order_id: str) -> None:
        self._last.pop(order_id, None)
