"""Adapters by reference: after one request with the bytes, later requests name the adapter by its token; a token
alone renders only what the instance loaded itself, in every store and through a real tritonserver."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import socket
from pathlib import Path

import numpy as np
import pytest

from services.common.launchers.process import free_port
from services.common.launchers.triton import TritonServer
from services.renderer.adapter_reference import AdapterNotLoaded, adapter_token
from services.renderer.conftest import PARAMS, differs
from services.renderer.errors import RenderInputError
from services.renderer.pipeline import BatchItem, PortraitRenderer, load_pipeline
from services.renderer.triton_client import (
    AdapterNotHeld,
    AdapterShipping,
    AdapterWithdrawn,
    RenderRejected,
    RenderRequest,
    TritonUnavailable,
    build_inputs,
    evict_adapters,
    evict_on_addresses,
    evict_on_every_instance,
    instance_urls,
    render_via_triton,
)
from services.renderer.triton_client import _render as render_inputs

STORES = ["", "fused", "batched"]  # NamedAdapters (PEFT), FusedAdapter, BatchedAdapters


def by_token(adapter_id: str, adapter: bytes) -> BatchItem:
    return BatchItem(PARAMS, adapter_id, b"", adapter_token(adapter))


def test_the_token_is_not_the_plain_digest_the_adapter_id_shows() -> None:
    lora = b"some LoRA bytes"
    assert adapter_token(lora) == adapter_token(bytes(lora))
    assert adapter_token(lora) != hashlib.sha256(lora).hexdigest()
    assert adapter_token(lora) != adapter_token(lora + b"!")
    request = RenderRequest("a portrait", "", "subject/1", lora, 1, 2, 5.0, 64, 64)
    assert request.adapter_token == adapter_token(lora) and request.adapter_token not in repr(request)
    shipping = AdapterShipping(held={("url", "subject/1", request.adapter_token)})
    assert request.adapter_token not in repr(shipping)


@pytest.mark.parametrize("mode", STORES)
def test_a_token_renders_only_what_the_store_loaded_from_bytes(
    base_model: Path, loras: dict[str, bytes], eager_images: dict[str, np.ndarray], mode: str
) -> None:
    renderer = PortraitRenderer(load_pipeline(base_model), adapter_cache_size=2, compile_mode=mode)
    lora_a, lora_b = loras["subject-a"], loras["subject-b"]
    before = renderer.render_batch([by_token("subject-a", lora_a)])[0]
    assert isinstance(before, AdapterNotLoaded) and "send the adapter's bytes" in str(before)

    renderer.render(PARAMS, "subject-a", lora_a)
    by_reference, other, wrong = renderer.render_batch([
        by_token("subject-a", lora_a), BatchItem(PARAMS, "subject-b", lora_b), by_token("subject-a", lora_b)])
    assert differs(by_reference, eager_images["subject-a"]) <= 2  # the stores' own tolerance against PEFT
    assert differs(other, eager_images["subject-b"]) <= 2
    # Another subject's token under this id is not this subject's adapter: refused, not rendered with either.
    assert isinstance(wrong, AdapterNotLoaded)
    assert adapter_token(lora_b) not in str(wrong) and adapter_token(lora_a) not in str(wrong)

    renderer.evict_prefix("subject-a")
    assert isinstance(renderer.render_batch([by_token("subject-a", lora_a)])[0], AdapterNotLoaded)
    # A render by token and one that carries the bytes (a retry after NOT_FOUND) in one batch, token first.
    for image in renderer.render_batch([by_token("subject-a", lora_a), BatchItem(PARAMS, "subject-a", lora_a)]):
        assert not isinstance(image, Exception) and differs(image, eager_images["subject-a"]) <= 2


def test_bytes_and_a_token_that_disagree_are_refused(base_model: Path, loras: dict[str, bytes]) -> None:
    renderer = PortraitRenderer(load_pipeline(base_model))
    item = BatchItem(PARAMS, "subject-a", loras["subject-a"], adapter_token(loras["subject-b"]))
    result = renderer.render_batch([item])[0]
    assert type(result) is RenderInputError and "does not match" in str(result)
    assert renderer.loaded_adapter_ids == []


def request_for(adapter_id: str, adapter: bytes, seed: int = PARAMS.seed) -> RenderRequest:
    return RenderRequest(prompt=PARAMS.prompt, negative_prompt=PARAMS.negative_prompt, adapter_id=adapter_id,
                         adapter=adapter, seed=seed, steps=PARAMS.steps, guidance=PARAMS.guidance,
                         width=PARAMS.width, height=PARAMS.height)


async def test_a_job_ships_its_adapter_once_then_by_token(
    batched_triton: TritonServer, loras: dict[str, bytes], eager_images: dict[str, np.ndarray]
) -> None:
    url, lora = batched_triton.grpc_url, loras["subject-a"]
    shipping = AdapterShipping()
    # Four in flight from the start, as a job sends them: one load carries the bytes, every render the token.
    images = await asyncio.gather(*(render_via_triton(url, request_for("job-1/a", lora), shipping=shipping)
                                    for _ in range(4)))
    assert (shipping.loads, shipping.bytes_sent, shipping.sent_by_reference, shipping.sent_with_bytes) == (
        1, len(lora), 4, 0)
    assert differs(images[0], eager_images["subject-a"]) <= 2
    assert all(differs(image, images[0]) <= 1 for image in images)  # batched together: the same picture

    # Evicted (a deletion, or Triton restarted): the reference is refused once and that render carries the bytes.
    assert await evict_adapters(url, "job-1/") == 1
    again = await render_via_triton(url, request_for("job-1/a", lora), shipping=shipping)
    assert differs(again, images[0]) <= 1
    assert (shipping.loads, shipping.sent_with_bytes, shipping.sent_by_reference) == (1, 1, 4)
    assert shipping.bytes_sent == 2 * len(lora)

    # Evicted by a deletion's purge (on every server its name resolves to) while the job, stopped meanwhile, still
    # had a render queued: nothing goes again, neither with that render nor as a load, and the instance holds nothing.
    port = url.rsplit(":", 1)[1]
    assert await instance_urls(f"localhost:{port}") == [f"127.0.0.1:{port}"]
    assert await evict_on_every_instance(f"localhost:{port}", "job-1/") == 1
    for adapter_id in ("job-1/a", "job-1/b"):
        with pytest.raises(AdapterWithdrawn):
            await render_via_triton(url, request_for(adapter_id, lora), shipping=shipping, stopped=lambda: True)
    assert (shipping.loads, shipping.sent_with_bytes, shipping.bytes_sent) == (1, 1, 2 * len(lora))
    with pytest.raises(AdapterNotHeld):
        await render_inputs(url, build_inputs(request_for("job-1/a", lora), with_bytes=False), 30)


async def test_a_load_of_bytes_that_are_no_lora_is_invalid_and_keeps_nothing(batched_triton: TritonServer) -> None:
    shipping = AdapterShipping()
    with pytest.raises(RenderRejected, match="not a safetensors file") as rejected:
        await render_via_triton(batched_triton.grpc_url, request_for("broken/a", b"not a LoRA"), shipping=shipping)
    assert rejected.value.status == "StatusCode.INVALID_ARGUMENT"
    assert shipping.held == set() and shipping.loads == 0
    with pytest.raises(AdapterNotHeld):
        await render_inputs(batched_triton.grpc_url, build_inputs(request_for("broken/a", b"not a LoRA"),
                                                                  with_bytes=False), 30)


async def test_a_reference_the_instance_does_not_hold_is_not_found_without_the_token(
    batched_triton: TritonServer, loras: dict[str, bytes]
) -> None:
    url = batched_triton.grpc_url
    await render_via_triton(url, request_for("held/a", loras["subject-a"]))
    # Knowing an adapter id is not enough: another token under it renders nothing.
    guessed = request_for("held/a", loras["subject-a"], seed=9)
    guessed = dataclasses.replace(guessed, adapter_token=adapter_token(loras["subject-b"]))
    for request in (guessed, request_for("never-sent/b", loras["subject-b"])):
        with pytest.raises(AdapterNotHeld) as refused:
            await render_inputs(url, build_inputs(request, with_bytes=False), 30)
        assert refused.value.status == "StatusCode.NOT_FOUND"
        assert request.adapter_token not in str(refused.value)


async def test_bytes_with_another_adapters_token_are_invalid(
    batched_triton: TritonServer, loras: dict[str, bytes]
) -> None:
    request = dataclasses.replace(request_for("mismatch/a", loras["subject-a"]),
                                  adapter_token=adapter_token(loras["subject-b"]))
    with pytest.raises(RenderRejected, match="ADAPTER_TOKEN does not match") as rejected:
        await render_via_triton(batched_triton.grpc_url, request)
    assert rejected.value.status == "StatusCode.INVALID_ARGUMENT"


async def test_an_eviction_to_a_name_that_does_not_resolve_is_retried_not_skipped() -> None:
    with pytest.raises(TritonUnavailable, match="does not resolve"):
        await evict_on_every_instance("tritonserver-pods.invalid:8001", "subject/")


async def test_an_eviction_passes_over_a_pod_running_no_server_but_not_one_that_does_not_answer(
    batched_triton: TritonServer, loras: dict[str, bytes]
) -> None:
    url = batched_triton.grpc_url
    await render_via_triton(url, request_for("pods/a", loras["subject-a"]))
    restarting = f"127.0.0.1:{free_port()}"  # nothing listens: a pod between two processes holds nothing
    assert await evict_on_addresses([url, restarting], "pods/") == 1
    with pytest.raises(AdapterNotHeld):
        await render_inputs(url, build_inputs(request_for("pods/a", loras["subject-a"]), with_bytes=False), 30)

    with socket.socket() as silent:  # listening, never answering: a live server out of reach
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        with pytest.raises(TritonUnavailable):
            await evict_on_addresses([url, f"127.0.0.1:{silent.getsockname()[1]}"], "pods/", timeout_s=2)
