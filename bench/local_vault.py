"""An in-process vault on a loopback port, for the benchmarks that call it over gRPC."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc

from services.common.config import Settings
from services.common.secrets import write_secret_file
from services.privacy.server import PrivacyServicer, add_to_server, build_servicer


@asynccontextmanager
async def local_vault(root: Path, tokens: dict[str, str]) -> AsyncIterator[tuple[PrivacyServicer, grpc.aio.Channel]]:
    """The vault's servicer (state under `root`, `tokens` by service) and a channel to it."""
    tokens_file = root / "tokens.json"
    write_secret_file(tokens_file, json.dumps(tokens).encode())
    settings = dataclasses.replace(Settings.from_env("privacy"), data_dir=root / "data")
    servicer = build_servicer(settings, kek_file=root / "kek.json", tokens_file=tokens_file)
    server = grpc.aio.server()
    add_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield servicer, channel
    finally:
        await server.stop(grace=None)
        servicer.close()
