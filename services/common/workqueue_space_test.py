"""The work-queue loop against a real nats-server and a full store: a job's write that a stream at its budget refuses
waits for space and is tried again, so the job's work is done once; its process takes no new job meanwhile."""

from __future__ import annotations

import asyncio

import nats.js.errors
import pytest
from nats.js.api import DiscardPolicy, StreamConfig
from studio.v1 import events_pb2

from services.common import store_space, workqueue
from services.common.bus import Bus
from services.common.launchers.nats import NatsServer
from services.common.workqueue import WorkerState, run_worker
from services.common.workqueue_test import fresh_queue, run_until, stop

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def full_stream(bus: Bus, name: str) -> str:
    """A private stream at its budget (discard new, as every studio stream but EVENTS): a subject it refuses."""
    subject = f"test.{name}"
    await bus.js.add_stream(StreamConfig(name=name.upper(), subjects=[subject], max_bytes=4096,
                                         discard=DiscardPolicy.NEW))
    with pytest.raises(nats.js.errors.ServiceUnavailableError):
        for _ in range(100):
            await bus.publish_raw(subject, b"x" * 500)
    return subject


@pytest.fixture
def quick_space_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workqueue, "OUTAGE_RETRY_S", (0.05,))
    monkeypatch.setattr(store_space, "SPACE_RETRY_S", (0.05,))


async def test_a_job_whose_write_finds_the_store_full_waits_at_the_write_and_works_once(
    nats_server: NatsServer, quick_space_retries
) -> None:
    """The write is tried again until the operator frees space: the work before it (a training run) is done once."""
    bus = await Bus.connect(nats_server.url, name="wq-full")
    queue = await fresh_queue(bus, "wq-full")
    results = await full_stream(bus, "wq-full-results")
    worked: list[str] = []

    async def handle(payload: bytes) -> None:
        job_id = events_pb2.TrainJob.FromString(payload).job_id
        worked.append(job_id)  # the expensive part
        await bus.publish_raw(results, job_id.encode().ljust(500))  # its result, refused while the store is full

    async def on_failure(payload: bytes, reason: str) -> None:
        raise AssertionError(reason)

    state = WorkerState()
    worker = asyncio.create_task(run_worker(bus, queue, handle, on_failure, state))
    await bus.publish(queue.subject, events_pb2.TrainJob(job_id="trained"), msg_id="wq-full-trained")
    await run_until(lambda: worked, worker)
    await asyncio.sleep(1.0)  # 20 retry periods
    assert worked == ["trained"] and state.jobs_completed == 0
    await bus.js.purge_stream(results.split(".")[1].upper())  # the operator frees space
    await run_until(lambda: state.jobs_completed == 1, worker)
    await stop(worker)
    stored = (await bus.js.stream_info(results.split(".")[1].upper())).state.messages
    info = await bus.js.consumer_info(queue.stream, queue.durable)
    await bus.close()
    assert worked == ["trained"] and stored == 1
    assert info.num_redelivered == 0 and info.num_pending == 0 and info.num_ack_pending == 0


async def test_no_new_job_starts_while_a_job_waits_for_space(nats_server: NatsServer, quick_space_retries) -> None:
    """Two workers of one process (STUDIO_RENDER_WORKERS): while one job's write waits, the other takes no job."""
    bus = await Bus.connect(nats_server.url, name="wq-paused")
    queue = await fresh_queue(bus, "wq-paused", ack_wait_s=2.0)
    results = await full_stream(bus, "wq-paused-results")
    worked: list[str] = []

    async def handle(payload: bytes) -> None:
        worked.append(events_pb2.TrainJob.FromString(payload).job_id)
        await bus.publish_raw(results, b"a result".ljust(500))

    async def on_failure(payload: bytes, reason: str) -> None:
        raise AssertionError(reason)

    states = [WorkerState(), WorkerState()]
    workers = [asyncio.create_task(run_worker(bus, queue, handle, on_failure, state)) for state in states]
    await bus.publish(queue.subject, events_pb2.TrainJob(job_id="first"), msg_id="wq-paused-first")
    await run_until(lambda: worked, workers[0])
    await asyncio.sleep(0.3)  # its write waits for space now
    await bus.publish(queue.subject, events_pb2.TrainJob(job_id="second"), msg_id="wq-paused-second")
    await asyncio.sleep(2 * queue.ack_wait_s)  # held past ack_wait: not handed back to run elsewhere either
    assert worked == ["first"]
    await bus.js.purge_stream(results.split(".")[1].upper())
    await run_until(lambda: sum(state.jobs_completed for state in states) == 2, workers[0])
    for worker in workers:
        await stop(worker)
    info = await bus.js.consumer_info(queue.stream, queue.durable)
    await bus.close()
    assert sorted(worked) == ["first", "second"]
    assert info.num_redelivered == 0 and info.num_pending == 0 and info.num_ack_pending == 0
