"""The JetStream work-queue loop shared by trainer and renderer workers.

One job at a time per worker; in_progress heartbeats keep a live job from being redelivered; a job
that raises is redelivered (a crashed or killed worker's job too, after ack_wait) until max_deliver,
and then given up with a failure the caller publishes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from nats.aio.msg import Msg
from studio.v1 import common_pb2

from services.common.bus import Bus, WorkQueue

log = logging.getLogger(__name__)

RETRY_DELAY_S = 5.0


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
    while True:
        try:
            messages = await subscription.fetch(1, timeout=5)
        except TimeoutError:
            continue
        for message in messages:
            await _process(message, queue, handle, on_failure, state)


async def _process(
    message: Msg, queue: WorkQueue, handle: JobHandler, on_failure: FailureHandler, state: WorkerState
) -> None:
    state.busy, state.current_job_id = True, message.header.get("Nats-Msg-Id", "") if message.header else ""
    heartbeat = asyncio.create_task(_heartbeat(message, queue.ack_wait_s / 3))
    try:
        await handle(message.data)
    except PermanentJobError as error:
        await _give_up(message, on_failure, state, str(error))
    except asyncio.CancelledError:
        await message.nak()  # shutting down: hand the job to another worker now
        raise
    except Exception as error:
        log.exception("job failed (delivery %d)", message.metadata.num_delivered)
        if message.metadata.num_delivered >= queue.max_deliver:
            await _give_up(message, on_failure, state, f"gave up after {queue.max_deliver} attempts: {error}")
        else:
            await message.nak(delay=RETRY_DELAY_S)
    else:
        await message.ack_sync()
        state.jobs_completed += 1
    finally:
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
        state.busy, state.current_job_id = False, ""


async def _give_up(message: Msg, on_failure: FailureHandler, state: WorkerState, reason: str) -> None:
    await on_failure(message.data, reason)
    await message.term()
    state.jobs_failed += 1


async def _heartbeat(message: Msg, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        await message.in_progress()
