"""`python -m services.privacy`: run the vault as a gRPC server until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio

from services.common.config import Settings
from services.common.grpc_server import configure_logging, serve
from services.privacy.server import add_to_server, build_servicer


def main() -> None:
    settings = Settings.from_env("privacy")
    configure_logging(settings.service_name)
    servicer = build_servicer(settings)
    try:
        asyncio.run(serve(
            settings.service_name, settings.listen, settings.metrics_port,
            lambda server: add_to_server(servicer, server),
        ))
    finally:
        servicer.close()


if __name__ == "__main__":
    main()
