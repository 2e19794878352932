"""A diffusers base model's parts as training needs them (SD1.5-family or SDXL-family), and the
conditioning the UNet cross-attends to: one caption's embeddings, plus SDXL's pooled text
embedding and size/crop ids."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from services.trainer.families import detect_family


@dataclass
class Conditioning:
    """What the UNet is conditioned on, for a batch of one caption (expanded per batch)."""

    encoder_hidden_states: torch.Tensor
    added_cond_kwargs: dict[str, torch.Tensor] = field(default_factory=dict)

    def expand(self, batch_size: int) -> Conditioning:
        return Conditioning(
            self.encoder_hidden_states.expand(batch_size, -1, -1),
            {name: value.expand(batch_size, -1) for name, value in self.added_cond_kwargs.items()},
        )

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Conditioning:
        return Conditioning(
            self.encoder_hidden_states.to(device, dtype),
            {name: value.to(device, dtype) for name, value in self.added_cond_kwargs.items()},
        )


@dataclass
class BaseModelParts:
    family: str
    tokenizers: list[CLIPTokenizer]
    text_encoders: list[torch.nn.Module]
    vae: AutoencoderKL
    unet: UNet2DConditionModel
    noise_scheduler: DDPMScheduler

    @property
    def is_sdxl(self) -> bool:
        return self.family == "sdxl"

    def frozen_modules(self) -> list[torch.nn.Module]:
        return [*self.text_encoders, self.vae, self.unet]

    def trainable_modules(self, text_encoder: bool) -> list[torch.nn.Module]:
        return [self.unet, *self.text_encoders] if text_encoder else [self.unet]


def load_parts(path: Path) -> BaseModelParts:
    path = Path(path)
    family = detect_family(path)
    tokenizers = [CLIPTokenizer.from_pretrained(path, subfolder="tokenizer")]
    text_encoders: list[torch.nn.Module] = [CLIPTextModel.from_pretrained(path, subfolder="text_encoder")]
    if family == "sdxl":
        tokenizers.append(CLIPTokenizer.from_pretrained(path, subfolder="tokenizer_2"))
        text_encoders.append(CLIPTextModelWithProjection.from_pretrained(path, subfolder="text_encoder_2"))
    parts = BaseModelParts(
        family=family, tokenizers=tokenizers, text_encoders=text_encoders,
        vae=AutoencoderKL.from_pretrained(path, subfolder="vae"),
        unet=UNet2DConditionModel.from_pretrained(path, subfolder="unet"),
        # Training noise always follows the DDPM forward process, whatever sampler the folder ships.
        noise_scheduler=DDPMScheduler.from_pretrained(path, subfolder="scheduler"),
    )
    for module in parts.frozen_modules():
        module.requires_grad_(False)
        module.eval()
    return parts


def encode_caption(parts: BaseModelParts, caption: str, resolution: int) -> Conditioning:
    """The caption's conditioning; differentiable when a text encoder carries a trainable LoRA."""
    if not parts.is_sdxl:
        token_ids = _token_ids(parts.tokenizers[0], caption, parts.text_encoders[0].device)
        return Conditioning(parts.text_encoders[0](token_ids)[0])
    hidden_states, pooled = [], None
    for tokenizer, encoder in zip(parts.tokenizers, parts.text_encoders, strict=True):
        output = encoder(_token_ids(tokenizer, caption, encoder.device), output_hidden_states=True)
        hidden_states.append(output.hidden_states[-2])  # SDXL conditions on the penultimate layer
        pooled = output[0]  # the projected pooled embedding of text_encoder_2
    device = hidden_states[0].device
    # original size, crop top-left, target size: a full, uncropped square at the training size.
    size = [resolution, resolution]
    time_ids = torch.tensor([size + [0, 0] + size], dtype=torch.float32, device=device)
    return Conditioning(torch.cat(hidden_states, dim=-1), {"text_embeds": pooled, "time_ids": time_ids})


def _token_ids(tokenizer: CLIPTokenizer, caption: str, device: torch.device) -> torch.Tensor:
    return tokenizer(
        caption, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt",
    ).input_ids.to(device)


@torch.no_grad()
def encode_latents(vae: AutoencoderKL, pixels: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    # The distribution's mean rather than a sample: the latents are cached for the whole run, and
    # the mean keeps them deterministic without a generator.
    chunks = [vae.encode(chunk).latent_dist.mode() for chunk in pixels.split(batch_size)]
    latents = torch.cat(chunks)
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (latents - shift) * vae.config.scaling_factor
