"""A lone job's renders through a real tritonserver: four requests in flight, one batch and two batches, and a
gRPC channel per request against one shared channel.

Four requests in flight was the worker's default where STUDIO_RENDER_CONCURRENCY is not set (`studio up`): at
most half of Triton's max_batch_size of 8 per batch. One batch in flight (STUDIO_RENDER_CONCURRENCY = the model's
max_batch_size, deploy/k8s until now): Triton runs a batch, answers it, and waits for the job's next requests to
arrive and be batched. Two batches in flight (the worker's default now, services/renderer/worker.py in_flight): the
next batch waits in Triton's queue while one renders. The channel row times Triton's readiness check (two calls
that do not wait for the batcher) over a new channel each time, as every Triton call was made, against the shared
channel (services/renderer/triton_channels.py).

    python bench/render_in_flight.py [--images 48] [--side 64] [--steps 4] [--repeats 2] [--calls 200] [--json]

Tiny model (`fused`), one subject, its LoRA by token (as the worker sends it); the arms alternate, best of
--repeats. On a GPU the render takes the GPU and the gaps take the host; on this CPU both share the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.render import bench_requests, tiny_triton, triton_seconds  # noqa: E402
from bench.render_rows import TRITON_MODEL  # noqa: E402
from services.common.machine import describe_machine  # noqa: E402

OLD_DEFAULT = 4  # STUDIO_RENDER_CONCURRENCY's default before it followed Triton's max_batch_size

async def in_flight_rows(server, requests: list, args) -> list[dict]:
    from services.common.launchers.triton import SERVED_COUNTER
    from services.renderer.ranking import BATCHES_IN_FLIGHT
    from services.renderer.triton_client import AdapterShipping, max_batch_size

    async def render_seconds(batch_requests: list, in_flight: int) -> float:  # as one job of the worker
        return await triton_seconds(server.grpc_url, batch_requests, 1, AdapterShipping(), in_flight)

    batch = await max_batch_size(server.grpc_url)
    arms = {"4 requests (the worker's old default)": OLD_DEFAULT, "one batch": batch,
            "two batches (the worker's default now)": BATCHES_IN_FLIGHT * batch}
    await render_seconds(requests[:batch], batch)  # the adapter's load and a warm instance
    best = {arm: float("inf") for arm in arms}
    executions = {}
    for _ in range(args.repeats):
        for arm, in_flight in arms.items():
            before = await asyncio.to_thread(server.counter, "nv_inference_exec_count", TRITON_MODEL)
            served = await asyncio.to_thread(server.counter, SERVED_COUNTER, TRITON_MODEL)
            best[arm] = min(best[arm], await render_seconds(requests, in_flight))
            await asyncio.to_thread(server.served_reaching, TRITON_MODEL, served + len(requests))
            executions[arm] = await asyncio.to_thread(server.counter, "nv_inference_exec_count", TRITON_MODEL) - before
    rows = [{"arm": arm, "in_flight": arms[arm], "images_per_s": len(requests) / best[arm],
             "mean_batch": len(requests) / executions[arm]} for arm in arms]
    for row in rows:
        row["default_now_over_this"] = rows[-1]["images_per_s"] / row["images_per_s"]
        print(f"{row['arm']}: {row['in_flight']} in flight, {row['images_per_s']:.2f} img/s, Triton's mean batch "
              f"{row['mean_batch']:.1f}; the default now x{row['default_now_over_this']:.2f} this", flush=True)
    return rows


async def channel_row(url: str, calls: int) -> dict:
    import tritonclient.grpc.aio as triton_grpc

    from services.renderer.triton_client import MODEL_NAME, triton_ready

    async def fresh_channel() -> None:  # what every call did before triton_channels.py
        client = triton_grpc.InferenceServerClient(url)
        try:
            assert await client.is_server_ready() and await client.is_model_ready(MODEL_NAME)
        finally:
            await client.close()

    async def shared_channel() -> None:
        assert await triton_ready(url)

    seconds = {}
    for name, call in (("fresh", fresh_channel), ("shared", shared_channel)) * 2:
        started = time.perf_counter()
        for _ in range(calls):
            await call()
        seconds[name] = min(seconds.get(name, float("inf")), (time.perf_counter() - started) / calls)
    row = {"arm": "channel", "fresh_ms": 1000 * seconds["fresh"], "shared_ms": 1000 * seconds["shared"],
           "fresh_over_shared": seconds["fresh"] / seconds["shared"]}
    print(f"Triton's readiness (two calls that skip the batcher): a new channel each time {row['fresh_ms']:.2f} ms, "
          f"the shared channel {row['shared_ms']:.2f} ms: x{row['fresh_over_shared']:.2f} ({calls} each, best of 2)",
          flush=True)
    return row


async def run(args) -> list[dict]:
    from services.renderer.random_lora import make_lora

    print(f"# {describe_machine(with_torch=True)}")
    print(f"# tiny model through tritonserver (fused), one subject, {args.images} renders of {args.side} px, "
          f"{args.steps} steps, best of {args.repeats}")
    with tempfile.TemporaryDirectory() as work:
        async with tiny_triton(Path(work), "fused") as (server, base_model):
            lora = make_lora(base_model, seed=1)
            requests = [replace(request, width=args.side, height=args.side)
                        for request in bench_requests(base_model, [lora], 1, args.images, args.steps)]
            return [*await in_flight_rows(server, requests, args), await channel_row(server.grpc_url, args.calls)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=48, help="renders per arm (one job's candidates)")
    parser.add_argument("--side", type=int, default=64, help="image width and height")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--calls", type=int, default=200, help="calls per channel arm")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = asyncio.run(run(args))
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
