"""The renderer in the running stack (real tritonserver with the tiny model, real NATS, vault, faceqa):
the style catalogue through the public API and the CLI, order validation, two subjects' orders in
flight each rendered with their own adapter and reproducible from their render records, and a Triton
killed mid-job: the job waits, and completes once Triton is back (adapters reload on demand)."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from dataclasses import dataclass

import grpc
import nats.errors
import numpy as np
import pytest
from PIL import Image
from studio.v1 import common_pb2, events_pb2, faceqa_pb2_grpc, privacy_pb2, renderer_pb2, renderer_pb2_grpc, state_pb2

from services.cli.client import StudioClient
from services.cli.stack import REPO_ROOT, EmbeddedStack
from services.common.blobstore import open_blob_store
from services.common.bus import Bus
from services.common.cancellation import POLL_INTERVAL_S, mark_cancelled
from services.common.objects import portrait_key
from services.common.styles import catalogue
from services.common.topology import RENDERS_DONE_BUCKET, SUBJECTS_BUCKET, order_events_subject
from services.common.vault_client import SealedStore, VaultClient
from services.common.workqueue import PermanentJobError, WorkerState
from services.ingest.create_order import MAX_PORTRAITS_PER_STYLE
from services.renderer.provenance import PortraitProvenance
from services.renderer.ranking import CANDIDATES, UNSCORED, RankingSettings
from services.renderer.records import load_records, request_for
from services.renderer.triton_client import render_via_triton, triton_ready
from services.renderer.worker import RenderWorker, finished_key
from tests.fixtures_stack import faces

pytestmark = pytest.mark.asyncio(loop_scope="session")
HEADSHOT, REFERENCE = common_pb2.PHOTO_ROLE_HEADSHOT, common_pb2.PHOTO_ROLE_REFERENCE


@pytest.fixture(scope="module")
def shared() -> dict:
    return {}


async def expect_invalid(call) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value
    return raised.value.details()


async def new_subject(client: StudioClient, headshot, reference) -> str:
    subject = await client.create_subject()
    photos = await client.upload(subject.subject_id, [(headshot, HEADSHOT), (reference, REFERENCE)])
    assert all(p.verdict.accepted for p in photos), photos
    return subject.subject_id


async def event_kinds(client: StudioClient, order_id: str) -> list[str]:
    return [response.event.WhichOneof("kind") async for response in client.watch(order_id, timeout_s=600)]


async def sealed_as(stack: EmbeddedStack, service: str) -> SealedStore:
    token = stack.paths.token_file(service).read_text().strip()
    blobs = await open_blob_store(f"file://{(stack.data_dir / 'blobs').resolve()}")
    return SealedStore(blobs, VaultClient(stack.addresses["privacy"], token))


async def portrait_pixels(client: StudioClient, order_id: str, portrait_id: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(await client.download(order_id, portrait_id))).convert("RGB"))


async def test_list_styles_through_the_api_and_the_cli(client: StudioClient, stack: EmbeddedStack) -> None:
    styles = await client.list_styles()
    assert [s.name for s in styles] == list(catalogue())
    frontal = next(s for s in styles if s.name == "studio-frontal-soft")
    assert (frontal.angle, frontal.lighting, frontal.scheduler) == ("frontal", "soft-studio", "dpmpp-2m")
    assert frontal.height > frontal.width and "{subject}" in frontal.prompt
    command = [sys.executable, "-m", "services.cli.main", "styles", "list", "--json"]
    stack_args = ["--endpoint", stack.public_endpoint, "--api-key-file", str(stack.paths.api_key_file)]
    listed = await asyncio.to_thread(subprocess.run, command + stack_args, cwd=REPO_ROOT, capture_output=True,
                                     text=True, timeout=120)
    output = json.loads(listed.stdout)
    assert output["source"] == f"stack at {stack.public_endpoint}" and len(output["styles"]) == len(styles)
    offline = await asyncio.to_thread(subprocess.run, command + ["--endpoint", "127.0.0.1:9"], cwd=REPO_ROOT,
                                      capture_output=True, text=True, timeout=120)
    assert json.loads(offline.stdout)["source"] == "catalogue file"


async def test_unknown_style_zero_and_oversized_counts_are_invalid_argument(client: StudioClient) -> None:
    subject = await client.create_subject()
    assert "unknown style(s): disco" in await expect_invalid(client.create_order(subject.subject_id, ["disco"], 1))
    frontal = ["studio-frontal-soft"]
    assert "count must be 1..8" in await expect_invalid(client.create_order(subject.subject_id, frontal, 0))
    oversized = MAX_PORTRAITS_PER_STYLE + 1
    assert "count must be 1..8" in await expect_invalid(client.create_order(subject.subject_id, frontal, oversized))
    assert "at least one style" in await expect_invalid(client.create_order(subject.subject_id, [], 1))


async def check_own_adapter(client: StudioClient, stack: EmbeddedStack, subject_id: str, order_id: str) -> None:
    """Every delivered portrait is its render record rendered again with the subject's own LoRA."""
    as_ingest, as_renderer = await sealed_as(stack, "ingest"), await sealed_as(stack, "renderer")
    try:
        records = (await load_records(as_ingest, "default", subject_id, order_id)).records
        order = await client.get_order(order_id)
        assert sorted(r.portrait_id for r in records) == sorted(p.portrait_id for p in order.portraits)
        for record in records[:2]:
            lora = await as_renderer.get("default", subject_id, record.lora_key, privacy_pb2.KEY_PURPOSE_DECRYPT_LORA)
            assert record.adapter_id.startswith(f"{subject_id}/") and record.identity_score == UNSCORED
            again = await render_via_triton(stack.triton.grpc_url, request_for(record, lora))
            assert np.array_equal(again, await render_via_triton(stack.triton.grpc_url, request_for(record, lora)))
            delivered = await portrait_pixels(client, order_id, record.portrait_id)
            # Delivered inside a batch: equal to the solo re-render up to float rounding.
            assert np.abs(again.astype(int) - delivered.astype(int)).max() <= 8
    finally:
        await as_ingest.vault.close()
        await as_renderer.vault.close()


async def test_two_subjects_in_flight_each_get_their_own_adapter(
    client: StudioClient, stack: EmbeddedStack, shared: dict
) -> None:
    lisa, london = faces("lisa"), faces("london")
    first = await new_subject(client, lisa[0], lisa[1])
    second = await new_subject(client, london[0], london[1])
    orders = [await client.create_order(first, ["studio-frontal-soft", "golden-hour-laugh"], 2),
              await client.create_order(second, ["low-key-traditional"], 2)]
    kinds = await asyncio.gather(*(event_kinds(client, order.order_id) for order in orders))
    assert [k[-1] for k in kinds] == ["done", "done"], kinds
    for subject_id, order in zip((first, second), orders, strict=True):
        done = await client.get_order(order.order_id)
        assert len(done.portraits) == order.progress_total
        assert all(p.identity_score == UNSCORED for p in done.portraits)  # the tiny model: unscored mode
        await check_own_adapter(client, stack, subject_id, order.order_id)
    shared["subject"], shared["subjects"] = first, (first, second)


async def test_the_renderers_workers_render_two_customers_at_once(
    client: StudioClient, stack: EmbeddedStack, shared: dict
) -> None:
    """The stack runs STUDIO_RENDER_WORKERS=2 (tests/fixtures_stack.py): two returning subjects' orders (no
    training) render at the same time, so Triton's queue holds both customers' requests."""
    if "subjects" not in shared:
        pytest.skip("needs two subjects with LoRAs")
    channel = grpc.aio.insecure_channel(stack.addresses["renderer"])
    stub = renderer_pb2_grpc.RendererStub(channel)
    busy_at_once, watching = 0, True

    async def watch_workers() -> None:
        nonlocal busy_at_once
        while watching:
            status = await stub.GetRendererStatus(renderer_pb2.GetRendererStatusRequest(), timeout=10)
            busy_at_once = max(busy_at_once, sum(worker.busy for worker in status.workers))
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch_workers())
    try:
        orders = [await client.create_order(subject_id, ["studio-frontal-soft", "golden-hour-laugh"], 3)
                  for subject_id in shared["subjects"]]
        kinds = await asyncio.gather(*(event_kinds(client, order.order_id) for order in orders))
    finally:
        watching = False
        await watcher
    status = await stub.GetRendererStatus(renderer_pb2.GetRendererStatusRequest(), timeout=10)
    await channel.close()
    assert [k[-1] for k in kinds] == ["done", "done"], kinds
    assert "training" not in kinds[0] + kinds[1]  # returning subjects: straight to rendering
    assert len(status.workers) == 2 and busy_at_once == 2
    assert status.status.jobs_completed == sum(worker.jobs_completed for worker in status.workers)
    for subject_id, order in zip(shared["subjects"], orders, strict=True):
        await check_own_adapter(client, stack, subject_id, order.order_id)


async def test_a_lone_orders_styles_share_tritons_batches(
    client: StudioClient, stack: EmbeddedStack, shared: dict
) -> None:
    """A job renders all its styles at once, its requests in flight (two of Triton's batches of 8) shared
    among them: styles one after another would end each on a part-filled batch, one Triton execution per style
    at least."""
    if "subject" not in shared:
        pytest.skip("needs a subject with a LoRA")
    styles = list(catalogue())[:6]
    executions_before = await asyncio.to_thread(stack.triton.counter, "nv_inference_exec_count", "portrait_diffusion")
    order = await client.create_order(shared["subject"], styles, 2)  # unscored: 2 renders per style
    kinds = await event_kinds(client, order.order_id)
    executions = await asyncio.to_thread(stack.triton.counter, "nv_inference_exec_count", "portrait_diffusion")
    assert kinds[-1] == "done", kinds
    assert executions - executions_before < len(styles)  # 12 renders, 16 in flight: about 2
    done = await client.get_order(order.order_id)
    # The job's item order, whichever style finished first.
    assert [portrait.style for portrait in done.portraits] == [style for style in styles for _ in range(2)]


async def test_triton_killed_mid_job_the_job_completes_after_restart(
    client: StudioClient, stack: EmbeddedStack, shared: dict
) -> None:
    if "subject" not in shared:
        pytest.skip("needs a subject with a LoRA")
    # Three of Triton's batches of 8, two in flight (worker.in_flight): the first portrait arrives with work left.
    styles, count = list(catalogue())[:3], 8
    order = await client.create_order(shared["subject"], styles, count)
    triton, killed_at_progress = stack.triton.process, None
    try:
        async for response in client.watch(order.order_id, timeout_s=600):
            if response.event.WhichOneof("kind") == "rendering":
                triton.kill()
                killed_at_progress = response.event.rendering.rendered
                break
        # Restarted once no stream is open: forking a child while a gRPC stream is active can crash it.
        await asyncio.sleep(3)  # the job is stuck now: Triton is gone
        assert (await client.get_order(order.order_id)).state == common_pb2.ORDER_STATE_RENDERING
    finally:
        triton.restart()
        await triton.wait_ready(lambda: triton_ready(stack.triton.grpc_url), timeout=300)
    kinds = await event_kinds(client, order.order_id)
    assert killed_at_progress is not None and killed_at_progress < len(styles) * count
    assert kinds[-1] == "done" and "failed" not in kinds
    done = await client.get_order(order.order_id)
    assert done.state == common_pb2.ORDER_STATE_DONE and len(done.portraits) == len(styles) * count
    await check_own_adapter(client, stack, shared["subject"], order.order_id)


async def test_identity_ranking_renders_extra_candidates_and_drops_faceless_ones(
    stack: EmbeddedStack, shared: dict
) -> None:
    """The worker in identity mode against the stack's Triton, vault and faceqa: the tiny model draws
    no face, so every candidate (factor x N of them) is dropped and the job fails for good."""
    if "subject" not in shared:
        pytest.skip("needs a subject with a LoRA")
    bus = await Bus.connect(stack.nats.url, name="identity-ranking-test")
    sealed = await sealed_as(stack, "renderer")
    channel = grpc.aio.insecure_channel(stack.addresses["faceqa"])
    try:
        subject = await bus.kv_get(SUBJECTS_BUCKET, shared["subject"], state_pb2.SubjectRecord)
        [lora_key] = subject.lora_keys.values()
        items = [events_pb2.RenderItem(portrait_id=f"p{i}", style="studio-frontal-soft", seed=i, steps=2, width=64,
                                       height=80, portrait_key=f"x/identity-test/p{i}.png") for i in range(2)]
        job = events_pb2.RenderJob(job_id="render-identity-test", order_id="order_identity_test", tenant_id="default",
                                   subject_id=shared["subject"], lora_key=lora_key, items=items,
                                   crop_keys=sorted(subject.crop_keys.values()))
        worker = RenderWorker(bus=bus, sealed=sealed, triton_url=stack.triton.grpc_url, state=WorkerState(),
                              provenance=PortraitProvenance(sealed.vault),
                              ranking=RankingSettings(candidate_factor=2.0), faceqa=faceqa_pb2_grpc.FaceQAStub(channel))
        assert await worker.in_flight() == 2 * 8  # two of Triton's batches (config.pbtxt max_batch_size 8)
        dropped_before = CANDIDATES.labels("dropped")._value.get()
        with pytest.raises(PermanentJobError, match="no rendered candidate showed the subject's face"):
            await asyncio.wait_for(worker.handle(job.SerializeToString()), timeout=300)
        assert CANDIDATES.labels("dropped")._value.get() - dropped_before == 4  # 2 ordered x factor 2
        assert not (stack.data_dir / "blobs" / "x" / "identity-test").exists()  # nothing delivered
    finally:
        await channel.close()
        await sealed.vault.close()
        await bus.close()


@dataclass
class CancelledAtFirstPortrait(PortraitProvenance):
    """Labels portraits as the renderer does; the order is cancelled while its first portrait is being labelled,
    all its candidates rendered by then."""
    bus: Bus | None = None

    async def portrait_png(self, pixels: np.ndarray, job: events_pb2.RenderJob, item: events_pb2.RenderItem) -> bytes:
        png = await super().portrait_png(pixels, job, item)
        if item.portrait_id == job.items[0].portrait_id:
            await mark_cancelled(self.bus, job.order_id, "the customer changed their mind")
            await asyncio.sleep(3 * POLL_INTERVAL_S)  # the job's cancel watch has seen it
        return png


async def unscored_job(bus: Bus, subject_id: str, name: str, count: int) -> events_pb2.RenderJob:
    subject = await bus.kv_get(SUBJECTS_BUCKET, subject_id, state_pb2.SubjectRecord)
    [lora_key] = subject.lora_keys.values()
    order_id = f"order_{name}"
    items = [events_pb2.RenderItem(portrait_id=f"p{i}", style="studio-frontal-soft", seed=i, steps=2, width=64,
                                   height=80, portrait_key=portrait_key("default", subject_id, order_id, f"p{i}"))
             for i in range(count)]
    return events_pb2.RenderJob(job_id=f"render-{name}", order_id=order_id, tenant_id="default",
                                subject_id=subject_id, lora_key=lora_key, items=items)


async def test_an_order_cancelled_once_rendered_stores_and_announces_nothing_more(
    stack: EmbeddedStack, shared: dict
) -> None:
    """Every candidate is in flight at once (16 slots, 3 renders), so the cancellation is seen only after them:
    the portrait being delivered is kept with its render record; no other is stored, and the job never says done."""
    if "subject" not in shared:
        pytest.skip("needs a subject with a LoRA")
    bus = await Bus.connect(stack.nats.url, name="cancel-after-render-test")
    sealed = await sealed_as(stack, "renderer")
    events = await bus.client.subscribe(order_events_subject("order_cancelled_late"))
    await bus.client.flush()
    try:
        job = await unscored_job(bus, shared["subject"], "cancelled_late", 3)
        worker = RenderWorker(bus=bus, sealed=sealed, triton_url=stack.triton.grpc_url, state=WorkerState(),
                              provenance=CancelledAtFirstPortrait(sealed.vault, bus=bus),
                              ranking=RankingSettings(mode="unscored"))
        await asyncio.wait_for(worker.handle(job.SerializeToString()), timeout=300)
        as_ingest = await sealed_as(stack, "ingest")
        records = await load_records(as_ingest, "default", shared["subject"], job.order_id)
        await as_ingest.vault.close()
        assert [record.portrait_id for record in records.records] == ["p0"]  # renderable again
        stored = [path.name for path in (stack.data_dir / "blobs").rglob("*.png") if job.order_id in str(path)]
        assert stored == ["p0.png"]
        await asyncio.sleep(0.5)
        announced = []
        while True:
            try:
                message = await events.next_msg(timeout=0.1)
            except nats.errors.TimeoutError:
                break
            announced.append(events_pb2.OrderEvent.FromString(message.data).WhichOneof("kind"))
        assert announced == ["rendering"]
    finally:
        await events.unsubscribe()
        await sealed.vault.close()
        await bus.close()


async def test_a_job_that_finished_but_lost_its_acknowledgement_is_not_reported_failed(
    stack: EmbeddedStack, shared: dict
) -> None:
    """Delivered past its last attempt (finished, then its ack lost): the job announces done again, never failed."""
    if "subject" not in shared:
        pytest.skip("needs a subject with a LoRA")
    bus = await Bus.connect(stack.nats.url, name="finished-give-up-test")
    sealed = await sealed_as(stack, "renderer")
    try:
        job = await unscored_job(bus, shared["subject"], "finished_unacked", 1)
        finished = events_pb2.OrderDone(portraits=[common_pb2.Portrait(portrait_id="p0", style="studio-frontal-soft")])
        await bus.kv_put(RENDERS_DONE_BUCKET, finished_key(job), finished)
        events = await bus.client.subscribe(order_events_subject(job.order_id))
        await bus.client.flush()
        worker = RenderWorker(bus=bus, sealed=sealed, triton_url=stack.triton.grpc_url, state=WorkerState(),
                              provenance=PortraitProvenance(sealed.vault))
        await worker.on_failure(job.SerializeToString(), "gave up after 5 attempts")
        announced = events_pb2.OrderEvent.FromString((await events.next_msg(timeout=5)).data)
        assert announced.WhichOneof("kind") == "done" and announced.done == finished
        await events.unsubscribe()
    finally:
        await sealed.vault.close()
        await bus.close()


async def test_a_watch_outlives_its_streams_deadlines(client: StudioClient, shared: dict) -> None:
    """Streams of half a second, an order that takes seconds: each stream that runs out is followed by the next, and
    the watch sees every event once, through to done (a CLI watch used to end at its stream's 30 min)."""
    if "subject" not in shared:
        pytest.skip("needs a subject with a LoRA")
    order = await client.create_order(shared["subject"], ["studio-frontal-soft"], 2)
    events = [response.event async for response in client.watch(order.order_id, stream_s=0.5)]
    kinds = [event.WhichOneof("kind") for event in events]
    assert kinds[-1] == "done" and kinds.count("done") == 1, kinds
    rendered = [event.rendering.rendered for event in events if event.WhichOneof("kind") == "rendering"]
    assert rendered == sorted(set(rendered)) and rendered, kinds
    with pytest.raises(grpc.aio.AioRpcError) as timed_out:  # the watch's own deadline still ends it
        await anext(aiter(client.watch(order.order_id, timeout_s=0.001)))
    assert timed_out.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
