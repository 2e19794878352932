"""How long a compiled Triton instance takes to become ready with a cold compile cache, against one that finds
the cache another instance left (TORCHINDUCTOR_CACHE_DIR on a volume the pods share: deploy/k8s/base/storage.yaml
studio-compile-cache).

A compiled mode compiles the UNet while the instance loads (PortraitRenderer.warm_up), and KEDA starts a new
tritonserver pod for every 4 queued jobs: with each pod's cache in its own /tmp, every pod paid the cold compile
(minutes at real size; an SDXL whole-UNet compile did not finish in 280 s, bench/train_results.md).

    python bench/compile_cache.py [--modes compile regional] [--repeats 1] [--json]

Each mode: tritonserver with the tiny model on a fresh cache directory (cold), then again on the same directory
(warm); time from start to ready, then the first render. Alternating cold and warm, best of --repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.render_rows import MODEL_REPOSITORY  # noqa: E402
from services.common.machine import describe_machine  # noqa: E402
from services.renderer.unet_modes import COMPILE_ENV  # noqa: E402

CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


async def ready_seconds(base_model: Path, work: Path, cache: Path) -> tuple[float, float]:
    """(seconds until the instance is ready, seconds for its first render) with `cache` as inductor's cache."""
    from services.common.launchers.triton import start_triton
    from services.common.tinymodel import TINY_RESOLUTION
    from services.renderer.static_shapes import WARM_UP_SIZES_ENV
    from services.renderer.triton_client import RenderRequest, render_via_triton

    os.environ[CACHE_ENV] = str(cache)  # tritonserver and its python stub inherit it
    os.environ[WARM_UP_SIZES_ENV] = f"{TINY_RESOLUTION}x{TINY_RESOLUTION}"  # the size it renders
    started = time.perf_counter()
    server = await start_triton(MODEL_REPOSITORY, work / "triton", work / "logs", base_model=base_model,
                                ready_timeout=900)
    ready = time.perf_counter() - started
    try:
        request = RenderRequest("a portrait", "", "", b"", 1, 4, 5.0, TINY_RESOLUTION, TINY_RESOLUTION)
        started = time.perf_counter()
        await render_via_triton(server.grpc_url, request, timeout_s=900)
        return ready, time.perf_counter() - started
    finally:
        server.stop()


async def mode_row(base_model: Path, work: Path, mode: str, repeats: int) -> dict:
    os.environ[COMPILE_ENV] = mode
    best = {"cold": (float("inf"), 0.0), "warm": (float("inf"), 0.0)}
    for repeat in range(repeats):
        cache = work / f"{mode}-cache-{repeat}"  # fresh: nothing compiled yet
        for arm in best:  # cold fills the cache, warm finds it
            timing = await ready_seconds(base_model, work / f"{mode}-{repeat}-{arm}", cache)
            best[arm] = min(best[arm], timing)
    row = {"mode": mode, **{f"{arm}_ready_s": best[arm][0] for arm in best},
           **{f"{arm}_first_render_s": best[arm][1] for arm in best}}
    row["ratio"] = row["cold_ready_s"] / row["warm_ready_s"]
    print(f"{mode}: ready in {row['cold_ready_s']:.1f} s with a cold cache, {row['warm_ready_s']:.1f} s with the cache "
          f"another instance left: x{row['ratio']:.2f} (first render {row['cold_first_render_s']:.2f} s / "
          f"{row['warm_first_render_s']:.2f} s)", flush=True)
    return row


async def run(modes: list[str], repeats: int) -> list[dict]:
    from services.common.tinymodel import write_tiny_model

    with tempfile.TemporaryDirectory() as work_dir:
        base_model = write_tiny_model(Path(work_dir) / "tiny")
        return [await mode_row(base_model, Path(work_dir), mode, repeats) for mode in modes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", nargs="*", default=["compile", "regional"],
                        help="compiled STUDIO_RENDER_COMPILE modes")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    print(f"# {describe_machine(with_torch=True)}\n# tiny model, tritonserver start to ready (the instance compiles "
          f"while loading), cold cache against warm, best of {args.repeats}")
    rows = asyncio.run(run(args.modes, args.repeats))
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
