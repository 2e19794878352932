"""What carrying the LoRA in every request costs, against sending it once and then its token
(services/renderer/adapter_reference.py), through a real tritonserver.

The LoRAs have the byte sizes of what our trainer writes for the real models (fp32, the attention projections:
SD1.5 at rank 16, SDXL at rank 32), counted from the real UNet configs. On the tiny model that size takes a
large rank; the instance runs `fused` (services/renderer/adapters.py), where a LoRA's rank changes the load,
not the render, so both arms render the same work and differ only in what each request carries.

    python bench/adapter_shipping.py [--images 16] [--repeats 2] [--sizes sd15 sdxl] [--json]

Each arm sends --images requests of one subject, 4 in flight (the render worker's default), alternating
arms, best of --repeats; it prints images/s, the ratio, the adapter bytes sent and the overhead per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.render import RENDER_CONCURRENCY, bench_requests, tiny_triton, triton_seconds  # noqa: E402
from services.common.machine import describe_machine  # noqa: E402

TRAINED_RANKS = {"sd15": 16, "sdxl": 32}  # services/trainer/families.py
TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # services/trainer/lora.py UNET_TARGET_MODULES
FP32_BYTES = 4


def trained_lora_bytes(model: str) -> int:
    """An fp32 LoRA of the trainer's rank on the real UNet's attention projections (meta tensors: no weights)."""
    import torch
    from diffusers import UNet2DConditionModel

    from bench.train_real_size import unet_config

    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_config(model, False))
    widths = sum(layer.in_features + layer.out_features for name, layer in unet.named_modules()
                 if isinstance(layer, torch.nn.Linear) and name.endswith(TARGETS))
    return widths * TRAINED_RANKS[model] * FP32_BYTES


def lora_of_size(base_model: Path, size: int) -> bytes:
    """A LoRA of the tiny model about `size` bytes long (its rank chosen for that)."""
    from services.renderer.random_lora import make_lora

    one, two = len(make_lora(base_model, seed=1, rank=1)), len(make_lora(base_model, seed=1, rank=2))
    return make_lora(base_model, seed=1, rank=max(1, round((size - one) / (two - one)) + 1), alpha=1)


async def size_row(url: str, base_model: Path, model: str, args) -> dict:
    from services.renderer.triton_client import AdapterShipping

    lora = lora_of_size(base_model, trained_lora_bytes(model))
    requests = bench_requests(base_model, [lora], 1, args.images, args.steps)
    best = {"bytes": float("inf"), "reference": float("inf")}
    shipped = {}
    await triton_seconds(url, requests[:1], 1)  # the adapter's first load, outside both arms
    for _ in range(args.repeats):
        for arm in best:
            shipping = AdapterShipping() if arm == "reference" else None
            best[arm] = min(best[arm], await triton_seconds(url, requests, 1, shipping))
            shipped[arm] = shipping.bytes_sent if shipping else len(lora) * len(requests)
    row = {"size": f"{model} rank {TRAINED_RANKS[model]}", "adapter_mb": len(lora) / 1e6, "images": len(requests),
           **{f"{arm}_img_s": len(requests) / best[arm] for arm in best},
           **{f"{arm}_mb_sent": shipped[arm] / 1e6 for arm in best},
           "overhead_ms_per_request": 1000 * (best["bytes"] - best["reference"]) / len(requests)}
    row["ratio"] = row["reference_img_s"] / row["bytes_img_s"]
    print(f"{row['size']}: adapter {row['adapter_mb']:.1f} MB; bytes every request {row['bytes_img_s']:.2f} img/s "
          f"({row['bytes_mb_sent']:.0f} MB sent), by token after the first {row['reference_img_s']:.2f} img/s "
          f"({row['reference_mb_sent']:.0f} MB sent): x{row['ratio']:.2f}; carrying the bytes cost "
          f"{row['overhead_ms_per_request']:.0f} ms per request", flush=True)
    return row


async def run(args) -> list[dict]:
    print(f"# {describe_machine(with_torch=True)}")
    print(f"# tiny model through tritonserver (fused), {args.images} requests of one subject per arm, "
          f"{RENDER_CONCURRENCY} in flight, {args.steps} steps, best of {args.repeats}: every request carries the "
          "LoRA (before) against the LoRA once per instance and its token after (AdapterShipping)")
    with tempfile.TemporaryDirectory() as work:
        async with tiny_triton(Path(work), "fused") as (server, base_model):
            return [await size_row(server.grpc_url, base_model, model, args) for model in args.sizes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=16, help="requests per arm")
    parser.add_argument("--repeats", type=int, default=2, help="runs per arm, alternating; the best is kept")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--sizes", nargs="*", choices=tuple(TRAINED_RANKS), default=list(TRAINED_RANKS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = asyncio.run(run(args))
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
