"""The LoRA file format shared by trainer and renderer: diffusers-format safetensors whose metadata
records the base model it was trained on, so it is refused on any other base."""

from __future__ import annotations

import json
import struct

BASE_MODEL_METADATA_KEY = "studio.base_model_id"
_HEADER_LENGTH_BYTES = 8


class WrongBaseModel(ValueError):
    """The LoRA was trained on another base model (or records none)."""


def lora_metadata(data: bytes) -> dict[str, str]:
    """The safetensors file's __metadata__ (reads the JSON header only)."""
    if len(data) < _HEADER_LENGTH_BYTES:
        raise ValueError("not a safetensors file: too short")
    (header_length,) = struct.unpack("<Q", data[:_HEADER_LENGTH_BYTES])
    if header_length > len(data) - _HEADER_LENGTH_BYTES:
        raise ValueError("not a safetensors file: header runs past the end")
    try:
        header = json.loads(data[_HEADER_LENGTH_BYTES:_HEADER_LENGTH_BYTES + header_length])
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"not a safetensors file: {error}") from error
    return dict(header.get("__metadata__") or {})


def with_sorted_metadata(data: bytes) -> bytes:
    """The same file with its metadata keys in sorted order: safetensors writes them in hash order,
    which differs between processes, and a LoRA's bytes should depend only on its contents."""
    (header_length,) = struct.unpack("<Q", data[:_HEADER_LENGTH_BYTES])
    end = _HEADER_LENGTH_BYTES + header_length
    header = json.loads(data[_HEADER_LENGTH_BYTES:end])
    header["__metadata__"] = dict(sorted((header.get("__metadata__") or {}).items()))
    encoded = json.dumps(header, separators=(",", ":")).encode()
    if len(encoded) > header_length:
        raise ValueError("safetensors header grew while sorting its metadata")
    return data[:_HEADER_LENGTH_BYTES] + encoded.ljust(header_length, b" ") + data[end:]


def require_base_model(data: bytes, base_model_id: str) -> None:
    """Raise WrongBaseModel unless the LoRA in `data` was trained on `base_model_id`."""
    trained_on = lora_metadata(data).get(BASE_MODEL_METADATA_KEY, "")
    if trained_on != base_model_id:
        raise WrongBaseModel(
            f"LoRA was trained on base model {trained_on or '(unrecorded)'}, not on {base_model_id}"
        )
