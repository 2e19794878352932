"""The SDXL-family path (two text encoders, pooled embedding, size ids) on a tiny random SDXL folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from diffusers import StableDiffusionXLPipeline

from services.common.tinymodel import write_tiny_sdxl_model
from services.trainer.families import detect_family
from services.trainer.identity import chip_embedding
from services.trainer.training import TrainingConfig, TrainingRun
from services.trainer.training_test import gradient_image
from services.trainer.validation import IdentityValidator


@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_sdxl_model(tmp_path_factory.mktemp("sdxl") / "model")


def test_sdxl_family_trains_validates_and_loads(tiny_sdxl: Path) -> None:
    assert detect_family(tiny_sdxl) == "sdxl"
    images = [gradient_image(200, 60, 30), gradient_image(30, 60, 200)]
    config = TrainingConfig.for_base_model(tiny_sdxl, steps=2, validate_every=2, learning_rate=0.05)
    assert config.resolution == 64 and config.rank == 32
    run = TrainingRun(tiny_sdxl, images, config)
    validator = IdentityValidator([chip_embedding(image) for image in images], run.resolution, config.subject_token)
    lora = run.run(validator=validator)
    assert [point.step for point in lora.validation] == [2] and lora.best_step == 2
    pipeline = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl)
    pipeline.set_progress_bar_config(disable=True)

    def render() -> np.ndarray:
        return pipeline("a photo of sks person", num_inference_steps=2, height=64, width=64, output_type="np",
                        generator=torch.Generator().manual_seed(3)).images[0]

    before = render()
    pipeline.load_lora_weights(safetensors.torch.load(lora.safetensors_bytes))
    assert np.abs(render() - before).max() > 1e-3
