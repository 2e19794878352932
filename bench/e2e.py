"""End-to-end benchmark: the demo job through the embedded stack against the same compute run
in-process, with the tiny model.

Prints seconds per stage, then the orchestration overhead: the job's wall time minus the compute
of the same face checks, training and rendering run in-process, as a ratio to that compute.

    python bench/e2e.py [--photos DIR] [--styles ...] [--count N] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from services.cli.client import StudioClient
from services.cli.demo import _job, pick_photos
from services.cli.stack import EmbeddedStack
from services.common.basemodel import read_resolution
from services.common.launchers.process import free_port
from services.common.machine import describe_machine
from services.common.styles import catalogue

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PHOTOS = Path(os.environ.get("STUDIO_FACES_DIR", REPO_ROOT.parent / "shared" / "faces")) / "lisa"



async def run_through_stack(args, data_dir: Path) -> tuple[dict, float, Path]:
    # The demo set (lisa) has 8 photos, under the production minimum of 10 accepted.
    stack = EmbeddedStack(data_dir=data_dir, public_port=free_port(), min_accepted_photos=1)
    await stack.start()
    try:
        client = StudioClient(stack.public_endpoint, stack.paths.api_key_file.read_text().strip())
        demo_args = SimpleNamespace(
            photos=args.photos, headshot=None, styles=args.styles, count=args.count, json=True,
            out=str(data_dir / "portraits"),
        )
        started = time.perf_counter()
        result = await _job(client, demo_args)
        wall = time.perf_counter() - started
        await client.close()
        return result.__dict__, wall, data_dir / "models" / "tiny"
    finally:
        stack.stop()


def run_in_process(args, base_model: Path) -> dict[str, float]:
    """The same work without the services: checks, training (model load included, as the worker
    loads it per job), rendering with the pipeline already loaded (as Triton holds it)."""
    from PIL import Image

    from services.faceqa.checks import check_photo
    from services.faceqa.models import face_models
    from services.renderer.pipeline import PortraitRenderer, RenderParams, load_pipeline
    from services.trainer.training import train_lora

    resolution = read_resolution(base_model)
    steps = int(os.environ.get("STUDIO_TRAIN_STEPS", "8"))
    render_steps = int(os.environ.get("STUDIO_RENDER_STEPS", "4"))
    seconds: dict[str, float] = {}
    face_models()  # faceqa loads its models at start, before it reports healthy
    started = time.perf_counter()
    checks = [check_photo(path.read_bytes(), crop_size=resolution) for path, _ in pick_photos(Path(args.photos), None)]
    seconds["checks"] = time.perf_counter() - started
    crops = [Image.open(io.BytesIO(c.crop_png)) for c in checks if c.accepted]
    started = time.perf_counter()
    lora = train_lora(base_model, crops, steps=steps, seed=1)
    seconds["training"] = time.perf_counter() - started
    renderer = PortraitRenderer(load_pipeline(base_model))
    started = time.perf_counter()
    for style in args.styles:
        preset = catalogue()[style]
        width, height = preset.size_for(resolution)
        for seed in range(args.count):
            params = RenderParams(prompt=preset.prompt_for(), negative_prompt=preset.negative_prompt, seed=seed,
                                  steps=render_steps, guidance=preset.guidance, width=width, height=height)
            renderer.render(params, adapter_id="bench", adapter=lora.safetensors_bytes)
    seconds["rendering"] = time.perf_counter() - started
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", default=str(DEFAULT_PHOTOS))
    parser.add_argument("--styles", nargs="+", default=["studio-frontal-soft"])
    parser.add_argument("--count", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result, wall, base_model = asyncio.run(run_through_stack(args, Path(tmp)))
        compute = run_in_process(args, base_model)
    compute_total = sum(compute.values())
    overhead = wall - compute_total
    report = {
        "machine": describe_machine(with_torch=True),
        "photos": len(result["photos"]), "portraits": len(result["portraits"]),
        "stack_seconds_per_stage": result["seconds"], "stack_wall_seconds": round(wall, 2),
        "in_process_compute_seconds": {k: round(v, 2) for k, v in compute.items()},
        "in_process_compute_total": round(compute_total, 2), "orchestration_overhead_seconds": round(overhead, 2),
        "overhead_to_compute_ratio": round(overhead / compute_total, 3),
    }
    if args.json:
        print(json.dumps(report))
        return
    print(f"machine: {report['machine']}")
    print(f"job: {report['photos']} photos, {report['portraits']} portraits, tiny model")
    print("through the stack, seconds per stage: "
          + ", ".join(f"{k} {v:.2f}" for k, v in result["seconds"].items()) + f" (wall {wall:.2f})")
    print("in-process compute, seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in compute.items())
          + f" (total {compute_total:.2f})")
    print(f"orchestration overhead: {overhead:.2f} s = {report['overhead_to_compute_ratio']:.2f}× the compute")


if __name__ == "__main__":
    main()
