"""FP8 transformer linears (services/renderer/fp8.py) on the CPU, which runs the same row-scaled FP8
products as an FP8 GPU (slowly): each layer tracks its bf16/fp32 original, adapters fused into the
master weights are requantized in place, and each subject's FP8 render stays its own subject's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from services.renderer.adapters import FusedAdapter
from services.renderer.fp8 import Float8Linear, to_float8
from services.renderer.pipeline import PortraitRenderer, RenderParams, load_pipeline
from services.renderer.random_lora import make_lora

PARAMS = RenderParams(prompt="a portrait", seed=5, steps=2, guidance=5.0, width=64, height=64)
# e4m3 keeps 3 mantissa bits: a product's relative error is a few percent.
LAYER_TOLERANCE = 0.06
# Mean difference from the full-precision render, in levels of 255 (subjects differ by 4 to 5 here).
IMAGE_TOLERANCE = 2.0


def _relative_error(output: torch.Tensor, reference: torch.Tensor) -> float:
    output, reference = output.detach().float(), reference.detach().float()
    return float((output - reference).norm() / reference.norm())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_float8_linear_tracks_its_linear(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 96).to(dtype)
    layer = Float8Linear.from_linear(linear)
    inputs = torch.randn(2, 50, 64, dtype=dtype) * 3
    output = layer(inputs)
    assert output.shape == (2, 50, 96) and output.dtype == dtype
    assert layer.weight is linear.weight and layer.weight_fp8.dtype == torch.float8_e4m3fn
    assert _relative_error(output, linear(inputs)) < LAYER_TOLERANCE


def test_requantize_follows_an_in_place_weight_change_in_the_same_buffers() -> None:
    torch.manual_seed(1)
    linear = torch.nn.Linear(32, 48)
    layer = Float8Linear.from_linear(linear)
    buffers = (layer.weight_fp8.data_ptr(), layer.weight_scale.data_ptr())
    inputs = torch.randn(8, 32)
    with torch.no_grad():
        layer.weight.mul_(10).add_(torch.randn(48, 32))
    stale = layer(inputs)
    layer.requantize()
    assert _relative_error(layer(inputs), linear(inputs)) < LAYER_TOLERANCE
    assert _relative_error(stale, linear(inputs)) > 0.5
    assert (layer.weight_fp8.data_ptr(), layer.weight_scale.data_ptr()) == buffers  # graphs over them stay valid


def test_only_the_transformer_blocks_linears_become_fp8(base_model: Path) -> None:
    unet = load_pipeline(base_model).unet
    converted = to_float8(unet)
    assert converted and all(".transformer_blocks." in path for path in converted)
    assert not [path for path in converted if path.endswith(("attn2.to_k", "attn2.to_v"))]  # they read text
    assert {type(unet.get_submodule(path)) for path in converted} == {Float8Linear}
    assert type(unet.time_embedding.linear_1) is torch.nn.Linear


def _mean_difference(first: np.ndarray, second: np.ndarray) -> float:
    return float(np.abs(first.astype(int) - second.astype(int)).mean())


@pytest.fixture(scope="module")
def loras(base_model: Path) -> dict[str, bytes]:
    # alpha 1: trained-LoRA-sized updates; the default test LoRAs push this tiny model so far that
    # bf16 alone moves their renders by 17 levels on average.
    return {"subject-a": make_lora(base_model, seed=1, alpha=1), "subject-b": make_lora(base_model, seed=2, alpha=1)}


def _full_precision(base_model: Path, loras: dict[str, bytes]) -> dict[str, np.ndarray]:
    renderer = PortraitRenderer(load_pipeline(base_model), adapter_cache_size=2)
    return {adapter_id: renderer.render(PARAMS, adapter_id, data) for adapter_id, data in loras.items()}


def _check_each_subject_stays_its_own(renderer: PortraitRenderer, loras: dict[str, bytes],
                                      reference: dict[str, np.ndarray]) -> None:
    for adapter_id in ("subject-a", "subject-b", "subject-a"):
        image = renderer.render(PARAMS, adapter_id, loras[adapter_id])
        other = next(name for name in reference if name != adapter_id)
        assert _mean_difference(image, reference[adapter_id]) < IMAGE_TOLERANCE, adapter_id
        assert _mean_difference(image, reference[other]) > 2 * IMAGE_TOLERANCE, adapter_id


def test_fused_subjects_are_requantized_and_each_render_stays_its_subjects(
    base_model: Path, loras: dict[str, bytes]
) -> None:
    reference = _full_precision(base_model, loras)
    renderer = PortraitRenderer(load_pipeline(base_model), adapter_cache_size=2)
    to_float8(renderer.pipe.unet)
    renderer.adapters = FusedAdapter(renderer.pipe, 2)
    _check_each_subject_stays_its_own(renderer, loras, reference)


def test_the_compiled_fp8_mode_serves_subjects_from_one_graph(base_model: Path, loras: dict[str, bytes]) -> None:
    from torch._dynamo.utils import counters

    reference = _full_precision(base_model, loras)
    renderer = PortraitRenderer(load_pipeline(base_model), adapter_cache_size=2, compile_mode="compile-fp8")
    assert isinstance(renderer.adapters, FusedAdapter)
    renderer.render(PARAMS)
    graphs = counters["stats"]["unique_graphs"]
    _check_each_subject_stays_its_own(renderer, loras, reference)
    assert counters["stats"]["unique_graphs"] == graphs, "a subject recompiled the FP8 UNet"


def test_batched_subjects_over_fp8_layers_each_stay_their_own(base_model: Path, loras: dict[str, bytes]) -> None:
    from services.renderer.batched_adapters import BatchedLoraLinear
    from services.renderer.pipeline import BatchItem

    reference = _full_precision(base_model, loras)
    renderer = PortraitRenderer(load_pipeline(base_model), adapter_cache_size=2, compile_mode="batched-fp8")
    wrapped = [module.base for module in renderer.pipe.unet.modules() if isinstance(module, BatchedLoraLinear)]
    assert any(isinstance(base, Float8Linear) for base in wrapped)  # the slots sit beside FP8 products
    order = ["subject-b", "subject-a", "subject-b"]
    images = renderer.render_batch([BatchItem(PARAMS, subject, loras[subject]) for subject in order])
    for subject, image in zip(order, images, strict=True):
        other = next(name for name in reference if name != subject)
        assert _mean_difference(image, reference[subject]) < IMAGE_TOLERANCE, subject
        assert _mean_difference(image, reference[other]) > 2 * IMAGE_TOLERANCE, subject
