"""In-process LoRA training of a diffusers SD1.5-family UNet on one subject's photos.

The VAE latents of the photos and the caption embedding never change during a run, so they are
computed once up front; each step then only runs the UNet. The result is the LoRA in the standard
diffusers format (keys "unet.<module>.lora.down.weight" / "...lora.up.weight"), the same bytes
`StableDiffusionPipeline.save_lora_weights` writes, loadable with `pipe.load_lora_weights`.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from diffusers.utils import convert_state_dict_to_diffusers
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from PIL import Image, ImageOps
from transformers import CLIPTextModel, CLIPTokenizer

from services.common.basemodel import base_model_id, read_resolution

LORA_TARGET_MODULES = ("to_k", "to_q", "to_v", "to_out.0")
UNET_KEY_PREFIX = "unet."


@dataclass(frozen=True)
class TrainingProgress:
    step: int
    total_steps: int
    loss: float


@dataclass(frozen=True)
class TrainedLora:
    safetensors_bytes: bytes
    base_model_id: str
    steps: int
    final_loss: float
    losses: tuple[float, ...]
    seconds: float


class TrainingCancelled(Exception):
    """Raised when `should_stop` asked the run to end before its last step."""


@dataclass(frozen=True)
class _BaseModel:
    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    vae: AutoencoderKL
    unet: UNet2DConditionModel
    noise_scheduler: DDPMScheduler


def train_lora(
    base_model: Path,
    images: Sequence[Image.Image],
    *,
    steps: int = 20,
    rank: int = 4,
    alpha: int | None = None,
    learning_rate: float = 1e-3,
    batch_size: int = 2,
    seed: int = 0,
    subject_token: str = "sks person",
    device: str | None = None,
    progress: Callable[[TrainingProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainedLora:
    """Train a LoRA on `images` captioned "a photo of {subject_token}"; deterministic per seed on CPU."""
    _check_arguments(images, steps, rank, batch_size)
    started = time.monotonic()
    base_model = Path(base_model)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    lora_alpha = alpha or rank
    model = _load_base_model(base_model)
    _add_lora(model.unet, rank, lora_alpha, seed)
    for module in (model.text_encoder, model.vae, model.unet):
        module.to(device)
    pixels = prepare_pixels(images, read_resolution(base_model)).to(device)
    latents = encode_latents(model.vae, pixels)
    caption_embedding = encode_caption(model.tokenizer, model.text_encoder, f"a photo of {subject_token}")
    losses = _train_steps(
        model, latents, caption_embedding, steps, learning_rate, batch_size, seed, progress, should_stop
    )
    return TrainedLora(
        safetensors_bytes=lora_safetensors_bytes(model.unet, rank, lora_alpha),
        base_model_id=base_model_id(base_model),
        steps=steps,
        final_loss=losses[-1],
        losses=tuple(losses),
        seconds=time.monotonic() - started,
    )


def prepare_pixels(images: Sequence[Image.Image], resolution: int) -> torch.Tensor:
    """RGB images resized and centre-cropped to resolution², as an N×3×H×W tensor in [-1, 1]."""
    squares = [
        ImageOps.fit(image.convert("RGB"), (resolution, resolution), method=Image.Resampling.BICUBIC)
        for image in images
    ]
    array = np.stack([np.asarray(square, dtype=np.float32) for square in squares])
    return torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1.0


@torch.no_grad()
def encode_latents(vae: AutoencoderKL, pixels: torch.Tensor) -> torch.Tensor:
    # The distribution's mean rather than a sample: the latents are cached for the whole run, and
    # the mean keeps them deterministic without a generator.
    latents = vae.encode(pixels).latent_dist.mode()
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (latents - shift) * vae.config.scaling_factor


@torch.no_grad()
def encode_caption(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, caption: str) -> torch.Tensor:
    """The 1×tokens×dim text-encoder hidden states the UNet cross-attends to."""
    token_ids = tokenizer(
        caption,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    return text_encoder(token_ids.to(text_encoder.device))[0]


def lora_safetensors_bytes(unet: UNet2DConditionModel, rank: int, alpha: int) -> bytes:
    """The UNet's LoRA as a diffusers-format safetensors file (what save_lora_weights writes)."""
    peft_state = get_peft_model_state_dict(unet)
    # The diffusers format carries no alpha: loaders assume alpha == rank (scale 1). Folding
    # alpha/rank into lora_B keeps the effective weights identical for any alpha.
    scale = alpha / rank
    peft_state = {key: value * scale if "lora_B" in key else value for key, value in peft_state.items()}
    diffusers_state = convert_state_dict_to_diffusers(peft_state)
    tensors = {
        UNET_KEY_PREFIX + key: value.detach().to("cpu", torch.float32).contiguous()
        for key, value in diffusers_state.items()
    }
    return safetensors.torch.save(tensors, metadata={"format": "pt"})


def _check_arguments(images: Sequence[Image.Image], steps: int, rank: int, batch_size: int) -> None:
    if not images:
        raise ValueError("at least one training image is needed")
    for name, value in (("steps", steps), ("rank", rank), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")


def _load_base_model(path: Path) -> _BaseModel:
    model = _BaseModel(
        tokenizer=CLIPTokenizer.from_pretrained(path, subfolder="tokenizer"),
        text_encoder=CLIPTextModel.from_pretrained(path, subfolder="text_encoder"),
        vae=AutoencoderKL.from_pretrained(path, subfolder="vae"),
        unet=UNet2DConditionModel.from_pretrained(path, subfolder="unet"),
        noise_scheduler=DDPMScheduler.from_pretrained(path, subfolder="scheduler"),
    )
    for module in (model.text_encoder, model.vae, model.unet):
        module.requires_grad_(False)
    model.text_encoder.eval()
    model.vae.eval()
    return model


def _add_lora(unet: UNet2DConditionModel, rank: int, alpha: int, seed: int) -> None:
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        init_lora_weights="gaussian",
        target_modules=list(LORA_TARGET_MODULES),
    )
    # The gaussian init draws from the global CPU RNG (the UNet is still on the CPU here, so this
    # holds on GPU hosts too): seed it without disturbing the caller's RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet.add_adapter(config)
    unet.train()


def _train_steps(
    model: _BaseModel,
    latents: torch.Tensor,
    caption_embedding: torch.Tensor,
    steps: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
    progress: Callable[[TrainingProgress], None] | None,
    should_stop: Callable[[], bool] | None,
) -> list[float]:
    lora_parameters = [parameter for parameter in model.unet.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(lora_parameters, lr=learning_rate)
    generator = torch.Generator(device=latents.device).manual_seed(seed)
    losses: list[float] = []
    for step in range(1, steps + 1):
        if should_stop is not None and should_stop():
            raise TrainingCancelled(f"stopped before step {step} of {steps}")
        picks = torch.randint(len(latents), (batch_size,), generator=generator, device=latents.device)
        loss = _training_step(model, latents[picks], caption_embedding, optimizer, generator)
        losses.append(loss)
        if progress is not None:
            progress(TrainingProgress(step=step, total_steps=steps, loss=loss))
    return losses


def _training_step(
    model: _BaseModel,
    latents: torch.Tensor,
    caption_embedding: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> float:
    scheduler = model.noise_scheduler
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    timesteps = torch.randint(
        scheduler.config.num_train_timesteps, (len(latents),), generator=generator, device=latents.device
    )
    noisy_latents = scheduler.add_noise(latents, noise, timesteps)
    target = _prediction_target(scheduler, latents, noise, timesteps)
    encoder_hidden_states = caption_embedding.expand(len(latents), -1, -1)

    with _autocast(latents.device):
        prediction = model.unet(noisy_latents, timesteps, encoder_hidden_states, return_dict=False)[0]
    loss = F.mse_loss(prediction.float(), target.float())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    value = loss.item()
    if not math.isfinite(value):
        raise FloatingPointError(f"training loss became {value}; lower the learning rate")
    return value


def _prediction_target(
    scheduler: DDPMScheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unsupported scheduler prediction_type {prediction_type!r}")


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
