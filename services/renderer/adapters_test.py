"""Adapter stores (services/renderer/adapters.py) on the tiny random-weight model: a compiled UNet
serves many subjects from one in-place slot without recompiling, each with its own adapter's image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.common.tinymodel import write_tiny_model
from services.renderer.adapters import SLOT, SwappedAdapter
from services.renderer.pipeline import BatchItem, PortraitRenderer, RenderInputError, RenderParams, load_pipeline
from services.renderer.random_lora import make_lora

PARAMS = RenderParams(prompt="a portrait", seed=5, steps=2, guidance=5.0, width=64, height=64)
# Inductor's fused kernels round differently from eager: a few levels of 255 at most.
COMPILED_TOLERANCE = 3


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="module")
def loras(base_model: Path) -> dict[str, bytes]:
    # Other alphas too: the slot's scale must follow each adapter's own.
    return {
        "subject-a": make_lora(base_model, seed=1),
        "subject-b": make_lora(base_model, seed=2, alpha=4),
        "subject-c": make_lora(base_model, seed=3, rank=8, alpha=8),
    }


@pytest.fixture(scope="module")
def eager_images(base_model: Path, loras: dict[str, bytes]) -> dict[str, np.ndarray]:
    renderer = PortraitRenderer(load_pipeline(base_model), adapter_cache_size=4)
    images = {adapter_id: renderer.render(PARAMS, adapter_id, data) for adapter_id, data in loras.items()}
    images["base"] = renderer.render(PARAMS)
    return images


def _slot_parameters(renderer: PortraitRenderer) -> list:
    return [parameter for name, parameter in renderer.pipe.unet.named_parameters() if f".{SLOT}." in name]


def _differs(first: np.ndarray, second: np.ndarray) -> int:
    return int(np.abs(first.astype(int) - second.astype(int)).max())


def test_compiled_unet_swaps_subjects_without_recompiling(
    base_model: Path, loras: dict[str, bytes], eager_images: dict[str, np.ndarray]
) -> None:
    from torch._dynamo.utils import counters

    renderer = PortraitRenderer(load_pipeline(base_model), adapter_cache_size=2, compile_mode="compile")
    assert isinstance(renderer.adapters, SwappedAdapter)
    first = renderer.render(PARAMS, "subject-a", loras["subject-a"])
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1, "the UNet was not compiled"
    order = ["subject-b", "subject-c", "subject-a", "subject-b"]  # cache of 2: a is parsed again
    images = {adapter_id: renderer.render(PARAMS, adapter_id, loras[adapter_id]) for adapter_id in order}
    assert counters["stats"]["unique_graphs"] == graphs, "a new subject recompiled the UNet"
    assert renderer.loaded_adapter_ids == ["subject-a", "subject-b"]
    assert _differs(first, eager_images["subject-a"]) <= COMPILED_TOLERANCE
    for adapter_id, image in images.items():
        assert _differs(image, eager_images[adapter_id]) <= COMPILED_TOLERANCE, adapter_id
    assert _differs(images["subject-a"], images["subject-b"]) > 20
    mixed = renderer.render_batch([BatchItem(PARAMS, adapter_id, loras[adapter_id]) for adapter_id in order])
    for adapter_id, image in zip(order, mixed, strict=True):  # one batch, each group swapped in turn
        assert _differs(image, eager_images[adapter_id]) <= COMPILED_TOLERANCE, adapter_id
    assert _differs(renderer.render(PARAMS), eager_images["base"]) <= COMPILED_TOLERANCE


def test_deleting_the_subject_in_the_slot_clears_its_weights(base_model: Path, loras: dict[str, bytes],
                                                             eager_images: dict[str, np.ndarray]) -> None:
    renderer = PortraitRenderer(load_pipeline(base_model), adapter_cache_size=2)
    renderer.adapters = SwappedAdapter(renderer.pipe, 2)
    renderer.render(PARAMS, "tenant-1/subject-b", loras["subject-b"])
    renderer.render(PARAMS, "tenant-2/subject-a", loras["subject-a"])
    assert renderer.evict_prefix("tenant-2/") == 1
    assert all(float(parameter.abs().sum()) == 0.0 for parameter in _slot_parameters(renderer))
    assert renderer.loaded_adapter_ids == ["tenant-1/subject-b"]
    assert _differs(renderer.render(PARAMS, "tenant-1/subject-b", loras["subject-b"]), eager_images["subject-b"]) <= 1


def test_slot_refuses_what_it_cannot_serve_and_keeps_serving(base_model: Path, loras: dict[str, bytes],
                                                             eager_images: dict[str, np.ndarray]) -> None:
    import torch
    from safetensors.torch import load, save

    renderer = PortraitRenderer(load_pipeline(base_model), adapter_cache_size=2)
    renderer.adapters = SwappedAdapter(renderer.pipe, 2, max_rank=4)
    with pytest.raises(RenderInputError, match="adapter rank 8 is above this renderer's 4"):
        renderer.render(PARAMS, "big", loras["subject-c"])
    with_text_encoder = dict(load(loras["subject-a"]))
    with_text_encoder["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight"] = torch.zeros(4, 32)
    with pytest.raises(RenderInputError, match="text-encoder weights"):
        renderer.render(PARAMS, "te", save(with_text_encoder))
    with pytest.raises(RenderInputError, match="does not fit the base model"):
        renderer.render(PARAMS, "wrong", save({key: torch.zeros(3, 3) for key in load(loras["subject-a"])}))
    assert renderer.loaded_adapter_ids == []
    assert _differs(renderer.render(PARAMS, "subject-a", loras["subject-a"]), eager_images["subject-a"]) <= 1


def test_from_env_compiles_with_a_slot_bounded_by_the_rank_setting(
    base_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STUDIO_BASE_MODEL", str(base_model))
    monkeypatch.setenv("STUDIO_RENDER_COMPILE", "cuda-graphs")
    monkeypatch.setenv("STUDIO_RENDER_MAX_LORA_RANK", "16")
    renderer = PortraitRenderer.from_env()
    assert isinstance(renderer.adapters, SwappedAdapter) and renderer.adapters.max_rank == 16
    monkeypatch.setenv("STUDIO_RENDER_COMPILE", "warp")
    with pytest.raises(ValueError, match="STUDIO_RENDER_COMPILE must be one of"):
        PortraitRenderer.from_env()
