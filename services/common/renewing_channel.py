"""An mTLS channel to another internal service that follows its own certificate's renewals.

Callers make stubs once from a channel, and a stub binds its multicallables at construction; so the channel
hands out multicallables that look up the current underlying channel at each call. When the certificate, key or
CA files change (looked at every few seconds, not at each call), new calls go over a new secure channel built
from the new files; the old channel is closed once its calls in flight end, or after a grace period at the
latest (then its calls left are cancelled)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Callable, Collection, Sequence
from typing import Any

import grpc

from services.common.cert_renewals import Generation, WatchedFiles

CHECK_EVERY_S = 5.0
RETIRE_GRACE_S = 60.0  # how long calls in flight on a replaced channel may still run
Serializer = Callable[[Any], bytes] | None
Deserializer = Callable[[bytes], Any] | None


class RenewingChannel(grpc.aio.Channel):
    def __init__(self, address: str, files: WatchedFiles, options: Sequence[tuple[str, Any]] = (), *,
                 check_every_s: float = CHECK_EVERY_S, grace_s: float = RETIRE_GRACE_S) -> None:
        self._address, self._options, self._files = address, list(options), files
        self._check_every_s, self._grace_s = check_every_s, grace_s
        self._channel = self._open(files.read())
        self._calls: weakref.WeakSet[grpc.aio.Call] = weakref.WeakSet()  # in flight on self._channel
        self._checked_at = time.monotonic()
        self._retiring: dict[grpc.aio.Channel, asyncio.Task] = {}
        self._closed = False

    def current(self) -> grpc.aio.Channel:
        """The channel new calls go over: a new one once the files were renewed."""
        now = time.monotonic()
        if not self._closed and now - self._checked_at >= self._check_every_s:
            self._checked_at = now
            self._renew()
        return self._channel

    def _renew(self) -> None:
        try:
            loop = asyncio.get_running_loop()  # the old channel's closing runs there
        except RuntimeError:
            return
        generation = self._files.renewed()
        if generation is None:
            return
        old, calls = self._channel, self._calls
        self._channel, self._calls = self._open(generation), weakref.WeakSet()
        self._retiring[old] = loop.create_task(self._retire(old, list(calls)))

    def track(self, channel: grpc.aio.Channel, call: grpc.aio.Call) -> None:
        if channel is self._channel:
            self._calls.add(call)
            call.add_done_callback(self._calls.discard)

    async def _retire(self, old: grpc.aio.Channel, calls: list[grpc.aio.Call]) -> None:
        # Not old.close(grace): once gRPC's close began, a second close (ours, without grace) would do nothing.
        try:
            await _ended(calls, self._grace_s)
            await old.close(None)
        finally:
            self._retiring.pop(old, None)

    def _open(self, generation: Generation) -> grpc.aio.Channel:
        credentials = grpc.ssl_channel_credentials(root_certificates=generation.ca, private_key=generation.key,
                                                   certificate_chain=generation.cert)
        return grpc.aio.secure_channel(self._address, credentials, options=self._options)

    async def close(self, grace: float | None = None) -> None:
        self._closed = True
        retiring = list(self._retiring.items())
        for _, task in retiring:
            task.cancel()  # its wait for calls in flight; they get this close's grace below
        await asyncio.gather(self._channel.close(grace), *(old.close(grace) for old, _ in retiring))

    async def __aenter__(self) -> RenewingChannel:
        return self

    async def __aexit__(self, exc_type, exc_val, exc_tb) -> None:
        await self.close(None)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self.current().get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self.current().wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self.current().channel_ready()

    def unary_unary(self, method: str, request_serializer: Serializer = None,
                    response_deserializer: Deserializer = None,
                    _registered_method: bool | None = False) -> grpc.aio.UnaryUnaryMultiCallable:
        return _UnaryUnary(self, "unary_unary", method, request_serializer, response_deserializer, _registered_method)

    def unary_stream(self, method: str, request_serializer: Serializer = None,
                     response_deserializer: Deserializer = None,
                     _registered_method: bool | None = False) -> grpc.aio.UnaryStreamMultiCallable:
        return _UnaryStream(self, "unary_stream", method, request_serializer, response_deserializer, _registered_method)

    def stream_unary(self, method: str, request_serializer: Serializer = None,
                     response_deserializer: Deserializer = None,
                     _registered_method: bool | None = False) -> grpc.aio.StreamUnaryMultiCallable:
        return _StreamUnary(self, "stream_unary", method, request_serializer, response_deserializer, _registered_method)

    def stream_stream(self, method: str, request_serializer: Serializer = None,
                      response_deserializer: Deserializer = None,
                      _registered_method: bool | None = False) -> grpc.aio.StreamStreamMultiCallable:
        return _StreamStream(self, "stream_stream", method, request_serializer, response_deserializer,
                             _registered_method)


class _Resolving:
    """A multicallable that makes each call on the channel current at that moment."""

    def __init__(self, channel: RenewingChannel, kind: str, method: str, request_serializer: Serializer,
                 response_deserializer: Deserializer, registered_method: bool | None) -> None:
        self._channel, self._kind, self._method = channel, kind, method
        self._kwargs = {"request_serializer": request_serializer, "response_deserializer": response_deserializer,
                        "_registered_method": registered_method}
        self._bound: tuple[grpc.aio.Channel, Any] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        current = self._channel.current()
        if self._bound is None or self._bound[0] is not current:
            self._bound = (current, getattr(current, self._kind)(self._method, **self._kwargs))
        call = self._bound[1](*args, **kwargs)
        self._channel.track(current, call)
        return call


class _UnaryUnary(_Resolving, grpc.aio.UnaryUnaryMultiCallable):
    pass


class _UnaryStream(_Resolving, grpc.aio.UnaryStreamMultiCallable):
    pass


class _StreamUnary(_Resolving, grpc.aio.StreamUnaryMultiCallable):
    pass


class _StreamStream(_Resolving, grpc.aio.StreamStreamMultiCallable):
    pass


async def _ended(calls: Collection[grpc.aio.Call], timeout: float) -> None:
    """Until every one of CALLS ended, TIMEOUT seconds at most."""

    async def ending(call: grpc.aio.Call) -> None:
        with contextlib.suppress(Exception):  # how a call ended is its caller's business
            await call.code()

    waits = [asyncio.ensure_future(ending(call)) for call in calls if not call.done()]
    if not waits:
        return
    try:
        await asyncio.wait(waits, timeout=timeout)
    finally:
        for wait in waits:
            wait.cancel()
