"""gRPC server bootstrap shared by every service: health, reflection, metrics, clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Counter, Histogram, start_http_server

log = logging.getLogger(__name__)

RPC_COUNT = Counter("studio_rpc_total", "RPCs received", ["service", "method"])
RPC_SECONDS = Histogram("studio_rpc_seconds", "RPC handling time (unary calls)", ["service", "method"])

BackgroundTask = Callable[[], Awaitable[None]]


class _MetricsInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, service_name: str) -> None:
        self._service = service_name

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        RPC_COUNT.labels(self._service, method).inc()
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        service = self._service

        async def timed(request, context):
            started = time.perf_counter()
            try:
                return await inner(request, context)
            finally:
                RPC_SECONDS.labels(service, method).observe(time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(
            timed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


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
) -> None:
    """Run until SIGTERM/SIGINT. `register` adds servicers and returns their full service names."""
    server = grpc.aio.server(interceptors=[_MetricsInterceptor(service_name), *interceptors])
    service_names = list(register(server))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    port = server.add_insecure_port(listen)
    if metrics_port:
        start_http_server(metrics_port, addr="127.0.0.1" if listen.startswith("127.") else "0.0.0.0")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    tasks = [asyncio.create_task(_supervise(task, stop)) for task in background]
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
    log.info("%s stopped", service_name)


async def _supervise(task: BackgroundTask, stop: asyncio.Event) -> None:
    """A background worker that crashes takes the service down, so the supervisor restarts it."""
    try:
        await task()
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("background task failed; stopping the service")
        stop.set()
