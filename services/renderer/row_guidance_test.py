"""Per-image guidance (services/renderer/row_guidance.py): requests that differ only in guidance share one
pipeline call, and each image is the one its own guidance draws alone."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from services.renderer.batched_adapters_test import _counting_unet_calls
from services.renderer.conftest import PARAMS, differs
from services.renderer.pipeline import BatchItem, PortraitRenderer, load_pipeline

GUIDANCES = (7.0, 5.5, 1.0, 0.0)  # the last two: no guidance, the conditional prediction alone
TOLERANCE = 1  # levels of 255: the same prediction combined in float32 instead of the model's dtype


@pytest.fixture(scope="module")
def solo_images(base_model: Path, loras: dict[str, bytes]) -> dict[float, np.ndarray]:
    renderer = PortraitRenderer(load_pipeline(base_model))
    return {g: renderer.render(replace(PARAMS, guidance=g), "subject-a", loras["subject-a"]) for g in GUIDANCES}


@pytest.mark.parametrize("mode", ["", "batched"])
def test_images_of_several_guidances_share_a_call_and_keep_their_own(
    mode: str, base_model: Path, loras: dict[str, bytes], solo_images: dict[float, np.ndarray]
) -> None:
    renderer = PortraitRenderer(load_pipeline(base_model), compile_mode=mode)
    calls = _counting_unet_calls(renderer)
    items = [BatchItem(replace(PARAMS, guidance=g), "subject-a", loras["subject-a"]) for g in GUIDANCES]
    images = renderer.render_batch(items)
    assert calls == [2 * len(GUIDANCES)] * PARAMS.steps  # one call a step, every image guided
    for guidance, image in zip(GUIDANCES, images, strict=True):
        assert differs(image, solo_images[guidance]) <= TOLERANCE, guidance
    assert differs(solo_images[7.0], solo_images[5.5]) > 5 * TOLERANCE  # guidance changes the picture


def test_a_call_of_one_guidance_is_left_as_it_was(base_model: Path, loras: dict[str, bytes],
                                                  solo_images: dict[float, np.ndarray]) -> None:
    renderer = PortraitRenderer(load_pipeline(base_model))
    items = [BatchItem(replace(PARAMS, guidance=7.0, seed=seed), "subject-a", loras["subject-a"]) for seed in (5, 6)]
    assert renderer.guidance.use([7.0, 7.0]) == 7.0 and renderer.guidance._ratios is None
    first, _ = renderer.render_batch(items)
    assert differs(first, solo_images[7.0]) <= TOLERANCE
