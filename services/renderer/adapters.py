"""Subject LoRAs inside the rendering pipeline: parsed from bytes (never written to disk), kept at
hand least recently used first, and switched per batch group.

Two stores, one interface (activate, evict_prefix, loaded_ids):
- NamedAdapters, for an eager UNet: each subject's LoRA is its own PEFT adapter; switching is
  `set_adapters`.
- SwappedAdapter, for a compiled UNet: one adapter slot, padded to the largest rank served, whose
  weights and scale are overwritten in place for each subject (diffusers' LoRA hotswap); the cache
  keeps parsed weights in memory. A compiled graph guards on adapter names and module structure, so
  named adapters would recompile the UNet for every new subject and, past dynamo's recompile limit,
  silently run eager; in-place weights keep one graph, and CUDA graphs captured over those tensors
  stay valid.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct
from collections import OrderedDict

from services.renderer.errors import RenderInputError

_SAFETENSORS_HEADER_LENGTH = struct.Struct("<Q")
_LORA_METADATA_KEY = "lora_adapter_metadata"
SLOT = "subject_slot"
DEFAULT_MAX_RANK = 64  # the trainer's family defaults go up to 32 (services/trainer/families.py)


def adapter_metadata(adapter: bytes) -> dict | None:
    """diffusers' LoRA metadata (rank, alpha...) from the safetensors header, if it was saved.

    safetensors.torch.load(bytes) drops the header, and without it diffusers assumes alpha == rank.
    """
    if len(adapter) < _SAFETENSORS_HEADER_LENGTH.size:
        return None
    (header_length,) = _SAFETENSORS_HEADER_LENGTH.unpack_from(adapter)
    header_end = _SAFETENSORS_HEADER_LENGTH.size + header_length
    try:
        header = json.loads(adapter[_SAFETENSORS_HEADER_LENGTH.size : header_end])
        raw = header.get("__metadata__", {}).get(_LORA_METADATA_KEY)
        return json.loads(raw) if raw else None
    except (ValueError, AttributeError) as error:
        raise RenderInputError(f"adapter metadata is not valid JSON: {error}") from error


def parse_adapter(adapter: bytes) -> tuple[dict, dict | None]:
    """The adapter's tensors and metadata; RenderInputError when the bytes are not a LoRA."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        state_dict = load(adapter)
    except (SafetensorError, ValueError, OSError) as error:
        raise RenderInputError(f"adapter is not a safetensors file: {error}") from error
    if not state_dict or not all("lora" in key for key in state_dict):
        raise RenderInputError("adapter holds no LoRA weights (every key must contain 'lora')")
    return state_dict, adapter_metadata(adapter)


def adapter_name(adapter_id: str) -> str:
    """A PEFT-safe module name for a caller's adapter id (ids may hold '.', '/', ...)."""
    return "a_" + hashlib.sha256(adapter_id.encode()).hexdigest()[:24]


def to_diffusers_format(pipe, state_dict: dict, metadata: dict | None) -> tuple[dict, dict | None, dict | None]:
    """(state dict with unet./text_encoder. keys, network alphas of older formats, metadata to apply)."""
    state_dict, network_alphas = pipe.lora_state_dict(state_dict)
    return state_dict, network_alphas, None if network_alphas else metadata


class _LeastRecentlyUsed:
    """adapter id -> sha256 of the bytes it came from, least recently used first."""

    def __init__(self, pipe, size: int) -> None:
        if size < 1:
            raise ValueError("adapter_cache_size must be at least 1")
        self.pipe, self.size = pipe, size
        self._digests: OrderedDict[str, str] = OrderedDict()

    @property
    def loaded_ids(self) -> list[str]:
        return list(self._digests)

    def evict_prefix(self, prefix: str) -> int:
        """Forget every adapter whose id starts with `prefix` (a deleted subject's); how many."""
        doomed = [adapter_id for adapter_id in self._digests if adapter_id.startswith(prefix)]
        for adapter_id in doomed:
            self._evict(adapter_id)
        return len(doomed)

    def _make_room(self, adapter_id: str) -> None:
        if adapter_id in self._digests:  # same id, other bytes: the newest bytes win
            self._evict(adapter_id)
        while len(self._digests) >= self.size:
            self._evict(next(iter(self._digests)))

    def _evict(self, adapter_id: str) -> None:
        raise NotImplementedError


class NamedAdapters(_LeastRecentlyUsed):
    """Each adapter its own PEFT adapter in the pipeline (eager UNet)."""

    def activate(self, adapter_id: str, adapter: bytes) -> None:
        if not adapter:
            if self._digests:
                self.pipe.disable_lora()
            return
        digest = hashlib.sha256(adapter).hexdigest()
        adapter_id = adapter_id or digest
        if self._digests.get(adapter_id) != digest:
            self._load(adapter_id, adapter, digest)
        self._digests.move_to_end(adapter_id)
        self.pipe.enable_lora()
        self.pipe.set_adapters([adapter_name(adapter_id)])

    def _load(self, adapter_id: str, adapter: bytes, digest: str) -> None:
        state_dict, metadata = parse_adapter(adapter)
        self._make_room(adapter_id)
        name = adapter_name(adapter_id)
        try:
            self._load_into_pipeline(state_dict, metadata, name)
        except Exception as error:
            self._delete_quietly(name)
            raise RenderInputError(f"adapter does not fit the base model: {error}") from error
        self._digests[adapter_id] = digest

    def _load_into_pipeline(self, state_dict: dict, metadata: dict | None, name: str) -> None:
        pipe = self.pipe
        if metadata is None:
            pipe.load_lora_weights(state_dict, adapter_name=name)
            return
        # load_lora_weights drops metadata for in-memory dicts, so hand it to each component.
        state_dict, network_alphas, metadata = to_diffusers_format(pipe, state_dict, metadata)
        pipe.load_lora_into_unet(state_dict, network_alphas=network_alphas, unet=pipe.unet, adapter_name=name,
                                 metadata=metadata, _pipeline=pipe)
        pipe.load_lora_into_text_encoder(state_dict, network_alphas=network_alphas, text_encoder=pipe.text_encoder,
                                         lora_scale=pipe.lora_scale, adapter_name=name, metadata=metadata,
                                         _pipeline=pipe)

    def _evict(self, adapter_id: str) -> None:
        self._digests.pop(adapter_id, None)
        self._delete_quietly(adapter_name(adapter_id))

    def _delete_quietly(self, name: str) -> None:
        with contextlib.suppress(ValueError, KeyError, AttributeError):  # half-loaded or never registered
            self.pipe.delete_adapters([name])


class SwappedAdapter(_LeastRecentlyUsed):
    """One adapter slot in a compiled UNet; each subject's weights are copied into it in place.
    Must be created before the UNet is compiled or any LoRA is loaded."""

    def __init__(self, pipe, size: int, max_rank: int = DEFAULT_MAX_RANK) -> None:
        super().__init__(pipe, size)
        self.max_rank = max_rank
        # The UNet may be compiled before the slot exists: its first load then recompiles once.
        pipe.unet.enable_lora_hotswap(target_rank=max_rank, check_compiled="ignore")
        self._parsed: dict[str, tuple[dict, dict | None, dict | None]] = {}  # to_diffusers_format's
        self._slot_holds: str | None = None  # the digest of the weights in the slot, None: empty
        self._slot_exists = False

    def activate(self, adapter_id: str, adapter: bytes) -> None:
        if not adapter:
            if self._slot_exists:
                self.pipe.disable_lora()
            return
        digest = hashlib.sha256(adapter).hexdigest()
        adapter_id = adapter_id or digest
        if self._digests.get(adapter_id) != digest:
            self._remember(adapter_id, adapter, digest)
        self._digests.move_to_end(adapter_id)
        if self._slot_holds != digest:
            try:
                self._swap_in(self._parsed[adapter_id], digest)
            except RenderInputError:
                self._digests.pop(adapter_id)  # refused: not kept, like an adapter that failed to parse
                self._parsed.pop(adapter_id)
                raise
        self.pipe.enable_lora()

    def _remember(self, adapter_id: str, adapter: bytes, digest: str) -> None:
        state_dict, metadata = parse_adapter(adapter)
        try:
            converted = to_diffusers_format(self.pipe, state_dict, metadata)
        except Exception as error:
            raise RenderInputError(f"adapter does not fit the base model: {error}") from error
        if any(not key.startswith("unet.") for key in converted[0]):
            raise RenderInputError("adapter has text-encoder weights, which a compiled renderer does not serve "
                                   "(STUDIO_RENDER_COMPILE off serves them)")
        rank = max((tensor.shape[0] for key, tensor in converted[0].items() if _is_down_projection(key)), default=0)
        if rank > self.max_rank:
            raise RenderInputError(f"adapter rank {rank} is above this renderer's {self.max_rank} "
                                   "(STUDIO_RENDER_MAX_LORA_RANK)")
        self._make_room(adapter_id)
        self._parsed[adapter_id] = converted
        self._digests[adapter_id] = digest

    def _swap_in(self, converted: tuple[dict, dict | None, dict | None], digest: str) -> None:
        state_dict, network_alphas, metadata = converted
        self._slot_holds = None  # until the copy has finished: a failed swap leaves no half-known state
        try:
            self.pipe.load_lora_into_unet(dict(state_dict), network_alphas=network_alphas, unet=self.pipe.unet,
                                          adapter_name=SLOT, metadata=metadata, _pipeline=self.pipe,
                                          hotswap=self._slot_exists)
        except Exception as error:
            if not self._slot_exists:
                with contextlib.suppress(ValueError, KeyError, AttributeError):
                    self.pipe.delete_adapters([SLOT])
            raise RenderInputError(f"adapter does not fit the base model: {error}") from error
        self._slot_exists = True
        self._slot_holds = digest

    def _evict(self, adapter_id: str) -> None:
        digest = self._digests.pop(adapter_id, None)
        self._parsed.pop(adapter_id, None)
        if digest is not None and digest == self._slot_holds and digest not in self._digests.values():
            self._clear_slot()  # a deleted subject's weights must not stay in GPU memory

    def _clear_slot(self) -> None:
        import torch

        with torch.no_grad():
            for name, parameter in self.pipe.unet.named_parameters():
                if f".{SLOT}." in name:
                    parameter.zero_()
        self._slot_holds = None


def _is_down_projection(key: str) -> bool:
    return "lora_A" in key or "lora.down" in key
