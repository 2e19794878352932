"""A batch whose images use different schedulers: one pipeline call per scheduler (what the renderer did while the
scheduler was in the batch key) against one call for the whole batch (services/renderer/row_schedulers.py).

The catalogue's styles use five schedulers at the same steps and size, so a Triton batch holding several styles
(one order's, or several customers') mixes them. In-process, the renderer's own render_batch; "split" calls it
once per scheduler's images, "one call" once for the batch.

    python bench/scheduler_mix.py [--model sd15|sdxl] [--schedulers 4] [--batch 8] [--steps 4] [--repeats 2]
                                  [--device cpu] [--real-size] [--modes eager batched] [--json]

Default: the SD1.5 structure at toy widths on the CPU (per-call overhead, not arithmetic); --real-size on a GPU
renders the random-weight real-size model in bf16.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.common.machine import describe_machine  # noqa: E402

CATALOGUE_SCHEDULERS = ("dpmpp-2m", "euler-a", "ddim", "unipc", "euler")  # services/common/styles.json


def batch_items(count: int, schedulers: int, side: int, steps: int) -> list:
    from services.renderer.pipeline import BatchItem, RenderParams

    return [BatchItem(RenderParams(prompt="a studio portrait", negative_prompt="blurry", seed=index, steps=steps,
                                   guidance=6.0, width=side, height=side,
                                   scheduler=CATALOGUE_SCHEDULERS[index % schedulers]))
            for index in range(count)]


def seconds(renderer, items: list, split: bool) -> float:
    groups = [[item for item in items if item.params.scheduler == name]
              for name in dict.fromkeys(item.params.scheduler for item in items)] if split else [items]
    started = time.perf_counter()
    for group in groups:  # images come back as host arrays: the device work is done when they do
        assert not any(isinstance(image, Exception) for image in renderer.render_batch(group))
    return time.perf_counter() - started


def run(args) -> list[dict]:
    import os

    from bench.render_real_size import write_random_model
    from services.renderer.pipeline import DTYPE_ENV

    os.environ.setdefault(DTYPE_ENV, "bf16" if args.device == "cuda" else "fp32")
    with tempfile.TemporaryDirectory() as work:
        folder = write_random_model(args.model, args.tiny, args.device, Path(work) / args.model)
        return [mode_row(args, folder, mode) for mode in args.modes]


def mode_row(args, folder: Path, mode: str) -> dict:
    from bench.render_rows import image_side, renderer_mode
    from services.renderer.pipeline import PortraitRenderer, load_pipeline
    from services.renderer.unet_modes import unet_mode

    if unet_mode(renderer_mode(mode)).graphed and args.device != "cuda":
        print(f"{mode}: skipped, CUDA graphs need a GPU", flush=True)
        return {"model": args.model, "mode": mode, "error": "skipped: CUDA graphs need a GPU"}
    renderer = PortraitRenderer(load_pipeline(folder), compile_mode=renderer_mode(mode))
    items = batch_items(args.batch, args.schedulers, image_side(args.model, args.tiny), args.steps)
    renderer.warm_up(args.batch)
    seconds(renderer, items, split=True)  # each call size once, outside the timing
    best = {"split": float("inf"), "one call": float("inf")}
    for _ in range(args.repeats):  # alternating: the host is shared
        for arm in best:
            best[arm] = min(best[arm], seconds(renderer, items, split=arm == "split"))
    row = {"model": args.model, "real_size": not args.tiny, "mode": mode, "batch": args.batch,
           "schedulers": args.schedulers, "split_img_s": args.batch / best["split"],
           "one_call_img_s": args.batch / best["one call"]}
    row["ratio"] = row["one_call_img_s"] / row["split_img_s"]
    print(f"{args.model} batch {args.batch} of {args.schedulers} schedulers, {mode}: one call per scheduler "
          f"{row['split_img_s']:.2f} img/s, one call for the batch {row['one_call_img_s']:.2f} img/s: "
          f"x{row['ratio']:.2f}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("sd15", "sdxl"), default="sd15")
    parser.add_argument("--schedulers", type=int, default=4, choices=range(1, len(CATALOGUE_SCHEDULERS) + 1))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--real-size", action="store_true", help="the real model's widths (a GPU's work)")
    parser.add_argument("--tiny-shapes", action="store_true", help="toy widths even with --real-size (a CPU smoke)")
    parser.add_argument("--modes", nargs="*", default=["eager"],
                        help="STUDIO_RENDER_COMPILE modes, as bench/render.py names them")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.tiny = args.tiny_shapes or not args.real_size
    print(f"# {describe_machine(with_torch=True)}; {'toy widths' if args.tiny else 'real size'} {args.model}, "
          f"{args.steps} steps, best of {args.repeats}, in-process render_batch")
    rows = run(args)
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
