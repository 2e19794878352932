"""`python -m services.privacy`: run the vault as a gRPC server until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import os

from services.common.bus import Bus
from services.common.config import Settings
from services.common.grpc_server import configure_logging, serve
from services.common.tls import internal_server_credentials
from services.privacy.server import add_to_server, build_servicer

RETENTION_SWEEP_ENV = "STUDIO_RETENTION_SWEEP_S"
# How often a deletion step that failed (announce, certify, purge NATS) is tried again.
DELETION_RETRY_ENV = "STUDIO_DELETION_RETRY_S"


async def main() -> None:
    settings = Settings.from_env("privacy")
    configure_logging(settings.service_name)
    servicer = build_servicer(settings)
    bus = await Bus.connect(settings.require("nats_url"), name="privacy")
    servicer.attach_bus(bus)
    sweep_s = float(os.environ.get(RETENTION_SWEEP_ENV, "60"))
    retry_s = float(os.environ.get(DELETION_RETRY_ENV, "15"))
    try:
        await serve(
            settings.service_name, settings.listen, settings.metrics_port,
            lambda server: add_to_server(servicer, server),
            background=[servicer.deletions.run_confirmations, lambda: servicer.deletions.run_retention(sweep_s),
                        lambda: servicer.deletions.run_unfinished(retry_s)],
            credentials=internal_server_credentials(),
        )
    finally:
        await bus.close()
        servicer.close()


if __name__ == "__main__":
    asyncio.run(main())
