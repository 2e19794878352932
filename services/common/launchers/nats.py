"""Start a local nats-server with JetStream for tests and the embedded deployment."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from services.common.launchers.binaries import find_binary
from services.common.launchers.process import ManagedProcess, free_ports

READY_TIMEOUT = 30.0


@dataclass
class NatsServer:
    url: str
    monitor_url: str
    process: ManagedProcess

    def stop(self, timeout: float = 10) -> None:
        self.process.stop(timeout)

    async def ready(self) -> bool:
        return await asyncio.to_thread(_healthz_ok, f"{self.monitor_url}/healthz?js-enabled-only=true")


def _healthz_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


async def start_nats(data_dir: Path, log_dir: Path, port: int | None = None, avoid: Collection[int] = ()) -> NatsServer:
    """`avoid`: ports chosen for something not started yet."""
    given = [port] if port else []
    port, monitor_port = given + free_ports(2 - len(given), exclude=[*given, *avoid])  # distinct: never the client port
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        find_binary("nats-server"),
        "-js",
        "-sd", str(data_dir),
        "-a", "127.0.0.1",
        "-p", str(port),
        "-m", str(monitor_port),
    ]  # fmt: skip
    process = ManagedProcess(f"nats-{port}", argv, log_dir)
    process.start()
    monitor_url = f"http://127.0.0.1:{monitor_port}"
    healthz = f"{monitor_url}/healthz?js-enabled-only=true"

    async def ready() -> bool:
        return await asyncio.to_thread(_healthz_ok, healthz)

    try:
        await process.wait_ready(ready, READY_TIMEOUT)
    except BaseException:
        process.stop()
        raise
    return NatsServer(url=f"nats://127.0.0.1:{port}", monitor_url=monitor_url, process=process)
