"""Public API benchmark on loopback, many tenants at once (the embedded stack, tiny model).

1. GetOrder latency: every tenant polls its own order; P50, P99 and calls/s over all calls.
2. A 25-photo upload per tenant, all tenants at once, through ingest's UploadPhotos (authentication,
   stream validation, the subject's stored photos matched by client photo id: the photos are already
   held, so no sealing or face check runs) against a bare grpc.aio servicer of the same RPC, in its own
   process, that only reads the stream; same client, same 256 KiB chunks. Prints MB/s of both and
   their ratio (target >= 0.5).
3. For scale, the full first upload (sealed, stored, checked by faceqa) for a few tenants at once.

    python bench/api.py [--tenants 50] [--photos 25] [--calls 40] [--full-tenants 4] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from PIL import Image
from studio.v1 import common_pb2, studio_pb2, studio_pb2_grpc

from services.cli.stack import EmbeddedStack, grpc_healthy
from services.common.launchers.process import free_port
from services.common.machine import describe_machine
from studio_client import AdminClient, Photo, StudioClient
from studio_client.client import UPLOAD_ADMITTED_METADATA

REPO_ROOT = Path(__file__).resolve().parent.parent
FACES_DIR = Path(os.environ.get("STUDIO_FACES_DIR", REPO_ROOT.parent / "shared" / "faces"))

REFERENCE, HEADSHOT = common_pb2.PHOTO_ROLE_REFERENCE, common_pb2.PHOTO_ROLE_HEADSHOT


class BareUpload(studio_pb2_grpc.StudioServicer):
    """The baseline: reads the whole stream and answers, nothing else."""

    async def UploadPhotos(self, request_iterator, context):
        photos = []
        async for request in request_iterator:
            if request.HasField("header") and not photos:  # admitted at once, as ingest admits a stream
                await context.send_initial_metadata(((UPLOAD_ADMITTED_METADATA, "1"),))
            if request.HasField("header"):
                photos.append(studio_pb2.PhotoSummary(client_photo_id=request.header.client_photo_id))
        return studio_pb2.UploadPhotosResponse(photos=photos)


async def serve_bare(port: int) -> None:
    server = grpc.aio.server()
    studio_pb2_grpc.add_StudioServicer_to_server(BareUpload(), server)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def tiny_jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 110, 100)).save(out, "JPEG")
    return out.getvalue()


class Tenant:
    def __init__(self, client: StudioClient) -> None:
        self.client = client
        self.subject_id = ""
        self.order_id = ""


async def make_tenants(stack: EmbeddedStack, count: int, photos: list[Path]) -> list[Tenant]:
    """Tenants with an order each (cancelled at once: polled, not run) and a subject whose 25 client
    photo ids are already taken (by small placeholder photos, quick to check)."""
    admin = AdminClient(stack.public_endpoint, stack.paths.token_file("operator").read_text().strip())
    headshot = next(p for p in sorted((FACES_DIR / "lisa").glob("*.jpg")) if p.name == "lisa_lisa1.jpg")
    placeholder = tiny_jpeg()

    async def one(index: int) -> Tenant:
        created = await admin.create(f"bench-{index}-{time.time_ns()}", min_accepted_photos=1)
        tenant = Tenant(StudioClient(stack.public_endpoint, created.api_key))
        ordering = await tenant.client.create_subject()
        await tenant.client.upload(ordering.subject_id, [(headshot, HEADSHOT)])
        order = await tenant.client.create_order(ordering.subject_id, ["studio-frontal-soft"], 1)
        tenant.order_id = order.order_id
        await tenant.client.cancel_order(order.order_id)
        tenant.subject_id = (await tenant.client.create_subject()).subject_id
        await tenant.client.upload(tenant.subject_id, [Photo(placeholder, REFERENCE, "p.jpg", f"bench-{i}")
                                                       for i in range(len(photos))], batch_size=len(photos))
        return tenant

    try:
        tenants = []
        for start in range(0, count, 10):  # ten at a time: faceqa is shared
            tenants += await asyncio.gather(*(one(i) for i in range(start, min(count, start + 10))))
        return tenants
    finally:
        await admin.close()


async def get_order_latency(tenants: list[Tenant], calls: int) -> dict:
    latencies: list[float] = []

    async def poll(tenant: Tenant) -> None:
        for _ in range(calls):
            started = time.perf_counter()
            await tenant.client.get_order(tenant.order_id)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(poll(tenant) for tenant in tenants))
    wall = time.perf_counter() - started
    return {"calls": len(latencies), "p50_ms": round(1000 * statistics.median(latencies), 2),
            "p99_ms": round(1000 * percentile(latencies, 0.99), 2), "calls_per_s": round(len(latencies) / wall, 1)}


async def upload_round(clients: list[StudioClient], subject_ids: list[str], photos: list[Photo]) -> float:
    """MB/s of every client uploading `photos` in one stream at once."""
    started = time.perf_counter()
    results = await asyncio.gather(*(client.upload_photos(subject_id, photos, batch_size=len(photos))
                                     for client, subject_id in zip(clients, subject_ids, strict=True)))
    wall = time.perf_counter() - started
    assert all(len(result.photos) == len(photos) for result in results)
    return len(clients) * sum(len(photo.data) for photo in photos) / wall / 1e6


async def compare_uploads(tenants: list[Tenant], photos: list[Photo], rounds: int) -> dict:
    port = free_port()
    bare = subprocess.Popen([sys.executable, __file__, "--serve-bare", str(port)])
    try:
        while not await grpc_healthy(f"127.0.0.1:{port}"):
            await asyncio.sleep(0.2)
        bare_clients = [StudioClient(f"127.0.0.1:{port}", "unused") for _ in tenants]
        ingest_mb_s, bare_mb_s = [], []
        for _ in range(rounds):  # interleaved, best of each: the machine is shared
            ingest_mb_s.append(await upload_round([t.client for t in tenants], [t.subject_id for t in tenants],
                                                  photos))
            bare_mb_s.append(await upload_round(bare_clients, ["bare"] * len(tenants), photos))
        for client in bare_clients:
            await client.close()
    finally:
        bare.terminate()
        bare.wait(10)
    best_ingest, best_bare = max(ingest_mb_s), max(bare_mb_s)
    return {"ingest_mb_s": round(best_ingest, 1), "bare_grpc_aio_mb_s": round(best_bare, 1),
            "ratio": round(best_ingest / best_bare, 3), "rounds": rounds}


async def full_uploads(tenants: list[Tenant], paths: list[Path]) -> dict:
    subjects = [(await tenant.client.create_subject()).subject_id for tenant in tenants]
    started = time.perf_counter()
    await asyncio.gather(*(tenant.client.upload_photos(subject_id, [(p, REFERENCE) for p in paths],
                                                       batch_size=len(paths), timeout=1800)
                           for tenant, subject_id in zip(tenants, subjects, strict=True)))
    wall = time.perf_counter() - started
    return {"tenants": len(tenants), "seconds": round(wall, 1),
            "photos_per_s": round(len(tenants) * len(paths) / wall, 2)}


async def run(args) -> dict:
    paths = sorted((FACES_DIR / "london").glob("*.jpg"))[: args.photos]
    # The same client photo ids the placeholders took: ingest reads every byte, then matches them.
    photos = [Photo(path.read_bytes(), REFERENCE, path.name, f"bench-{i}") for i, path in enumerate(paths)]
    with tempfile.TemporaryDirectory() as data:
        stack = EmbeddedStack(data_dir=Path(data), public_port=free_port(), min_accepted_photos=1)
        await stack.start()
        try:
            tenants = await make_tenants(stack, args.tenants, paths)
            result = {
                "machine": describe_machine(), "tenants": args.tenants, "photos_per_upload": len(photos),
                "upload_mb": round(sum(len(p.data) for p in photos) / 1e6, 2),
                "get_order": await get_order_latency(tenants, args.calls),
                "upload_api_path_vs_bare_grpc": await compare_uploads(tenants, photos, args.rounds),
                "first_upload_full_path": await full_uploads(tenants[: args.full_tenants], paths),
            }
            for tenant in tenants:
                await tenant.client.close()
            return result
        finally:
            stack.stop()


def report(result: dict) -> None:
    print(f"machine: {result['machine']}")
    latency = result["get_order"]
    print(f"GetOrder, {result['tenants']} tenants at once, {latency['calls']} calls: P50 {latency['p50_ms']} ms, "
          f"P99 {latency['p99_ms']} ms, {latency['calls_per_s']} calls/s")
    upload = result["upload_api_path_vs_bare_grpc"]
    print(f"{result['photos_per_upload']}-photo upload ({result['upload_mb']} MB), {result['tenants']} tenants at "
          f"once: ingest UploadPhotos {upload['ingest_mb_s']} MB/s vs bare grpc.aio {upload['bare_grpc_aio_mb_s']} "
          f"MB/s, ratio {upload['ratio']} (target >= 0.5; best of {upload['rounds']} rounds each)")
    full = result["first_upload_full_path"]
    print(f"first upload with sealing and face checks, {full['tenants']} tenants at once: {full['seconds']} s, "
          f"{full['photos_per_s']} photos/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--photos", type=int, default=25)
    parser.add_argument("--calls", type=int, default=40, help="GetOrder calls per tenant")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--full-tenants", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        asyncio.run(serve_bare(args.serve_bare))
        return
    result = asyncio.run(run(args))
    print(json.dumps(result) if args.json else "", end="\n" if args.json else "")
    if not args.json:
        report(result)


if __name__ == "__main__":
    main()
