"""Scheduling: what weighted fair queuing buys and what the dispatcher costs.

1. Policy (simulated clock, the real FairQueue): tenant A holds 500 training jobs at t=0, five other
   tenants one each at t=30 s; 4 GPUs, 600 s per job. The small tenants' wait under first come,
   first served (the work queue without the scheduler) against the fair queue, as a ratio.
2. Dispatch overhead (real nats-server, real Dispatcher, real work-queue workers whose job is a fixed
   sleep): the idle gap a worker sees between finishing one job and starting the next, with jobs held
   and released by the dispatcher against jobs published straight to the work queue.
3. Announcement cost: one rehearsal of the dispatch order (positions and ETAs) for 10,000 held jobs
   of 50 tenants.

    python bench/scheduling.py [--jobs 200] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studio.v1 import events_pb2, state_pb2  # noqa: E402

from services.common import topology  # noqa: E402
from services.common.bus import Bus  # noqa: E402
from services.common.holding import HeldJob, hold  # noqa: E402
from services.common.launchers.nats import start_nats  # noqa: E402
from services.common.machine import describe_machine  # noqa: E402
from services.common.workqueue import WorkerState, run_worker  # noqa: E402
from services.ingest.scheduling.dispatcher import Dispatcher, SchedulerConfig  # noqa: E402
from services.ingest.scheduling.fair_queue import FairQueue  # noqa: E402

GPUS, SERVICE_S, FLOOD, SMALL_TENANTS, SMALL_AT_S = 4, 600.0, 500, 5, 30.0


def held(seq: int, tenant: str, at: float) -> HeldJob:
    return HeldJob(f"studio.pending.TRAIN.standard.{tenant}.s.o{seq}", seq, at, topology.TRAIN_QUEUE, False,
                   tenant, "s", f"o{seq}")


def simulate(fair: bool) -> list[float]:
    """Waits (s) of the small tenants' jobs; each free GPU takes the next job the policy names."""
    jobs = [held(i, "a", 0.0) for i in range(FLOOD)]
    jobs += [held(FLOOD + i, f"t{i}", SMALL_AT_S) for i in range(SMALL_TENANTS)]
    queue, fifo, waits = FairQueue(), [], []
    free_at = [0.0] * GPUS
    arrivals = sorted(jobs, key=lambda job: job.held_at)
    while arrivals or len(queue) or fifo:
        now = heapq.heappop(free_at)
        while arrivals and arrivals[0].held_at <= now:
            job = arrivals.pop(0)
            queue.add(job) if fair else fifo.append(job)
        if not (len(queue) or fifo):  # idle until the next arrival
            heapq.heappush(free_at, arrivals[0].held_at)
            continue
        job = queue.pick(now) if fair else fifo.pop(0)
        if job.tenant_id != "a":
            waits.append(now - job.held_at)
        heapq.heappush(free_at, now + SERVICE_S)
    return waits


async def dispatch_gaps(jobs: int, through_scheduler: bool, service_s: float = 0.02) -> list[float]:
    with tempfile.TemporaryDirectory() as scratch:
        server = await start_nats(Path(scratch) / "data", Path(scratch) / "logs")
        bus = await Bus.connect(server.url, name="bench-scheduling")
        spans: list[tuple[float, float]] = []
        done = asyncio.Event()

        async def handle(payload: bytes) -> None:
            started = time.perf_counter()
            await asyncio.sleep(service_s)
            spans.append((started, time.perf_counter()))
            if len(spans) == jobs:
                done.set()

        async def failed(payload: bytes, reason: str) -> None:
            raise RuntimeError(reason)

        await bus.kv_put(topology.SUBJECTS_BUCKET, "s", state_pb2.SubjectRecord(tenant_id="a"))
        tasks = [asyncio.create_task(run_worker(bus, topology.TRAIN_QUEUE, handle, failed, WorkerState()))]
        if through_scheduler:
            tasks.append(asyncio.create_task(Dispatcher(bus, SchedulerConfig()).run()))
        await asyncio.sleep(0.5)  # the worker's first heartbeat
        for index in range(jobs):
            job = events_pb2.TrainJob(job_id=f"train-o{index}", order_id=f"o{index}", tenant_id="a", subject_id="s")
            if through_scheduler:
                await hold(bus, topology.TRAIN_QUEUE, job)
            else:
                await bus.publish(topology.TRAIN_SUBJECT, job, msg_id=job.job_id)
        await asyncio.wait_for(done.wait(), timeout=300)
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await bus.close()
        server.stop()
    return [later[0] - earlier[1] for earlier, later in zip(spans, spans[1:], strict=False)]


def rehearsal_ms(jobs: int = 10_000, tenants: int = 50) -> float:
    queue = FairQueue()
    for seq in range(jobs):
        queue.add(held(seq, f"t{seq % tenants}", 0.0))
    started = time.perf_counter()
    order = queue.dispatch_order(now=0.0, seconds_per_dispatch=1.0)
    assert len(order) == jobs
    return (time.perf_counter() - started) * 1000


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs for the dispatch-overhead runs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    fifo, fair = simulate(fair=False), simulate(fair=True)
    direct = await dispatch_gaps(args.jobs, through_scheduler=False)
    scheduled = await dispatch_gaps(args.jobs, through_scheduler=True)
    result = {
        "machine": describe_machine(),
        "policy": {"gpus": GPUS, "service_s": SERVICE_S, "flood_jobs": FLOOD, "small_tenants": SMALL_TENANTS,
                   "fifo_small_wait_s_mean": statistics.mean(fifo), "fair_small_wait_s_mean": statistics.mean(fair),
                   "fifo_over_fair": statistics.mean(fifo) / max(statistics.mean(fair), 1e-9)},
        "dispatch_gap_ms": {
            "jobs": args.jobs,
            "direct_p50": percentile(direct, 50) * 1000, "direct_p99": percentile(direct, 99) * 1000,
            "scheduled_p50": percentile(scheduled, 50) * 1000, "scheduled_p99": percentile(scheduled, 99) * 1000,
        },
        "rehearsal_ms_10000_jobs_50_tenants": rehearsal_ms(),
    }
    gaps = result["dispatch_gap_ms"]
    gaps["scheduled_over_direct_p50"] = gaps["scheduled_p50"] / max(gaps["direct_p50"], 1e-9)
    if args.json:
        print(json.dumps(result))
        return
    policy = result["policy"]
    print(f"machine: {result['machine']}")
    print(f"policy, {FLOOD} jobs of one tenant then {SMALL_TENANTS} single jobs at t={SMALL_AT_S:.0f} s, {GPUS} GPUs × "
          f"{SERVICE_S:.0f} s: small tenants wait {policy['fifo_small_wait_s_mean']:.0f} s first-come-first-served, "
          f"{policy['fair_small_wait_s_mean']:.0f} s fair-queued (ratio {policy['fifo_over_fair']:.0f}×)")
    print(f"dispatch gap (worker idle between jobs), {args.jobs} jobs: direct P50 {gaps['direct_p50']:.1f} ms / "
          f"P99 {gaps['direct_p99']:.1f} ms, through the scheduler P50 {gaps['scheduled_p50']:.1f} ms / "
          f"P99 {gaps['scheduled_p99']:.1f} ms (P50 ratio {gaps['scheduled_over_direct_p50']:.1f}×)")
    print(f"position/ETA rehearsal of 10,000 held jobs of 50 tenants: "
          f"{result['rehearsal_ms_10000_jobs_50_tenants']:.0f} ms")


if __name__ == "__main__":
    asyncio.run(main())
