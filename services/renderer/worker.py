"""Renderer worker: RENDER jobs → the subject's LoRA (decrypted in memory only) → candidates rendered
by Triton, several requests in flight so its dynamic batcher batches them → ranked for identity by
faceqa (services/renderer/ranking.py) → sealed portraits and their render records, progress n of m,
then done. Triton or faceqa down: the job waits and tries again; it does not fail."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
import numpy as np
from PIL import Image, UnidentifiedImageError
from studio.v1 import common_pb2, events_pb2, faceqa_pb2_grpc, privacy_pb2

from services.common import topology
from services.common.blobstore import BlobNotFound
from services.common.bus import Bus
from services.common.cancellation import CancelWatch, order_cancelled
from services.common.deletion_guard import SubjectDeleted
from services.common.identity_scoring import IdentityClient, IdentityRefused
from services.common.lora_file import require_base_model
from services.common.order_events import publish_order_event
from services.common.styles import StylePreset, catalogue
from services.common.vault_client import SealedStore
from services.common.workqueue import PermanentJobError, WorkerState, vault_refusal
from services.renderer.adapter_reference import adapter_token
from services.renderer.provenance import PortraitProvenance
from services.renderer.ranking import (
    BATCHES_IN_FLIGHT,
    FALLBACK_CONCURRENCY,
    UNSCORED,
    Candidate,
    RankingSettings,
    RankingStopped,
    candidate_seeds_left,
    rank,
)
from services.renderer.records import record_of, save_records
from services.renderer.triton_client import (
    AdapterShipping,
    AdapterWithdrawn,
    RenderRejected,
    RenderRequest,
    TritonUnavailable,
    max_batch_size,
    render_via_triton,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

TRITON_RETRY_S = (1.0, 2.0, 3.0, 5.0)  # a connection attempt every 5 s costs Triton nothing; a restart is seen sooner


class OrderCancelled(Exception):
    """The order was cancelled while its job rendered: the job is dropped."""


def encode_png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def adapter_id_of(subject_id: str, adapter: bytes) -> str:
    """Triton's cache key: the subject (so a deletion can evict by prefix) and the bytes' digest."""
    return f"{subject_id}/{hashlib.sha256(adapter).hexdigest()[:24]}"


def items_by_style(items) -> dict[str, list[events_pb2.RenderItem]]:
    groups: dict[str, list[events_pb2.RenderItem]] = {}
    for item in items:
        groups.setdefault(item.style, []).append(item)
    return groups


def item_position(job: events_pb2.RenderJob) -> dict[str, int]:
    return {item.portrait_id: index for index, item in enumerate(job.items)}


async def all_or_none(coroutines: Iterable[Awaitable[T]]) -> list[T]:
    """Every result, in order; at the first error the others are cancelled (asyncio.gather leaves them running:
    their requests would still take Triton's time, and hold the adapter, for a job that has ended)."""
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class JobContext:
    job: events_pb2.RenderJob
    adapter: bytes = field(repr=False)  # decrypted: no repr shows it, nor its token
    adapter_id: str
    identity: IdentityClient | None
    adapter_token: str = field(default="", repr=False)  # computed once per job: a LoRA is megabytes
    # Loads the job's adapter into each Triton instance once; the renders name it by token. Forgotten with the job.
    shipping: AdapterShipping = field(default_factory=AdapterShipping)
    # The job's Triton requests in flight, shared by all its styles (RankingSettings.concurrency).
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    cancelled: Callable[[], bool] = lambda: False
    delivered: list[common_pb2.Portrait] = field(default_factory=list)
    records: list[events_pb2.RenderRecord] = field(default_factory=list)
    records_saving: asyncio.Lock = field(default_factory=asyncio.Lock)  # the last save holds every record
    # Portraits an earlier delivery of this job stored and announced (its worker killed before the end), by id.
    delivered_before: dict[str, common_pb2.Portrait] = field(default_factory=dict)


def finished_key(job: events_pb2.RenderJob, portrait_id: str = "") -> str:
    """The mark of the finished job, or of one portrait it delivered."""
    return f"{job.subject_id}.{job.job_id}" + (f".{portrait_id}" if portrait_id else "")


@dataclass
class RenderWorker:
    bus: Bus
    sealed: SealedStore
    triton_url: str
    state: WorkerState
    provenance: PortraitProvenance  # issue 9: every delivered portrait labelled and signed
    base_model_id: str = ""  # when set, LoRAs trained on another base model are refused
    ranking: RankingSettings = field(default_factory=RankingSettings)
    faceqa: faceqa_pb2_grpc.FaceQAStub | None = None  # required when ranking.scored
    _derived_in_flight: int = field(default=0, init=False, repr=False)  # from Triton's max_batch_size, once known

    async def handle(self, payload: bytes) -> None:
        job = events_pb2.RenderJob.FromString(payload)
        try:
            await self._run(job)
        except SubjectDeleted:  # no request more goes to Triton with its adapter, nothing more is stored
            log.info("the subject of order %s is being deleted; dropping its render job", job.order_id)

    async def _run(self, job: events_pb2.RenderJob) -> None:
        self.sealed.guard.check(job.subject_id)
        if await order_cancelled(self.bus, job.order_id):  # before decrypting anything
            log.info("order %s was cancelled; dropping its render job", job.order_id)
            return
        finished = await self.bus.kv_get(topology.RENDERS_DONE_BUCKET, finished_key(job), events_pb2.OrderDone)
        if finished is not None:  # delivered before, its acknowledgement lost: the portraits stay as delivered
            log.info("render job %s finished before; announcing it again", job.job_id)
            await publish_order_event(self.bus, job.order_id, job.tenant_id, job.subject_id, done=finished)
            return
        adapter = await self._read(job, job.lora_key, privacy_pb2.KEY_PURPOSE_DECRYPT_LORA, "LoRA")
        if self.base_model_id:
            try:
                require_base_model(adapter, self.base_model_id)
            except ValueError as error:  # WrongBaseModel, or not a LoRA file at all
                raise PermanentJobError(str(error)) from error
        ctx = JobContext(job, adapter, adapter_id_of(job.subject_id, adapter), await self._identity(job),
                         adapter_token(adapter), slots=asyncio.Semaphore(await self.in_flight()),
                         delivered_before=await self._portraits_delivered_before(job))
        async with CancelWatch(self.bus, job.order_id, job.subject_id) as watch:  # polled while the styles render
            ctx.cancelled = watch.stopped
            try:
                await self._deliver_styles(ctx)
                if ctx.cancelled():
                    raise OrderCancelled
            except OrderCancelled:
                self.sealed.guard.check(job.subject_id)
                log.info("order %s was cancelled; dropping its render job", job.order_id)
                return
            await self._finish(ctx)

    async def _finish(self, ctx: JobContext) -> None:
        job = ctx.job
        if not ctx.delivered:
            raise PermanentJobError("no rendered candidate showed the subject's face; nothing to deliver")
        finished = events_pb2.OrderDone(portraits=ctx.delivered)
        async with self.sealed.writing(job.subject_id):  # a deletion's purge waits for the records and the mark
            await self._save_records(ctx)
            await self.bus.kv_put(topology.RENDERS_DONE_BUCKET, finished_key(job), finished)
        await publish_order_event(self.bus, job.order_id, job.tenant_id, job.subject_id, done=finished)

    async def _portraits_delivered_before(self, job: events_pb2.RenderJob) -> dict[str, common_pb2.Portrait]:
        keys = await self.bus.kv_keys_matching(topology.RENDERS_DONE_BUCKET, finished_key(job, "*"))
        marks = await asyncio.gather(*(self.bus.kv_get(topology.RENDERS_DONE_BUCKET, key, common_pb2.Portrait)
                                       for key in keys))
        delivered = {mark.portrait_id: mark for mark in marks if mark is not None}
        if delivered:
            log.info("render job %s was cut short; keeping the %d portraits it delivered", job.job_id, len(delivered))
        return delivered

    async def in_flight(self) -> int:
        """Triton requests a job keeps in flight: STUDIO_RENDER_CONCURRENCY, else BATCHES_IN_FLIGHT of Triton's
        max_batch_size. With no more than one batch in flight, a lone job left the GPU idle from each batch's
        end until its next requests arrived and were batched (bench/render_in_flight.py)."""
        if self.ranking.concurrency:
            return self.ranking.concurrency
        if not self._derived_in_flight:
            try:
                self._derived_in_flight = BATCHES_IN_FLIGHT * max(1, await max_batch_size(self.triton_url))
            except TritonUnavailable as error:  # the job's renders will wait for Triton; ask again next job
                log.warning("cannot read Triton's max_batch_size (%s); %d requests in flight", error,
                            FALLBACK_CONCURRENCY)
                return FALLBACK_CONCURRENCY
        return self._derived_in_flight

    async def on_failure(self, payload: bytes, reason: str) -> None:
        job = events_pb2.RenderJob.FromString(payload)
        finished = await self.bus.kv_get(topology.RENDERS_DONE_BUCKET, finished_key(job), events_pb2.OrderDone)
        if finished is not None:  # it finished on its last delivery; only the acknowledgement was lost
            await publish_order_event(self.bus, job.order_id, job.tenant_id, job.subject_id, done=finished)
            return
        await publish_order_event(
            self.bus, job.order_id, job.tenant_id, job.subject_id,
            failed=events_pb2.OrderFailed(stage="rendering", reason=reason),
        )

    async def _read(self, job: events_pb2.RenderJob, key: str, purpose: int, what: str) -> bytes:
        try:
            return await self.sealed.get(job.tenant_id, job.subject_id, key, purpose)
        except BlobNotFound as error:
            raise PermanentJobError(f"the subject's {what} is gone") from error
        except grpc.aio.AioRpcError as error:
            raise vault_refusal(error) from error

    async def _identity(self, job: events_pb2.RenderJob) -> IdentityClient | None:
        """The subject's reference for ranking (their training crops), in identity mode."""
        if not self.ranking.scored:
            return None
        if self.faceqa is None:
            raise RuntimeError("identity ranking needs faceqa (STUDIO_FACEQA_ADDR)")
        if not job.crop_keys:
            raise PermanentJobError("the render job names no photos of the subject to rank candidates against")
        crops = []
        for key in job.crop_keys:
            data = await self._read(job, key, privacy_pb2.KEY_PURPOSE_DECRYPT_CROP, "training photos")
            try:
                crops.append(Image.open(io.BytesIO(data)).convert("RGB"))
            except (UnidentifiedImageError, OSError) as error:
                name = key.rsplit("/", 1)[-1]
                raise PermanentJobError(f"a training crop is not a readable image ({name})") from error
        return IdentityClient(self.faceqa, crops)

    async def _deliver_styles(self, ctx: JobContext) -> None:
        """Every style at once, sharing the job's requests in flight (ctx.slots, first come first served): one
        style is ranked and delivered while the next renders, and a lone order keeps Triton's batches full
        instead of ending each style on a part-filled batch. The first error cancels the other styles.
        Portraits and records keep the job's item order, whichever style finished first."""
        await all_or_none(self._deliver_style(ctx, style, items)
                          for style, items in items_by_style(ctx.job.items).items())
        position = item_position(ctx.job)
        ctx.delivered.sort(key=lambda portrait: position[portrait.portrait_id])

    async def _deliver_style(self, ctx: JobContext, style: str, items: list[events_pb2.RenderItem]) -> None:
        preset = catalogue().get(style)
        if preset is None:
            raise PermanentJobError(f"unknown style '{style}'")
        for item in items:  # kept as delivered: a customer may have downloaded them already
            if (earlier := ctx.delivered_before.get(item.portrait_id)) is not None:
                ctx.delivered.append(earlier)
                ctx.records.append(record_of(self._request(ctx, preset, item, earlier.seed), item.portrait_id,
                                             item.style, ctx.job.lora_key, earlier.identity_score))
        left = [item for item in items if item.portrait_id not in ctx.delivered_before]
        if not left:
            return
        delivered_seeds = {earlier.seed for item in items if (earlier := ctx.delivered_before.get(item.portrait_id))}
        seeds = candidate_seeds_left([item.seed for item in items], self.ranking.candidates_for(len(items)),
                                     delivered_seeds)
        requests = {seed: self._request(ctx, preset, left[0], seed) for seed in seeds}
        candidates = await self._render_all(ctx, list(requests.values()))
        try:
            chosen = (await rank(ctx.identity, candidates, len(left), ctx.cancelled) if ctx.identity
                      else candidates[: len(left)])
        except IdentityRefused as error:  # e.g. no face in any of the subject's crops
            raise PermanentJobError(f"candidates cannot be ranked: {error}") from error
        except RankingStopped as error:
            raise OrderCancelled from error
        for item, candidate in zip(left, chosen, strict=False):
            await self._deliver(ctx, item, candidate, requests[candidate.seed])

    def _request(self, ctx: JobContext, preset: StylePreset, item: events_pb2.RenderItem, seed: int) -> RenderRequest:
        return RenderRequest(
            prompt=item.prompt or preset.prompt_for(), negative_prompt=item.negative_prompt or preset.negative_prompt,
            adapter_id=ctx.adapter_id, adapter=ctx.adapter, adapter_token=ctx.adapter_token, seed=seed,
            steps=item.steps or preset.steps, guidance=item.guidance or preset.guidance,
            width=item.width or preset.width, height=item.height or preset.height,
            scheduler=item.scheduler or preset.scheduler,
        )

    async def _render_all(self, ctx: JobContext, requests: list[RenderRequest]) -> list[Candidate]:
        """Every request rendered, at most `concurrency` of the job's in flight: Triton batches what is in flight.
        A cancelled order sends no further request (OrderCancelled)."""

        async def one(request: RenderRequest) -> Candidate:
            async with ctx.slots:
                if ctx.cancelled():
                    raise OrderCancelled
                return Candidate(seed=request.seed,
                                 image=await self._render_when_triton_is_up(ctx, request))

        return await all_or_none(one(request) for request in requests)

    async def _deliver(self, ctx: JobContext, item: events_pb2.RenderItem, candidate: Candidate,
                       request: RenderRequest) -> None:
        job = ctx.job
        if ctx.cancelled():  # nothing more is stored or announced for a cancelled order
            raise OrderCancelled
        # The winner only, after ranking: visible label, XMP and the C2PA manifest signed by the vault (issue 9).
        portrait_png = await self.provenance.portrait_png(candidate.image, job, item)
        portrait = common_pb2.Portrait(
            portrait_id=item.portrait_id, style=item.style, seed=candidate.seed,
            width=int(candidate.image.shape[1]), height=int(candidate.image.shape[0]),
            identity_score=candidate.score if ctx.identity else UNSCORED,
        )
        async with self.sealed.writing(job.subject_id):  # a deletion's purge waits for the portrait and its mark
            await self.sealed.put(job.tenant_id, job.subject_id, item.portrait_key, portrait_png,
                                  privacy_pb2.KEY_PURPOSE_ENCRYPT_PORTRAIT)
            await self.bus.kv_put(topology.RENDERS_DONE_BUCKET, finished_key(job, item.portrait_id), portrait)
            ctx.records.append(record_of(request, item.portrait_id, item.style, job.lora_key, portrait.identity_score))
            await self._save_records(ctx)
        ctx.delivered.append(portrait)
        await publish_order_event(
            self.bus, job.order_id, job.tenant_id, job.subject_id,
            rendering=events_pb2.RenderingProgress(rendered=len(ctx.delivered), total=len(job.items),
                                                   portrait=portrait),
        )

    async def _save_records(self, ctx: JobContext) -> None:
        """The records of every portrait delivered so far, in the job's item order. Saved with each portrait: a job
        that ends before the others (cancelled, a later style refused) leaves each delivered one renderable again."""
        async with ctx.records_saving:
            position = item_position(ctx.job)
            await save_records(self.sealed, ctx.job, sorted(ctx.records, key=lambda r: position[r.portrait_id]))

    async def _render_when_triton_is_up(self, ctx: JobContext, request: RenderRequest) -> np.ndarray:
        attempt = 0
        while True:
            if attempt and ctx.cancelled():  # cancelled or deleted while Triton was away: its adapter stays here
                raise OrderCancelled
            try:
                return await render_via_triton(self.triton_url, request, shipping=ctx.shipping,
                                               stopped=ctx.cancelled)
            except AdapterWithdrawn as error:
                raise OrderCancelled from error
            except TritonUnavailable as error:
                delay = TRITON_RETRY_S[min(attempt, len(TRITON_RETRY_S) - 1)]
                log.warning("Triton unavailable (%s); retrying in %.0f s", error, delay)
                await asyncio.sleep(delay)
                attempt += 1
            except RenderRejected as error:
                raise PermanentJobError(f"Triton refused the request: {error}") from error
