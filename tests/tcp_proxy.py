"""A TCP proxy for tests that cuts a live connection on demand: after a number of bytes from the client
(a stream interrupted mid-upload) or from the server (a reply lost after the server acted); or that takes the
server behind it away altogether and brings it back on the same port (an outage, without the server's restart)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

UP, DOWN = "up", "down"


@dataclass
class _Cut:
    direction: str
    after_bytes: int
    seen: int = 0


class CuttingProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.cuts = 0
        self.endpoint = ""
        self._armed: _Cut | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", 0)
        self.endpoint = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self.endpoint

    async def go_down(self) -> None:
        """Refuse connections (nothing listens on the port) and reset the live ones."""
        await self.close()
        self._server = None

    async def come_up(self) -> None:
        """Listen again on the same port."""
        port = int(self.endpoint.rsplit(":", 1)[1])
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", port)

    def cut_after(self, direction: str, after_bytes: int) -> None:
        """Reset the connection once `after_bytes` more bytes went `direction` (once, then disarm)."""
        self._armed = _Cut(direction, after_bytes)

    async def close(self) -> None:
        if self._server:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._server:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _connect(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(*self.target)
        pair = (client_writer, server_writer)
        self._writers.update(pair)
        await asyncio.gather(self._pump(client_reader, server_writer, UP, pair),
                             self._pump(server_reader, client_writer, DOWN, pair), return_exceptions=True)
        self._writers.difference_update(pair)

    async def _pump(self, reader, writer, direction: str, pair) -> None:
        try:
            while data := await reader.read(65536):
                if self._should_cut(direction, len(data)):
                    for end in pair:
                        end.transport.abort()
                    return
                writer.write(data)
                await writer.drain()
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def _should_cut(self, direction: str, size: int) -> bool:
        armed = self._armed
        if armed is None or armed.direction != direction:
            return False
        armed.seen += size
        if armed.seen < armed.after_bytes:
            return False
        self._armed = None
        self.cuts += 1
        return True
