"""The text-encoder part of subjects' LoRAs (`studio train --text-encoder`) for the stores that serve the
UNet part their own way: fused into the weights (FusedAdapter) or in slots (BatchedAdapters).

The text encoders run once per pipeline call, outside any compile or CUDA graph, so their part stays a
named PEFT adapter on each text encoder, switched per call. A call encodes every prompt with one text
encoder, so a subject with text-encoder weights gets pipeline calls of its own (BatchedAdapters.calls).
"""

from __future__ import annotations

from services.renderer.adapters import adapter_name
from services.renderer.errors import RenderInputError

TEXT_ENCODERS = ("text_encoder", "text_encoder_2")  # the pipeline attributes, and the LoRA keys' prefixes


def text_encoder_weights(state_dict: dict) -> dict:
    """The keys of a diffusers-format LoRA state dict that belong to a text encoder."""
    return {key: value for key, value in state_dict.items() if key.split(".", 1)[0] in TEXT_ENCODERS}


def load_into_text_encoders(pipe, state_dict: dict, name: str, metadata: dict | None,
                            network_alphas: dict | None = None) -> bool:
    """Load `state_dict`'s text-encoder keys as PEFT adapter `name` into each of `pipe`'s text encoders they are
    for (SDXL's second one too); whether there were any. Every store loads a LoRA's text-encoder part this way."""
    encoders = [(prefix, getattr(pipe, prefix)) for prefix in TEXT_ENCODERS if getattr(pipe, prefix, None) is not None
                and any(key.startswith(f"{prefix}.") for key in state_dict)]
    for prefix, encoder in encoders:
        pipe.load_lora_into_text_encoder(state_dict, network_alphas=network_alphas, text_encoder=encoder, prefix=prefix,
                                         lora_scale=pipe.lora_scale, adapter_name=name, metadata=metadata,
                                         _pipeline=pipe)
    return bool(encoders)


class TextEncoderLoras:
    """adapter id -> its text-encoder LoRA, loaded as a PEFT adapter into the pipeline's text encoders."""

    def __init__(self, pipe) -> None:
        self.pipe = pipe
        self._loaded: set[str] = set()
        self._active: str | None = None

    def __contains__(self, adapter_id: str) -> bool:
        return adapter_id in self._loaded

    def load(self, adapter_id: str, state_dict: dict, metadata: dict | None) -> None:
        """Load the text-encoder keys of `state_dict` (none: nothing to do); RenderInputError if they do not
        fit, with nothing left behind."""
        self.evict(adapter_id)
        try:
            self._check_encoders(state_dict)
            if load_into_text_encoders(self.pipe, state_dict, adapter_name(adapter_id), metadata):
                self._loaded.add(adapter_id)
        except Exception as error:
            self.evict(adapter_id)
            raise RenderInputError(f"adapter's text-encoder weights do not fit the base model: {error}") from error
        self._active = None  # loading activates the new adapter; the next use sets what the call needs

    def use(self, adapter_id: str) -> None:
        """The next call's prompts are encoded with `adapter_id`'s text-encoder LoRA, or with none ("" or an
        adapter without one)."""
        wanted = adapter_id if adapter_id in self._loaded else ""
        if wanted == self._active:
            return
        from diffusers.loaders.lora_base import (
            disable_lora_for_text_encoder,
            enable_lora_for_text_encoder,
            set_adapters_for_text_encoder,
        )

        for encoder in self._adapted_encoders():
            if wanted and adapter_name(wanted) in encoder.peft_config:
                enable_lora_for_text_encoder(encoder)
                set_adapters_for_text_encoder([adapter_name(wanted)], encoder)
            else:
                disable_lora_for_text_encoder(encoder)
        self._active = wanted

    def evict(self, adapter_id: str) -> None:
        """Delete the adapter's layers (a deleted subject's weights must not stay in memory)."""
        from diffusers.utils import delete_adapter_layers

        name = adapter_name(adapter_id)
        for encoder in self._adapted_encoders():
            if name in encoder.peft_config:
                delete_adapter_layers(encoder, name)
        self._loaded.discard(adapter_id)
        if self._active == adapter_id:
            self._active = None

    def _check_encoders(self, state_dict: dict) -> None:
        prefixes = {key.split(".", 1)[0] for key in text_encoder_weights(state_dict)}
        missing = sorted(prefix for prefix in prefixes if getattr(self.pipe, prefix, None) is None)
        if missing:
            raise RenderInputError(f"adapter has weights for {', '.join(missing)}, which the base model lacks")

    def _adapted_encoders(self) -> list:
        encoders = (getattr(self.pipe, name, None) for name in TEXT_ENCODERS)
        return [encoder for encoder in encoders if getattr(encoder, "peft_config", None)]
