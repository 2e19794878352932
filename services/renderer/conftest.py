"""Shared fixtures of the renderer's tests, made once per session (nothing writes to them): the tiny random-weight
model, three subjects' LoRAs (other alphas and ranks too) and each one's eager (PEFT) render, the reference every
store must match; and a Triton serving the batched store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from services.common.launchers.triton import TritonServer, start_triton
from services.common.tinymodel import write_tiny_model
from services.renderer.pipeline import PortraitRenderer, RenderParams, load_pipeline
from services.renderer.random_lora import make_lora

MODEL_REPOSITORY = Path(__file__).parent / "model_repository"
PARAMS = RenderParams(prompt="a portrait", seed=5, steps=2, guidance=5.0, width=64, height=64)


def differs(first: np.ndarray, second: np.ndarray) -> int:
    """The largest difference between two images, in levels of 255."""
    return int(np.abs(first.astype(int) - second.astype(int)).max())


@pytest.fixture(scope="session")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def loras(base_model: Path) -> dict[str, bytes]:
    # Other alphas and ranks too: each adapter's own scale must be applied.
    return {
        "subject-a": make_lora(base_model, seed=1),
        "subject-b": make_lora(base_model, seed=2, alpha=4),
        "subject-c": make_lora(base_model, seed=3, rank=8, alpha=8),
    }


@pytest.fixture(scope="session")
def eager_images(base_model: Path, loras: dict[str, bytes]) -> dict[str, np.ndarray]:
    renderer = PortraitRenderer(load_pipeline(base_model), adapter_cache_size=4)
    images = {adapter_id: renderer.render(PARAMS, adapter_id, data) for adapter_id, data in loras.items()}
    images["base"] = renderer.render(PARAMS)
    return images


@pytest.fixture(scope="session")
async def batched_triton(tmp_path_factory: pytest.TempPathFactory, base_model: Path) -> AsyncIterator[TritonServer]:
    """One server for the modules that test the batched store through Triton (the deploy default's store, without
    CUDA graphs); each uses adapter ids of its own."""
    root = tmp_path_factory.mktemp("batched-triton")
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("STUDIO_RENDER_COMPILE", "batched")  # the instance reads it when it loads
        server = await start_triton(MODEL_REPOSITORY, root / "work", root / "logs", base_model=base_model)
    yield server
    server.stop()
