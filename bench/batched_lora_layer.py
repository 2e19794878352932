"""One batched-adapter layer (services/renderer/batched_adapters.py BatchedLoraLinear) at the real models' sizes: the
up-projection's product added after it (a full-size result written, then read back by an add) against added by the
product itself (baddbmm_ into the base layer's output, what the layer does now).

Why: in the `-batched` modes every attention projection of the UNet carries this LoRA product, 128 layers a step for
SD1.5. On the 2026-11-27 H200, `graphed-batched` ran about 8% behind `graphed` (one subject's LoRA fused into the
weights), and at the first level a layer's output is 42 MB at SD1.5 batch 8 with guidance: an extra write and read of
it costs memory bandwidth on every one of those layers.

    python bench/batched_lora_layer.py [--device cuda] [--repeats 20] [--json]  (--json: the rows as JSON last)

Rows: each level's projection size (tokens, features) at batch 8 with guidance (16 rows), rank 32 (the slots' size)
and 9 slots (8 cached subjects and the base model), one subject in every row; the arms alternate, best of 3.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from services.common.machine import describe_machine
from services.renderer.batched_adapters import BatchedLoraLinear, SlotRows

ROWS, RANK, SLOTS = 16, 32, 9
# (model, level, tokens, features): SD1.5 512 px and SDXL 1024 px, the levels with transformer blocks.
LEVELS = [("sd15", 1, 4096, 320), ("sd15", 2, 1024, 640), ("sd15", 3, 256, 1280),
          ("sdxl", 2, 4096, 640), ("sdxl", 3, 1024, 1280)]


def add_after(layer: BatchedLoraLinear, inputs: torch.Tensor) -> torch.Tensor:
    """The formulation the layer had until 2026-11-28."""
    output = layer.base(inputs)
    rows = layer.table.rows[: inputs.shape[0]]
    hidden = torch.bmm(inputs, layer.down[rows].transpose(1, 2))
    return output + torch.bmm(hidden, layer.up[rows].transpose(1, 2))


def layer_of(features: int, device: str, dtype: torch.dtype) -> BatchedLoraLinear:
    table = SlotRows(torch.device(device))
    table.set([1] * (ROWS // 2))
    layer = BatchedLoraLinear(torch.nn.Linear(features, features, device=device, dtype=dtype), table, SLOTS, RANK)
    layer.down.normal_(0, 0.01)
    layer.up.normal_(0, 0.01)
    return layer


def ms_per_call(call, inputs: torch.Tensor, repeats: int, device: str) -> float:
    call(inputs)
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        call(inputs)
    if device == "cuda":
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - started) / repeats


def measure(model: str, level: int, tokens: int, features: int, device: str, repeats: int) -> dict:
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    layer = layer_of(features, device, dtype)
    inputs = torch.randn(ROWS, tokens, features, device=device, dtype=dtype)
    arms = {"add after": lambda x: add_after(layer, x), "in the product": layer}
    with torch.inference_mode():
        drift = (arms["add after"](inputs).float() - layer(inputs).float()).abs().max().item()
        best = {name: float("inf") for name in arms}
        for _ in range(3):
            for name, call in arms.items():
                best[name] = min(best[name], ms_per_call(call, inputs, repeats, device))
    return {"model": model, "level": level, "tokens": tokens, "features": features, "max_difference": drift,
            "add_after_ms": best["add after"], "in_product_ms": best["in the product"],
            "speedup": best["add after"] / best["in the product"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    print(f"# {describe_machine(with_torch=True)}; {ROWS} rows, rank {RANK}, {SLOTS} slots; best of 3 x {args.repeats}")
    rows = []
    for level in LEVELS:
        rows.append(row := measure(*level, args.device, args.repeats))
        print(f"{row['model']} level {row['level']} ({row['tokens']} tokens x {row['features']}): add after "
              f"{row['add_after_ms']:.2f} ms, in the product {row['in_product_ms']:.2f} ms, x{row['speedup']:.2f}"
              f" (largest difference {row['max_difference']:.2g})", flush=True)
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
