"""Identity and facts of a diffusers base-model folder.

A LoRA is only valid for the exact base model it was trained on, so trained adapters are keyed by
`base_model_id`. Hashing multi-GB weights on every start would be too slow, so weight files count
by relative path and size; configuration and tokenizer files count by their full content.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

BASE_MODEL_ID_PREFIX = "bm-"
_ID_HEX_CHARS = 16
_CONTENT_SUFFIXES = frozenset({".json", ".txt"})  # configs, tokenizer vocab and merges
_WEIGHT_SUFFIXES = frozenset({".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".onnx"})


def base_model_id(path: Path) -> str:
    """A short stable identity, "bm-" + 16 hex chars, of the diffusers model folder at `path`."""
    path = Path(path)
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(f"not a diffusers model folder (no model_index.json): {path}")
    digest = hashlib.sha256()
    for relative_name, file in _identity_files(path):
        if file.suffix in _CONTENT_SUFFIXES:
            _add_record(digest, b"content", relative_name, file.read_bytes())
        else:
            _add_record(digest, b"size", relative_name, str(file.stat().st_size).encode())
    return BASE_MODEL_ID_PREFIX + digest.hexdigest()[:_ID_HEX_CHARS]


def read_resolution(path: Path) -> int:
    """The pixel resolution the base model is trained at: UNet latent size × VAE downscale factor."""
    path = Path(path)
    unet_config = _read_json(path / "unet" / "config.json")
    vae_config = _read_json(path / "vae" / "config.json")
    sample_size = unet_config["sample_size"]
    if isinstance(sample_size, list | tuple):
        sample_size = sample_size[0]
    vae_scale_factor = 2 ** (len(vae_config["block_out_channels"]) - 1)
    return int(sample_size) * vae_scale_factor


def _identity_files(root: Path) -> Iterator[tuple[str, Path]]:
    """Config and weight files under `root`, sorted by relative path; hidden folders (caches) skipped."""
    candidates = []
    for file in root.rglob("*"):
        relative = file.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or not file.is_file():
            continue
        if file.suffix in _CONTENT_SUFFIXES or file.suffix in _WEIGHT_SUFFIXES:
            candidates.append((relative.as_posix(), file))
    yield from sorted(candidates)


def _add_record(digest: hashlib._Hash, kind: bytes, relative_name: str, payload: bytes) -> None:
    # Length-prefixed fields, so no two different folders can produce the same byte stream.
    for field in (kind, relative_name.encode(), payload):
        digest.update(len(field).to_bytes(8, "big"))
        digest.update(field)


def _read_json(file: Path) -> dict:
    return json.loads(file.read_text(encoding="utf-8"))
