"""In-process rendering (services/renderer/pipeline.py) on the tiny random-weight model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from services.common.styles import SCHEDULERS
from services.common.tinymodel import TINY_RESOLUTION
from services.renderer.adapters import adapter_metadata
from services.renderer.pipeline import (
    SCHEDULER_CLASSES,
    BatchItem,
    PortraitRenderer,
    RenderInputError,
    RenderParams,
    load_pipeline,
    pick_device_and_dtype,
    to_uint8,
)
from services.renderer.random_lora import make_lora
from services.renderer.unet_modes import prepare_unet

TINY_PARAMS = RenderParams(prompt="a portrait", seed=7, steps=2, guidance=5.0, width=64, height=64)


@pytest.fixture(scope="module")
def renderer(base_model: Path) -> PortraitRenderer:
    return PortraitRenderer(load_pipeline(base_model), adapter_cache_size=2)


@pytest.fixture(scope="module")
def lora(base_model: Path) -> bytes:
    return make_lora(base_model, seed=1)


def test_render_is_uint8_image_and_deterministic(renderer: PortraitRenderer) -> None:
    first = renderer.render(TINY_PARAMS)
    assert first.dtype == np.uint8
    assert first.shape == (TINY_RESOLUTION, TINY_RESOLUTION, 3)
    assert np.array_equal(first, renderer.render(TINY_PARAMS))


def test_make_lora_matches_what_save_lora_weights_writes(base_model: Path, lora: bytes, tmp_path: Path) -> None:
    from diffusers import StableDiffusionPipeline
    from safetensors import safe_open
    from safetensors.torch import load

    tensors = load(lora)
    StableDiffusionPipeline.save_lora_weights(
        tmp_path,
        unet_lora_layers={key.removeprefix("unet."): value for key, value in tensors.items()},
        unet_lora_adapter_metadata={k.removeprefix("unet."): v for k, v in adapter_metadata(lora).items()},
    )
    saved = tmp_path / "pytorch_lora_weights.safetensors"
    with safe_open(saved, "pt") as reference:
        assert set(reference.keys()) == set(tensors)
        assert json.loads(reference.metadata()["lora_adapter_metadata"]) == adapter_metadata(lora)


def test_adapter_from_bytes_matches_diffusers_file_loading(
    renderer: PortraitRenderer, base_model: Path, lora: bytes, tmp_path: Path
) -> None:
    (tmp_path / "pytorch_lora_weights.safetensors").write_bytes(lora)
    reference = PortraitRenderer(load_pipeline(base_model))
    reference.pipe.load_lora_weights(tmp_path, adapter_name="reference")
    [expected] = reference._run_pipeline([TINY_PARAMS])

    with_adapter = renderer.render(TINY_PARAMS, "subject-1", lora)
    assert np.array_equal(with_adapter, expected)
    assert not np.array_equal(with_adapter, renderer.render(TINY_PARAMS))


def test_adapter_cache_evicts_least_recently_used(renderer: PortraitRenderer, base_model: Path) -> None:
    adapters = {f"subject-{seed}": make_lora(base_model, seed=seed) for seed in (11, 12, 13)}
    first = {adapter_id: renderer.render(TINY_PARAMS, adapter_id, data) for adapter_id, data in adapters.items()}
    assert renderer.loaded_adapter_ids == ["subject-12", "subject-13"]
    assert np.array_equal(renderer.render(TINY_PARAMS, "subject-11", adapters["subject-11"]), first["subject-11"])
    assert len(set(image.tobytes() for image in first.values())) == 3


def test_same_id_with_other_bytes_reloads(renderer: PortraitRenderer, base_model: Path, lora: bytes) -> None:
    other = make_lora(base_model, seed=21)
    original = renderer.render(TINY_PARAMS, "shared-id", lora)
    replaced = renderer.render(TINY_PARAMS, "shared-id", other)
    assert not np.array_equal(original, replaced)


@pytest.mark.parametrize(
    ("params", "adapter", "message"),
    [
        (RenderParams("p", width=60, height=64), b"", "width must be a multiple of 8"),
        (RenderParams("p", steps=0), b"", "steps must be in 1..100"),
        (RenderParams("p", steps=101), b"", "steps must be in 1..100"),
        (RenderParams("p", guidance=float("nan")), b"", "guidance"),
        (RenderParams("p", width=64, height=64, steps=1), b"not a safetensors file", "not a safetensors"),
    ],
)
def test_bad_input_is_rejected_with_reason(
    renderer: PortraitRenderer, params: RenderParams, adapter: bytes, message: str
) -> None:
    with pytest.raises(RenderInputError, match=message):
        renderer.render(params, "bad", adapter)


def test_adapter_for_another_model_is_rejected(renderer: PortraitRenderer, lora: bytes) -> None:
    import torch
    from safetensors.torch import load, save

    wrong_shapes = {key: torch.zeros(3, 3) for key in load(lora)}
    with pytest.raises(RenderInputError, match="adapter"):
        renderer.render(TINY_PARAMS, "wrong-shapes", save(wrong_shapes))
    assert "wrong-shapes" not in renderer.loaded_adapter_ids


def test_a_mixed_batch_gives_each_item_its_own_adapter_and_refuses_bad_items_alone(
    renderer: PortraitRenderer, base_model: Path, lora: bytes
) -> None:
    other = make_lora(base_model, seed=31)
    second = RenderParams(prompt="another portrait", seed=8, steps=2, guidance=5.0, width=64, height=64)
    items = [BatchItem(TINY_PARAMS, "a", lora), BatchItem(TINY_PARAMS, "b", other), BatchItem(second, "a", lora),
             BatchItem(RenderParams(prompt="x", width=60), "a", lora), BatchItem(TINY_PARAMS, "c", b"junk")]
    first_a, first_b, second_a, too_narrow, junk = renderer.render_batch(items)
    assert isinstance(too_narrow, RenderInputError) and "width must be a multiple of 8" in str(too_narrow)
    assert isinstance(junk, RenderInputError) and "not a safetensors file" in str(junk)
    # Batched with others, an image may differ from its solo render by float rounding, no more.
    solo = [(TINY_PARAMS, "a", lora), (TINY_PARAMS, "b", other), (second, "a", lora)]
    for image, (params, adapter_id, adapter) in zip((first_a, first_b, second_a), solo, strict=True):
        alone = renderer.render(params, adapter_id, adapter)
        assert np.abs(image.astype(int) - alone.astype(int)).max() <= 8
    assert np.abs(first_a.astype(int) - first_b.astype(int)).mean() > 5


@pytest.mark.parametrize("scheduler", ["ddim", "dpmpp-2m", "euler", "euler-a", "unipc"])
def test_every_catalogue_scheduler_renders_and_changes_the_image(renderer: PortraitRenderer, scheduler: str) -> None:
    image = renderer.render(dataclasses.replace(TINY_PARAMS, scheduler=scheduler))
    assert image.shape == (64, 64, 3)
    assert set(SCHEDULER_CLASSES) == set(SCHEDULERS)
    with pytest.raises(RenderInputError, match="unknown scheduler 'warp'"):
        renderer.render(dataclasses.replace(TINY_PARAMS, scheduler="warp"))


def test_dtype_and_compile_settings_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setenv("STUDIO_RENDER_DTYPE", "bf16")
    assert pick_device_and_dtype()[1] == torch.bfloat16
    monkeypatch.setenv("STUDIO_RENDER_DTYPE", "fp64")
    with pytest.raises(ValueError, match="STUDIO_RENDER_DTYPE must be one of bf16, fp16, fp32"):
        pick_device_and_dtype()
    with pytest.raises(ValueError, match="STUDIO_RENDER_COMPILE must be one of"):
        prepare_unet(object(), "turbo")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_pixels_convert_on_the_device_as_numpy_converted_them(dtype: str) -> None:
    """to_uint8 against what the renderer did before: diffusers' output_type="np", then numpy clip, scale, round."""
    import torch

    generator = torch.Generator().manual_seed(3)
    images = (torch.rand(3, 3, 17, 11, generator=generator) * 1.2 - 0.1).to(getattr(torch, dtype))
    images[0, 0, 0, :4] = torch.tensor([0.5 / 255, 1.5 / 255, 2.5 / 255, 254.5 / 255])  # ties round to even
    as_numpy = images.permute(0, 2, 3, 1).float().numpy()
    expected = (np.clip(as_numpy, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    converted = to_uint8(images)
    assert converted.dtype == np.uint8 and converted.shape == (3, 17, 11, 3) and converted.flags.c_contiguous
    assert np.array_equal(converted, expected)


def test_repr_shows_neither_the_adapter_nor_its_token() -> None:
    item = BatchItem(TINY_PARAMS, adapter_id="subject-1", adapter=b"decrypted-lora", adapter_token="token-123")
    assert "subject-1" in repr(item)
    assert "decrypted-lora" not in repr(item) and "token-123" not in repr(item)
