"""Adding LoRA adapters to the UNet (and optionally the text encoders), and writing them out in the
diffusers format that `pipe.load_lora_weights` reads, with the base model recorded in the metadata."""

from __future__ import annotations

import safetensors.torch
import torch
from diffusers.utils import convert_state_dict_to_diffusers
from peft import LoraConfig, inject_adapter_in_model
from peft.utils import get_peft_model_state_dict

from services.common.lora_file import BASE_MODEL_METADATA_KEY, with_sorted_metadata
from services.trainer.components import BaseModelParts

UNET_TARGET_MODULES = ("to_k", "to_q", "to_v", "to_out.0")
TEXT_ENCODER_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "out_proj")
TEXT_ENCODER_PREFIXES = ("text_encoder.", "text_encoder_2.")


def add_lora(parts: BaseModelParts, rank: int, alpha: int, seed: int, *, text_encoder: bool = False) -> None:
    """Gaussian-initialised adapters, drawn from a seeded CPU RNG without disturbing the caller's."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        parts.unet.add_adapter(_config(rank, alpha, UNET_TARGET_MODULES))
        if text_encoder:
            for encoder in parts.text_encoders:
                # peft directly: transformers' own add_adapter wants a newer peft than diffusers pins.
                inject_adapter_in_model(_config(rank, alpha, TEXT_ENCODER_TARGET_MODULES), encoder)
    for module in parts.trainable_modules(text_encoder):
        for parameter in module.parameters():
            if parameter.requires_grad:
                parameter.data = parameter.data.float()


def trainable_parameters(parts: BaseModelParts, text_encoder: bool) -> dict[str, torch.nn.Parameter]:
    named = {}
    for prefix, module in zip(("unet.", *TEXT_ENCODER_PREFIXES), parts.trainable_modules(text_encoder), strict=False):
        named.update({prefix + name: p for name, p in module.named_parameters() if p.requires_grad})
    return named


def lora_safetensors_bytes(
    parts: BaseModelParts, rank: int, alpha: int, base_model_id: str, *, text_encoder: bool = False
) -> bytes:
    """The adapters as a diffusers-format safetensors file (what save_lora_weights writes), plus
    the base model's identity in the metadata."""
    tensors: dict[str, torch.Tensor] = {}
    for prefix, module in zip(("unet.", *TEXT_ENCODER_PREFIXES), parts.trainable_modules(text_encoder), strict=False):
        tensors.update(_diffusers_tensors(module, prefix, alpha / rank))
    metadata = {"format": "pt", BASE_MODEL_METADATA_KEY: base_model_id, "studio.rank": str(rank)}
    return with_sorted_metadata(safetensors.torch.save(tensors, metadata=metadata))


def _diffusers_tensors(module: torch.nn.Module, prefix: str, scale: float) -> dict[str, torch.Tensor]:
    peft_state = get_peft_model_state_dict(module)
    # The diffusers format carries no alpha: loaders assume alpha == rank (scale 1). Folding
    # alpha/rank into lora_B keeps the effective weights identical for any alpha.
    peft_state = {key: value * scale if "lora_B" in key else value for key, value in peft_state.items()}
    return {
        prefix + key: value.detach().to("cpu", torch.float32).contiguous()
        for key, value in convert_state_dict_to_diffusers(peft_state).items()
    }


def _config(rank: int, alpha: int, targets: tuple[str, ...]) -> LoraConfig:
    return LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=list(targets))
