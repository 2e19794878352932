"""Rendering benchmark: images/s through Triton against the same pipeline called in-process.

Default: the tiny model on the CPU. The same requests (the studio-frontal-soft preset, random
non-zero LoRAs, one per subject, subjects interleaved as concurrent orders arrive) are rendered (a) in
this process by PortraitRenderer.render_batch, in arrival order in batches of up to Triton's
max_batch_size, and (b) through a real tritonserver over gRPC, RENDER_CONCURRENCY requests in flight per
subject as the render worker sends them, so the dynamic batcher batches them. The ratio Triton /
in-process is the serving overhead (gRPC, the python backend's shared memory, the batcher's queue
delay), with 1 and 4 subjects, for each of --modes (default eager and batched: with 4 subjects an eager
instance splits each batch into one pipeline call per subject, a batched one renders it in one call).

--real-size: random-weight SD1.5-size (512 px) and SDXL-size (1024 px) pipelines on a GPU
(bench/render_real_size.py): images/s and FLOP utilisation (torch.utils.flop_counter against the
GPU's bf16 dense peak), eager bf16 against the eager UNet replayed as CUDA graphs, torch.compile and
compiled CUDA graphs (each optionally with FP8 transformer linears), in-process and through Triton, in
one run. Reference, one H200, eager bf16, 25 steps: SD1.5 512 px batch 8 = 8.2 images/s;
SDXL 1024 px batch 4 = 1.9 images/s. Target: at least 2x eager, through Triton.

    python bench/render.py [--images 16] [--steps 4] [--repeats 2] [--modes eager batched] [--json]
    python bench/render.py --real-size [--modes eager graphed-fp8 graphed cuda-graphs] [--dtype bf16]
                           [--budget-s 480]
    python bench/render.py --real-size --device cpu --tiny-shapes     # CPU smoke run of that path
    python bench/render.py --real-size --device cpu --flops-only      # FLOPs per image, on any machine
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.render_rows import MODEL_REPOSITORY, renderer_mode  # noqa: E402
from services.common.machine import describe_machine  # noqa: E402
from services.renderer.unet_modes import COMPILE_ENV, UNET_MODES  # noqa: E402

SUBJECT_COUNTS = (1, 4)
MAX_BATCH = 8  # the model's max_batch_size (model_repository/portrait_diffusion/config.pbtxt)
RENDER_MODES = ("eager", *(mode for mode in UNET_MODES if mode))
# Requests in flight per subject: the render worker's default until it kept two of Triton's batches in flight
# (bench/render_in_flight.py); the figures in bench/render_results.md were measured so.
RENDER_CONCURRENCY = 4
# Tiny CPU run: eager (PEFT adapters, one pipeline call per subject of a batch) against batched (every
# subject of a batch in one call, services/renderer/batched_adapters.py).
TINY_MODES = ("eager", "batched")


def bench_requests(base_model: Path, loras: list[bytes], subjects: int, images: int, steps: int) -> list:
    from services.common.basemodel import read_resolution
    from services.common.styles import catalogue
    from services.renderer.triton_client import RenderRequest

    preset = catalogue()["studio-frontal-soft"]
    width, height = preset.size_for(read_resolution(base_model))
    return [
        RenderRequest(prompt=preset.prompt_for(), negative_prompt=preset.negative_prompt,
                      adapter_id=f"bench-subject-{subject}", adapter=loras[subject], seed=index, steps=steps,
                      guidance=preset.guidance, width=width, height=height, scheduler=preset.scheduler)
        for index in range(images // subjects) for subject in range(subjects)
    ]


def in_process_seconds(renderer, requests: list) -> float:
    """The requests in arrival order, in batches of Triton's max_batch_size: what the dynamic batcher hands
    an instance when every request is in flight (several subjects per batch once there are several)."""
    from services.renderer.pipeline import BatchItem, RenderParams

    started = time.perf_counter()
    for start in range(0, len(requests), MAX_BATCH):
        items = [BatchItem(RenderParams(prompt=r.prompt, negative_prompt=r.negative_prompt, seed=r.seed,
                                        steps=r.steps, guidance=r.guidance, width=r.width, height=r.height,
                                        scheduler=r.scheduler), r.adapter_id, r.adapter)
                 for r in requests[start : start + MAX_BATCH]]
        assert all(not isinstance(image, Exception) for image in renderer.render_batch(items))
    return time.perf_counter() - started


async def triton_seconds(url: str, requests: list, subjects: int, shipping=None, in_flight: int = 0) -> float:
    """The requests through Triton, `in_flight` at once (default RENDER_CONCURRENCY per subject). `shipping`: an
    AdapterShipping, to send each LoRA by token once the instance has it, as the render worker does; None sends it
    every time."""
    from services.renderer.triton_client import render_via_triton

    slots = asyncio.Semaphore(in_flight or RENDER_CONCURRENCY * subjects)

    async def one(request) -> None:
        async with slots:
            await render_via_triton(url, request, timeout_s=600, shipping=shipping)

    started = time.perf_counter()
    await asyncio.gather(*(one(request) for request in requests))
    return time.perf_counter() - started


@asynccontextmanager
async def tiny_triton(work: Path, mode: str) -> AsyncIterator[tuple]:
    """A tritonserver serving the tiny model (written to `work`) in `mode`: (the server, the model's folder)."""
    import os

    from services.common.launchers.triton import start_triton
    from services.common.tinymodel import write_tiny_model

    os.environ[COMPILE_ENV] = renderer_mode(mode)  # Triton's instance reads it when it loads
    base_model = write_tiny_model(work / "tiny")
    server = await start_triton(MODEL_REPOSITORY, work / "triton", work / "logs", base_model=base_model)
    try:
        yield server, base_model
    finally:
        server.stop()


async def tiny_cpu(args) -> list[dict]:
    import os

    from services.common.tinymodel import write_tiny_model
    from services.renderer.random_lora import make_lora

    modes = args.modes or list(TINY_MODES)
    print(f"# {describe_machine(with_torch=True)}")
    print(f"# tiny model, {args.images} images per run (best of {args.repeats}), {args.steps} steps; in-process "
          f"render_batch (arrival order, batches of <= {MAX_BATCH}) vs tritonserver over gRPC "
          f"({RENDER_CONCURRENCY} in flight per subject); modes {', '.join(modes)}")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        base_model = write_tiny_model(Path(work) / "tiny")
        loras = [make_lora(base_model, seed=subject + 1) for subject in range(max(SUBJECT_COUNTS))]
        for mode in modes:
            os.environ[COMPILE_ENV] = renderer_mode(mode)  # Triton's instance reads it when it loads
            rows += await _tiny_mode_rows(args, mode, base_model, loras, Path(work) / mode)
    _print_tiny_comparison(rows)
    return rows


async def _tiny_mode_rows(args, mode: str, base_model: Path, loras: list[bytes], work: Path) -> list[dict]:
    from services.common.launchers.triton import start_triton
    from services.renderer.pipeline import PortraitRenderer, load_pipeline
    from services.renderer.triton_client import AdapterShipping

    renderer = PortraitRenderer(load_pipeline(base_model), adapter_cache_size=max(SUBJECT_COUNTS),
                                compile_mode=renderer_mode(mode))
    triton = await start_triton(MODEL_REPOSITORY, work / "triton", work / "logs", base_model=base_model)
    rows = []
    try:
        for subjects in SUBJECT_COUNTS:
            requests = bench_requests(base_model, loras, subjects, args.images, args.steps)
            warm = bench_requests(base_model, loras, subjects, subjects, args.steps)
            in_process_seconds(renderer, warm)
            await triton_seconds(triton.grpc_url, warm, subjects, AdapterShipping())
            local, served = float("inf"), float("inf")
            for _ in range(args.repeats):  # alternate, keep each side's best: the host is shared
                local = min(local, in_process_seconds(renderer, requests))
                served = min(served, await triton_seconds(triton.grpc_url, requests, subjects, AdapterShipping()))
            rows.append({"mode": mode, "subjects": subjects, "images": len(requests),
                         "in_process_images_per_s": len(requests) / local,
                         "triton_images_per_s": len(requests) / served, "triton_over_in_process": local / served})
            print(_tiny_line(rows[-1]), flush=True)
    finally:
        triton.stop()
    return rows


def _print_tiny_comparison(rows: list[dict]) -> None:
    """Each mode against eager, same subjects, same path: what batching subjects together gives."""
    eager = {row["subjects"]: row for row in rows if row["mode"] == "eager"}
    for row in rows:
        base = eager.get(row["subjects"])
        if row["mode"] != "eager" and base:
            print(f"# {row['mode']} vs eager, {row['subjects']} subject(s): in-process x"
                  f"{row['in_process_images_per_s'] / base['in_process_images_per_s']:.2f}, through Triton x"
                  f"{row['triton_images_per_s'] / base['triton_images_per_s']:.2f}")


def _tiny_line(row: dict) -> str:
    overhead = 1 / row["triton_over_in_process"] - 1
    return (f"{row['mode']:8} {row['subjects']} subject(s): in-process {row['in_process_images_per_s']:6.2f} img/s, "
            "through Triton "
            f"{row['triton_images_per_s']:6.2f} img/s, ratio Triton/in-process {row['triton_over_in_process']:.2f} "
            f"(serving overhead {overhead:+.0%} of in-process time)")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        from bench.render_rows import child

        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16, help="images per run (tiny CPU mode)")
    parser.add_argument("--repeats", type=int, default=2, help="tiny mode: runs per side, alternating; best kept")
    parser.add_argument("--steps", type=int, default=0, help="denoising steps (default: tiny 4, real-size 25)")
    parser.add_argument("--real-size", action="store_true")
    parser.add_argument("--device", default="cuda", help="real-size only (cpu with --tiny-shapes for a smoke run)")
    parser.add_argument("--tiny-shapes", action="store_true", help="real-size structure at toy widths")
    parser.add_argument("--only", nargs="*", choices=("sd15", "sdxl"), help="real-size models to run")
    parser.add_argument("--modes", nargs="*", choices=RENDER_MODES, help="how the UNet runs (tiny default: eager "
                        "batched; real-size default: eager graphed compile cuda-graphs; graphed: eager CUDA graphs, "
                        "CUDA only; -batched: subjects together; -fp8: FP8 transformer linears, GPUs of compute 8.9+)")
    parser.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), help="real-size: default bf16 on cuda")
    parser.add_argument("--no-triton", action="store_true", help="real-size: in-process only")
    parser.add_argument("--serve-batch", type=int, default=0, help="real-size: the batch of every row but eager "
                        "in-process, which keeps the reference's (SD1.5 8, SDXL 4); Triton's max_batch_size follows")
    parser.add_argument("--subjects", type=int, default=1, help="real-size: each batch's images cycle through this "
                        "many subjects' LoRAs (eager renders one pipeline call per subject, -batched modes one call)")
    parser.add_argument("--profile", action="store_true", help="real-size: each in-process row also prints where the "
                        "device time of a few denoising steps goes, by kernel kind, and how busy the device was")
    parser.add_argument("--flops-only", action="store_true", help="real-size: count FLOPs per image (meta tensors, "
                        "any machine) and what the reference's images/s mean, then stop")
    parser.add_argument("--budget-s", type=float, default=480.0, help="real-size time box for the whole run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.real_size:
        from bench.render_real_size import real_size

        args.modes = args.modes or ["eager", "graphed", "compile", "cuda-graphs"]
        rows = real_size(args)
    else:
        args.steps = args.steps or 4
        rows = asyncio.run(tiny_cpu(args))
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
