"""python -m services.renderer: render workers (STUDIO_RENDER_WORKERS) driving Triton, with their status API."""

from __future__ import annotations

import asyncio
import os

import grpc
from studio.v1 import common_pb2, faceqa_pb2_grpc, renderer_pb2, renderer_pb2_grpc

from services.common import topology
from services.common.basemodel import base_model_id
from services.common.config import Settings
from services.common.grpc_server import configure_logging, serve
from services.common.purge import PurgeListener
from services.common.runtime import Runtime
from services.common.tls import internal_channel, internal_server_credentials
from services.common.workqueue import WorkerState, run_worker
from services.renderer.provenance import PortraitProvenance
from services.renderer.purge import purge_handler
from services.renderer.ranking import RankingSettings
from services.renderer.triton_channels import close_clients
from services.renderer.triton_client import triton_ready
from services.renderer.worker import RenderWorker

WORKERS_ENV = "STUDIO_RENDER_WORKERS"
TRITON_PODS_ENV = "STUDIO_TRITON_PODS"  # host:port resolving to every Triton server; unset: STUDIO_TRITON_URL
DEFAULT_WORKERS = 1


def worker_count() -> int:
    """STUDIO_RENDER_WORKERS: render jobs this process runs at once, each on a worker of its own. Several
    jobs in flight put several subjects' requests in Triton's queue, so its batches mix customers."""
    raw = os.environ.get(WORKERS_ENV) or str(DEFAULT_WORKERS)
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{WORKERS_ENV} must be a whole number of at least 1, got '{raw}'")
    return int(raw)


class RendererServicer(renderer_pb2_grpc.RendererServicer):
    def __init__(self, workers: list[RenderWorker]) -> None:
        self.workers = workers

    async def GetRendererStatus(self, request, context):
        statuses = [worker.state.as_status("triton") for worker in self.workers]
        busy = [status for status in statuses if status.busy]
        summary = common_pb2.WorkerStatus(
            worker_id=statuses[0].worker_id, busy=bool(busy), current_job_id=busy[0].current_job_id if busy else "",
            jobs_completed=sum(status.jobs_completed for status in statuses),
            jobs_failed=sum(status.jobs_failed for status in statuses), device="triton",
        )
        triton_url = self.workers[0].triton_url
        return renderer_pb2.GetRendererStatusResponse(
            status=summary, workers=statuses, triton_url=triton_url, triton_ready=await triton_ready(triton_url))


async def main() -> None:
    settings = Settings.from_env("renderer")
    configure_logging(settings.service_name)
    count = worker_count()
    runtime = await Runtime.open(settings)
    bus = runtime.bus
    ranking = RankingSettings.from_env()
    # Identity ranking scores candidates with faceqa; the unscored mode needs no faceqa.
    faceqa = internal_channel(settings.require("faceqa_addr")) if ranking.scored else None
    model_id = base_model_id(settings.base_model) if settings.base_model else ""
    triton_url = settings.require("triton_url")
    provenance = PortraitProvenance(runtime.sealed.vault, model_id)
    workers = [RenderWorker(bus=bus, sealed=runtime.sealed, triton_url=triton_url, state=WorkerState(),
                            provenance=provenance, base_model_id=model_id, ranking=ranking,
                            faceqa=faceqa_pb2_grpc.FaceQAStub(faceqa) if faceqa else None)
               for _ in range(count)]

    def register(server: grpc.aio.Server) -> list[str]:
        renderer_pb2_grpc.add_RendererServicer_to_server(RendererServicer(workers), server)
        return [renderer_pb2.DESCRIPTOR.services_by_name["Renderer"].full_name]

    async def run_workers() -> None:
        await asyncio.gather(*(run_worker(bus, topology.RENDER_QUEUE, worker.handle, worker.on_failure, worker.state)
                               for worker in workers))

    # Evictions go to every Triton pod (a headless Service's name), renders to any (the Service's).
    every_triton = os.environ.get(TRITON_PODS_ENV) or triton_url
    purges = PurgeListener(bus, "renderer", runtime.sealed, purge_handler(bus, runtime.sealed, every_triton))
    try:
        await serve("renderer", settings.listen, settings.metrics_port, register,
                    background=[purges.run, purges.then(run_workers)], credentials=internal_server_credentials())
    finally:
        if faceqa:
            await faceqa.close()
        await close_clients()
        await runtime.close()


if __name__ == "__main__":
    asyncio.run(main())
