"""python -m services.faceqa: photo checks and training crops."""

from __future__ import annotations

import asyncio

import grpc
from studio.v1 import faceqa_pb2, faceqa_pb2_grpc

from services.common.blobstore import open_blob_store
from services.common.config import Settings
from services.common.grpc_server import configure_logging, serve
from services.common.vault_client import SealedStore, VaultClient
from services.faceqa.models import face_models
from services.faceqa.server import FaceQAServicer


async def main() -> None:
    settings = Settings.from_env("faceqa")
    configure_logging(settings.service_name)
    face_models()  # load the dlib models before reporting healthy
    vault = VaultClient.from_token_file(settings.require("privacy_addr"), settings.require("service_token_file"))
    sealed = SealedStore(await open_blob_store(settings.require("blob_url")), vault)

    def register(server: grpc.aio.Server) -> list[str]:
        faceqa_pb2_grpc.add_FaceQAServicer_to_server(FaceQAServicer(sealed), server)
        return [faceqa_pb2.DESCRIPTOR.services_by_name["FaceQA"].full_name]

    try:
        await serve("faceqa", settings.listen, settings.metrics_port, register)
    finally:
        await vault.close()


if __name__ == "__main__":
    asyncio.run(main())
