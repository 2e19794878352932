"""The work-queue loop against a real nats-server: success acks once, a failure is retried, a
permanent failure is reported once and not redelivered, an outage (object store, NATS, a service down or past
its deadline) is waited out without using up attempts, a worker that dies mid-job loses nothing, not even its
job's failure, and a message that cannot be settled comes back without stopping the worker."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from dataclasses import replace

import grpc
import nats.errors
import nats.js.errors
import pytest
from nats.aio.msg import Msg
from studio.v1 import events_pb2

from services.common import workqueue
from services.common.blobstore import BlobStoreUnavailable
from services.common.bus import Bus
from services.common.launchers.nats import NatsServer
from services.common.launchers.process import free_port
from services.common.topology import TRAIN_STREAM, WorkQueue
from services.common.workqueue import PermanentJobError, WorkerState, run_worker

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workqueue, "RETRY_DELAY_S", 0.1)


async def fresh_queue(bus: Bus, name: str, ack_wait_s: float = 2.0) -> WorkQueue:
    """A private work-queue stream per test, shaped like TRAIN, so tests do not compete."""
    queue = WorkQueue(stream=name.upper(), subject=f"test.{name}", durable=name, ack_wait_s=ack_wait_s,
                      max_deliver=3)
    await bus.js.add_stream(replace(TRAIN_STREAM, name=queue.stream, subjects=[queue.subject]))
    await bus.js.add_consumer(queue.stream, queue.consumer_config())
    return queue


async def run_until(condition, worker: asyncio.Task, timeout_s: float = 20) -> None:
    for _ in range(int(timeout_s * 20)):
        if condition():
            return
        if worker.done():
            raise AssertionError(f"the worker stopped: {worker.exception()!r}")
        await asyncio.sleep(0.05)
    worker.cancel()
    raise AssertionError("condition not reached")


async def stop(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_retry_then_success_and_permanent_failure(nats_server: NatsServer, quick_retries) -> None:
    bus = await Bus.connect(nats_server.url, name="wq")
    queue = await fresh_queue(bus, "wq-retry")
    attempts: dict[str, int] = {}
    failures: list[tuple[str, str]] = []

    async def handle(payload: bytes) -> None:
        job = events_pb2.TrainJob.FromString(payload)
        attempts[job.job_id] = attempts.get(job.job_id, 0) + 1
        if job.job_id == "flaky" and attempts[job.job_id] == 1:
            raise RuntimeError("transient")
        if job.job_id == "hopeless":
            raise PermanentJobError("bad input")

    async def on_failure(payload: bytes, reason: str) -> None:
        failures.append((events_pb2.TrainJob.FromString(payload).job_id, reason))

    state = WorkerState()
    worker = asyncio.create_task(run_worker(bus, queue, handle, on_failure, state))
    for job_id in ("flaky", "hopeless", "fine"):
        await bus.publish(queue.subject, events_pb2.TrainJob(job_id=job_id), msg_id=f"wq-{job_id}")
    await run_until(lambda: state.jobs_completed == 2 and state.jobs_failed == 1, worker)
    await asyncio.sleep(0.5)  # nothing more may arrive
    await stop(worker)
    await bus.close()
    assert attempts == {"flaky": 2, "hopeless": 1, "fine": 1}
    assert failures == [("hopeless", "bad input")]


DOOMED_WORKER = """
import asyncio, sys
from dataclasses import replace
from services.common.bus import Bus
from services.common.topology import WorkQueue
from services.common.workqueue import WorkerState, run_worker

async def main():
    bus = await Bus.connect(sys.argv[1], name="doomed")
    queue = WorkQueue(sys.argv[2].upper(), "test." + sys.argv[2], sys.argv[2], 1.0, 3)
    async def hang(payload):
        print("started", flush=True)
        await asyncio.sleep(3600)
    async def on_failure(payload, reason):
        pass
    await run_worker(bus, queue, hang, on_failure, WorkerState())

asyncio.run(main())
"""


async def test_a_job_whose_worker_is_killed_is_done_by_another(nats_server: NatsServer) -> None:
    bus = await Bus.connect(nats_server.url, name="wq-kill")
    queue = await fresh_queue(bus, "wq-kill", ack_wait_s=1.0)
    doomed = await asyncio.create_subprocess_exec(
        sys.executable, "-c", DOOMED_WORKER, nats_server.url, queue.durable, stdout=asyncio.subprocess.PIPE
    )
    await bus.publish(queue.subject, events_pb2.TrainJob(job_id="survivor"), msg_id="wq-survivor")
    assert (await asyncio.wait_for(doomed.stdout.readline(), 30)).strip() == b"started"
    doomed.send_signal(signal.SIGKILL)
    await doomed.wait()
    done: list[str] = []

    async def finishes(payload: bytes) -> None:
        done.append(events_pb2.TrainJob.FromString(payload).job_id)

    async def on_failure(payload: bytes, reason: str) -> None:
        raise AssertionError(reason)

    state = WorkerState()
    second = asyncio.create_task(run_worker(bus, queue, finishes, on_failure, state))
    await run_until(lambda: state.jobs_completed == 1, second)
    await asyncio.sleep(1.5)  # past ack_wait: an unacked copy would come back now
    await stop(second)
    await bus.close()
    assert done == ["survivor"]


async def test_a_job_waits_through_an_outage_longer_than_its_retries(nats_server: NatsServer, monkeypatch) -> None:
    """The object store down for more runs than max_deliver: the job is held and run again, not failed."""
    monkeypatch.setattr(workqueue, "OUTAGE_RETRY_S", (0.05,))
    bus = await Bus.connect(nats_server.url, name="wq-outage")
    queue = await fresh_queue(bus, "wq-outage")
    runs: list[str] = []
    failures: list[str] = []

    async def handle(payload: bytes) -> None:
        runs.append(events_pb2.TrainJob.FromString(payload).job_id)
        if len(runs) <= 2 * queue.max_deliver:
            raise BlobStoreUnavailable("object store 127.0.0.1:9 is unreachable (MaxRetryError)")

    async def on_failure(payload: bytes, reason: str) -> None:
        failures.append(reason)

    state = WorkerState()
    worker = asyncio.create_task(run_worker(bus, queue, handle, on_failure, state))
    await bus.publish(queue.subject, events_pb2.TrainJob(job_id="patient"), msg_id="wq-patient")
    await run_until(lambda: state.jobs_completed == 1, worker)
    await stop(worker)
    info = await bus.js.consumer_info(queue.stream, queue.durable)
    await bus.close()
    assert runs == ["patient"] * (2 * queue.max_deliver + 1) and failures == []
    assert info.num_redelivered == 0  # held, not handed back: max_deliver never came into it


async def silent_grpc_call() -> None:
    """A real gRPC call to a server that takes the connection and never answers: DEADLINE_EXCEEDED."""
    held: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(lambda reader, writer: held.append(writer), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await channel.unary_unary("/studio.v1.Privacy/GetDataKey")(b"", timeout=0.2)
    finally:
        for writer in held:
            writer.transport.abort()
        server.close()


async def nats_outages(nats_server: NatsServer) -> tuple[list, nats.NATS]:
    """What a NATS rolling restart or a slow vault makes a job raise; real failures where a test can cause them."""
    client = await nats.connect(nats_server.url)
    await client.subscribe("test.silent")  # subscribed, and never answers
    closed = await nats.connect(nats_server.url)
    await closed.close()

    async def unreachable_grpc_port() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}") as channel:
            await channel.unary_unary("/studio.v1.Privacy/GetDataKey")(b"", timeout=5)

    async def raised(error: Exception) -> None:
        raise error

    return [
        lambda: client.request("test.nobody", b"", timeout=2),  # NoRespondersError
        lambda: client.request("test.silent", b"", timeout=0.2),  # nats.errors.TimeoutError
        lambda: closed.publish("test.anything", b""),  # ConnectionClosedError
        lambda: raised(nats.errors.ConnectionReconnectingError()),
        lambda: raised(nats.js.errors.ServiceUnavailableError(code=503, description="JetStream not ready")),
        silent_grpc_call,  # DEADLINE_EXCEEDED
        unreachable_grpc_port,  # UNAVAILABLE
    ], client


async def test_a_job_waits_through_nats_and_deadline_outages(nats_server: NatsServer, quick_retries,
                                                              monkeypatch) -> None:
    """A NATS restart or a vault too slow to answer during a job's runs: held and run again, its attempts kept."""
    monkeypatch.setattr(workqueue, "OUTAGE_RETRY_S", (0.05,))
    outages, client = await nats_outages(nats_server)
    bus = await Bus.connect(nats_server.url, name="wq-nats-outage")
    queue = await fresh_queue(bus, "wq-nats-outage", ack_wait_s=5.0)
    raised: list[str] = []
    failures: list[str] = []

    async def handle(payload: bytes) -> None:
        if len(raised) < len(outages):
            try:
                await outages[len(raised)]()
            except Exception as error:
                raised.append(error.code().name if isinstance(error, grpc.aio.AioRpcError) else type(error).__name__)
                raise
            raise AssertionError(f"outage {len(raised)} did not fail")

    async def on_failure(payload: bytes, reason: str) -> None:
        failures.append(reason)

    state = WorkerState()
    worker = asyncio.create_task(run_worker(bus, queue, handle, on_failure, state))
    await bus.publish(queue.subject, events_pb2.TrainJob(job_id="through-nats"), msg_id="wq-through-nats")
    await run_until(lambda: state.jobs_completed == 1 or state.jobs_failed == 1, worker)
    await stop(worker)
    info = await bus.js.consumer_info(queue.stream, queue.durable)
    await bus.close()
    await client.close()
    assert raised == ["NoRespondersError", "TimeoutError", "ConnectionClosedError", "ConnectionReconnectingError",
                      "ServiceUnavailableError", "DEADLINE_EXCEEDED", "UNAVAILABLE"]
    assert failures == [] and state.jobs_completed == 1
    assert info.num_redelivered == 0 and info.num_pending == 0 and info.num_ack_pending == 0


async def test_recording_a_failure_waits_out_an_outage_and_the_worker_lives_on(nats_server: NatsServer,
                                                                               monkeypatch) -> None:
    monkeypatch.setattr(workqueue, "OUTAGE_RETRY_S", (0.05,))
    bus = await Bus.connect(nats_server.url, name="wq-record")
    queue = await fresh_queue(bus, "wq-record")
    recorded: list[str] = []
    attempts_to_record = 0

    async def handle(payload: bytes) -> None:
        if events_pb2.TrainJob.FromString(payload).job_id == "hopeless":
            raise PermanentJobError("bad input")

    async def on_failure(payload: bytes, reason: str) -> None:
        nonlocal attempts_to_record
        attempts_to_record += 1
        if attempts_to_record <= 2:  # the store holding the job's checkpoint is down
            raise BlobStoreUnavailable("object store 127.0.0.1:9 is unreachable (MaxRetryError)")
        recorded.append(reason)

    state = WorkerState()
    worker = asyncio.create_task(run_worker(bus, queue, handle, on_failure, state))
    for job_id in ("hopeless", "fine"):
        await bus.publish(queue.subject, events_pb2.TrainJob(job_id=job_id), msg_id=f"wq-record-{job_id}")
    await run_until(lambda: state.jobs_failed == 1 and state.jobs_completed == 1, worker)
    assert not worker.done()  # the worker did not die recording the failure
    await stop(worker)
    await bus.close()
    assert recorded == ["bad input"] and attempts_to_record == 3


async def test_a_job_whose_last_attempt_killed_its_worker_is_failed_by_the_next(nats_server: NatsServer) -> None:
    """A job that kills its worker every time (OOM, SIGKILL): the failure is still recorded, the job not run again."""
    bus = await Bus.connect(nats_server.url, name="wq-crasher")
    queue = await fresh_queue(bus, "wq-crasher", ack_wait_s=1.0)
    await bus.publish(queue.subject, events_pb2.TrainJob(job_id="crasher"), msg_id="wq-crasher")
    killed = await bus.pull(queue)  # each attempt's worker dies holding the job: it never answers
    for attempt in range(1, queue.max_deliver + 1):
        [message] = await killed.fetch(1, timeout=5)
        assert message.metadata.num_delivered == attempt
    await killed.unsubscribe()
    runs: list[str] = []
    failures: list[str] = []

    async def handle(payload: bytes) -> None:
        runs.append(events_pb2.TrainJob.FromString(payload).job_id)

    async def on_failure(payload: bytes, reason: str) -> None:
        failures.append(reason)

    state = WorkerState()
    worker = asyncio.create_task(run_worker(bus, queue, handle, on_failure, state))
    await run_until(lambda: state.jobs_failed == 1, worker, timeout_s=10)
    await asyncio.sleep(1.5)  # past ack_wait: an unsettled copy would come back now
    await stop(worker)
    info = await bus.js.consumer_info(queue.stream, queue.durable)
    await bus.close()
    assert runs == [] and len(failures) == 1 and failures[0].startswith("gave up after 3 attempts:"), failures
    assert info.num_pending == 0 and info.num_ack_pending == 0


@pytest.mark.parametrize("refusing", ["ack_sync", "nak"])
async def test_a_message_that_cannot_be_settled_comes_back_and_the_worker_lives_on(
    nats_server: NatsServer, quick_retries, monkeypatch: pytest.MonkeyPatch, refusing: str
) -> None:
    """ack_sync timing out (it waits 1 s) or a nak lost: the job runs again when the server redelivers it."""
    settle = getattr(Msg, refusing)
    refused: list[int] = []

    async def refuse_once(message: Msg, *args, **kwargs) -> None:
        if not refused:
            refused.append(message.metadata.num_delivered)
            raise nats.errors.TimeoutError
        return await settle(message, *args, **kwargs)

    monkeypatch.setattr(Msg, refusing, refuse_once)
    bus = await Bus.connect(nats_server.url, name=f"wq-settle-{refusing}")
    queue = await fresh_queue(bus, f"wq-settle-{refusing.replace('_', '-')}", ack_wait_s=1.0)
    runs: list[str] = []

    async def handle(payload: bytes) -> None:
        runs.append(events_pb2.TrainJob.FromString(payload).job_id)
        if refusing == "nak" and len(runs) == 1:
            raise RuntimeError("transient")

    async def on_failure(payload: bytes, reason: str) -> None:
        raise AssertionError(reason)

    state = WorkerState()
    worker = asyncio.create_task(run_worker(bus, queue, handle, on_failure, state))
    await bus.publish(queue.subject, events_pb2.TrainJob(job_id="unsettled"), msg_id=f"wq-unsettled-{refusing}")
    await run_until(lambda: state.jobs_completed == 1, worker)
    await stop(worker)
    info = await bus.js.consumer_info(queue.stream, queue.durable)
    await bus.close()
    assert worker.cancelled()  # cancellation still stops the worker
    assert refused == [1] and runs == ["unsettled", "unsettled"]
    assert info.num_pending == 0 and info.num_ack_pending == 0


async def test_a_failure_that_could_not_be_recorded_is_recorded_on_the_next_delivery(
    nats_server: NatsServer, quick_retries
) -> None:
    bus = await Bus.connect(nats_server.url, name="wq-unrecorded")
    queue = await fresh_queue(bus, "wq-unrecorded", ack_wait_s=1.0)
    runs = 0
    recorded: list[str] = []
    attempts_to_record = 0

    async def handle(payload: bytes) -> None:
        nonlocal runs
        runs += 1
        raise RuntimeError("broken")

    async def on_failure(payload: bytes, reason: str) -> None:
        nonlocal attempts_to_record
        attempts_to_record += 1
        if attempts_to_record == 1:  # not an outage (those are waited out in place): the record was refused
            raise RuntimeError("the job's record could not be written")
        recorded.append(reason)

    state = WorkerState()
    worker = asyncio.create_task(run_worker(bus, queue, handle, on_failure, state))
    await bus.publish(queue.subject, events_pb2.TrainJob(job_id="broken"), msg_id="wq-unrecorded")
    await run_until(lambda: state.jobs_failed == 1, worker)
    await asyncio.sleep(1.5)  # past ack_wait: an unsettled copy would come back now
    await stop(worker)
    info = await bus.js.consumer_info(queue.stream, queue.durable)
    await bus.close()
    assert runs == queue.max_deliver and attempts_to_record == 2
    assert len(recorded) == 1 and recorded[0].startswith("gave up after 3 attempts:"), recorded
    assert info.num_pending == 0 and info.num_ack_pending == 0

