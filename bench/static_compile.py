"""How long a cold whole-UNet compile takes with dynamic shapes against static ones, and how fast each then runs,
against eager, in one run on one machine.

The renderer's whole-UNet modes (`compile`, `cuda-graphs`) compile at static shapes, padded to a few batch sizes
(services/renderer/static_shapes.py), because the dynamic compile they had did not finish in an H200's 259 s.
Each arm runs in a child process of its own with an empty inductor cache: the first call is the cold compile.

    python bench/static_compile.py [--latent 16]                     # SD1.5's structure at toy widths, CPU
    python bench/static_compile.py --device cuda --real-size --mode reduce-overhead --batch 8   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.train_real_size import run_child, sync_device, unet_config, unet_inputs  # noqa: E402
from services.common.machine import describe_machine  # noqa: E402

ARMS = ("eager", "static", "dynamic")
TIMED_CALLS = 5


def measure(arm: str, model: str, batch: int, device: str, tiny: bool, mode: str, latent: int) -> dict:
    """One child's work: build the UNet, compile it as `arm` says, time the first call (the cold compile) and then
    TIMED_CALLS calls of a denoising step's shape (classifier-free guidance: two rows an image)."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    config = {**unet_config(model, tiny), **({"sample_size": latent} if latent else {})}
    unet = UNet2DConditionModel(**config).to(device=device, dtype=dtype).eval()
    rows = 2 * batch
    latents, conditioning = unet_inputs(config, rows, device, model)
    conditioning = conditioning.expand(rows).to(device, dtype)
    inputs = {"sample": latents.to(dtype), "timestep": torch.full((rows,), 500.0, device=device),
              "encoder_hidden_states": conditioning.encoder_hidden_states.contiguous(),  # a row each, as a pipeline's
              "added_cond_kwargs": {name: value.contiguous() for name, value in conditioning.added_cond_kwargs.items()}
              or None}
    forward = unet.forward
    if arm != "eager":
        options = {"triton.cudagraphs": True} if mode == "reduce-overhead" else None
        forward = torch.compile(unet.forward, dynamic=arm == "dynamic", options=options)
    calls = []
    with torch.inference_mode():
        for _ in range(TIMED_CALLS + 2):
            started = time.perf_counter()
            forward(**inputs, return_dict=False)
            sync_device(device)
            calls.append(time.perf_counter() - started)
    return {"arm": arm, "first_call_s": calls[0], "call_ms": 1000 * statistics.median(calls[2:])}


def row_line(row: dict, eager: dict | None) -> str:
    if "error" in row:
        return f"{row['arm']:<8} {row['error']}"
    speed = f", x{eager['call_ms'] / row['call_ms']:.2f} eager's speed" if eager and "call_ms" in eager else ""
    return f"{row['arm']:<8} first call {row['first_call_s']:7.1f} s, then {row['call_ms']:8.1f} ms a call{speed}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["sd15", "sdxl"], default="sd15")
    parser.add_argument("--batch", type=int, default=4, help="images a call (the UNet sees twice as many rows)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--real-size", action="store_true", help="the real model's widths (else toy widths)")
    parser.add_argument("--latent", type=int, default=0, help="latent side (default: the model's; 8 at toy widths)")
    parser.add_argument("--mode", choices=["default", "reduce-overhead"], default="default")
    parser.add_argument("--arms", nargs="*", default=list(ARMS), choices=ARMS)
    parser.add_argument("--timeout", type=float, default=900, help="seconds each arm may take")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs=7, metavar=("ARM", "MODEL", "BATCH", "DEVICE", "TINY", "MODE", "LATENT"))
    args = parser.parse_args()
    if args.child:
        arm, model, batch, device, tiny, mode, latent = args.child
        print(json.dumps(measure(arm, model, int(batch), device, tiny == "tiny", mode, int(latent))))
        return
    tiny = "full" if args.real_size else "tiny"
    if not args.json:
        widths = "real size" if args.real_size else "toy widths"
        latent = f"{args.latent}x{args.latent} latents" if args.latent else "the model's latent size"
        print(f"# {describe_machine(with_torch=True)}\n# {args.model} UNet ({widths}, {latent}), batch {args.batch} "
              f"({2 * args.batch} rows), inductor mode {args.mode}, each arm in a child with an empty inductor cache",
              flush=True)
    rows = []
    for arm in args.arms:
        with tempfile.TemporaryDirectory() as cache:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # the child's compile starts cold
            child = [arm, args.model, str(args.batch), args.device, tiny, args.mode, str(args.latent)]
            row = {"arm": arm, **run_child(child, args.timeout, script="static_compile.py")}
        rows.append(row)
        if not args.json:
            print(row_line(row, next((r for r in rows if r["arm"] == "eager"), None)), flush=True)
    by_arm = {row["arm"]: row for row in rows if "error" not in row}
    summary = {"machine": describe_machine(with_torch=True), "rows": rows}
    if {"static", "dynamic"} <= by_arm.keys():
        summary["dynamic_compile_x_static"] = by_arm["dynamic"]["first_call_s"] / by_arm["static"]["first_call_s"]
        summary["static_speed_x_dynamic"] = by_arm["dynamic"]["call_ms"] / by_arm["static"]["call_ms"]
        if not args.json:
            print(f"# cold compile: dynamic shapes took x{summary['dynamic_compile_x_static']:.2f} static's time; "
                  f"static then ran x{summary['static_speed_x_dynamic']:.2f} dynamic's speed")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
