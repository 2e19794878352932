"""What the scheduler knows about its workers: who is alive (from WorkerHeartbeat), how long a job
of each queue takes (an exponentially weighted mean of completed jobs), and, from both, when each
held job will start and its order finish."""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field

from studio.v1 import events_pb2, state_pb2

# Weight of the newest completed job in the mean: recent enough to follow a change of hardware or
# model, smooth enough that one odd job does not swing every ETA.
EWMA_ALPHA = 0.3


@dataclass
class _Worker:
    busy: bool
    job_id: str
    job_seconds: float  # how long the current job had run when the heartbeat was sent
    seen_at: float  # time.monotonic()
    expires_at: float


@dataclass
class WorkerRegistry:
    """Live workers per queue stream, from their heartbeats."""

    _workers: dict[str, dict[str, _Worker]] = field(default_factory=dict)

    def record(self, beat: events_pb2.WorkerHeartbeat, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.live(beat.queue, now)  # a replica that never dispatches still forgets workers scaled away
        self._workers.setdefault(beat.queue, {})[beat.worker_id] = _Worker(
            beat.busy, beat.job_id, beat.job_seconds, now, now + beat.expires_in_seconds
        )

    def live(self, queue: str, now: float | None = None) -> list[_Worker]:
        now = time.monotonic() if now is None else now
        workers = self._workers.get(queue, {})
        for worker_id in [w for w, worker in workers.items() if worker.expires_at <= now]:
            del workers[worker_id]
        return list(workers.values())


@dataclass
class ServiceTimes:
    """Measured seconds per job, per queue stream; `defaults` until a job of the queue completed."""

    defaults: dict[str, float]
    measured: dict[str, state_pb2.ServiceTime] = field(default_factory=dict)

    def mean(self, queue: str) -> float:
        record = self.measured.get(queue)
        return record.mean_seconds if record else self.defaults[queue]

    def add(self, queue: str, seconds: float) -> state_pb2.ServiceTime:
        record = self.measured.setdefault(queue, state_pb2.ServiceTime(queue=queue))
        alpha = 1.0 if record.samples == 0 else EWMA_ALPHA
        record.mean_seconds = alpha * seconds + (1 - alpha) * record.mean_seconds
        record.samples += 1
        return record


def start_times(workers: list[_Worker], released_waiting: int, held: int, service_s: float,
                now: float | None = None) -> list[float]:
    """Seconds from now until each of `held` jobs (in dispatch order) starts: jobs already released to
    the work queue but not started go first; each job takes the worker that frees up earliest; a
    running job has its mean service time minus what it has run. No live worker: assume one."""
    now = time.monotonic() if now is None else now
    free_at = [max(0.0, service_s - (w.job_seconds + now - w.seen_at)) if w.busy else 0.0 for w in workers] or [0.0]
    heapq.heapify(free_at)
    for _ in range(released_waiting):
        heapq.heappush(free_at, heapq.heappop(free_at) + service_s)
    starts = []
    for _ in range(held):
        start = heapq.heappop(free_at)
        starts.append(start)
        heapq.heappush(free_at, start + service_s)
    return starts
