"""Start a local nats-server with JetStream for tests and the embedded deployment.

Given a token file, the server admits only clients that present its token (other local users of the machine
could otherwise read and write every queue, KV bucket and event). The token reaches nats-server through a
configuration file written 0600 beside the token, never its command line (which any local user can read)."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from services.common.config import url_with_token
from services.common.launchers.binaries import find_binary
from services.common.launchers.process import ManagedProcess, free_ports
from services.common.secrets import ensure_secret_file, new_token, write_secret_file

READY_TIMEOUT = 30.0
SERVER_CONFIG_NAME = "nats-server.conf"


@dataclass
class NatsServer:
    address: str  # nats://127.0.0.1:PORT, no credential: what may be shown or written where others read
    monitor_url: str
    process: ManagedProcess
    token: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """What a client connects with: the address with the token in it (nats://TOKEN@127.0.0.1:PORT). Secret."""
        return url_with_token(self.address, self.token)

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


def server_config_file(token_file: Path) -> Path:
    return token_file.with_name(SERVER_CONFIG_NAME)


def write_auth_config(token_file: Path) -> tuple[str, Path]:
    """The token in `token_file` (made on first use, 0600) and a nats-server configuration requiring it (0600)."""
    token = ensure_secret_file(token_file, lambda: new_token().encode()).decode().strip()
    config = server_config_file(token_file)
    write_secret_file(config, f'authorization {{\n  token: "{token}"\n}}\n'.encode())
    return token, config


async def start_nats(data_dir: Path, log_dir: Path, port: int | None = None, avoid: Collection[int] = (),
                     token_file: Path | None = None) -> NatsServer:
    """`avoid`: ports chosen for something not started yet. `token_file`: clients must present its token."""
    given = [port] if port else []
    port, monitor_port = given + free_ports(2 - len(given), exclude=[*given, *avoid])  # distinct: never the client port
    data_dir.mkdir(parents=True, exist_ok=True)
    token, config = write_auth_config(token_file) if token_file else (None, None)
    argv = [
        find_binary("nats-server"),
        *(["-c", str(config)] if config else []),
        "-js",
        "-sd", str(data_dir),
        "-a", "127.0.0.1",
        "-p", str(port),
        "-m", str(monitor_port),
    ]  # fmt: skip
    process = ManagedProcess(f"nats-{port}", argv, log_dir)
    process.start()
    server = NatsServer(address=f"nats://127.0.0.1:{port}", monitor_url=f"http://127.0.0.1:{monitor_port}",
                        process=process, token=token)
    try:
        await process.wait_ready(server.ready, READY_TIMEOUT)
    except BaseException:
        process.stop()
        raise
    return server
