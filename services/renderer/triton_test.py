"""The portrait_diffusion model served by a real tritonserver (nvidia-pytriton wheel), over gRPC."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from services.common.launchers.process import ProcessStartError, free_port
from services.common.launchers.triton import (
    SERVED_COUNTER,
    SHM_DIR,
    TritonServer,
    shm_region_prefix,
    shm_regions,
    start_triton,
)
from services.common.tinymodel import TINY_RESOLUTION
from services.renderer.pipeline import PortraitRenderer, RenderParams, load_pipeline
from services.renderer.random_lora import make_lora
from services.renderer.triton_client import (
    ModelBroken,
    RenderFailed,
    RenderRejected,
    RenderRequest,
    TritonUnavailable,
    _classify,
    render_via_triton,
    triton_ready,
)

MODEL_REPOSITORY = Path(__file__).parent / "model_repository"
BASE_REQUEST = RenderRequest(
    prompt="a portrait",
    negative_prompt="blurry",
    adapter_id="",
    adapter=b"",
    seed=7,
    steps=2,
    guidance=5.0,
    width=TINY_RESOLUTION,
    height=TINY_RESOLUTION,
)


def with_adapter(adapter_id: str, adapter: bytes, **changes) -> RenderRequest:
    return dataclasses.replace(BASE_REQUEST, adapter_id=adapter_id, adapter=adapter, **changes)


def processes_mentioning(text: str) -> str:
    return subprocess.run(["pgrep", "-a", "-f", text], capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
async def triton(tmp_path_factory: pytest.TempPathFactory, base_model: Path) -> AsyncIterator[TritonServer]:
    root = tmp_path_factory.mktemp("triton")
    server = await start_triton(MODEL_REPOSITORY, root / "work", root / "logs", base_model=base_model)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def adapters(base_model: Path) -> dict[str, bytes]:
    return {"subject-a": make_lora(base_model, seed=1), "subject-b": make_lora(base_model, seed=2)}


@pytest.fixture(scope="module")
def in_process(base_model: Path) -> PortraitRenderer:
    return PortraitRenderer(load_pipeline(base_model))


def render_in_process(renderer: PortraitRenderer, request: RenderRequest) -> np.ndarray:
    params = RenderParams(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        seed=request.seed,
        steps=request.steps,
        guidance=request.guidance,
        width=request.width,
        height=request.height,
    )
    return renderer.render(params, request.adapter_id, request.adapter)


def assert_within_levels(image: np.ndarray, alone: np.ndarray, levels: int, request: RenderRequest) -> None:
    """`image` within `levels` of `alone`, else a failure that names the request by adapter and seed (its repr
    carries the adapter's bytes)."""
    worst = int(np.abs(image.astype(int) - alone.astype(int)).max())
    assert worst <= levels, f"{request.adapter_id or 'base model'}, seed {request.seed}: {worst} levels off"


def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    assert np.abs(actual.astype(np.int16) - expected.astype(np.int16)).max() <= 1


async def test_render_without_adapter_is_a_uint8_image(triton: TritonServer) -> None:
    assert await triton_ready(triton.grpc_url)
    assert "adapter cache 8" in triton.process.log_tail(400)  # config.pbtxt's adapter_cache_size
    image = await render_via_triton(triton.grpc_url, BASE_REQUEST)
    assert image.dtype == np.uint8
    assert image.shape == (TINY_RESOLUTION, TINY_RESOLUTION, 3)


async def test_same_seed_same_image_other_seed_other_image(triton: TritonServer) -> None:
    first = await render_via_triton(triton.grpc_url, BASE_REQUEST)
    again = await render_via_triton(triton.grpc_url, BASE_REQUEST)
    other_seed = await render_via_triton(triton.grpc_url, dataclasses.replace(BASE_REQUEST, seed=8))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other_seed)


async def test_adapter_changes_image_and_matches_in_process_render(
    triton: TritonServer, adapters: dict[str, bytes], in_process: PortraitRenderer
) -> None:
    request = with_adapter("subject-a", adapters["subject-a"])
    image = await render_via_triton(triton.grpc_url, request)
    assert not np.array_equal(image, await render_via_triton(triton.grpc_url, BASE_REQUEST))
    assert_close(image, render_in_process(in_process, request))


async def test_adapters_back_to_back_each_give_their_own_image(
    triton: TritonServer, adapters: dict[str, bytes], in_process: PortraitRenderer
) -> None:
    requests = [with_adapter(adapter_id, data) for adapter_id, data in adapters.items()]
    first_a, first_b, second_a, second_b = [
        await render_via_triton(triton.grpc_url, request) for request in requests + requests
    ]
    assert not np.array_equal(first_a, first_b)
    assert np.array_equal(first_a, second_a)
    assert np.array_equal(first_b, second_b)
    assert_close(first_b, render_in_process(in_process, requests[1]))
    plain = await render_via_triton(triton.grpc_url, BASE_REQUEST)
    assert not np.array_equal(plain, first_b)


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (with_adapter("garbage", b"these are not safetensors"), "adapter is not a safetensors file"),
        (dataclasses.replace(BASE_REQUEST, width=60), "width must be a multiple of 8"),
        (dataclasses.replace(BASE_REQUEST, steps=0), "steps must be in 1..100"),
        (dataclasses.replace(BASE_REQUEST, steps=101), "steps must be in 1..100"),
    ],
)
async def test_bad_request_is_rejected_with_reason(triton: TritonServer, request_: RenderRequest, reason: str) -> None:
    with pytest.raises(RenderRejected, match=reason) as rejected:
        await render_via_triton(triton.grpc_url, request_)
    assert rejected.value.status == "StatusCode.INVALID_ARGUMENT"
    assert await triton_ready(triton.grpc_url)


async def test_unreachable_server_is_unavailable_not_rejected() -> None:
    url = f"127.0.0.1:{free_port()}"
    assert not await triton_ready(url)
    with pytest.raises(TritonUnavailable):
        await render_via_triton(url, BASE_REQUEST, timeout_s=5)


async def test_stop_leaves_no_tritonserver_or_stub_or_shared_memory(tmp_path: Path, base_model: Path) -> None:
    work_dir, port = tmp_path / "work", free_port()
    stale = SHM_DIR / f"{shm_region_prefix(port)}left-by-a-killed-server"
    stale.write_bytes(b"a request's bytes")
    server = await start_triton(MODEL_REPOSITORY, work_dir, tmp_path / "logs", base_model=base_model, grpc_port=port)
    # Both tritonserver's and the stub's command lines name this server's own backend directory.
    running = processes_mentioning(str(work_dir))
    assert "tritonserver" in running and "triton_python_backend_stub" in running
    # Requests, decrypted adapters included, pass through the stub's regions: this user's alone, none stale.
    regions = shm_regions(port)
    assert regions and stale not in regions
    assert {oct(region.stat().st_mode & 0o777) for region in regions} == {oct(0o600)}
    server.stop()
    server.stop()  # idempotent
    assert processes_mentioning(str(work_dir)) == ""
    assert shm_regions(port) == []
    assert not await triton_ready(server.grpc_url)


async def test_model_that_cannot_load_fails_start_with_log(tmp_path: Path) -> None:
    with pytest.raises(ProcessStartError, match="tritonserver"):
        await start_triton(
            MODEL_REPOSITORY,
            tmp_path / "work",
            tmp_path / "logs",
            base_model=tmp_path / "no-such-model",
            ready_timeout=120,
        )
    assert processes_mentioning(str(tmp_path / "work")) == ""


MODEL, SERVED, EXECUTIONS = "portrait_diffusion", SERVED_COUNTER, "nv_inference_exec_count"


async def metrics_after_serving(triton: TritonServer, served_before: float, requests: int) -> tuple[float, float]:
    """(served, executions) once the metrics count all `requests` (a CI run that read at once saw 0 served)."""
    served = await asyncio.to_thread(triton.served_reaching, MODEL, served_before + requests)
    return served - served_before, await asyncio.to_thread(triton.counter, EXECUTIONS, MODEL)


async def test_two_subjects_in_flight_are_batched_and_each_gets_its_own_adapter(
    triton: TritonServer, adapters: dict[str, bytes], in_process: PortraitRenderer
) -> None:
    executions_before = await asyncio.to_thread(triton.counter, EXECUTIONS, MODEL)
    requests_before = await asyncio.to_thread(triton.counter, SERVED, MODEL)
    subjects = ["subject-a", "subject-b"] * 4  # interleaved: a, b, a, b...
    requests = [with_adapter(s, adapters[s], seed=index // 2) for index, s in enumerate(subjects)]
    images = await asyncio.gather(*(render_via_triton(triton.grpc_url, request) for request in requests))
    served, executions_after = await metrics_after_serving(triton, requests_before, len(requests))
    executions = executions_after - executions_before
    assert served == len(requests) and executions < len(requests), (served, executions)  # the batcher batched
    # The statistics extension counts the executions as the metrics do (read between two readings of the metric).
    counted = (await asyncio.to_thread(triton.executions, MODEL))["executions"]
    assert executions_before + executions <= counted <= await asyncio.to_thread(triton.counter, EXECUTIONS, MODEL)
    for request, image in zip(requests, images, strict=True):
        alone = render_in_process(in_process, request)  # batched: equal up to float rounding
        assert_within_levels(image, alone, 8, request)
    for a, b in zip(images[::2], images[1::2], strict=True):  # same seed, other subject's adapter
        assert np.abs(a.astype(int) - b.astype(int)).mean() > 5


async def test_scheduler_reaches_the_model(triton: TritonServer) -> None:
    euler = await render_via_triton(triton.grpc_url, dataclasses.replace(BASE_REQUEST, scheduler="euler"))
    ddim = await render_via_triton(triton.grpc_url, dataclasses.replace(BASE_REQUEST, scheduler="ddim"))
    assert not np.array_equal(euler, ddim)
    with pytest.raises(RenderRejected, match="unknown scheduler"):
        await render_via_triton(triton.grpc_url, dataclasses.replace(BASE_REQUEST, scheduler="warp"))


async def test_a_batched_instance_renders_mixed_subjects_together_each_with_its_own_adapter(
    batched_triton: TritonServer, adapters: dict[str, bytes], in_process: PortraitRenderer
) -> None:
    assert "UNet batched" in batched_triton.process.log_tail(400)
    executions_before = await asyncio.to_thread(batched_triton.counter, EXECUTIONS, MODEL)
    requests_before = await asyncio.to_thread(batched_triton.counter, SERVED, MODEL)
    subjects = ["subject-a", "subject-b", ""] * 3  # two subjects and the base model, interleaved
    requests = [with_adapter(s, adapters.get(s, b""), seed=index // 3) for index, s in enumerate(subjects)]
    images = await asyncio.gather(*(render_via_triton(batched_triton.grpc_url, request) for request in requests))
    served, executions_after = await metrics_after_serving(batched_triton, requests_before, len(requests))
    assert served == len(requests) and executions_after - executions_before < len(requests)  # subjects batched
    for request, image in zip(requests, images, strict=True):
        alone = render_in_process(in_process, request)  # eager PEFT, one request at a time
        assert_within_levels(image, alone, 8, request)
    for a, b, base in zip(images[::3], images[1::3], images[2::3], strict=True):
        assert min(np.abs(a.astype(int) - b.astype(int)).mean(), np.abs(a.astype(int) - base.astype(int)).mean()) > 5


def test_errors_inside_the_model_are_retried_a_few_times_and_refusals_never() -> None:
    def classified(status: str, message: str) -> Exception:
        return _classify(InferenceServerException(message, status=status), "triton:8001")

    assert isinstance(classified("StatusCode.INTERNAL", "render failed: OutOfMemoryError: CUDA out of memory"),
                      RenderFailed)
    assert isinstance(classified("StatusCode.INVALID_ARGUMENT", "unknown scheduler 'warp'"), RenderRejected)
    assert isinstance(classified("StatusCode.INTERNAL", "Stub process 'portrait_diffusion_0_0' is not healthy."),
                      ModelBroken)
    assert isinstance(classified("StatusCode.UNAVAILABLE", "connection refused"), TritonUnavailable)


async def test_a_model_whose_stub_died_is_reloaded_and_renders_again(triton: TritonServer) -> None:
    """Triton does not restart a python stub that died (killed for memory, a crash): the model stays ready and
    fails every request. The first request to see it reloads the model (the last test of the module: it kills
    the module server's stub)."""
    before = await render_via_triton(triton.grpc_url, BASE_REQUEST)
    stub_of_this_server = f"triton_python_backend_stub.*{shm_region_prefix(triton.grpc_port)}"
    [stub] = processes_mentioning(stub_of_this_server).splitlines()
    os.kill(int(stub.split()[0]), signal.SIGKILL)
    await asyncio.sleep(1)  # Triton's health check of the stub notices
    assert await triton_ready(triton.grpc_url)  # what Triton says of the model: no help
    with pytest.raises(ModelBroken, match="is not healthy"):
        await render_via_triton(triton.grpc_url, BASE_REQUEST)
    [restarted] = processes_mentioning(stub_of_this_server).splitlines()  # the model's new instance
    assert restarted != stub
    assert np.array_equal(await render_via_triton(triton.grpc_url, BASE_REQUEST), before)
    # The new stub's region was created readable by all: the server's own ShmGuard (no `studio up` supervisor here)
    # makes it private again within a moment.
    assert await regions_private_within(triton.grpc_port, timeout_s=2), region_modes(triton.grpc_port)


def region_modes(port: int) -> dict[str, str]:
    return {region.name: oct(region.stat().st_mode & 0o777) for region in shm_regions(port)}


async def regions_private_within(port: int, timeout_s: float) -> bool:
    for _ in range(int(timeout_s / 0.1)):
        modes = region_modes(port)
        if modes and set(modes.values()) == {oct(0o600)}:
            return True
        await asyncio.sleep(0.1)
    return False
