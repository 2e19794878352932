"""Trainer worker: TRAIN jobs → a LoRA trained on the subject's sealed crops → sealed LoRA →
the order's render job, held for the scheduler (services/common/holding.py).

Crash safety: every `checkpoint_every` steps the run's state is sealed to the object store and
recorded in the job's TrainJobRecord; a redelivered job (its worker was killed) resumes from there.
Exactly once: the completion (LoRA, TrainingDone event, render job) is published with message ids
NATS deduplicates, and a job recorded as done is only acknowledged when it comes back, past its last attempt
too (its ack was lost): no failure is reported for a job that succeeded. Its checkpoint is dropped before
the final state is recorded, so a drop the store refused is done again when the job comes back.

Validation renders are scored by faceqa (services/trainer/faceqa_scoring.py). While faceqa is
unreachable a validation point is recorded as unscored (identity_score = training.UNSCORED, -1 in
the progress events) and training goes on; the best scored point's LoRA is delivered, or the last
step's when no point was scored.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from PIL import Image
from studio.v1 import events_pb2, faceqa_pb2_grpc, privacy_pb2, trainer_pb2

from services.common import topology
from services.common.bus import Bus
from services.common.cancellation import CancelWatch, order_cancelled
from services.common.deletion_guard import SubjectDeleted
from services.common.holding import hold
from services.common.order_events import publish_order_event
from services.common.vault_client import SealedStore
from services.common.workqueue import PermanentJobError, WorkerState
from services.trainer.faceqa_scoring import FaceQAScorer
from services.trainer.job_store import JobStore, vault_refusal
from services.trainer.modes import COMPILE_MODES, has_cuda
from services.trainer.scoring import InProcessScorer
from services.trainer.training import (
    ResumeMismatch,
    RunState,
    TrainedLora,
    TrainingCancelled,
    TrainingConfig,
    TrainingProgress,
    TrainingRun,
)
from services.trainer.validation import IdentityValidator

log = logging.getLogger(__name__)
PROGRESS_EVENTS_PER_JOB = 20
State = trainer_pb2.TrainJobState


@dataclass(frozen=True)
class TrainerOptions:
    checkpoint_every: int = 50
    validate_every: int = 100
    device: str | None = None
    # STUDIO_TRAIN_COMPILE=full|regional|graphed (1 = full). torch.compile pays off only with a
    # persistent TORCHINDUCTOR_CACHE_DIR: a cold full compile of the SD1.5 UNet's step took over two
    # minutes on an H200, a warm one 18 s (bench/train.py); "regional" compiles each repeated block
    # once; "graphed" compiles nothing and replays CUDA graphs (GPU workers only).
    compile_mode: str = "off"

    @classmethod
    def from_env(cls) -> TrainerOptions:
        device = os.environ.get("STUDIO_TRAIN_DEVICE") or None
        compile_mode = compile_mode_from_env(os.environ.get("STUDIO_TRAIN_COMPILE", ""))
        if compile_mode == "graphed" and not has_cuda(device):
            raise SystemExit(f"STUDIO_TRAIN_COMPILE=graphed replays CUDA graphs; this worker's device is "
                             f"{device or 'cpu (no CUDA GPU found)'}")
        return cls(
            checkpoint_every=int(os.environ.get("STUDIO_TRAIN_CHECKPOINT_EVERY", "50")),
            validate_every=int(os.environ.get("STUDIO_TRAIN_VALIDATE_EVERY", "100")),
            device=device,
            compile_mode=compile_mode,
        )


@dataclass
class TrainerWorker:
    bus: Bus
    sealed: SealedStore
    base_model: Path
    base_model_id: str
    state: WorkerState
    options: TrainerOptions = field(default_factory=TrainerOptions)
    # Scores validation renders (the service always passes it); None: dlib in this process, for
    # tools that run the worker without a faceqa (bench/train_tiny.py).
    faceqa: faceqa_pb2_grpc.FaceQAStub | None = None

    def __post_init__(self) -> None:
        self.jobs = JobStore(self.bus, self.sealed, self.base_model_id)

    async def handle(self, payload: bytes) -> None:
        job = events_pb2.TrainJob.FromString(payload)
        try:
            await self._run(job)
        except SubjectDeleted:  # its purge removes what the job left; nothing more is written for it
            log.info("the subject of training job %s is being deleted; dropping the job", job.job_id)

    async def _run(self, job: events_pb2.TrainJob) -> None:
        self.sealed.guard.check(job.subject_id)
        record = await self.jobs.record(job)
        if record.state == State.TRAIN_JOB_STATE_DONE:
            log.info("job %s already completed; acknowledging the redelivery", job.job_id)
            return
        if record.state in (State.TRAIN_JOB_STATE_CANCELLED, State.TRAIN_JOB_STATE_FAILED):
            return
        if await order_cancelled(self.bus, job.order_id):
            await self._cancelled(job, record)
            return
        if record.HasField("completion"):  # the LoRA was stored; announcing it was cut short
            log.info("job %s trained before; announcing it again", job.job_id)
            await self._announce(job, record.completion)
            return
        if job.base_model_id != self.base_model_id:
            raise PermanentJobError(f"job wants base model {job.base_model_id}; this worker has {self.base_model_id}")
        if not job.crop_keys:
            raise PermanentJobError("no training crops")
        images = await self.jobs.crops(job)
        resume = await self.jobs.load_checkpoint(job, record)
        record.state, record.worker_id = State.TRAIN_JOB_STATE_RUNNING, self.state.worker_id
        record.attempts += 1
        await self.jobs.save_record(record)
        log.info("job %s: training %s steps on %d crops from step %d (attempt %d)", job.job_id, job.steps or "default",
                 len(images), resume.step if resume else 0, record.attempts)
        try:
            async with CancelWatch(self.bus, job.order_id, job.subject_id) as watch:
                lora = await self._train_in_thread(job, images, resume, watch)
        except ResumeMismatch as error:
            step = record.checkpoint_step
            raise PermanentJobError(f"checkpoint of step {step} cannot be resumed: {error}") from error
        except TrainingCancelled:
            await self._cancelled(job, await self.jobs.record(job))
            return
        except grpc.aio.AioRpcError as error:  # sealing a checkpoint: the subject may be deleted meanwhile
            raise vault_refusal(error) from error
        try:
            await self._complete(job, lora)
        except grpc.aio.AioRpcError as error:
            raise vault_refusal(error) from error

    async def on_failure(self, payload: bytes, reason: str) -> None:
        job = events_pb2.TrainJob.FromString(payload)
        if self.sealed.guard.is_deleted(job.subject_id):
            return  # the order went with its subject: no record of the job comes back
        record = await self.jobs.record(job)
        if await self._ended_before(job, record):
            return
        record.state, record.reason = State.TRAIN_JOB_STATE_FAILED, reason
        await self.jobs.drop_checkpoint(job)
        await self.jobs.save_record(record)
        await publish_order_event(
            self.bus, job.order_id, job.tenant_id, job.subject_id,
            failed=events_pb2.OrderFailed(stage="training", reason=reason),
        )

    async def _ended_before(self, job: events_pb2.TrainJob, record: trainer_pb2.TrainJobRecord) -> bool:
        """A job given up on may have succeeded (or been cancelled) on its last delivery, its ack lost: it is handled
        as _run handles such a job delivered again, and no failure is reported."""
        if record.state in (State.TRAIN_JOB_STATE_DONE, State.TRAIN_JOB_STATE_CANCELLED):
            log.info("job %s ended (%s) before its deliveries ran out; not failing it", job.job_id,
                     State.Name(record.state))
            return True
        if record.HasField("completion"):
            log.info("job %s trained before its deliveries ran out; announcing it again", job.job_id)
            await self._announce(job, record.completion)
            return True
        return False

    async def _train_in_thread(self, job: events_pb2.TrainJob, images: list[Image.Image], resume: RunState | None,
                               watch: CancelWatch) -> TrainedLora:
        """The training thread; a worker shutting down stops it at its next step before handing the job back, so
        the job never trains twice at once (here and on the worker that takes it next)."""
        training = asyncio.ensure_future(
            asyncio.to_thread(self._train, job, images, resume, watch, asyncio.get_running_loop()))
        try:
            return await asyncio.shield(training)
        except asyncio.CancelledError:
            watch.event.set()
            await asyncio.wait([training])
            if not training.cancelled():
                training.exception()  # retrieved: the thread's TrainingCancelled is this shutdown's doing
            raise

    def _train(self, job: events_pb2.TrainJob, images: list[Image.Image], resume: RunState | None,
               watch: CancelWatch, loop: asyncio.AbstractEventLoop) -> TrainedLora:
        """Runs on a worker thread; talks to the event loop only through `loop`."""
        config = TrainingConfig.for_base_model(
            self.base_model, steps=job.steps or None, seed=job.seed, checkpoint_every=self.options.checkpoint_every,
            validate_every=self.options.validate_every, compile_mode=self.options.compile_mode,
        )
        run = TrainingRun(self.base_model, images, config, self.options.device, resume=resume)
        scorer = FaceQAScorer(self.faceqa, images, loop) if self.faceqa else InProcessScorer.from_crops(images)
        validator = IdentityValidator(scorer, run.resolution, config.subject_token, seed=job.seed)

        def save(state: RunState) -> None:
            asyncio.run_coroutine_threadsafe(self.jobs.save_checkpoint(job, state), loop).result()

        report = self._progress_reporter(job, loop, resume.step if resume else 0)
        return run.run(progress=report, should_stop=watch.stopped, on_checkpoint=save, validator=validator)

    async def _complete(self, job: events_pb2.TrainJob, lora: TrainedLora) -> None:
        done = events_pb2.TrainingDone(
            base_model_id=lora.base_model_id, seconds=lora.seconds, final_loss=lora.final_loss,
            lora_key=job.lora_key, best_step=lora.best_step, best_identity_score=lora.best_identity_score,
            validation=[_point(p) for p in lora.validation],
        )
        async with self.sealed.writing(job.subject_id):  # a deletion's purge waits for the LoRA and its record
            await self.sealed.put(job.tenant_id, job.subject_id, job.lora_key, lora.safetensors_bytes,
                                  privacy_pb2.KEY_PURPOSE_ENCRYPT_LORA)
            record = await self.jobs.record(job)
            record.completion.CopyFrom(done)
            await self.jobs.save_record(record)
        await self._announce(job, done)
        log.info("job %s done: %.1f s of training, best step %d", job.job_id, lora.seconds, lora.best_step)

    async def _announce(self, job: events_pb2.TrainJob, done: events_pb2.TrainingDone) -> None:
        """TrainingDone, the held render job, the DONE record. Announced again (a job delivered again), NATS drops the
        repeats within its dedup window; after it, the finished order's view ignores the second TrainingDone, and a
        render job that finished is announced again, not rendered again (services/renderer/worker.py)."""
        self.sealed.guard.check(job.subject_id)  # deleted while the LoRA was stored: its purge takes it
        await self.bus.publish(topology.order_events_subject(job.order_id), _event(job, trained=done),
                               msg_id=f"{job.job_id}.trained")
        # Held for the scheduler; the job id makes a redelivered training job's render job a duplicate.
        await hold(self.bus, topology.RENDER_QUEUE, job.render)
        # Dropped before the final state: a rerun after a failed drop sees no DONE yet, and drops it then.
        await self.jobs.drop_checkpoint(job)
        record = await self.jobs.record(job)
        record.state = State.TRAIN_JOB_STATE_DONE
        await self.jobs.save_record(record)

    async def _cancelled(self, job: events_pb2.TrainJob, record: trainer_pb2.TrainJobRecord) -> None:
        """Dropped: ingest already told the order's watchers; only our own leftovers go."""
        self.sealed.guard.check(job.subject_id)  # stopped by a deletion: its purge takes the leftovers
        log.info("order %s was cancelled; dropping training job %s", job.order_id, job.job_id)
        await self.jobs.drop_checkpoint(job)  # before the final state, as in _announce
        record.state = State.TRAIN_JOB_STATE_CANCELLED
        await self.jobs.save_record(record)

    def _progress_reporter(self, job: events_pb2.TrainJob, loop: asyncio.AbstractEventLoop, resumed_from: int):
        every = max(1, job.steps // PROGRESS_EVENTS_PER_JOB)
        validations_seen = [0]

        def report(progress: TrainingProgress) -> None:  # called on the training thread
            new_validation = len(progress.validation) > validations_seen[0]
            if not (new_validation or progress.step % every == 0 or progress.step == progress.total_steps):
                return
            validations_seen[0] = len(progress.validation)
            scored = [p for p in progress.validation if p.scored]
            best = max(scored, key=lambda p: (p.identity_score, p.step), default=None)
            training = events_pb2.TrainingProgress(
                step=progress.step, total_steps=progress.total_steps, loss=progress.loss,
                eta_seconds=round(progress.eta_seconds), validation=[_point(p) for p in progress.validation],
                best_step=best.step if best else 0, resumed_from_step=resumed_from,
            )
            asyncio.run_coroutine_threadsafe(
                publish_order_event(self.bus, job.order_id, job.tenant_id, job.subject_id, training=training), loop
            )

        return report


def compile_mode_from_env(value: str) -> str:
    """STUDIO_TRAIN_COMPILE: empty or 0 = off, 1 = full, else a mode name; a typo stops the worker."""
    mode = {"": "off", "0": "off", "1": "full"}.get(value.strip().lower(), value.strip().lower())
    if mode not in COMPILE_MODES:
        raise SystemExit(f"STUDIO_TRAIN_COMPILE={value!r}: use one of {', '.join(COMPILE_MODES)}")
    return mode


def _point(point) -> events_pb2.ValidationPoint:
    return events_pb2.ValidationPoint(step=point.step, identity_score=point.identity_score, loss=point.loss)


def _event(job: events_pb2.TrainJob, **kind) -> events_pb2.OrderEvent:
    event = events_pb2.OrderEvent(order_id=job.order_id, tenant_id=job.tenant_id, subject_id=job.subject_id, **kind)
    event.at.GetCurrentTime()
    return event
