"""bench/train.py's default part: the tiny model on the CPU, the bare training loop against the
trainer worker's whole job, on an embedded stack's real nats-server, vault and blob store."""

from __future__ import annotations

import asyncio
import io
import os
import tempfile
import time
from pathlib import Path

from PIL import Image
from studio.v1 import common_pb2, events_pb2, privacy_pb2, state_pb2

from services.cli.client import StudioClient
from services.cli.stack import EmbeddedStack
from services.common import topology
from services.common.basemodel import base_model_id
from services.common.blobstore import open_blob_store
from services.common.bus import Bus
from services.common.launchers.process import free_port
from services.common.vault_client import SealedStore, VaultClient
from services.common.workqueue import WorkerState
from services.trainer.training import TrainingConfig, TrainingRun
from services.trainer.worker import TrainerOptions, TrainerWorker

REPO_ROOT = Path(__file__).resolve().parent.parent
PHOTOS = Path(os.environ.get("STUDIO_FACES_DIR", REPO_ROOT.parent / "shared" / "faces")) / "lisa"
DEFAULT_STEPS = 40
REPEATS = 3
WORKER_VARIANTS = (
    ("worker, no checkpoints/validation", TrainerOptions(checkpoint_every=0, validate_every=0)),
    ("worker, checkpoint every 10, validate every 20", TrainerOptions(10, 20)),
)


def tiny_cpu(args, machine: str) -> list[dict]:
    return asyncio.run(_tiny_cpu(args.steps or DEFAULT_STEPS, machine, quiet=args.json))


async def _tiny_cpu(steps: int, machine: str, quiet: bool) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="bench-train-") as data_dir:
        stack = EmbeddedStack(data_dir=Path(data_dir), public_port=free_port())
        await stack.start()
        try:
            job, images = await _subject_job(stack, steps)
            base = stack.data_dir / "models" / "tiny"
            _bare(base, images, 2)  # warm-up: imports, first model load
            timings: dict[str, list[dict]] = {}
            for _ in range(REPEATS):  # interleaved, best of each: this machine's load varies
                for row in [_bare(base, images, steps)] + [
                    await _worker(stack, base, job, options, label) for label, options in WORKER_VARIANTS
                ]:
                    timings.setdefault(row["path"], []).append(row)
            rows = [min(runs, key=lambda row: row["seconds"]) for runs in timings.values()]
        finally:
            stack.stop()
    if not quiet:
        _print(rows, steps, machine)
    return rows


async def _subject_job(stack: EmbeddedStack, steps: int) -> tuple[events_pb2.TrainJob, list[Image.Image]]:
    client = StudioClient(stack.public_endpoint, stack.paths.api_key_file.read_text().strip())
    subject = await client.create_subject(external_ref="bench")
    photos = [(p, common_pb2.PHOTO_ROLE_REFERENCE) for p in sorted(PHOTOS.glob("*.jpg"))[:4]]
    await client.upload(subject.subject_id, photos)
    await client.close()
    bus = await Bus.connect(stack.nats.url, name="bench")
    record = await bus.kv_get(topology.SUBJECTS_BUCKET, subject.subject_id, state_pb2.SubjectRecord)
    await bus.close()
    sealed = await _sealed(stack)
    crops = sorted(record.crop_keys.values())
    images = [Image.open(io.BytesIO(await sealed.get(record.tenant_id, subject.subject_id, key,
                                                     privacy_pb2.KEY_PURPOSE_DECRYPT_CROP))).convert("RGB")
              for key in crops]
    await sealed.vault.close()
    job = events_pb2.TrainJob(
        order_id="order_bench", tenant_id=record.tenant_id, subject_id=subject.subject_id,
        base_model_id=base_model_id(stack.data_dir / "models" / "tiny"), crop_keys=crops, steps=steps, seed=7,
        lora_key=f"tenants/{record.tenant_id}/subjects/{subject.subject_id}/loras/bench.safetensors",
    )
    return job, images


async def _sealed(stack: EmbeddedStack) -> SealedStore:
    vault = VaultClient.from_token_file(stack.addresses["privacy"], stack.paths.token_file("trainer"))
    return SealedStore(await open_blob_store(f"file://{stack.data_dir / 'blobs'}"), vault)


def _bare(base: Path, images: list[Image.Image], steps: int) -> dict:
    started = time.perf_counter()
    TrainingRun(base, images, TrainingConfig.for_base_model(base, steps=steps, seed=7)).run()
    return _row("bare training loop (model load included)", steps, time.perf_counter() - started)


async def _worker(stack: EmbeddedStack, base: Path, job: events_pb2.TrainJob, options: TrainerOptions,
                  label: str) -> dict:
    bus = await Bus.connect(stack.nats.url, name="bench-worker")
    sealed = await _sealed(stack)
    worker = TrainerWorker(bus=bus, sealed=sealed, base_model=base, base_model_id=job.base_model_id,
                           state=WorkerState(), options=options)
    run = events_pb2.TrainJob()
    run.CopyFrom(job)
    run.job_id = f"train-bench-{time.monotonic_ns()}"
    run.render.job_id = f"render-{run.job_id}"  # an empty render job: the stack's renderer finishes it at once
    started = time.perf_counter()
    await worker.handle(run.SerializeToString())
    seconds = time.perf_counter() - started
    await sealed.vault.close()
    await bus.close()
    return _row(label, job.steps, seconds)


def _row(label: str, steps: int, seconds: float) -> dict:
    return {"path": label, "steps": steps, "seconds": seconds, "steps_per_s": steps / seconds}


def _print(rows: list[dict], steps: int, machine: str) -> None:
    print(f"# {machine}; tiny model, {steps} steps, batch 2, 64 px, lisa's first 4 photos; best of {REPEATS}")
    bare = rows[0]["seconds"]
    for row in rows:
        print(f"{row['path']:48} {row['seconds']:7.2f} s  {row['steps_per_s']:6.2f} steps/s  "
              f"x{row['seconds'] / bare:.2f} of the bare loop")
