"""One gRPC channel per Triton URL (and event loop), shared by every request to it.

Why: a channel per request paid a new connection (TCP and HTTP/2 handshakes) for every render, load and
eviction, in front of Triton's batcher (bench/render_in_flight.py). A channel through which Triton was
unreachable is dropped, so the next attempt connects afresh instead of waiting out gRPC's reconnect backoff
(up to two minutes) once Triton is back; requests still in flight on it finish or fail on their own, and the
channel closes when the last of them lets go of it.
"""

from __future__ import annotations

import asyncio

import tritonclient.grpc.aio as triton_grpc

_clients: dict[asyncio.AbstractEventLoop, dict[str, triton_grpc.InferenceServerClient]] = {}


def triton_client(url: str) -> triton_grpc.InferenceServerClient:
    """The running event loop's client for `url`, made on first use."""
    for finished in [loop for loop in _clients if loop.is_closed()]:  # a closed loop's channels are unusable
        del _clients[finished]
    clients = _clients.setdefault(asyncio.get_running_loop(), {})
    client = clients.get(url)
    if client is None:
        client = clients[url] = triton_grpc.InferenceServerClient(url)
    return client


def drop_client(url: str, client: triton_grpc.InferenceServerClient) -> None:
    """Forget `client` (Triton was unreachable through it): the next request to `url` connects anew."""
    clients = _clients.get(asyncio.get_running_loop(), {})
    if clients.get(url) is client:
        del clients[url]


async def close_clients() -> None:
    """Close the running loop's channels (a service shutting down)."""
    for client in _clients.pop(asyncio.get_running_loop(), {}).values():
        await client.close()
