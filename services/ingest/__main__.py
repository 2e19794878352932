"""python -m services.ingest: the public Studio gRPC API."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import grpc
from studio.v1 import admin_pb2, admin_pb2_grpc, faceqa_pb2_grpc, studio_pb2, studio_pb2_grpc

from services.common.basemodel import base_model_id, read_resolution
from services.common.bus import Bus
from services.common.config import Settings
from services.common.grpc_server import configure_logging, serve
from services.common.purge import PurgeListener
from services.common.runtime import Runtime
from services.common.tls import internal_channel
from services.ingest.context import IngestContext, ensure_tenant
from services.ingest.order_view import project_order_events
from services.ingest.public_tls import add_public_mtls_port, public_server_credentials
from services.ingest.purge import purge_handler
from services.ingest.scheduling.dispatcher import Dispatcher
from services.ingest.server import StudioServicer
from services.ingest.tenant_admin import TenantAdminServicer, operator_token_hash_from_env


async def main() -> None:
    settings = Settings.from_env("ingest")
    configure_logging(settings.service_name)
    credentials = public_server_credentials()  # before anything connects: a TLS misconfiguration fails at once
    runtime = await Runtime.open(settings)
    bus = runtime.bus
    base_model = settings.require("base_model")
    ctx = IngestContext(
        bus=bus, sealed=runtime.sealed, vault=runtime.vault,
        faceqa=faceqa_pb2_grpc.FaceQAStub(internal_channel(settings.require("faceqa_addr"))),
        base_model_id=base_model_id(base_model), base_resolution=read_resolution(base_model),
        train_steps=settings.train_steps, render_steps=settings.render_steps,
        min_accepted_photos=int(os.environ.get("STUDIO_MIN_ACCEPTED_PHOTOS", "10")),
    )
    await _bootstrap_tenant(bus)

    def register(server: grpc.aio.Server) -> list[str]:
        studio_pb2_grpc.add_StudioServicer_to_server(StudioServicer(ctx), server)
        admin = TenantAdminServicer(bus, operator_token_hash_from_env(), ctx.min_accepted_photos)
        admin_pb2_grpc.add_TenantAdminServicer_to_server(admin, server)
        add_public_mtls_port(server)  # client-certificate integrations, when configured
        return [studio_pb2.DESCRIPTOR.services_by_name["Studio"].full_name,
                admin_pb2.DESCRIPTOR.services_by_name["TenantAdmin"].full_name]

    try:
        await serve("ingest", settings.listen, settings.metrics_port, register, background=[
            lambda: project_order_events(bus),
            Dispatcher(bus).run,
            PurgeListener(bus, "ingest", runtime.sealed, purge_handler(bus, runtime.sealed)).run,
        ], credentials=credentials)  # with TLS, kubelet probes the plaintext health port (STUDIO_HEALTH_PORT)
    finally:
        await runtime.close()


async def _bootstrap_tenant(bus: Bus) -> None:
    """The embedded stack's default tenant: its key file is written by `studio up`."""
    key_file = os.environ.get("STUDIO_BOOTSTRAP_API_KEY_FILE")
    if key_file:
        tenant_id = os.environ.get("STUDIO_BOOTSTRAP_TENANT", "default")
        await ensure_tenant(bus, tenant_id, tenant_id, Path(key_file).read_text().strip())


if __name__ == "__main__":
    asyncio.run(main())
