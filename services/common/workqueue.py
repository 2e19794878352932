"""The JetStream work-queue loop shared by trainer and renderer workers.

One job at a time per worker; in_progress heartbeats keep a live job from being redelivered; a job
that raises is redelivered (a crashed or killed worker's job too, after ack_wait) until it has run
max_deliver times, and then given up with a failure the caller publishes. The server delivers a job a
few more times (topology.FAILURE_DELIVERIES) so that the failure is recorded even when the worker of
the last attempt was killed or could not record it: such a delivery gives up at once. Such a delivery may
also be of a job that succeeded but whose ack was lost: on_failure checks the job's own record first.
A job whose dependency is down (is_outage) is held and run again without using up its attempts.
A job's write that a full NATS store refuses is not such an outage: running the job again would redo its work
(a training run) only to be refused again. The write waits for space and is tried again with backoff, the job
held meanwhile, and the worker's process pulls no new job until its writes fit (services/common/store_space.py).

Every worker also sends a WorkerHeartbeat (core NATS) every HEARTBEAT_S and when a job starts or
ends: the scheduler counts live workers and measures service times from them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from nats.aio.msg import Msg
from studio.v1 import common_pb2, events_pb2

from services.common.blobstore import BlobStoreUnavailable
from services.common.bus import NATS_OUTAGES, Bus, fetch_or_stop, in_progress_while
from services.common.store_space import waiting_for_space
from services.common.topology import WorkQueue, worker_heartbeat_subject
from services.common.vault_client import VaultStorageFull

log = logging.getLogger(__name__)

RETRY_DELAY_S = 5.0
OUTAGE_RETRY_S = (2.0, 5.0, 10.0, 20.0, 30.0)  # between runs of a job whose dependency is down
HEARTBEAT_S = float(os.environ.get("STUDIO_WORKER_HEARTBEAT_S", "2"))
# Missing this many heartbeats in a row, a worker counts as gone.
HEARTBEATS_MISSED_BEFORE_GONE = 3
# A service (the vault, faceqa) that is down or restarting, or too busy to answer within the call's deadline.
GRPC_OUTAGES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class PermanentJobError(Exception):
    """The job can never succeed (bad input, wrong base model): fail it now, do not redeliver."""


def vault_refusal(error: grpc.aio.AioRpcError) -> Exception:
    """What a vault error means for the job: final when the subject or its consent is gone."""
    if error.code() == grpc.StatusCode.NOT_FOUND:
        return PermanentJobError("the subject's data key is gone (subject deleted)")
    if error.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION):
        return PermanentJobError(f"the vault refused the subject's key: {error.details()}")
    return error  # UNAVAILABLE and the like: retry the job later


@dataclass
class WorkerState:
    worker_id: str = field(default_factory=socket.gethostname)
    busy: bool = False
    current_job_id: str = ""
    jobs_completed: int = 0
    jobs_failed: int = 0
    # Tells apart workers that share a host name (several in one pod or test process).
    instance_id: str = field(default_factory=lambda: secrets.token_hex(4))
    job_started: float = 0.0  # time.monotonic() when the current job started

    def as_status(self, device: str) -> common_pb2.WorkerStatus:
        return common_pb2.WorkerStatus(
            worker_id=self.worker_id, busy=self.busy, current_job_id=self.current_job_id,
            jobs_completed=self.jobs_completed, jobs_failed=self.jobs_failed, device=device,
        )


JobHandler = Callable[[bytes], Awaitable[None]]
FailureHandler = Callable[[bytes, str], Awaitable[None]]


async def run_worker(
    bus: Bus, queue: WorkQueue, handle: JobHandler, on_failure: FailureHandler, state: WorkerState
) -> None:
    subscription = await bus.pull(queue)
    presence = asyncio.create_task(_announce_presence(bus, queue, state))
    try:
        with waiting_for_space():
            while True:
                await bus.space.until_free()  # a full store: no new job while a job's write waits for space
                for message in await fetch_or_stop(subscription, 1):
                    await _process(bus, message, queue, handle, on_failure, state)
    finally:
        presence.cancel()


async def _process(
    bus: Bus, message: Msg, queue: WorkQueue, handle: JobHandler, on_failure: FailureHandler, state: WorkerState
) -> None:
    await _held_while_store_full(bus, message, queue)
    state.busy, state.current_job_id = True, message.header.get("Nats-Msg-Id", "") if message.header else ""
    state.job_started = time.monotonic()
    with contextlib.suppress(Exception):  # a lost heartbeat costs an estimate, never the job
        await send_heartbeat(bus, queue, state)
    completed = ""
    try:
        async with in_progress_while(message, queue.ack_wait_s / 3):
            if await _settle(message, queue, handle, on_failure, state):
                completed = state.current_job_id
    except Exception:
        # Left unsettled, the message comes back after ack_wait (handlers are idempotent); stopping here
        # would stop the service and every other job in it.
        log.exception("could not settle job %s (delivery %d); the server delivers it again",
                      state.current_job_id, message.metadata.num_delivered)
    finally:
        seconds = time.monotonic() - state.job_started
        state.busy, state.current_job_id = False, ""
        with contextlib.suppress(Exception):  # a lost heartbeat costs an estimate, never the job
            await send_heartbeat(bus, queue, state, completed_job_id=completed, completed_seconds=seconds)


async def _held_while_store_full(bus: Bus, message: Msg, queue: WorkQueue) -> None:
    """A job fetched while another job's write waits for space (a pull already under way) is held, not run and
    no attempt used, until the store takes writes again."""
    if not bus.space.full:
        return
    try:
        async with in_progress_while(message, queue.ack_wait_s / 3):
            await bus.space.until_free()
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):  # unsettled, it returns after ack_wait all the same
            await message.nak()  # shutting down: hand the job to another worker now
        raise


async def _settle(
    message: Msg, queue: WorkQueue, handle: JobHandler, on_failure: FailureHandler, state: WorkerState
) -> bool:
    """Run the job and ack, nak or term its message; True when it succeeded."""
    delivery = message.metadata.num_delivered
    if delivery > queue.max_deliver:  # the server delivers beyond the attempts only to record the failure
        await _give_up(message, on_failure, state, f"gave up after {queue.max_deliver} attempts: the last one "
                       "ended without a result (its worker stopped, or could not report the failure)")
        return False
    try:
        await _through_outages(handle, message.data)
    except PermanentJobError as error:
        await _give_up(message, on_failure, state, str(error))
        return False
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):  # unsettled, it returns after ack_wait all the same
            await message.nak()  # shutting down: hand the job to another worker now
        raise
    except Exception as error:
        log.exception("job failed (delivery %d)", delivery)
        if delivery >= queue.max_deliver:
            await _give_up(message, on_failure, state, f"gave up after {queue.max_deliver} attempts: {error}")
        else:
            await message.nak(delay=RETRY_DELAY_S)
        return False
    await message.ack_sync()
    state.jobs_completed += 1
    return True


def is_outage(error: Exception) -> bool:
    """A dependency that is down for now (the object store, NATS, a service answering UNAVAILABLE or not
    within its deadline, the vault out of storage until an operator makes room): the job is not at fault, and
    waiting costs it nothing."""
    if isinstance(error, grpc.aio.AioRpcError):
        return error.code() in GRPC_OUTAGES
    return isinstance(error, (BlobStoreUnavailable, VaultStorageFull, *NATS_OUTAGES))


async def _through_outages(handle: JobHandler, payload: bytes) -> None:
    """Run the job; through an outage it waits and runs it again, holding the message (the in-progress
    heartbeats go on), so an outage longer than max_deliver retries does not fail the order. As with
    Triton (services/renderer/worker.py), a job waits for as long as its dependency is down."""
    attempt = 0
    while True:
        try:
            return await handle(payload)
        except Exception as error:
            if not is_outage(error):
                raise
            delay = OUTAGE_RETRY_S[min(attempt, len(OUTAGE_RETRY_S) - 1)]
            log.warning("a dependency is unavailable (%s); running the job again in %.0f s", error, delay)
            await asyncio.sleep(delay)
            attempt += 1


async def _give_up(message: Msg, on_failure: FailureHandler, state: WorkerState, reason: str) -> None:
    # Recording the failure meets outages too (the store holding the job's checkpoint): wait them out.
    await _through_outages(lambda payload: on_failure(payload, reason), message.data)
    await message.term()
    state.jobs_failed += 1


async def send_heartbeat(
    bus: Bus, queue: WorkQueue, state: WorkerState, completed_job_id: str = "", completed_seconds: float = 0.0
) -> None:
    running = time.monotonic() - state.job_started if state.busy else 0.0
    beat = events_pb2.WorkerHeartbeat(
        worker_id=f"{state.worker_id}/{state.instance_id}", queue=queue.stream, busy=state.busy,
        job_id=state.current_job_id, job_seconds=completed_seconds if completed_job_id else running,
        completed_job_id=completed_job_id, expires_in_seconds=HEARTBEAT_S * HEARTBEATS_MISSED_BEFORE_GONE,
    )
    await bus.client.publish(worker_heartbeat_subject(queue), beat.SerializeToString())


async def _announce_presence(bus: Bus, queue: WorkQueue, state: WorkerState) -> None:
    while True:
        with contextlib.suppress(Exception):  # NATS reconnecting: the next beat goes out when it is back
            await send_heartbeat(bus, queue, state)
        await asyncio.sleep(HEARTBEAT_S)
