"""Rows of the real-size render bench (bench/render_real_size.py): one measurement each, in-process in a
child process of its own (bench/render.py --child: a slow torch.compile can be cut off at its time box,
memory starts clean) or through a real tritonserver, and each row's first image kept to compare with
eager's (the drift a faster mode or the served path adds)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.train_real_size import log_progress, sync_device, unet_config
from services.renderer.unet_modes import COMPILE_ENV, UNET_MODES

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_REPOSITORY = REPO_ROOT / "services" / "renderer" / "model_repository"
TRITON_MODEL = "portrait_diffusion"
PROFILED_STEPS = 4
PROMPT = "half-body portrait photo of sks person, soft studio lighting"
SUBJECT_GUIDANCES = (6.5, 7.0, 6.0, 5.5)  # the catalogue's (services/common/styles.json)


def image_side(model: str, tiny: bool) -> int:
    return unet_config(model, tiny)["sample_size"] * 8


def renderer_mode(mode: str) -> str:
    """A bench mode's STUDIO_RENDER_COMPILE name ("eager" is the renderer's "")."""
    return "" if mode == "eager" else mode


def _render(pipe, batch: int, side: int, steps: int, seed: int = 0, decode: bool = True):
    """uint8 images, converted as the renderer converts them (to_uint8), or latents when not `decode`."""
    import torch

    from services.renderer.pipeline import to_uint8

    generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(batch)]
    with torch.inference_mode():
        result = pipe(prompt=[PROMPT] * batch, negative_prompt=["blurry"] * batch, num_inference_steps=steps,
                      guidance_scale=6.0, width=side, height=side, generator=generators,
                      output_type="pt" if decode else "latent").images
    return to_uint8(result) if decode else result


def _render_subjects(renderer, loras: list[bytes], batch: int, side: int, steps: int, seed: int = 0) -> list:
    """A batch whose images cycle through the subjects (as Triton's batcher mixes concurrent orders), through
    render_batch: an eager renderer splits it into one pipeline call per subject, a batched one does not."""
    from services.renderer.pipeline import BatchItem, RenderParams

    items = [BatchItem(RenderParams(**_image(index, loras, steps, side, seed + index)), *_subject(index, loras))
             for index in range(batch)]
    return renderer.render_batch(items)


def _image(index: int, loras: list[bytes], steps: int, side: int, seed: int) -> dict:
    """What image `index` of a batch asks for, in-process (RenderParams) and through Triton (RenderRequest) alike.
    Its guidance: 6.0 for one subject; several subjects order different styles, whose guidance differs (the
    catalogue's 5.5 to 7.0), as Triton's batches mix them."""
    guidance = 6.0 if len(loras) == 1 else SUBJECT_GUIDANCES[index % len(loras) % len(SUBJECT_GUIDANCES)]
    return {"prompt": PROMPT, "negative_prompt": "blurry", "seed": seed, "steps": steps, "guidance": guidance,
            "width": side, "height": side}


def _subject(index: int, loras: list[bytes]) -> tuple[str, bytes]:
    """Image `index`'s adapter id and bytes: one subject ("bench") or several in turn."""
    return ("bench", loras[0]) if len(loras) == 1 else (f"subject-{index % len(loras)}", loras[index % len(loras)])


def measure_in_process(folder: Path, model: str, mode: str, batch: int, steps: int, device: str, tiny: bool,
                       loras: list[Path], profile: bool = False) -> dict:
    """One child's work: load the saved model with its LoRA (or several subjects' LoRAs, mixed in each batch),
    compile as `mode` says, time renders; with `profile`, where the device time of PROFILED_STEPS denoising
    steps goes (bench/kernel_profile.py; several subjects or a whole-UNet compile, rendered through render_batch:
    with the decode)."""
    from services.renderer.pipeline import PortraitRenderer, load_pipeline

    pipe = load_pipeline(folder)
    data = [lora.read_bytes() for lora in loras]
    renderer = PortraitRenderer(pipe, adapter_cache_size=max(8, len(data)), compile_mode=renderer_mode(mode))
    side = image_side(model, tiny)
    serving = None
    if len(data) == 1:
        renderer.adapters.activate("bench", data[0])
        serving = serving_call(renderer, data[0], batch, side, steps)
    # A whole-UNet compile keys on the timestep's shape: the plain pipeline's scalar would compile a second graph, not
    # the one Triton's execute uses (a timestep per row), and leave the inductor cache cold for Triton's load.
    plain = serving is not None and UNET_MODES[renderer_mode(mode)].whole is None

    def render(seed: int, render_steps: int = steps, decode: bool = True):
        if plain:
            return _render(pipe, batch, side, render_steps, seed, decode)
        if serving is not None:
            return serving(render_steps)
        return _render_subjects(renderer, data, batch, side, render_steps, seed)

    started = time.perf_counter()
    for _ in range(2):  # warm-up (and compilation, CUDA graph capture)
        images = render(0)
    sync_device(device)
    warmup_s = time.perf_counter() - started
    # Compared with eager's by the parent, in 0..1 as the Triton rows save theirs.
    np.save(first_image_path(loras[0].parent, model, mode), images[0].astype(np.float32) / 255)
    seconds = ms_per_call(render, device) / 1000
    result = {"images_per_s": batch / seconds, "warmup_s": warmup_s}
    if len(data) == 1 or renderer.unet_mode.batched_adapters:  # the row's calls decode its whole batch at once
        result["decode_ms"] = decode_ms(pipe, batch, side, device)
    if serving is not None:
        result.update(serving_figures(serving, render if plain else None, device))
    if profile:  # denoising only, a few steps: what the modes change, without a trace of millions of events
        from bench.kernel_profile import profile_render

        result["profile"] = profile_render(lambda: render(0, PROFILED_STEPS, decode=False), device)
    return result


def decode_ms(pipe, batch: int, side: int, device: str) -> float:
    """Milliseconds the VAE takes to decode the row's batch, as the pipeline calls it: the largest part of a call
    outside the denoising loop, which of the UNet modes only a whole-UNet compile speeds up (it compiles the decoder
    too)."""
    import torch

    latent_side = side // int(pipe.vae_scale_factor)
    latents = torch.randn(batch, pipe.vae.config.latent_channels, latent_side, latent_side, device=pipe.device,
                          dtype=pipe.vae.dtype) / pipe.vae.config.scaling_factor
    with torch.inference_mode():
        pipe.vae.decode(latents, return_dict=False)  # a compiled decoder compiles here if the renders did not
        return ms_per_call(lambda _: pipe.vae.decode(latents, return_dict=False), device)


def serving_call(renderer, lora: bytes, batch: int, side: int, steps: int) -> Callable[..., list]:
    """A render_batch of the row's batch, as Triton's execute calls it (one subject, its LoRA by token once loaded):
    against the row's plain pipeline call, what the renderer adds around the pipeline (adapter activation, row
    schedulers and guidance); against Triton's execute, what the python backend's stub adds."""
    from services.renderer.adapter_reference import adapter_token
    from services.renderer.pipeline import BatchItem, RenderParams

    token = adapter_token(lora)

    def call(render_steps: int = steps) -> list:
        items = [BatchItem(RenderParams(**_image(index, [lora], render_steps, side, index)), "bench", b"", token)
                 for index in range(batch)]
        images = renderer.render_batch(items)
        failures = [image for image in images if isinstance(image, Exception)]
        assert not failures, failures[0]
        return images

    return call


def serving_figures(serving: Callable[[], list], plain_render: Callable | None, device: str) -> dict:
    """When the row timed the plain pipeline (`plain_render`), render_batch's milliseconds a call beside it (else the
    row's own call was render_batch); on a GPU, where a call waits on it, through render_batch and plain."""
    figures: dict = {}
    if plain_render is not None:
        serving()  # a graphed mode captures the row timesteps' signature here
        figures["render_batch_ms"] = ms_per_call(lambda _: serving(), device)
    if device == "cuda":
        figures["syncs"] = {"render_batch": synchronisations(serving)}
        if plain_render is not None:
            figures["syncs"]["pipeline"] = synchronisations(lambda: plain_render(0))
    return figures


def ms_per_call(call: Callable[[int], object], device: str, repeats: int = 3) -> float:
    """Milliseconds a call of `call(repeat)` (the repeat's index: a seed where it takes one), mean of `repeats`."""
    sync_device(device)
    started = time.perf_counter()
    for repeat in range(repeats):
        call(repeat)
    sync_device(device)
    return 1000 * (time.perf_counter() - started) / repeats


def synchronisations(call: Callable[[], object]) -> dict[str, int]:
    """Where one call made the host wait for the GPU (torch's CUDA sync debug mode), by source line, most first. A
    render needs one (its images to the host); one per denoising step would leave the GPU idle each step while the
    host prepares the next."""
    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            call()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    lines = Counter(f"{Path(warning.filename).name}:{warning.lineno}" for warning in caught
                    if "synchroniz" in str(warning.message))
    return dict(lines.most_common())


def first_image_path(work: Path, model: str, mode: str) -> Path:
    return work / f"{model}-{mode}-first-image.npy"


def difference_from_eager(work: Path, model: str, mode: str) -> float | None:
    """Mean |difference| of the first image (seed 0) from eager in-process's, in levels of 255: is the
    faster mode, or the served path (`<mode>-triton`), still drawing the same picture (FP8 and compiled
    kernels round differently, a batch of other size too; NaNs or a broken capture would show)."""
    eager, this = first_image_path(work, model, "eager"), first_image_path(work, model, mode)
    if mode == "eager" or not (eager.is_file() and this.is_file()):
        return None
    return float(np.nan_to_num(np.abs(np.load(this) - np.load(eager)), nan=1.0).mean() * 255)


def child(argv: list[str]) -> None:
    log_progress()  # a cold compile's start and end: a row cut off by its time box says where it was
    folder, model, mode, batch, steps, device, loras = argv[:7]
    result = measure_in_process(Path(folder), model, mode, int(batch), int(steps), device, "--tiny-shapes" in argv,
                                [Path(lora) for lora in loras.split(",")], profile="--profile" in argv)
    print(json.dumps(result), flush=True)


def model_repository_batching(work: Path, batch: int) -> Path:
    """A copy of the Triton model repository whose max_batch_size is `batch`: with every request in flight,
    Triton then forms in-process's batches (with its own 8 it batched SDXL's 4 into 8)."""
    target = work / f"model-repository-batch-{batch}"
    if not target.exists():
        shutil.copytree(MODEL_REPOSITORY, target, ignore=shutil.ignore_patterns("__pycache__"))
        config = target / TRITON_MODEL / "config.pbtxt"
        config.write_text(re.sub(r"(?m)^max_batch_size: \d+$", f"max_batch_size: {batch}", config.read_text()))
    return target


async def measure_triton(folder: Path, work: Path, model: str, mode: str, batch: int, steps: int, tiny: bool,
                         loras: list[bytes], timeout_s: float) -> dict:
    """The same renders through tritonserver, as a busy service sees them: after a warm-up wave, 3 × batch
    requests in flight at once, so the next batch waits in Triton's queue while one renders (one wave at
    a time left the GPU idle between waves and counted that idle time as serving overhead). Batches of
    at most `batch` (model_repository_batching) compare with in-process's."""
    import os

    from services.common.launchers.triton import SERVED_COUNTER, start_triton
    from services.renderer.static_shapes import BUCKETS_ENV, WARM_UP_SIZES_ENV
    from services.renderer.triton_client import AdapterShipping, RenderRequest, render_via_triton

    side = image_side(model, tiny)
    os.environ[COMPILE_ENV] = renderer_mode(mode)
    # The instance warms up at the size these requests render, and a whole-UNet compile at the sizes its pipeline
    # calls take: every batch of this row is full, and each more size would add a cold compile to the load.
    os.environ[WARM_UP_SIZES_ENV], os.environ[BUCKETS_ENV] = f"{side}x{side}", serving_buckets(mode, batch, len(loras))
    load_started = time.perf_counter()  # a compiled instance compiles while loading (warm_up)
    server = await start_triton(model_repository_batching(work, batch), work / f"triton-{model}-{mode}",
                                work / "logs", base_model=folder, ready_timeout=timeout_s)
    load_s = time.perf_counter() - load_started
    requests = []
    for index in range(batch * 3):
        adapter_id, adapter = _subject(index % batch, loras)
        requests.append(RenderRequest(adapter_id=adapter_id, adapter=adapter,
                                      **_image(index % batch, loras, steps, side, index)))

    shipping = AdapterShipping()  # as the render worker: the LoRAs go by token once the instance has them

    async def in_flight(batch_requests: list[RenderRequest]) -> list[np.ndarray]:
        return await asyncio.gather(*(render_via_triton(server.grpc_url, r, timeout_s=timeout_s, shipping=shipping)
                                      for r in batch_requests))

    try:
        warm_started = time.perf_counter()
        await in_flight(requests[:batch])
        warmup_s = time.perf_counter() - warm_started
        before = await asyncio.to_thread(server.executions, TRITON_MODEL)
        served = await asyncio.to_thread(server.counter, SERVED_COUNTER, TRITON_MODEL)
        started = time.perf_counter()
        images = await in_flight(requests)
        wall_s = time.perf_counter() - started
        await asyncio.to_thread(server.served_reaching, TRITON_MODEL, served + len(requests))
        after = await asyncio.to_thread(server.executions, TRITON_MODEL)
        # Seed 0 with the same prompt, LoRA and settings as eager in-process's first image.
        np.save(first_image_path(work, model, f"{mode}-triton"), images[0].astype(np.float32) / 255)
        return {"images_per_s": len(requests) / wall_s, "warmup_s": warmup_s, "load_s": load_s,
                **serving_breakdown(before, after, wall_s)}
    finally:
        server.stop()


def serving_buckets(mode: str, batch: int, subjects: int) -> str:
    """STUDIO_RENDER_BATCH_BUCKETS for a Triton row: the row's batch, and where the mode renders each subject in a
    pipeline call of its own, a subject's share of a batch (its images cycle through the subjects). Padded up to the
    whole batch instead, each of those calls would render `subjects` times the images."""
    split = subjects > 1 and not UNET_MODES[renderer_mode(mode)].batched_adapters
    return ",".join(str(size) for size in sorted({batch, -(-batch // subjects)} if split else {batch}))


def serving_breakdown(before: dict[str, float], after: dict[str, float], wall_s: float) -> dict[str, float]:
    """Where a timed wave's wall time went, from TritonServer.executions before and after it: Triton's mean batch (to
    compare with in-process's), the share of the wall the model was running (the rest went between executions:
    the batcher, the transfers, the client) and how long one execute took (against an in-process call of the
    same batch, what the serving adds inside the model: the python backend, the renderer around the pipeline)."""
    spent = {key: after[key] - before[key] for key in after}
    if not spent["executions"]:
        return {}
    return {"mean_batch": spent["requests"] / spent["executions"], "model_busy": spent["model_s"] / wall_s,
            "execute_ms": 1000 * spent["execute_s"] / spent["executions"]}


def triton_row(folder: Path, work: Path, model: str, mode: str, batch: int, steps: int, tiny: bool,
               loras: list[bytes], timeout_s: float) -> dict:
    """measure_triton, or why it failed with the end of tritonserver's log: the other rows still run."""
    try:
        return asyncio.run(measure_triton(folder, work, model, mode, batch, steps, tiny, loras, timeout_s))
    except Exception as error:  # noqa: BLE001 - a bench row reports any failure and the run goes on
        log = work / "logs" / "tritonserver.log"
        lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
        return {"error": failure_text(error, lines)}


def failure_text(error: Exception, log_lines: list[str]) -> str:
    """A failed Triton row's error, one line: Triton's error lines (they start with E<date>; a model that failed
    to load says UNAVAILABLE in its table), else the last lines of the log (a load still compiling when the
    time box ran out: where it was), which a ProcessStartError carries after its first line."""
    reasons = [line.strip(" |") for line in log_lines if line.startswith("E") or "UNAVAILABLE" in line][-5:]
    head, *tail = str(error).splitlines() or [""]
    reasons = reasons or [line.strip(" |") for line in (tail or log_lines) if line.strip(" |")][-3:]
    return f"{type(error).__name__}: {head} | {' | '.join(reasons)}"[:2000]
