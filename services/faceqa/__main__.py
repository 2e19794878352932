"""python -m services.faceqa: photo checks and training crops."""

from __future__ import annotations

import asyncio

import grpc
from studio.v1 import faceqa_pb2, faceqa_pb2_grpc

from services.common.config import Settings
from services.common.grpc_server import configure_logging, serve
from services.common.purge import PurgeListener
from services.common.runtime import Runtime
from services.common.tls import internal_server_credentials
from services.faceqa.models import face_models
from services.faceqa.purge import purge_handler
from services.faceqa.server import FaceQAServicer


async def main() -> None:
    settings = Settings.from_env("faceqa")
    configure_logging(settings.service_name)
    face_models()  # load the dlib models before reporting healthy
    runtime = await Runtime.open(settings)

    def register(server: grpc.aio.Server) -> list[str]:
        faceqa_pb2_grpc.add_FaceQAServicer_to_server(FaceQAServicer(runtime.sealed), server)
        return [faceqa_pb2.DESCRIPTOR.services_by_name["FaceQA"].full_name]

    try:
        await serve("faceqa", settings.listen, settings.metrics_port, register, background=[
            PurgeListener(runtime.bus, "faceqa", runtime.sealed, purge_handler(runtime.sealed)).run,
        ], credentials=internal_server_credentials())
    finally:
        await runtime.close()


if __name__ == "__main__":
    asyncio.run(main())
