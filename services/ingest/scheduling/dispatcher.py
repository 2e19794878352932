"""The dispatcher: releases held jobs from PENDING into TRAIN and RENDER as worker slots free up.

Each work queue holds at most as many jobs (waiting or running) as it has live workers (at least
one, so a queue scaled to zero still shows KEDA a job), so the order in which jobs start is decided
here, by the fair-queue policy, and not by arrival in the work queue. It wakes on every held job and
every finished job (worker heartbeats), and at least every tick. One ingest replica dispatches at a
time (lease.py); the others keep their worker registry warm to take over.

Fairness state (tenants' virtual finish tags) lives in the active dispatcher's memory: after a
fail-over every tenant starts even, which can only favour the tenants that were waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass, field

from nats.js.errors import NotFoundError
from studio.v1 import events_pb2, state_pb2

from services.common import topology
from services.common.bus import Bus
from services.common.cancellation import order_cancelled
from services.common.holding import QUEUES_BY_STREAM, HeldJob, job_type
from services.common.topology import WorkQueue
from services.ingest.scheduling.announcements import Announcer, estimate
from services.ingest.scheduling.estimates import ServiceTimes, WorkerRegistry
from services.ingest.scheduling.fair_queue import FairQueue, parse_weights
from services.ingest.scheduling.lease import Lease

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SchedulerConfig:
    tenant_weights: dict[str, float] = field(default_factory=dict)
    # A standard job that has waited this long competes as express (the no-starvation bound).
    standard_max_wait_s: float = 900.0
    # Seconds per job assumed until a job of the queue has completed and been measured.
    assumed_service_s: dict[str, float] = field(default_factory=lambda: {
        topology.TRAIN_QUEUE.stream: 600.0, topology.RENDER_QUEUE.stream: 60.0})
    tick_s: float = 1.0
    lease_s: float = 10.0
    # Announcing positions costs a rehearsal of the whole dispatch order: at most this often.
    announce_every_s: float = 0.5

    @classmethod
    def from_env(cls) -> SchedulerConfig:
        env = os.environ.get
        return cls(
            tenant_weights=parse_weights(env("STUDIO_SCHED_TENANT_WEIGHTS", "")),
            standard_max_wait_s=float(env("STUDIO_SCHED_STANDARD_MAX_WAIT_S", "900")),
            assumed_service_s={topology.TRAIN_QUEUE.stream: float(env("STUDIO_SCHED_ASSUMED_TRAIN_S", "600")),
                               topology.RENDER_QUEUE.stream: float(env("STUDIO_SCHED_ASSUMED_RENDER_S", "60"))},
        )


def _service_time_key(queue_stream: str) -> str:
    return f"service-time-{queue_stream}"


def _order_of_job(job_id: str) -> str:
    """Job ids are '<stage>-<order id>' (create_order.py)."""
    return job_id.split("-", 1)[-1]


class Dispatcher:
    def __init__(self, bus: Bus, config: SchedulerConfig | None = None) -> None:
        self.bus, self.config = bus, config or SchedulerConfig.from_env()
        self.lease = Lease(bus, f"{socket.gethostname()}-{secrets.token_hex(4)}", self.config.lease_s)
        self.workers = WorkerRegistry()
        self.service = ServiceTimes(dict(self.config.assumed_service_s))
        self.announcer = Announcer(bus)
        self.queues: dict[str, FairQueue] = {}
        self.leading = False
        self._wake = asyncio.Event()
        self._released_waiting: dict[str, int] = {}
        self._announced_at = 0.0
        self._announce_interval_s = self.config.announce_every_s

    async def run(self) -> None:
        subscriptions = [
            await self.bus.client.subscribe(f"{topology.WORKER_HEARTBEAT_PREFIX}.>", cb=self._on_heartbeat),
            await self.bus.client.subscribe(f"{topology.PENDING_PREFIX}.>", cb=self._on_held),
        ]
        try:
            while True:
                try:
                    await self._lead_or_follow()
                except Exception:  # NATS hiccup or a race with a purge: never take the API down, retry
                    log.exception("dispatcher tick failed; retrying")
                    await asyncio.sleep(self.config.tick_s)
                # Python 3.11's wait_for (inside every nats-py request) drops a cancellation that
                # arrives as its reply does; the task still counts it, so stop here when asked.
                if asyncio.current_task().cancelling():
                    raise asyncio.CancelledError
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.config.tick_s):
                        await self._wake.wait()
                self._wake.clear()
        finally:
            for subscription in subscriptions:
                with contextlib.suppress(Exception):
                    await subscription.unsubscribe()
            if self.leading:
                await self.lease.release()

    async def _lead_or_follow(self) -> None:
        leading = await self.lease.hold()
        if leading and not self.leading:
            await self._take_over()
        self.leading = leading
        if leading:
            await self.tick()

    async def _take_over(self) -> None:
        log.info("dispatcher %s takes the lease", self.lease.holder)
        self.queues = {queue.stream: FairQueue(self.config.tenant_weights, self.config.standard_max_wait_s)
                       for queue in topology.WORK_QUEUES}
        for queue in topology.WORK_QUEUES:
            measured = await self.bus.kv_get(topology.SCHEDULER_BUCKET, _service_time_key(queue.stream),
                                             state_pb2.ServiceTime)
            if measured is not None:
                self.service.measured[queue.stream] = measured

    async def tick(self) -> None:
        await self._sync()
        for queue in topology.WORK_QUEUES:
            await self._release(queue)
        started = time.monotonic()
        if started - self._announced_at < self._announce_interval_s:
            return
        for queue in topology.WORK_QUEUES:
            await self.announcer.announce_queue(
                queue, self.queues[queue.stream], self.workers.live(queue.stream),
                self._released_waiting.get(queue.stream, 0), self.service, time.time())
        self._announced_at = time.monotonic()
        # A long queue's rehearsal takes a while: announce less often rather than dispatch late.
        self._announce_interval_s = max(self.config.announce_every_s, 4 * (self._announced_at - started))

    async def _sync(self) -> None:
        """Mirror PENDING: held jobs join their queue; jobs purged (deletion, cancellation) leave it."""
        info = await self.bus.js.stream_info(topology.PENDING_STREAM.name, subjects_filter=">")
        present = set((info.state.subjects or {}).keys())
        for fair in self.queues.values():
            for gone in fair.subjects() - present:
                job = fair.discard(gone)
                self.announcer.forget(job.order_id)
        known = set().union(*(fair.subjects() for fair in self.queues.values()))
        for subject in present - known:
            with contextlib.suppress(NotFoundError):
                raw = await self.bus.js.get_last_msg(topology.PENDING_STREAM.name, subject)
                job = HeldJob.parse(subject, raw.seq, raw.time.timestamp() if raw.time else time.time())
                self.queues[job.queue.stream].add(job)

    async def _release(self, queue: WorkQueue) -> None:
        info = await self.bus.js.consumer_info(queue.stream, queue.durable)
        waiting, running = int(info.num_pending or 0), int(info.num_ack_pending or 0)
        live = self.workers.live(queue.stream)
        free = max(1, len(live)) - waiting - running
        fair = self.queues[queue.stream]
        while free > 0 and (job := fair.pick(time.time())) is not None:
            if await self._release_one(queue, job, len(live)):
                free -= 1
                waiting += 1
        self._released_waiting[queue.stream] = waiting

    async def _release_one(self, queue: WorkQueue, job: HeldJob, workers: int) -> bool:
        try:
            raw = await self.bus.js.get_last_msg(topology.PENDING_STREAM.name, job.subject)
        except NotFoundError:
            return False  # purged since the last sync
        if await self._dropped(job):
            await self.bus.purge_subject(topology.PENDING_STREAM.name, job.subject)
            return False
        if not self.announcer.announced(job.order_id):  # watchers see queued before the work starts
            await self.announcer.announce(job, estimate(queue, 0, 0.0, workers, self.service))
        job_id = job_type(queue).FromString(raw.data).job_id
        await self.bus.publish_raw(queue.subject, raw.data, msg_id=job_id)
        with contextlib.suppress(NotFoundError):  # a deletion or cancellation purged it meanwhile
            await self.bus.js.delete_msg(topology.PENDING_STREAM.name, raw.seq)
        self.announcer.forget(job.order_id)
        log.info("released %s of tenant %s to %s", job_id, job.tenant_id, queue.stream)
        return True

    async def _dropped(self, job: HeldJob) -> bool:
        """A cancelled order's job, or one whose subject was deleted meanwhile, never starts."""
        if self.bus.guard.is_deleted(job.subject_id) or await order_cancelled(self.bus, job.order_id):
            return True
        return await self.bus.kv_raw(topology.SUBJECTS_BUCKET, job.subject_id) is None

    async def _on_held(self, message) -> None:
        self._wake.set()

    async def _on_heartbeat(self, message) -> None:
        beat = events_pb2.WorkerHeartbeat.FromString(message.data)
        if beat.queue not in QUEUES_BY_STREAM:
            return
        self.workers.record(beat)
        if not beat.completed_job_id:
            return
        self._wake.set()
        if self.leading and not await order_cancelled(self.bus, _order_of_job(beat.completed_job_id)):
            record = self.service.add(beat.queue, beat.job_seconds)
            await self.bus.kv_put(topology.SCHEDULER_BUCKET, _service_time_key(beat.queue), record)
