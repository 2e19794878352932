"""How a training job ends, against a real nats-server (and SeaweedFS behind a proxy for a store outage): a job
that succeeded but whose ack was lost is not failed by the delivery past its attempts, and a checkpoint the store
could not drop as the job ended is dropped when the job comes back."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from pathlib import Path

import nats.errors
import pytest
from studio.v1 import events_pb2, trainer_pb2

from services.common import topology
from services.common.blobstore import BlobStore, BlobStoreUnavailable, LocalDirBlobStore, open_blob_store
from services.common.bus import Bus
from services.common.cancellation import mark_cancelled
from services.common.holding import STANDARD
from services.common.launchers.process import free_port
from services.common.launchers.seaweed import SeaweedS3
from services.common.topology import TRAIN_STREAM, WorkQueue
from services.common.vault_client import SealedStore, VaultClient
from services.common.workqueue import WorkerState, run_worker
from services.trainer.checkpoint import checkpoint_key
from services.trainer.job_keys import read_record, record_key
from services.trainer.worker import TrainerWorker
from tests.tcp_proxy import CuttingProxy

pytestmark = pytest.mark.asyncio(loop_scope="session")

State = trainer_pb2.TrainJobState
BASE_MODEL_ID = "bm-worker-test"
TRAINED = events_pb2.TrainingDone(lora_key="tenants/t/subjects/s/loras/x.safetensors", best_step=12,
                                  final_loss=0.25, seconds=3.0)


@contextlib.asynccontextmanager
async def trainer(bus: Bus, blobs: BlobStore):
    """A trainer worker; the paths tested here never ask the vault for a key, so none listens."""
    vault = VaultClient(f"127.0.0.1:{free_port()}", "unused")
    try:
        yield TrainerWorker(bus, SealedStore(blobs, vault), Path("no-model"), BASE_MODEL_ID, WorkerState())
    finally:
        await vault.close()


def train_job(name: str) -> events_pb2.TrainJob:
    ids = dict(order_id=f"order_{name}", tenant_id="tenant_worker", subject_id=f"subj_{name}")
    return events_pb2.TrainJob(job_id=f"train-{name}", base_model_id=BASE_MODEL_ID, lora_key=TRAINED.lora_key,
                               render=events_pb2.RenderJob(job_id=f"render-{name}", **ids), **ids)


def job_record(job: events_pb2.TrainJob, state: int, **fields) -> trainer_pb2.TrainJobRecord:
    return trainer_pb2.TrainJobRecord(job_id=job.job_id, state=state, tenant_id=job.tenant_id,
                                      subject_id=job.subject_id, **fields)


async def record_of(bus: Bus, job: events_pb2.TrainJob) -> trainer_pb2.TrainJobRecord:
    return await read_record(bus, job.subject_id, job.job_id)


async def put_record(bus: Bus, record: trainer_pb2.TrainJobRecord, old_scheme: bool = False) -> None:
    """Under the record's key, or under its job id alone, as a trainer of the earlier version left it."""
    key = record.job_id if old_scheme else record_key(record.subject_id, record.job_id)
    await bus.kv_put(topology.TRAIN_JOBS_BUCKET, key, record)


async def private_queue(bus: Bus, name: str) -> WorkQueue:
    """A work queue shaped like TRAIN, of this test alone (the session's TRAIN queue has no worker here)."""
    queue = WorkQueue(stream=name.upper(), subject=f"test.{name}", durable=name, ack_wait_s=1.0, max_deliver=3)
    await bus.js.add_stream(replace(TRAIN_STREAM, name=queue.stream, subjects=[queue.subject]))
    await bus.js.add_consumer(queue.stream, queue.consumer_config())
    return queue


async def run_out_its_attempts(bus: Bus, queue: WorkQueue) -> None:
    """Every attempt's worker takes the job and never settles it (each ack lost, or each worker killed)."""
    lost_acks = await bus.pull(queue)
    for attempt in range(1, queue.max_deliver + 1):
        [message] = await lost_acks.fetch(1, timeout=5)
        assert message.metadata.num_delivered == attempt
    await lost_acks.unsubscribe()


async def events_published(subscription) -> list[events_pb2.OrderEvent]:
    events = []
    while True:
        try:
            events.append(events_pb2.OrderEvent.FromString((await subscription.next_msg(timeout=1)).data))
        except nats.errors.TimeoutError:
            return events


async def until(condition, task: asyncio.Task, timeout_s: float = 20) -> None:
    for _ in range(int(timeout_s * 20)):
        if condition():
            return
        if task.done():
            raise AssertionError(f"the worker stopped: {task.exception()!r}")
        await asyncio.sleep(0.05)
    raise AssertionError("the job was not settled")


@pytest.mark.parametrize("keyed", ["by-subject", "earlier-scheme"])
@pytest.mark.parametrize("ended", ["done", "announcing"])
async def test_a_job_that_succeeded_is_not_failed_when_delivered_past_its_attempts(
    bus: Bus, tmp_path: Path, ended: str, keyed: str
) -> None:
    """Its record is DONE, or holds the stored LoRA's completion (its worker was stopped while announcing it): the
    delivery that would record its failure acknowledges it, announcing the completion as a redelivery would. Also
    when a trainer of the earlier version wrote the record, under the job id alone (the job outlived an upgrade)."""
    job = train_job(f"ack-lost-{ended}-{keyed}")
    state = State.TRAIN_JOB_STATE_DONE if ended == "done" else State.TRAIN_JOB_STATE_RUNNING
    await put_record(bus, job_record(job, state, completion=TRAINED), old_scheme=keyed == "earlier-scheme")
    queue = await private_queue(bus, f"trainer-ack-lost-{ended}-{keyed}")
    subscription = await bus.client.subscribe(topology.order_events_subject(job.order_id))
    await bus.client.flush()
    await bus.publish(queue.subject, job, msg_id=job.job_id)
    await run_out_its_attempts(bus, queue)
    async with trainer(bus, LocalDirBlobStore(tmp_path)) as worker:
        running = asyncio.create_task(run_worker(bus, queue, worker.handle, worker.on_failure, worker.state))
        await until(lambda: worker.state.jobs_failed + worker.state.jobs_completed == 1, running)
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    events = await events_published(subscription)
    await subscription.unsubscribe()
    info = await bus.js.consumer_info(queue.stream, queue.durable)
    kinds = [event.WhichOneof("kind") for event in events]
    assert kinds == ([] if ended == "done" else ["trained"]), events
    assert (await record_of(bus, job)).state == State.TRAIN_JOB_STATE_DONE
    assert info.num_pending == 0 and info.num_ack_pending == 0  # settled, not delivered again
    if ended == "announcing":
        assert events[0].trained == TRAINED
        held = topology.pending_subject(topology.RENDER_QUEUE, STANDARD, job.tenant_id, job.subject_id, job.order_id)
        stored = await bus.js.get_last_msg(topology.PENDING_STREAM.name, held)
        assert events_pb2.RenderJob.FromString(stored.data) == job.render  # its render job is held


@pytest.mark.parametrize("ending", ["trained", "cancelled"])
async def test_a_checkpoint_the_store_could_not_drop_is_dropped_when_the_job_comes_back(
    bus: Bus, seaweed_s3: SeaweedS3, ending: str
) -> None:
    host, port = seaweed_s3.endpoint.rsplit(":", 1)
    store = CuttingProxy(host, int(port))
    await store.start()
    blobs = await open_blob_store(f"{seaweed_s3.url.replace(seaweed_s3.endpoint, store.endpoint)}/trainer-worker")
    job = train_job(f"drop-{ending}")
    key = checkpoint_key(job.tenant_id, job.subject_id, job.job_id)
    await blobs.put(key, b"a sealed checkpoint")
    record = job_record(job, State.TRAIN_JOB_STATE_RUNNING, checkpoint_key=key, checkpoint_step=4)
    if ending == "trained":  # the LoRA is stored; announcing it meets the outage
        record.completion.CopyFrom(TRAINED)
    else:
        await mark_cancelled(bus, job.order_id, "the customer changed their mind")
    await put_record(bus, record)
    final = State.TRAIN_JOB_STATE_DONE if ending == "trained" else State.TRAIN_JOB_STATE_CANCELLED
    try:
        async with trainer(bus, blobs) as worker:
            await store.go_down()
            with pytest.raises(BlobStoreUnavailable):
                await worker.handle(job.SerializeToString())
            assert (await record_of(bus, job)).state == State.TRAIN_JOB_STATE_RUNNING  # not final: it comes back
            await store.come_up()
            await worker.handle(job.SerializeToString())  # as the work queue runs it again once the store is back
    finally:
        await store.close()
    assert (await record_of(bus, job)).state == final
    assert not await blob_exists(seaweed_s3, key)


async def blob_exists(seaweed_s3: SeaweedS3, key: str) -> bool:
    direct = await open_blob_store(f"{seaweed_s3.url}/trainer-worker")
    return await direct.exists(key)
