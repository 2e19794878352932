"""Render one portrait through Triton's gRPC API (model portrait_diffusion)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

import grpc
import numpy as np
import tritonclient.grpc.aio as triton_grpc
from tritonclient.utils import InferenceServerException

from services.renderer.adapter_reference import NOT_LOADED, adapter_token
from services.renderer.model_repair import is_stub_death, repair_model
from services.renderer.triton_channels import drop_client, triton_client

MODEL_NAME = "portrait_diffusion"
IMAGE_OUTPUT = "IMAGE"
EVICTED_OUTPUT = "EVICTED"
LOADED_OUTPUT = "LOADED"
READY_TIMEOUT_S = 5.0
# Statuses after which the same request may succeed later, on this server or another one.
RETRYABLE_STATUSES = {
    str(grpc.StatusCode.UNAVAILABLE),
    str(grpc.StatusCode.DEADLINE_EXCEEDED),
    str(grpc.StatusCode.RESOURCE_EXHAUSTED),
    str(grpc.StatusCode.CANCELLED),
}
# Errors inside the model (an exception in the pipeline): worth another try, but not an endless one.
FAILED_STATUSES = {str(grpc.StatusCode.INTERNAL), str(grpc.StatusCode.UNKNOWN)}


class TritonUnavailable(RuntimeError):
    """Triton could not be reached or did not answer in time; retrying may succeed."""


class ModelBroken(TritonUnavailable):
    """The model's python stub died; the model is being reloaded (services/renderer/model_repair.py)."""


class RenderFailed(RuntimeError):
    """The model failed the request (an error inside it, e.g. out of GPU memory): it may succeed when tried again,
    but not forever: the job is retried within its queue's deliveries."""


class RenderRejected(RuntimeError):
    """The model refused the request (INVALID_ARGUMENT and the like); the same request will fail again."""

    def __init__(self, message: str, status: str | None = None) -> None:
        super().__init__(message)
        self.status = status


class AdapterWithdrawn(RuntimeError):
    """The job stopped (its order cancelled, its subject deleted) before its adapter went to Triton: not sent."""


class AdapterNotHeld(RenderRejected):
    """A request that named its adapter by token reached an instance that does not hold it; with the bytes
    it will succeed."""


@dataclass
class AdapterShipping:
    """Which adapters each Triton URL holds, so that requests name them by token (services/renderer/
    adapter_reference.py). The first request of an adapter the URL does not hold loads it with one request of
    its own, which the job's other requests wait for: the bytes go once, not with every request in flight (8 per
    job in deploy/k8s, an SDXL LoRA 185 MB each, through Triton's shared memory). A wrong guess (evicted,
    restarted, another replica behind the URL) costs one refused request, which then carries the bytes."""

    # (url, adapter id, token); tokens are secrets, so no repr shows them
    held: set[tuple[str, str, str]] = field(default_factory=set, repr=False)
    bytes_sent: int = 0
    loads: int = 0
    sent_with_bytes: int = 0
    sent_by_reference: int = 0
    _loading: dict[tuple[str, str, str], asyncio.Future] = field(default_factory=dict, repr=False)

    async def load_once(self, key: tuple[str, str, str], load: Callable[[], Awaitable[int]]) -> None:
        """Run `load` (which returns the bytes it sent) unless one is running for `key`; wait for it either way."""
        pending = self._loading.get(key)
        if pending is None:
            pending = self._loading[key] = asyncio.ensure_future(load())
            pending.add_done_callback(lambda done: self._loaded(key, done))
        await asyncio.shield(pending)  # a waiter cancelled must not cancel the others' load
        self.held.add(key)

    def _loaded(self, key: tuple[str, str, str], done: asyncio.Future) -> None:
        self._loading.pop(key, None)
        if not done.cancelled() and done.exception() is None:
            self.loads += 1
            self.bytes_sent += done.result()


@dataclass(frozen=True)
class RenderRequest:
    prompt: str
    negative_prompt: str
    adapter_id: str
    adapter: bytes
    seed: int
    steps: int
    guidance: float
    width: int
    height: int
    scheduler: str = ""  # empty: the base model's own scheduler
    # The adapter's token (services/renderer/adapter_reference.py), computed from `adapter` when not given: a
    # caller sending one LoRA many times computes it once. A secret like the bytes.
    adapter_token: str = ""

    def __post_init__(self) -> None:
        if self.adapter and not self.adapter_token:
            object.__setattr__(self, "adapter_token", adapter_token(self.adapter))

    def __repr__(self) -> str:  # keep adapter bytes and token out of logs
        return (
            f"RenderRequest(adapter_id={self.adapter_id!r}, adapter=<{len(self.adapter)} bytes>, "
            f"seed={self.seed}, steps={self.steps}, guidance={self.guidance}, "
            f"size={self.width}x{self.height}, scheduler={self.scheduler!r})"
        )


def _tensor(name: str, value: object, datatype: str, dtype: type) -> triton_grpc.InferInput:
    array = np.array([[value]], dtype=dtype)  # [batch of 1, one element]: the model batches requests
    tensor = triton_grpc.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def _adapter_inputs(request: RenderRequest, with_bytes: bool = True) -> list[triton_grpc.InferInput]:
    """ADAPTER_ID, ADAPTER (unless not `with_bytes`: the adapter goes by its token alone) and ADAPTER_TOKEN."""
    inputs = [_tensor("ADAPTER_ID", request.adapter_id.encode("utf-8"), "BYTES", np.object_)]
    if with_bytes:
        inputs.append(_tensor("ADAPTER", bytes(request.adapter), "BYTES", np.object_))
    if request.adapter_token:
        inputs.append(_tensor("ADAPTER_TOKEN", request.adapter_token.encode("ascii"), "BYTES", np.object_))
    return inputs


def build_inputs(request: RenderRequest, with_bytes: bool = True) -> list[triton_grpc.InferInput]:
    """The request's inputs; without `with_bytes`, the adapter goes by its token alone."""
    return [
        _tensor("PROMPT", request.prompt.encode("utf-8"), "BYTES", np.object_),
        _tensor("NEGATIVE_PROMPT", request.negative_prompt.encode("utf-8"), "BYTES", np.object_),
        *_adapter_inputs(request, with_bytes),
        _tensor("SEED", request.seed, "INT64", np.int64),
        _tensor("STEPS", request.steps, "INT32", np.int32),
        _tensor("GUIDANCE", request.guidance, "FP32", np.float32),
        _tensor("WIDTH", request.width, "INT32", np.int32),
        _tensor("HEIGHT", request.height, "INT32", np.int32),
        _tensor("SCHEDULER", request.scheduler.encode("utf-8"), "BYTES", np.object_),
    ]


@contextmanager
def _channel(url: str) -> Iterator[triton_grpc.InferenceServerClient]:
    """The shared client for `url` (services/renderer/triton_channels.py), dropped when a call through it finds
    Triton unreachable, so the next call connects afresh."""
    client = triton_client(url)
    try:
        yield client
    except InferenceServerException as error:
        if error.status() in RETRYABLE_STATUSES:
            drop_client(url, client)
        raise


def _classify(error: InferenceServerException, url: str) -> Exception:
    status, message = str(error.status()), error.message() or str(error)
    if status in RETRYABLE_STATUSES:
        return TritonUnavailable(f"Triton at {url}: {status}: {message}")
    if is_stub_death(status, message):
        return ModelBroken(f"Triton at {url}: {message}")
    if status in FAILED_STATUSES:
        return RenderFailed(message)  # the reason an order that fails for it gives: no internal address
    return (AdapterNotHeld if NOT_LOADED in message else RenderRejected)(message, status)


async def render_via_triton(url: str, request: RenderRequest, *, timeout_s: float = 120,
                            shipping: AdapterShipping | None = None,
                            stopped: Callable[[], bool] = lambda: False) -> np.ndarray:
    """The rendered image as uint8 HxWx3; TritonUnavailable (retry), RenderFailed (retry a few times) or
    RenderRejected (do not). With `shipping`, the adapter goes to `url` once (load_adapter) and each render names it
    by token; a render the instance refuses for want of it carries the bytes. Each time the bytes would go,
    `stopped()` is asked first (AdapterWithdrawn): a deletion's purge may have evicted the adapter while this render
    was queued."""
    if shipping is None or not request.adapter:
        return await _render(url, build_inputs(request), timeout_s)
    key = (url, request.adapter_id, request.adapter_token)
    if key not in shipping.held:
        _unless_stopped(stopped)
        await shipping.load_once(key, lambda: load_adapter(url, request, timeout_s=timeout_s))
    try:
        image = await _render(url, build_inputs(request, with_bytes=False), timeout_s)
        shipping.sent_by_reference += 1
        return image
    except AdapterNotHeld:
        shipping.held.discard(key)
    _unless_stopped(stopped)
    image = await _render(url, build_inputs(request), timeout_s)
    shipping.held.add(key)
    shipping.sent_with_bytes += 1
    shipping.bytes_sent += len(request.adapter)
    return image


def _unless_stopped(stopped: Callable[[], bool]) -> None:
    if stopped():
        raise AdapterWithdrawn("the job stopped; its adapter is not sent")


async def load_adapter(url: str, request: RenderRequest, *, timeout_s: float = 120) -> int:
    """Load the request's adapter into the instance at `url` without rendering (a request of ADAPTER_ID, ADAPTER
    and ADAPTER_TOKEN alone); the bytes sent. RenderRejected when the bytes are no LoRA the instance can serve."""
    await _infer(url, _adapter_inputs(request), LOADED_OUTPUT, timeout_s)
    return len(request.adapter)


async def _infer(url: str, inputs: list[triton_grpc.InferInput], output: str, timeout_s: float) -> np.ndarray:
    """`output` of one request to the model; on error TritonUnavailable (ModelBroken: the model reloaded first),
    RenderFailed or RenderRejected (or AdapterNotHeld)."""
    try:
        with _channel(url) as client:
            result = await client.infer(
                MODEL_NAME, inputs, outputs=[triton_grpc.InferRequestedOutput(output)], client_timeout=timeout_s
            )
    except InferenceServerException as error:
        classified = _classify(error, url)
        if isinstance(classified, ModelBroken):
            await repair_model(url, MODEL_NAME)  # then the caller retries, as for a Triton that was down
        raise classified from error
    return result.as_numpy(output)


async def _render(url: str, inputs: list[triton_grpc.InferInput], timeout_s: float) -> np.ndarray:
    image = await _infer(url, inputs, IMAGE_OUTPUT, timeout_s)
    image = image[0] if image is not None and image.ndim == 4 and image.shape[0] == 1 else image
    if image is None or image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
        shape = None if image is None else image.shape
        raise RenderRejected(f"Triton returned no usable image (shape {shape})")
    return image


async def evict_adapters(url: str, adapter_id_prefix: str, *, timeout_s: float = 30) -> int:
    """Drop every cached adapter whose id starts with the prefix from Triton's memory; how many went.
    TritonUnavailable when it cannot be reached (a deletion then waits and retries)."""
    if not adapter_id_prefix:
        raise ValueError("an eviction needs a non-empty adapter id prefix")
    inputs = [_tensor("EVICT_PREFIX", adapter_id_prefix.encode("utf-8"), "BYTES", np.object_)]
    return int((await _infer(url, inputs, EVICTED_OUTPUT, timeout_s)).reshape(-1)[0])


async def evict_on_every_instance(url: str, adapter_id_prefix: str, *, timeout_s: float = 30) -> int:
    """evict_adapters on every Triton server `url`'s host name resolves to: with several servers behind one name (a
    headless Service lists each pod, ready or not), one request would reach only one of them and the others would
    keep the adapters decrypted. TritonUnavailable when a name does not resolve or a server cannot be reached."""
    return await evict_on_addresses(await instance_urls(url), adapter_id_prefix, timeout_s=timeout_s)


async def evict_on_addresses(urls: list[str], adapter_id_prefix: str, *, timeout_s: float = 30) -> int:
    """evict_adapters on each `host:port`, except one whose port refuses connections: no process listens there (a
    pod between restarts, its container not started yet), so nothing is held, and the next process starts empty.
    Any other failure (a timeout, a server that answers with an error) is TritonUnavailable: the purge retries."""
    async def evict(each: str) -> int:
        if not await _accepts_connections(each):
            return 0
        return await evict_adapters(each, adapter_id_prefix, timeout_s=timeout_s)

    return sum(await asyncio.gather(*(evict(each) for each in urls)))


async def _accepts_connections(url: str) -> bool:
    """False only when the port refused: an address that does not answer in time may be a live server out of reach,
    which the eviction itself then reports as unavailable."""
    host, port = url.rsplit(":", 1)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), READY_TIMEOUT_S)
    except ConnectionRefusedError:
        return False
    except (OSError, TimeoutError):
        return True
    writer.close()
    with suppress(OSError):
        await writer.wait_closed()
    return True


async def instance_urls(url: str) -> list[str]:
    """`host:port` for each IPv4 address `url`'s host resolves to."""
    host, port = url.rsplit(":", 1)
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, int(port), family=socket.AF_INET,
                                                             type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise TritonUnavailable(f"{host} does not resolve: {error}") from error
    return sorted({f"{address[0]}:{port}" for *_, address in found})


async def triton_ready(url: str, model: str = MODEL_NAME) -> bool:
    """Whether the server answers and `model` is loaded and ready."""
    try:
        with _channel(url) as client:
            return bool(
                await client.is_server_ready(client_timeout=READY_TIMEOUT_S)
                and await client.is_model_ready(model, client_timeout=READY_TIMEOUT_S)
            )
    except InferenceServerException:
        return False


async def max_batch_size(url: str, model: str = MODEL_NAME) -> int:
    """`model`'s max_batch_size in its Triton configuration; TritonUnavailable when Triton does not answer."""
    try:
        with _channel(url) as client:
            config = await client.get_model_config(model, as_json=True, client_timeout=READY_TIMEOUT_S)
    except InferenceServerException as error:
        raise TritonUnavailable(f"Triton at {url}: {error.message() or error}") from error
    return int(config["config"].get("max_batch_size", 0))
