"""Subjects' LoRAs with text-encoder weights (`studio train --text-encoder`) in the fused and batched stores
(services/renderer/text_encoder_loras.py): each draws what the eager PEFT store draws, and in a batched
renderer such a subject gets calls of its own while the other subjects still share one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from services.renderer.batched_adapters_test import _counting_unet_calls
from services.renderer.conftest import PARAMS, differs
from services.renderer.pipeline import BatchItem, PortraitRenderer, load_pipeline
from services.renderer.random_lora import make_lora

TOLERANCE = 1  # levels of 255: the same products summed in another order


@pytest.fixture(scope="module")
def text_encoder_lora(base_model: Path) -> bytes:
    # The same UNet part as the shared fixture's subject-a (seed 1, rank 4, alpha 8), plus text-encoder weights.
    return make_lora(base_model, seed=1, text_encoder=True)


@pytest.fixture(scope="module")
def eager_text_encoder_image(base_model: Path, text_encoder_lora: bytes) -> np.ndarray:
    return PortraitRenderer(load_pipeline(base_model)).render(PARAMS, "with-text", text_encoder_lora)


def test_the_text_encoder_part_changes_the_picture(
    eager_text_encoder_image: np.ndarray, eager_images: dict[str, np.ndarray]
) -> None:
    assert differs(eager_text_encoder_image, eager_images["subject-a"]) > 3 * TOLERANCE


@pytest.mark.parametrize("mode", ["fused", "batched"])
def test_a_text_encoder_lora_draws_what_peft_draws_and_leaves_no_trace(
    mode: str, base_model: Path, text_encoder_lora: bytes, loras: dict[str, bytes],
    eager_text_encoder_image: np.ndarray, eager_images: dict[str, np.ndarray],
) -> None:
    renderer = PortraitRenderer(load_pipeline(base_model), adapter_cache_size=2, compile_mode=mode)
    assert differs(renderer.render(PARAMS, "with-text", text_encoder_lora), eager_text_encoder_image) <= TOLERANCE
    # The next subject and the base model are encoded without it.
    assert differs(renderer.render(PARAMS, "subject-a", loras["subject-a"]), eager_images["subject-a"]) <= TOLERANCE
    assert differs(renderer.render(PARAMS), eager_images["base"]) <= TOLERANCE
    assert differs(renderer.render(PARAMS, "with-text", text_encoder_lora), eager_text_encoder_image) <= TOLERANCE
    # Deleted: its layers leave the text encoder.
    assert renderer.evict_prefix("with-text") == 1
    assert not getattr(renderer.pipe.text_encoder, "peft_config", None)
    assert differs(renderer.render(PARAMS), eager_images["base"]) <= TOLERANCE


def test_a_batched_renderer_gives_a_text_encoder_subject_its_own_call(
    base_model: Path, text_encoder_lora: bytes, loras: dict[str, bytes],
    eager_text_encoder_image: np.ndarray, eager_images: dict[str, np.ndarray],
) -> None:
    renderer = PortraitRenderer(load_pipeline(base_model), adapter_cache_size=4, compile_mode="batched")
    calls = _counting_unet_calls(renderer)
    items = [BatchItem(PARAMS, "subject-b", loras["subject-b"]), BatchItem(PARAMS, "with-text", text_encoder_lora),
             BatchItem(PARAMS), BatchItem(PARAMS, "subject-c", loras["subject-c"]),
             BatchItem(PARAMS, "with-text", text_encoder_lora)]
    images = renderer.render_batch(items)
    expected = [eager_images["subject-b"], eager_text_encoder_image, eager_images["base"], eager_images["subject-c"],
                eager_text_encoder_image]
    for position, (image, reference) in enumerate(zip(images, expected, strict=True)):
        assert differs(image, reference) <= TOLERANCE, position
    # Two calls a step (guidance doubles the rows): the three others together, the text-encoder subject's two.
    assert sorted(set(calls)) == [4, 6] and len(calls) == 2 * PARAMS.steps


def test_an_sdxl_lora_reaches_both_text_encoders_in_every_store(tmp_path_factory: pytest.TempPathFactory) -> None:
    from services.common.tinymodel import write_tiny_sdxl_model

    sdxl = write_tiny_sdxl_model(tmp_path_factory.mktemp("tiny-sdxl"))
    lora = make_lora(sdxl, seed=4, text_encoder=True)

    def pipeline_in_float64():
        """The tiny SDXL model magnifies float32 rounding: on an AVX-512 CPU the batched store's picture moved
        by up to 12 levels (mean 1.8) from PEFT's, and a merged LoRA's by 17, the same products summed in another
        order. In float64 every store draws PEFT's picture exactly, so TOLERANCE still catches a LoRA that is
        missing or misapplied."""
        pipe = load_pipeline(sdxl)
        pipe.to(torch.float64)
        return pipe

    eager = PortraitRenderer(pipeline_in_float64())
    with_text = eager.render(PARAMS, "with-text", lora)
    assert set(eager.pipe.text_encoder_2.peft_config) == set(eager.pipe.text_encoder.peft_config)
    assert differs(with_text, eager.render(PARAMS, "unet-only", make_lora(sdxl, seed=4))) > 3 * TOLERANCE
    batched = PortraitRenderer(pipeline_in_float64(), compile_mode="batched")
    assert differs(batched.render(PARAMS, "with-text", lora), with_text) <= TOLERANCE
    fused = PortraitRenderer(pipeline_in_float64(), compile_mode="fused")
    assert differs(fused.render(PARAMS, "with-text", lora), with_text) <= TOLERANCE
