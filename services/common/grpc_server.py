"""gRPC server bootstrap shared by every service: health, reflection, metrics, clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Counter, Histogram, start_http_server

from services.common.bus import NATS_OUTAGES
from services.common.store_space import store_is_full
from services.common.vault_client import VaultStorageFull

log = logging.getLogger(__name__)

RPC_COUNT = Counter("studio_rpc_total", "RPCs received", ["service", "method"])
RPC_SECONDS = Histogram("studio_rpc_seconds", "RPC handling time (unary calls)", ["service", "method"])
# The method label of calls to a method no service has: any caller can name one (an unauthenticated call on the
# public port), so each name must not become a series of its own.
UNKNOWN_METHOD = "unknown"
# A full NATS store: said as what it means to the caller, without the store's internals.
STORE_FULL_DETAILS = ("the studio's event store is full, so nothing was recorded; this is not a quota: try again "
                      "once the studio's operator has freed space")

BackgroundTask = Callable[[], Awaitable[None]]
HEALTH_PORT_ENV = "STUDIO_HEALTH_PORT"
# gRPC sets SO_REUSEPORT by default: a second server on a taken port would start and share its calls. Off,
# the second one fails to bind instead.
NO_PORT_SHARING = [("grpc.so_reuseport", 0)]
# Statuses from a downstream service that mean the same thing to our caller.
PASSED_THROUGH = (
    grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ALREADY_EXISTS,
)


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every RPC, and turns unexpected failures into a canonical status whose
    details say what to do, never internals (which could name keys, paths or other tenants)."""

    def __init__(self, service_name: str) -> None:
        self._service = service_name

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        handler = await continuation(handler_call_details)
        RPC_COUNT.labels(self._service, UNKNOWN_METHOD if handler is None else method).inc()
        if handler is None:
            return handler
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary), handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(method, handler.stream_unary), handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(method, handler.unary_stream), handler.request_deserializer,
                handler.response_serializer,
            )
        return handler

    def _unary(self, method: str, inner):
        service = self._service

        async def guarded(request, context):
            started = time.perf_counter()
            try:
                return await inner(request, context)
            except (grpc.aio.AbortError, asyncio.CancelledError):
                raise
            except Exception as error:
                await _abort_for(error, method, context)
            finally:
                RPC_SECONDS.labels(service, method).observe(time.perf_counter() - started)

        return guarded

    def _streaming(self, method: str, inner):
        async def guarded(request, context):
            try:
                async for response in inner(request, context):
                    yield response
            except (grpc.aio.AbortError, asyncio.CancelledError):
                raise
            except Exception as error:
                await _abort_for(error, method, context)

        return guarded


async def _abort_for(error: Exception, method: str, context: grpc.aio.ServicerContext) -> None:
    if isinstance(error, grpc.aio.AioRpcError) and error.code() in PASSED_THROUGH:
        await context.abort(error.code(), error.details() or error.code().name)
    if isinstance(error, VaultStorageFull):  # as the vault answered it: RESOURCE_EXHAUSTED, its reason
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
    if store_is_full(error):  # not retried by clients: waiting does not free space, the operator does
        log.error("%s: refused, a NATS store is full: %s", method, error)
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, STORE_FULL_DETAILS)
    if isinstance(error, (grpc.aio.AioRpcError, ConnectionError, TimeoutError, OSError, *NATS_OUTAGES)):
        log.warning("%s: a dependency is unavailable: %s", method, type(error).__name__)
        await context.abort(grpc.StatusCode.UNAVAILABLE, "a backend service is unavailable; retry with backoff")
    log.exception("%s failed", method)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; the operator has the details in the logs")


def configure_logging(service_name: str) -> None:
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s {service_name} %(levelname)s %(name)s: %(message)s"
    )


async def serve(
    service_name: str,
    listen: str,
    metrics_port: int,
    register: Callable[[grpc.aio.Server], Iterable[str]],
    background: Iterable[BackgroundTask] = (),
    interceptors: Iterable[grpc.aio.ServerInterceptor] = (),
    credentials: grpc.ServerCredentials | None = None,
    max_receive_bytes: int = 0,
) -> None:
    """Run until SIGTERM/SIGINT. `register` adds servicers and returns their full service names.
    With `credentials` (internal services under mTLS) the port is TLS-only. `max_receive_bytes`: the largest
    request message taken (0: gRPC's default, 4 MiB); a larger one is refused with RESOURCE_EXHAUSTED."""
    server = grpc.aio.server(interceptors=[ServiceInterceptor(service_name), *interceptors],
                             options=server_options(max_receive_bytes))
    service_names = list(register(server))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    port = server.add_secure_port(listen, credentials) if credentials else server.add_insecure_port(listen)
    health_only = _plaintext_health_server(health_servicer, listen) if credentials else None
    if metrics_port:
        start_http_server(metrics_port, addr="127.0.0.1" if listen.startswith("127.") else "0.0.0.0")
    await server.start()
    if health_only:
        await health_only.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    failed: list[BaseException] = []
    tasks = [asyncio.create_task(_supervise(task, stop, failed)) for task in background]
    for name in ["", *service_names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("%s serving on port %d", service_name, port)
    await stop.wait()
    await health_servicer.enter_graceful_shutdown()
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await server.stop(grace=5)
    if health_only:
        await health_only.stop(grace=None)
    log.info("%s stopped", service_name)
    if failed:  # a crash, not a clean stop: the exit status says so to whoever restarts us
        raise SystemExit(1)


def server_options(max_receive_bytes: int = 0) -> list[tuple[str, int]]:
    if not max_receive_bytes:
        return list(NO_PORT_SHARING)
    return [*NO_PORT_SHARING, ("grpc.max_receive_message_length", max_receive_bytes)]


def _plaintext_health_server(health_servicer, listen: str) -> grpc.aio.Server | None:
    """Under mTLS the service port takes only client certificates, which kubelet's gRPC probes do not
    present: the health service alone is also served in plaintext on STUDIO_HEALTH_PORT."""
    port = int(os.environ.get(HEALTH_PORT_ENV, "0") or 0)
    if not port:
        return None
    server = grpc.aio.server(options=NO_PORT_SHARING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_insecure_port(f"{listen.rsplit(':', 1)[0]}:{port}")
    return server


async def _supervise(task: BackgroundTask, stop: asyncio.Event, failed: list[BaseException]) -> None:
    """A background worker that crashes takes the service down (exit status 1), so the supervisor restarts it."""
    try:
        await task()
    except asyncio.CancelledError:
        raise
    except Exception as error:
        log.exception("background task failed; stopping the service")
        failed.append(error)
        stop.set()
