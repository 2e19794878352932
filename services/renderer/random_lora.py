"""LoRA files with random non-zero weights for a base model's UNet (and text encoder): adapters whose
effect on the image is plain to see, for tests and benchmarks (a freshly initialised LoRA changes nothing)."""

from __future__ import annotations

import json
from pathlib import Path

LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
TEXT_ENCODER_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]  # services/trainer/lora.py's


def make_lora(base_model: Path, seed: int, rank: int = 4, alpha: int = 8, text_encoder: bool = False) -> bytes:
    """A diffusers LoRA for the base model's UNet (and its text encoders), serialised as save_lora_weights
    would write it.

    lora_B starts at zero with gaussian init; random B weights make the adapter's effect visible.
    """
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig
    from safetensors.torch import save

    unet = UNet2DConditionModel.from_pretrained(base_model / "unet")
    config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=LORA_TARGETS)
    unet.add_adapter(config)
    tensors = _random_lora_tensors(unet, "unet", seed)
    lora_metadata = {f"unet.{key}": value for key, value in _json_ready(config.to_dict()).items()}
    if text_encoder:
        from peft import inject_adapter_in_model
        from transformers import CLIPTextModel, CLIPTextModelWithProjection

        encoder_config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian",
                                    target_modules=TEXT_ENCODER_TARGETS)
        encoder_classes = {"text_encoder": CLIPTextModel, "text_encoder_2": CLIPTextModelWithProjection}
        for offset, (name, model_class) in enumerate(encoder_classes.items(), start=1):
            if not (base_model / name).is_dir():  # SD1.5 has one text encoder, SDXL two
                continue
            encoder = model_class.from_pretrained(base_model / name)
            inject_adapter_in_model(encoder_config, encoder)
            tensors |= _random_lora_tensors(encoder, name, seed + offset)
            lora_metadata |= {f"{name}.{key}": value for key, value in _json_ready(encoder_config.to_dict()).items()}
    header = {"format": "pt", "lora_adapter_metadata": json.dumps(lora_metadata, indent=2, sort_keys=True)}
    return save(tensors, metadata=header)


def _random_lora_tensors(model, prefix: str, seed: int) -> dict:
    """The model's LoRA layers with random B weights, as diffusers-format tensors under `prefix`."""
    import torch
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(model))
    return {f"{prefix}.{key}": value.contiguous() for key, value in layers.items()}


def _json_ready(config: dict) -> dict:
    return {key: sorted(value) if isinstance(value, set) else value for key, value in config.items()}
