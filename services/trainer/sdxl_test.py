"""The SDXL-family path (two text encoders, pooled embedding, size ids) on a tiny random SDXL folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from services.common.tinymodel import tiny_vocabulary
from services.trainer.families import detect_family
from services.trainer.identity import chip_embedding
from services.trainer.training import TrainingConfig, TrainingRun
from services.trainer.training_test import gradient_image
from services.trainer.validation import IdentityValidator

TEXT_DIM, TIME_DIM = 32, 8


def write_tiny_sdxl(out: Path) -> Path:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=32, layers_per_block=1, block_out_channels=(32, 64), norm_num_groups=32,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=2 * TEXT_DIM, attention_head_dim=(2, 4), use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=TIME_DIM,
        projection_class_embeddings_input_dim=TEXT_DIM + 6 * TIME_DIM,
    )
    vae = AutoencoderKL(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=32)
    tokenizer = CLIPTokenizer(vocab=tiny_vocabulary(), merges=[], model_max_length=77)
    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=TEXT_DIM, intermediate_size=37,
                            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                            projection_dim=TEXT_DIM, bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    pipeline = StableDiffusionXLPipeline(
        vae=vae, text_encoder=CLIPTextModel(config), text_encoder_2=CLIPTextModelWithProjection(config),
        tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet,
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    )
    pipeline.save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_sdxl(tmp_path_factory.mktemp("sdxl") / "model")


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
