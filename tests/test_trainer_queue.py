"""The trainer through the real TRAIN work queue of an embedded stack: a full order whose trainer
is SIGKILLed mid-run resumes from its sealed checkpoint on a restarted worker and completes once;
cancellation drops the work; bad jobs (corrupt checkpoint, deleted photos, shredded key, another
base model) fail once with a clear reason and no redelivery loop."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import urllib.request
from collections.abc import AsyncIterator

import grpc
import nats
import numpy as np
import pytest
import pytest_asyncio
import safetensors.torch
import torch
from nats.js.api import DeliverPolicy
from PIL import Image
from studio.v1 import (
    common_pb2,
    events_pb2,
    faceqa_pb2,
    faceqa_pb2_grpc,
    privacy_pb2,
    state_pb2,
    studio_pb2,
    trainer_pb2,
)

from services.cli.client import StudioClient
from services.cli.stack import EmbeddedStack
from services.common import topology
from services.common.basemodel import base_model_id
from services.common.blobstore import open_blob_store
from services.common.launchers.process import free_port
from services.common.lora_file import BASE_MODEL_METADATA_KEY
from services.common.objects import portrait_key
from services.common.vault_client import SealedStore, VaultClient
from services.trainer.checkpoint import checkpoint_key
from services.trainer.faceqa_scoring import IMAGE_SIDE, FaceQAScorer, encode_for_scoring, reference_images
from services.trainer.job_keys import record_key
from services.trainer.training import UNSCORED
from tests.fixtures_stack import faces

pytestmark = pytest.mark.asyncio(loop_scope="session")

STEPS, CHECKPOINT_EVERY, VALIDATE_EVERY, ACK_WAIT_S = 24, 4, 12, 4
DEFAULT_RENDER_STEPS = 4  # ingest's (STUDIO_RENDER_STEPS unset)
EVENT_WAIT_S = 180  # between two events of a training job: a step or a validation, seconds even on a busy CI
TRAINER_ENV = {
    "STUDIO_TRAIN_STEPS": str(STEPS), "STUDIO_TRAIN_CHECKPOINT_EVERY": str(CHECKPOINT_EVERY),
    "STUDIO_TRAIN_VALIDATE_EVERY": str(VALIDATE_EVERY), "STUDIO_TRAIN_ACK_WAIT_S": str(ACK_WAIT_S),
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def trainer_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedStack]:
    stack = EmbeddedStack(data_dir=tmp_path_factory.mktemp("trainer-stack"), public_port=free_port(),
                          extra_env=TRAINER_ENV, min_accepted_photos=1)
    await stack.start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def studio(trainer_stack: EmbeddedStack) -> AsyncIterator[StudioClient]:
    client = StudioClient(trainer_stack.public_endpoint, trainer_stack.paths.api_key_file.read_text().strip())
    try:
        yield client
    finally:
        await client.close()


@pytest_asyncio.fixture(loop_scope="session")
async def raw_nats(trainer_stack: EmbeddedStack) -> AsyncIterator[nats.NATS]:
    """A plain connection: declaring the topology from here could clash with the stack's settings."""
    client = await nats.connect(trainer_stack.nats.url)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture(scope="module")
def shared() -> dict:
    return {}


async def subject_with_photos(studio: StudioClient, count: int) -> str:
    subject = await studio.create_subject(external_ref="trainer-test")
    lisa = faces("lisa")
    headshot = next(path for path in lisa if path.name == "lisa_lisa1.jpg")
    references = [path for path in lisa if path != headshot][: count - 1]
    photos = [(headshot, common_pb2.PHOTO_ROLE_HEADSHOT)] + [(p, common_pb2.PHOTO_ROLE_REFERENCE) for p in references]
    uploaded = await studio.upload(subject.subject_id, photos)
    assert all(photo.verdict.accepted for photo in uploaded)
    return subject.subject_id


async def kv(raw_nats: nats.NATS, bucket: str, key: str, message_type):
    store = await raw_nats.jetstream().key_value(bucket)
    try:
        return message_type.FromString((await store.get(key)).value)
    except nats.js.errors.KeyNotFoundError:
        return None


async def as_the_earlier_version_kept_it(raw_nats: nats.NATS, subject_id: str, job_id: str) -> None:
    """Move a job's record to the key a trainer of the earlier version kept it under, the job id alone."""
    store = await raw_nats.jetstream().key_value(topology.TRAIN_JOBS_BUCKET)
    entry = await store.get(record_key(subject_id, job_id))
    assert trainer_pb2.TrainJobRecord.FromString(entry.value).checkpoint_key  # a checkpoint to resume from
    await store.put(job_id, entry.value)
    await store.purge(record_key(subject_id, job_id))


async def test_killed_trainer_resumes_from_its_checkpoint_and_completes_once(
    trainer_stack: EmbeddedStack, studio: StudioClient, raw_nats: nats.NATS, shared: dict
) -> None:
    """The killed trainer is of the earlier version, which kept job records under the job id alone: the job still
    resumes from its checkpoint (an upgrade restarts every trainer), and its record is re-keyed."""
    subject_id = await subject_with_photos(studio, 4)
    order = await studio.create_order(subject_id, ["studio-frontal-soft"], 1)
    events: list[events_pb2.OrderEvent] = []
    killed_at = None
    async for response in studio.watch(order.order_id, timeout_s=600):
        events.append(response.event)
        kind = response.event.WhichOneof("kind")
        if kind == "training" and killed_at is None and response.event.training.step > CHECKPOINT_EVERY:
            os.kill(trainer_stack.processes["trainer"].pid, signal.SIGKILL)
            killed_at = len(events)
            await as_the_earlier_version_kept_it(raw_nats, subject_id, f"train-{order.order_id}")
            await trainer_stack.restart_service("trainer")
    kinds = [event.WhichOneof("kind") for event in events]
    assert killed_at is not None and kinds[-1] == "done", kinds
    assert kinds.count("trained") == 1 and kinds.count("done") == 1 and kinds.count("rendering") == 1

    resumed = [e.training for e in events[killed_at:] if e.WhichOneof("kind") == "training"]
    assert resumed and resumed[0].resumed_from_step >= CHECKPOINT_EVERY
    assert resumed[0].resumed_from_step % CHECKPOINT_EVERY == 0 and resumed[0].step > resumed[0].resumed_from_step
    last = resumed[-1]
    assert (last.step, last.total_steps) == (STEPS, STEPS) and last.loss > 0 and last.eta_seconds == 0
    assert [point.step for point in last.validation] == [VALIDATE_EVERY, STEPS]
    trained = next(e.trained for e in events if e.WhichOneof("kind") == "trained")
    assert trained.best_step in (VALIDATE_EVERY, STEPS) and len(trained.validation) == 2
    assert all(0.0 <= point.identity_score <= 1.0 for point in trained.validation)

    job_id = f"train-{order.order_id}"
    record = await kv(raw_nats, topology.TRAIN_JOBS_BUCKET, record_key(subject_id, job_id), trainer_pb2.TrainJobRecord)
    assert record.state == trainer_pb2.TRAIN_JOB_STATE_DONE and record.attempts == 2
    assert await kv(raw_nats, topology.TRAIN_JOBS_BUCKET, job_id, trainer_pb2.TrainJobRecord) is None  # re-keyed
    assert not list((trainer_stack.data_dir / "blobs").rglob("checkpoints/*"))  # dropped once done
    shared.update(done_order=order.order_id, done_subject=subject_id)


async def test_cancelling_an_order_drops_its_training(
    trainer_stack: EmbeddedStack, studio: StudioClient, raw_nats: nats.NATS, shared: dict
) -> None:
    subject_id = await subject_with_photos(studio, 2)
    order = await studio.create_order(subject_id, ["studio-frontal-soft"], 1)
    kinds = []
    async for response in studio.watch(order.order_id, timeout_s=300):
        kinds.append(response.event.WhichOneof("kind"))
        if kinds[-1] == "training" and kinds.count("training") == 1:
            cancelled = await studio.stub.CancelOrder(
                studio_pb2.CancelOrderRequest(order_id=order.order_id, reason="customer changed their mind"),
                metadata=studio.metadata, timeout=10)
            assert cancelled.order.failure_stage == "cancelled"
        if kinds[-1] == "failed":
            assert response.event.failed.stage == "cancelled"
            assert response.event.failed.reason == "customer changed their mind"
    assert "trained" not in kinds and kinds[-1] == "failed"

    job_id = f"train-{order.order_id}"
    for _ in range(100):
        record = await kv(raw_nats, topology.TRAIN_JOBS_BUCKET, record_key(subject_id, job_id),
                          trainer_pb2.TrainJobRecord)
        if record and record.state == trainer_pb2.TRAIN_JOB_STATE_CANCELLED:
            break
        await asyncio.sleep(0.1)
    assert record.state == trainer_pb2.TRAIN_JOB_STATE_CANCELLED
    again = await studio.stub.CancelOrder(studio_pb2.CancelOrderRequest(order_id=order.order_id),
                                          metadata=studio.metadata, timeout=10)
    assert again.order.state == common_pb2.ORDER_STATE_FAILED  # cancelling twice is fine
    shared.update(cancelled_subject=subject_id, cancelled_order=order.order_id)


async def test_cancel_order_refuses_finished_unknown_and_unauthenticated(studio: StudioClient, shared: dict) -> None:
    if "done_order" not in shared:
        pytest.skip("needs the finished order")
    calls = [
        (studio_pb2.CancelOrderRequest(order_id=shared["done_order"]), studio.metadata,
         grpc.StatusCode.FAILED_PRECONDITION),
        (studio_pb2.CancelOrderRequest(order_id="order_nope"), studio.metadata, grpc.StatusCode.NOT_FOUND),
        (studio_pb2.CancelOrderRequest(order_id=shared["done_order"]), (), grpc.StatusCode.UNAUTHENTICATED),
    ]
    for request, metadata, code in calls:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await studio.stub.CancelOrder(request, metadata=metadata, timeout=10)
        assert raised.value.code() == code and raised.value.details()


async def test_bad_jobs_fail_once_with_a_clear_reason(
    trainer_stack: EmbeddedStack, raw_nats: nats.NATS, shared: dict
) -> None:
    if "cancelled_subject" not in shared or "done_subject" not in shared:
        pytest.skip("needs the subjects of the earlier orders")
    subject_id = shared["cancelled_subject"]
    subject = await kv(raw_nats, topology.SUBJECTS_BUCKET, subject_id, state_pb2.SubjectRecord)
    crops = sorted(subject.crop_keys.values())
    trained_subject = await kv(raw_nats, topology.SUBJECTS_BUCKET, shared["done_subject"], state_pb2.SubjectRecord)
    base = base_model_id(trainer_stack.data_dir / "models" / "tiny")
    blobs = trainer_stack.data_dir / "blobs"
    js = raw_nats.jetstream()

    def job(name: str, **fields) -> events_pb2.TrainJob:
        values = dict(job_id=f"train-{name}", order_id=f"order_{name}", tenant_id=subject.tenant_id,
                      subject_id=subject_id, base_model_id=base, crop_keys=crops, steps=6, seed=1,
                      lora_key=f"tenants/x/{name}.safetensors")
        values.update(fields)
        render = events_pb2.RenderJob(job_id=f"render-{name}", order_id=values["order_id"],
                                      tenant_id=values["tenant_id"], subject_id=values["subject_id"])
        return events_pb2.TrainJob(**values, render=render)

    corrupt = job("corrupt-checkpoint", subject_id=shared["done_subject"],
                  crop_keys=sorted(trained_subject.crop_keys.values()))
    key = checkpoint_key(corrupt.tenant_id, corrupt.subject_id, corrupt.job_id)
    (blobs / key).parent.mkdir(parents=True, exist_ok=True)
    (blobs / key).write_bytes(os.urandom(4096))
    record = trainer_pb2.TrainJobRecord(job_id=corrupt.job_id, checkpoint_key=key, checkpoint_step=3)
    # Under the job id alone, naming no subject: as a trainer of an earlier version kept it.
    await (await js.key_value(topology.TRAIN_JOBS_BUCKET)).put(corrupt.job_id, record.SerializeToString())
    # The cancelled order's crops are deleted: that subject's photos are gone.
    deleted = job("photos-deleted")
    for crop in crops:
        (blobs / crop).unlink()
    expected = {
        "corrupt-checkpoint": (corrupt, "checkpoint of step 3 is corrupt"),
        "photos-deleted": (deleted, "training photos were deleted"),
        "subject-shredded": (job("subject-shredded", subject_id="subj_gone"), "data key is gone"),
        "other-base": (job("other-base", base_model_id="bm-0123456789abcdef"), "job wants base model"),
    }
    subscription = await js.subscribe(f"{topology.ORDER_EVENTS_PREFIX}.>", ordered_consumer=True,
                                      deliver_policy=DeliverPolicy.NEW)
    for bad, _ in expected.values():
        await js.publish(topology.TRAIN_SUBJECT, bad.SerializeToString(), headers={"Nats-Msg-Id": bad.job_id})
    failures: dict[str, list[str]] = {}
    deadline = asyncio.get_running_loop().time() + 60 + 2 * ACK_WAIT_S
    while asyncio.get_running_loop().time() < deadline:
        try:
            message = await subscription.next_msg(timeout=1)
        except TimeoutError:
            if len(failures) == len(expected):
                deadline = min(deadline, asyncio.get_running_loop().time() + ACK_WAIT_S)  # redeliveries would show
            continue
        event = events_pb2.OrderEvent.FromString(message.data)
        if event.WhichOneof("kind") == "failed" and event.order_id.removeprefix("order_") in expected:
            failures.setdefault(event.order_id.removeprefix("order_"), []).append(event.failed.reason)
    await subscription.unsubscribe()
    for name, (_, reason) in expected.items():
        assert len(failures.get(name, [])) == 1, failures
        assert reason in failures[name][0], failures[name]
    info = await js.consumer_info(topology.TRAIN_QUEUE.stream, topology.TRAIN_QUEUE.durable)
    assert info.num_pending == 0 and info.num_ack_pending == 0
    assert trainer_stack.processes["trainer"].is_running()
    assert not (blobs / key).exists()  # the corrupt checkpoint is dropped with the failed job


async def test_the_renderer_refuses_a_lora_of_another_base_model(
    trainer_stack: EmbeddedStack, raw_nats: nats.NATS, shared: dict
) -> None:
    if "done_subject" not in shared:
        pytest.skip("needs the trained subject")
    subject = await kv(raw_nats, topology.SUBJECTS_BUCKET, shared["done_subject"], state_pb2.SubjectRecord)
    foreign = safetensors.torch.save({"unet.block.to_q.lora.down.weight": torch.zeros(4, 8)},
                                     metadata={"format": "pt", BASE_MODEL_METADATA_KEY: "bm-0123456789abcdef"})
    key = f"tenants/{subject.tenant_id}/subjects/{shared['done_subject']}/loras/bm-0123456789abcdef.safetensors"
    vault = VaultClient.from_token_file(trainer_stack.addresses["privacy"], trainer_stack.paths.token_file("trainer"))
    sealed = SealedStore(await open_blob_store(f"file://{trainer_stack.data_dir / 'blobs'}"), vault)
    await sealed.put(subject.tenant_id, shared["done_subject"], key, foreign, privacy_pb2.KEY_PURPOSE_ENCRYPT_LORA)
    await vault.close()
    js = raw_nats.jetstream()
    subscription = await js.subscribe(topology.order_events_subject("order_foreign-lora"), ordered_consumer=True)
    render = events_pb2.RenderJob(job_id="render-foreign-lora", order_id="order_foreign-lora",
                                  tenant_id=subject.tenant_id, subject_id=shared["done_subject"], lora_key=key,
                                  items=[events_pb2.RenderItem(portrait_id="p1", style="studio-frontal-soft")])
    await js.publish(topology.RENDER_SUBJECT, render.SerializeToString(), headers={"Nats-Msg-Id": render.job_id})
    event = events_pb2.OrderEvent.FromString((await subscription.next_msg(timeout=60)).data)
    await subscription.unsubscribe()
    assert event.WhichOneof("kind") == "failed" and event.failed.stage == "rendering"
    assert "trained on base model bm-0123456789abcdef" in event.failed.reason


async def test_the_renderer_drops_a_cancelled_orders_job(
    trainer_stack: EmbeddedStack, raw_nats: nats.NATS, shared: dict
) -> None:
    if "cancelled_order" not in shared or "done_subject" not in shared:
        pytest.skip("needs the cancelled order and the trained subject")
    subject = await kv(raw_nats, topology.SUBJECTS_BUCKET, shared["done_subject"], state_pb2.SubjectRecord)
    order_id = shared["cancelled_order"]
    js = raw_nats.jetstream()
    subscription = await js.subscribe(topology.order_events_subject(order_id), ordered_consumer=True,
                                      deliver_policy=DeliverPolicy.NEW)
    render = events_pb2.RenderJob(job_id=f"render-late-{order_id}", order_id=order_id, tenant_id=subject.tenant_id,
                                  subject_id=shared["done_subject"], lora_key=next(iter(subject.lora_keys.values())),
                                  items=[events_pb2.RenderItem(portrait_id="p1", style="studio-frontal-soft",
                                                               width=64, height=64, steps=2, portrait_key="x/p1")])
    await js.publish(topology.RENDER_SUBJECT, render.SerializeToString(), headers={"Nats-Msg-Id": render.job_id})
    for _ in range(100):
        info = await js.consumer_info(topology.RENDER_QUEUE.stream, topology.RENDER_QUEUE.durable)
        if info.num_pending == 0 and info.num_ack_pending == 0:
            break
        await asyncio.sleep(0.1)
    assert info.num_pending == 0 and info.num_ack_pending == 0  # taken and acknowledged
    with pytest.raises(TimeoutError):
        await subscription.next_msg(timeout=2)  # and nothing rendered or reported for the order
    await subscription.unsubscribe()
    assert not (trainer_stack.data_dir / "blobs" / "x" / "p1").exists()


async def test_a_render_job_delivered_again_is_announced_again_not_rendered_again(
    trainer_stack: EmbeddedStack, studio: StudioClient, raw_nats: nats.NATS, shared: dict
) -> None:
    if "done_order" not in shared:
        pytest.skip("needs the done order")
    order = await studio.get_order(shared["done_order"])
    assert order.state == common_pb2.ORDER_STATE_DONE and order.portraits
    portraits = sorted((trainer_stack.data_dir / "blobs").rglob(f"orders/{order.order_id}/portraits/*"))
    delivered = {path: path.read_bytes() for path in portraits}
    assert len(delivered) == len(order.portraits)
    subject = await kv(raw_nats, topology.SUBJECTS_BUCKET, order.subject_id, state_pb2.SubjectRecord)
    js = raw_nats.jetstream()
    # A plain subscription (as in train_directly): no JetStream consumer between the renderer and this test.
    subscription = await raw_nats.subscribe(topology.order_events_subject(order.order_id))
    await raw_nats.flush()
    # The job as ingest published it; a new message id, as the stream's dedup would drop a second publish.
    again = events_pb2.RenderJob(
        job_id=f"render-{order.order_id}", order_id=order.order_id, tenant_id=subject.tenant_id,
        subject_id=order.subject_id, lora_key=next(iter(subject.lora_keys.values())),
        items=[events_pb2.RenderItem(portrait_id=p.portrait_id, style=p.style, seed=p.seed, width=p.width,
                                     height=p.height, steps=DEFAULT_RENDER_STEPS,
                                     portrait_key=portrait_key(subject.tenant_id, order.subject_id, order.order_id,
                                                               p.portrait_id)) for p in order.portraits])
    await js.publish(topology.RENDER_SUBJECT, again.SerializeToString(),
                     headers={"Nats-Msg-Id": f"{again.job_id}-delivered-again"})
    rendered, event = await _rendered_then_done(subscription, trainer_stack, js)
    assert rendered == [] and list(event.done.portraits) == list(order.portraits)
    assert {path: path.read_bytes() for path in portraits} == delivered  # not rendered, signed or stored again

    # Cut short: a job of one more portrait, killed after delivering the order's, before its own mark. The
    # delivered portraits are kept as they were (a customer may have downloaded them); only the rest is rendered.
    marks = await js.key_value(topology.RENDERS_DONE_BUCKET)
    await marks.purge(f"{order.subject_id}.{again.job_id}")
    rest = events_pb2.RenderItem()
    rest.CopyFrom(again.items[-1])
    rest.portrait_id, rest.seed = "portrait_rest", rest.seed + 1
    rest.portrait_key = portrait_key(subject.tenant_id, order.subject_id, order.order_id, rest.portrait_id)
    again.items.append(rest)
    await js.publish(topology.RENDER_SUBJECT, again.SerializeToString(),
                     headers={"Nats-Msg-Id": f"{again.job_id}-cut-short"})
    rendered, event = await _rendered_then_done(subscription, trainer_stack, js)
    await subscription.unsubscribe()
    assert rendered == [rest.portrait_id]  # without the marks every portrait was rendered and announced again
    assert [p.portrait_id for p in event.done.portraits] == [*(p.portrait_id for p in order.portraits), "portrait_rest"]
    assert {path: path.read_bytes() for path in portraits} == delivered
    assert (await marks.get(f"{order.subject_id}.{again.job_id}.{rest.portrait_id}")).value


async def _rendered_then_done(subscription, stack: EmbeddedStack, js) -> tuple[list[str], events_pb2.OrderEvent]:
    """The portraits the renderer announced as rendered, then its done event; on a timeout, what it was doing."""
    rendered = []
    while True:
        try:
            event = events_pb2.OrderEvent.FromString((await subscription.next_msg(timeout=120)).data)
        except nats.errors.TimeoutError:
            queue = await js.consumer_info(topology.RENDER_QUEUE.stream, topology.RENDER_QUEUE.durable)
            pytest.fail(f"no done event; render queue {queue.num_pending} pending, {queue.num_ack_pending} in "
                        f"flight, {queue.num_redelivered} redelivered:\n{stack.processes['renderer'].log_tail()}")
        if event.WhichOneof("kind") != "rendering":
            assert event.WhichOneof("kind") == "done", event
            return rendered, event
        rendered.append(event.rendering.portrait.portrait_id)


async def test_a_training_job_delivered_again_after_its_lora_was_stored_is_announced_not_trained_again(
    trainer_stack: EmbeddedStack, raw_nats: nats.NATS, shared: dict
) -> None:
    """A trainer killed after storing the LoRA, before announcing it: the job comes back, and the stored LoRA is
    announced, not replaced by another training's."""
    if "done_subject" not in shared:
        pytest.skip("needs the trained subject")
    subject = await kv(raw_nats, topology.SUBJECTS_BUCKET, shared["done_subject"], state_pb2.SubjectRecord)
    lora_key = next(iter(subject.lora_keys.values()))
    stored = (trainer_stack.data_dir / "blobs" / lora_key).read_bytes()
    job = events_pb2.TrainJob(
        job_id="train-announcing", order_id="order_announcing", tenant_id=subject.tenant_id,
        subject_id=shared["done_subject"], base_model_id=base_model_id(trainer_stack.data_dir / "models" / "tiny"),
        crop_keys=sorted(subject.crop_keys.values()), steps=STEPS, seed=1, lora_key=lora_key,
        render=events_pb2.RenderJob(job_id="render-announcing", order_id="order_announcing",
                                    tenant_id=subject.tenant_id, subject_id=shared["done_subject"]))
    completion = events_pb2.TrainingDone(lora_key=lora_key, best_step=30, final_loss=0.25, seconds=12.0)
    record = trainer_pb2.TrainJobRecord(job_id=job.job_id, state=trainer_pb2.TRAIN_JOB_STATE_RUNNING,
                                        tenant_id=job.tenant_id, subject_id=job.subject_id, completion=completion)
    js = raw_nats.jetstream()
    key = record_key(job.subject_id, job.job_id)
    await (await js.key_value(topology.TRAIN_JOBS_BUCKET)).put(key, record.SerializeToString())
    subscription = await raw_nats.subscribe(topology.order_events_subject(job.order_id))
    await raw_nats.flush()
    await js.publish(topology.TRAIN_SUBJECT, job.SerializeToString(), headers={"Nats-Msg-Id": job.job_id})
    event = events_pb2.OrderEvent.FromString((await subscription.next_msg(timeout=EVENT_WAIT_S)).data)
    await subscription.unsubscribe()
    assert event.WhichOneof("kind") == "trained" and event.trained == completion  # no training step first
    assert (trainer_stack.data_dir / "blobs" / lora_key).read_bytes() == stored
    for _ in range(100):
        record = await kv(raw_nats, topology.TRAIN_JOBS_BUCKET, key, trainer_pb2.TrainJobRecord)
        if record.state == trainer_pb2.TRAIN_JOB_STATE_DONE:
            break
        await asyncio.sleep(0.1)
    assert record.state == trainer_pb2.TRAIN_JOB_STATE_DONE


async def test_the_faceqa_scorer_gives_what_score_identity_says(trainer_stack: EmbeddedStack, raw_nats: nats.NATS,
                                                                 shared: dict) -> None:
    if "done_subject" not in shared:
        pytest.skip("needs the trained subject's crops")
    crops = await stored_crops(trainer_stack, raw_nats, shared["done_subject"])
    lisa, stranger = faces("lisa")[0], faces("london")[0]
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    images = [Image.open(lisa), Image.open(stranger), noise]
    async with grpc.aio.insecure_channel(trainer_stack.addresses["faceqa"]) as channel:
        stub = faceqa_pb2_grpc.FaceQAStub(channel)
        scorer = FaceQAScorer(stub, crops, asyncio.get_running_loop())
        first = await asyncio.to_thread(scorer.score, images)
        again = await asyncio.to_thread(scorer.score, images)  # with the consensus embedding faceqa returned
        direct = await stub.ScoreIdentity(faceqa_pb2.ScoreIdentityRequest(
            reference_images=reference_images(crops), images=[encode_for_scoring(i, IMAGE_SIDE) for i in images]))
    expected = [1 - s.distance if s.face_found else 0.0 for s in direct.scores]
    assert first == pytest.approx(expected, abs=1e-6) and again == pytest.approx(first, abs=1e-4)
    assert first[0] > 1 - direct.threshold > first[1] > 0 and first[2] == 0.0


async def test_validation_is_scored_by_faceqa_and_a_faceqa_outage_leaves_points_unscored(
    trainer_stack: EmbeddedStack, raw_nats: nats.NATS, shared: dict
) -> None:
    if "done_subject" not in shared:
        pytest.skip("needs the trained subject's crops")
    faceqa = trainer_stack.processes["faceqa"]
    calls_before = await score_identity_calls(faceqa)
    scored, _ = await train_directly(trainer_stack, raw_nats, shared["done_subject"], "scored", steps=VALIDATE_EVERY)
    assert [(p.step, 0.0 <= p.identity_score <= 1.0) for p in scored.validation] == [(VALIDATE_EVERY, True)]
    assert await score_identity_calls(faceqa) == calls_before + 1  # one ScoreIdentity per validation point

    faceqa.stop()  # the last test of this module: the stack goes down after it
    trained, progress = await train_directly(trainer_stack, raw_nats, shared["done_subject"], "unscored", steps=STEPS)
    assert [(p.step, p.identity_score) for p in trained.validation] == [(VALIDATE_EVERY, UNSCORED), (STEPS, UNSCORED)]
    assert any(list(e.validation) == list(trained.validation)[:1] and e.best_step == 0 for e in progress)
    assert trained.best_step == STEPS and trained.best_identity_score == 0  # no score: the last step's LoRA
    for _ in range(100):  # the record is marked done just after the TrainingDone event
        record = await kv(raw_nats, topology.TRAIN_JOBS_BUCKET, record_key(shared["done_subject"], "train-unscored"),
                          trainer_pb2.TrainJobRecord)
        if record.state == trainer_pb2.TRAIN_JOB_STATE_DONE:
            break
        await asyncio.sleep(0.1)
    assert record.state == trainer_pb2.TRAIN_JOB_STATE_DONE and record.attempts == 1
    assert (trainer_stack.data_dir / "blobs" / trained.lora_key).exists()


async def stored_crops(stack: EmbeddedStack, raw_nats: nats.NATS, subject_id: str) -> list[Image.Image]:
    subject = await kv(raw_nats, topology.SUBJECTS_BUCKET, subject_id, state_pb2.SubjectRecord)
    vault = VaultClient.from_token_file(stack.addresses["privacy"], stack.paths.token_file("trainer"))
    sealed = SealedStore(await open_blob_store(f"file://{stack.data_dir / 'blobs'}"), vault)
    crops = [await sealed.get(subject.tenant_id, subject_id, key, privacy_pb2.KEY_PURPOSE_DECRYPT_CROP)
             for key in sorted(subject.crop_keys.values())]
    await vault.close()
    return [Image.open(io.BytesIO(crop)) for crop in crops]


async def score_identity_calls(faceqa) -> float:
    url = f"http://127.0.0.1:{faceqa._env['STUDIO_METRICS_PORT']}/metrics"
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read().decode())
    found = re.search(r'^studio_rpc_total\{[^}]*method="/studio.v1.FaceQA/ScoreIdentity"[^}]*\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


async def train_directly(stack: EmbeddedStack, raw_nats: nats.NATS, subject_id: str, name: str,
                         steps: int) -> tuple[events_pb2.TrainingDone, list[events_pb2.TrainingProgress]]:
    """A training job put on the TRAIN queue directly: its TrainingDone and progress events."""
    subject = await kv(raw_nats, topology.SUBJECTS_BUCKET, subject_id, state_pb2.SubjectRecord)
    job = events_pb2.TrainJob(
        job_id=f"train-{name}", order_id=f"order_{name}", tenant_id=subject.tenant_id, subject_id=subject_id,
        base_model_id=base_model_id(stack.data_dir / "models" / "tiny"), crop_keys=sorted(subject.crop_keys.values()),
        steps=steps, seed=1, lora_key=f"tenants/{subject.tenant_id}/subjects/{subject_id}/loras/{name}.safetensors",
        render=events_pb2.RenderJob(job_id=f"render-{name}", order_id=f"order_{name}", tenant_id=subject.tenant_id,
                                    subject_id=subject_id))
    # A plain subscription, made before the job is queued: the order's events as they are published,
    # without a JetStream consumer between the trainer and this test.
    subscription = await raw_nats.subscribe(topology.order_events_subject(job.order_id))
    await raw_nats.flush()
    await raw_nats.jetstream().publish(topology.TRAIN_SUBJECT, job.SerializeToString(),
                                       headers={"Nats-Msg-Id": job.job_id})
    progress: list[events_pb2.TrainingProgress] = []
    while True:
        try:
            message = await subscription.next_msg(timeout=EVENT_WAIT_S)
        except nats.errors.TimeoutError:
            logs = "".join(f"\n--- {name}:\n{stack.processes[name].log_tail()}" for name in ("trainer", "faceqa"))
            pytest.fail(f"job {job.job_id}: no event in {EVENT_WAIT_S} s after {len(progress)} progress events{logs}")
        event = events_pb2.OrderEvent.FromString(message.data)
        kind = event.WhichOneof("kind")
        assert kind in ("training", "trained"), event
        if kind == "trained":
            await subscription.unsubscribe()
            return event.trained, progress
        progress.append(event.training)
