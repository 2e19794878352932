"""python -m services.faceqa: photo checks and training crops."""

from __future__ import annotations

import asyncio
import os

import grpc
from studio.v1 import faceqa_pb2, faceqa_pb2_grpc

from services.common.config import Settings
from services.common.grpc_server import configure_logging, serve
from services.common.identity_scoring import MAX_REQUEST_BYTES
from services.common.purge import PurgeListener
from services.common.runtime import Runtime
from services.common.tls import internal_server_credentials
from services.faceqa.models import face_models
from services.faceqa.pool import CheckPool
from services.faceqa.purge import purge_handler
from services.faceqa.server import FaceQAServicer
from services.faceqa.thresholds import Thresholds

WORKERS_ENV = "STUDIO_FACEQA_WORKERS"


async def main() -> None:
    settings = Settings.from_env("faceqa")
    configure_logging(settings.service_name)
    face_models()  # load the dlib models before reporting healthy
    thresholds = Thresholds.from_env()
    # Started (and forked, sharing the loaded models) before any gRPC channel opens a thread.
    pool = CheckPool(workers=int(os.environ.get(WORKERS_ENV, "0")) or None, thresholds=thresholds)
    pool.warm()
    runtime = await Runtime.open(settings)
    servicer = FaceQAServicer(runtime.sealed, pool, thresholds)

    def register(server: grpc.aio.Server) -> list[str]:
        faceqa_pb2_grpc.add_FaceQAServicer_to_server(servicer, server)
        return [faceqa_pb2.DESCRIPTOR.services_by_name["FaceQA"].full_name]

    try:
        await serve("faceqa", settings.listen, settings.metrics_port, register, background=[
            PurgeListener(runtime.bus, "faceqa", runtime.sealed, purge_handler(runtime.sealed, servicer.cache),
                          on_stop=servicer.cache.forget_subject).run,  # every replica's cache
        ], credentials=internal_server_credentials(), max_receive_bytes=MAX_REQUEST_BYTES)  # ScoreIdentity's images
    finally:
        await runtime.close()
        pool.close()


if __name__ == "__main__":
    asyncio.run(main())
