"""python -m services.renderer: a render worker driving Triton, with its status API."""

from __future__ import annotations

import asyncio

import grpc
from studio.v1 import faceqa_pb2_grpc, renderer_pb2, renderer_pb2_grpc

from services.common import bus as topology
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
from services.renderer.triton_client import triton_ready
from services.renderer.worker import RenderWorker


class RendererServicer(renderer_pb2_grpc.RendererServicer):
    def __init__(self, worker: RenderWorker) -> None:
        self.worker = worker

    async def GetRendererStatus(self, request, context):
        return renderer_pb2.GetRendererStatusResponse(
            status=self.worker.state.as_status("triton"),
            triton_url=self.worker.triton_url, triton_ready=await triton_ready(self.worker.triton_url),
        )


async def main() -> None:
    settings = Settings.from_env("renderer")
    configure_logging(settings.service_name)
    runtime = await Runtime.open(settings)
    bus = runtime.bus
    ranking = RankingSettings.from_env()
    # Identity ranking scores candidates with faceqa; the unscored mode needs no faceqa.
    faceqa = internal_channel(settings.require("faceqa_addr")) if ranking.scored else None
    model_id = base_model_id(settings.base_model) if settings.base_model else ""
    worker = RenderWorker(
        bus=bus, sealed=runtime.sealed,
        triton_url=settings.require("triton_url"), state=WorkerState(),
        provenance=PortraitProvenance(runtime.sealed.vault, model_id), base_model_id=model_id,
        ranking=ranking, faceqa=faceqa_pb2_grpc.FaceQAStub(faceqa) if faceqa else None,
    )

    def register(server: grpc.aio.Server) -> list[str]:
        renderer_pb2_grpc.add_RendererServicer_to_server(RendererServicer(worker), server)
        return [renderer_pb2.DESCRIPTOR.services_by_name["Renderer"].full_name]

    purges = PurgeListener(bus, "renderer", runtime.sealed, purge_handler(bus, runtime.sealed, worker.triton_url))
    try:
        await serve("renderer", settings.listen, settings.metrics_port, register, background=[
            purges.run,
            purges.then(lambda: run_worker(bus, topology.RENDER_QUEUE, worker.handle, worker.on_failure, worker.state)),
        ], credentials=internal_server_credentials())
    finally:
        if faceqa:
            await faceqa.close()
        await runtime.close()


if __name__ == "__main__":
    asyncio.run(main())
