from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from diffusers import StableDiffusionPipeline
from diffusers.utils import convert_state_dict_to_diffusers
from peft.utils import get_peft_model_state_dict
from PIL import Image

from services.common.basemodel import base_model_id
from services.common.tinymodel import write_tiny_model
from services.trainer.training import (
    TrainedLora,
    TrainingCancelled,
    TrainingConfig,
    TrainingProgress,
    TrainingRun,
    prepare_pixels,
    train_lora,
)

STEPS = 6


def gradient_image(red: int, green: int, blue: int, size: tuple[int, int] = (96, 72)) -> Image.Image:
    width, height = size
    ramp = np.linspace(0.2, 1.0, width, dtype=np.float32)[None, :, None]
    column = np.linspace(1.0, 0.5, height, dtype=np.float32)[:, None, None]
    array = ramp * column * np.array([red, green, blue], dtype=np.float32)
    return Image.fromarray(array.astype(np.uint8), "RGB")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    return [gradient_image(255, 40, 40), gradient_image(40, 255, 40), gradient_image(40, 40, 255)]


@pytest.fixture(scope="module")
def progress_reports() -> list[TrainingProgress]:
    return []


@pytest.fixture(scope="module")
def trained(tiny_model: Path, images: list[Image.Image], progress_reports: list) -> TrainedLora:
    return train_lora(tiny_model, images, steps=STEPS, seed=0, progress=progress_reports.append)


def lora_tensors(lora: TrainedLora) -> dict[str, torch.Tensor]:
    return safetensors.torch.load(lora.safetensors_bytes)


def quiet_pipeline(model: Path) -> StableDiffusionPipeline:
    pipeline = StableDiffusionPipeline.from_pretrained(model)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def render(pipeline: StableDiffusionPipeline) -> np.ndarray:
    return pipeline(
        "a photo of sks person",
        num_inference_steps=2,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(7),
        output_type="np",
    ).images[0]


def test_lora_is_in_diffusers_unet_format(trained: TrainedLora) -> None:
    tensors = lora_tensors(trained)
    assert trained.safetensors_bytes
    assert tensors
    key_pattern = re.compile(r"^unet\..+\.(to_q|to_k|to_v|to_out\.0)\.lora\.(down|up)\.weight$")
    assert all(key_pattern.match(key) for key in tensors), sorted(tensors)[:5]
    downs = {key.removesuffix(".down.weight") for key in tensors if key.endswith(".lora.down.weight")}
    ups = {key.removesuffix(".up.weight") for key in tensors if key.endswith(".lora.up.weight")}
    assert downs == ups
    assert all(tensor.dtype == torch.float32 for tensor in tensors.values())
    rank = next(tensor.shape[0] for key, tensor in tensors.items() if key.endswith("down.weight"))
    assert rank == 4


def test_result_reports_the_run(trained: TrainedLora, tiny_model: Path) -> None:
    assert trained.steps == STEPS
    assert len(trained.losses) == STEPS
    assert all(math.isfinite(loss) and loss > 0 for loss in trained.losses)
    assert trained.final_loss == trained.losses[-1]
    assert trained.seconds > 0
    assert trained.base_model_id == base_model_id(tiny_model)


def test_progress_is_reported_after_every_step(trained: TrainedLora, progress_reports: list) -> None:
    assert [report.step for report in progress_reports] == list(range(1, STEPS + 1))
    assert {report.total_steps for report in progress_reports} == {STEPS}
    assert tuple(report.loss for report in progress_reports) == trained.losses


def test_same_seed_gives_identical_bytes(trained: TrainedLora, tiny_model: Path, images: list) -> None:
    again = train_lora(tiny_model, images, steps=STEPS, seed=0)
    assert again.safetensors_bytes == trained.safetensors_bytes
    assert again.losses == trained.losses


def test_different_seed_gives_different_bytes(trained: TrainedLora, tiny_model: Path, images: list) -> None:
    other = train_lora(tiny_model, images, steps=STEPS, seed=1)
    assert other.safetensors_bytes != trained.safetensors_bytes


def test_bytes_match_save_lora_weights(trained: TrainedLora, tiny_model: Path, tmp_path: Path) -> None:
    pipeline = quiet_pipeline(tiny_model)
    pipeline.load_lora_weights(lora_tensors(trained), adapter_name="subject")
    peft_state = get_peft_model_state_dict(pipeline.unet, adapter_name="subject")
    unet_lora_layers = convert_state_dict_to_diffusers(peft_state)
    StableDiffusionPipeline.save_lora_weights(tmp_path, unet_lora_layers=unet_lora_layers)
    saved = safetensors.torch.load_file(tmp_path / "pytorch_lora_weights.safetensors")
    ours = lora_tensors(trained)
    assert saved.keys() == ours.keys()
    assert all(torch.equal(saved[key], ours[key]) for key in saved)


def test_lora_changes_what_the_pipeline_renders(tiny_model: Path, images: list) -> None:
    lora = train_lora(tiny_model, images, steps=STEPS, learning_rate=0.05, seed=3)
    pipeline = quiet_pipeline(tiny_model)
    without_lora = render(pipeline)
    pipeline.load_lora_weights(lora_tensors(lora))
    with_lora = render(pipeline)
    assert without_lora.shape == with_lora.shape == (64, 64, 3)
    assert np.abs(with_lora - without_lora).max() > 1e-3


def test_should_stop_cancels_the_run(tiny_model: Path, images: list) -> None:
    reports: list[TrainingProgress] = []

    def after_two_steps() -> bool:
        return len(reports) >= 2

    with pytest.raises(TrainingCancelled):
        train_lora(tiny_model, images, steps=STEPS, progress=reports.append, should_stop=after_two_steps)
    assert [report.step for report in reports] == [1, 2]


def test_rejects_an_empty_photo_set(tiny_model: Path) -> None:
    with pytest.raises(ValueError, match="image"):
        train_lora(tiny_model, [], steps=1)


def test_prepare_pixels_centre_crops_to_the_resolution() -> None:
    left_red_right_blue = np.zeros((40, 120, 3), dtype=np.uint8)
    left_red_right_blue[:, :40] = (255, 0, 0)
    left_red_right_blue[:, 40:80] = (0, 255, 0)
    left_red_right_blue[:, 80:] = (0, 0, 255)
    pixels = prepare_pixels([Image.fromarray(left_red_right_blue), gradient_image(9, 9, 9)], 16)
    assert pixels.shape == (2, 3, 16, 16)
    assert pixels.min() >= -1.0 and pixels.max() <= 1.0
    # Only the green middle third survives the centre crop.
    assert torch.allclose(pixels[0, :, 8, 8], torch.tensor([-1.0, 1.0, -1.0]), atol=0.05)


def test_text_encoder_lora_is_written_and_loads(tiny_model: Path, images: list) -> None:
    config = TrainingConfig(steps=2, train_text_encoder=True, learning_rate=0.05)
    lora = TrainingRun(tiny_model, images, config).run()
    tensors = lora_tensors(lora)
    assert any(key.startswith("text_encoder.") for key in tensors)
    assert any(key.startswith("unet.") for key in tensors)
    pipeline = quiet_pipeline(tiny_model)
    without_lora = render(pipeline)
    pipeline.load_lora_weights(tensors)
    assert np.abs(render(pipeline) - without_lora).max() > 1e-3


def test_gradient_checkpointing_trains_the_same_lora(tiny_model: Path, images: list) -> None:
    plain = TrainingRun(tiny_model, images, TrainingConfig(steps=2)).run()
    checkpointed = TrainingRun(tiny_model, images, TrainingConfig(steps=2, gradient_checkpointing=True)).run()
    assert checkpointed.losses == plain.losses
    assert all(torch.allclose(lora_tensors(plain)[key], value, atol=1e-6)
               for key, value in lora_tensors(checkpointed).items())
