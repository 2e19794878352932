"""Subject LoRAs inside the rendering pipeline: parsed from bytes (never written to disk), kept at
hand least recently used first, and switched per batch group.

Two stores, one interface (activate, evict_prefix, loaded_ids):
- NamedAdapters, for an eager UNet: each subject's LoRA is its own PEFT adapter; switching is
  `set_adapters`.
- FusedAdapter, for a compiled UNet: no adapter modules; the subject's LoRA is merged into the base
  weights it targets, from a pristine copy of each. A compiled graph guards on adapter names and
  module structure, so named adapters would recompile the UNet for every new subject and, past
  dynamo's recompile limit, silently run eager; fused weights keep one graph with no LoRA work in it,
  and CUDA graphs captured over those weights stay valid.
FusedAdapter and the batched store (batched_adapters.py) keep a LoRA's text-encoder part as a PEFT
adapter on the text encoders, which no compile or capture touches (text_encoder_loras.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct
from collections import OrderedDict
from dataclasses import dataclass

from services.renderer.adapter_reference import AdapterNotLoaded, adapter_token
from services.renderer.errors import RenderInputError

_SAFETENSORS_HEADER_LENGTH = struct.Struct("<Q")
_LORA_METADATA_KEY = "lora_adapter_metadata"


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


class LeastRecentlyUsed:
    """adapter id -> the token of the bytes it came from (services/renderer/adapter_reference.py), least recently
    used first."""

    def __init__(self, pipe, size: int) -> None:
        if size < 1:
            raise ValueError("adapter_cache_size must be at least 1")
        self.pipe, self.size = pipe, size
        self._digests: OrderedDict[str, str] = OrderedDict()

    @property
    def loaded_ids(self) -> list[str]:
        return list(self._digests)

    def activate(self, adapter_id: str, adapter: bytes, digest: str = "") -> None:
        """Make `adapter` the one the next pipeline call uses (neither bytes nor digest: the base model alone).
        `digest`: its token, where the caller has it already (a LoRA is megabytes). Without bytes the adapter
        must be loaded already under that id and token, else AdapterNotLoaded."""
        if not adapter and not digest:
            self._use_base_model()
            return
        digest = digest or adapter_token(adapter)
        adapter_id = adapter_id or digest
        if self._digests.get(adapter_id) != digest:
            if not adapter:
                raise AdapterNotLoaded(adapter_id)
            self._load(adapter_id, adapter, digest)
        self._digests.move_to_end(adapter_id)
        self._use(adapter_id, digest)

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

    def _load(self, adapter_id: str, adapter: bytes, digest: str) -> None:
        raise NotImplementedError

    def _use(self, adapter_id: str, digest: str) -> None:
        raise NotImplementedError

    def _use_base_model(self) -> None:
        raise NotImplementedError

    def _evict(self, adapter_id: str) -> None:
        raise NotImplementedError


class NamedAdapters(LeastRecentlyUsed):
    """Each adapter its own PEFT adapter in the pipeline (eager UNet)."""

    def _use(self, adapter_id: str, digest: str) -> None:
        self.pipe.enable_lora()
        self.pipe.set_adapters([adapter_name(adapter_id)])

    def _use_base_model(self) -> None:
        if self._digests:
            self.pipe.disable_lora()

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
        from services.renderer.text_encoder_loras import load_into_text_encoders

        pipe = self.pipe
        if metadata is None:
            pipe.load_lora_weights(state_dict, adapter_name=name)
            return
        # load_lora_weights drops metadata for in-memory dicts, so hand it to each component.
        state_dict, network_alphas, metadata = to_diffusers_format(pipe, state_dict, metadata)
        pipe.load_lora_into_unet(state_dict, network_alphas=network_alphas, unet=pipe.unet, adapter_name=name,
                                 metadata=metadata, _pipeline=pipe)
        load_into_text_encoders(pipe, state_dict, name, metadata, network_alphas)

    def _evict(self, adapter_id: str) -> None:
        self._digests.pop(adapter_id, None)
        self._delete_quietly(adapter_name(adapter_id))

    def _delete_quietly(self, name: str) -> None:
        with contextlib.suppress(ValueError, KeyError, AttributeError):  # half-loaded or never registered
            self.pipe.delete_adapters([name])


@dataclass(frozen=True)
class LayerDelta:
    """One targeted Linear layer of the UNet: its weight becomes W0 + scale * (up @ down). Kept in
    float32 (float64 for a float64 UNet) on the UNet's device from load on, so a switch copies nothing
    from the host."""

    path: str
    down: object  # torch.Tensor [rank, in]
    up: object  # torch.Tensor [out, rank]
    scale: float


class FusedAdapter(LeastRecentlyUsed):
    """A compiled UNet with no adapter modules at all: the subject's LoRA is merged into the weights it
    targets, W = W0 + scale * (up @ down), each time from a pristine copy W0 of that layer. The compiled
    graph never changes and does no LoRA work; switching subjects is one in-place copy per targeted
    layer (CUDA graphs captured over those weights stay valid); restoring from W0 leaves no rounding
    drift however many subjects pass, and no subject's weights behind once it is deleted."""

    def __init__(self, pipe, size: int) -> None:
        from services.renderer.text_encoder_loras import TextEncoderLoras

        super().__init__(pipe, size)
        self._parsed: dict[str, list[LayerDelta]] = {}
        self._pristine: dict[str, object] = {}  # layer path -> W0, on the UNet's device
        self._fused: str | None = ""  # digest of the fused adapter; "" the base model; None unknown
        self.text_encoders = TextEncoderLoras(pipe)

    def _use(self, adapter_id: str, digest: str) -> None:
        self._fuse(self._parsed[adapter_id], digest)
        self.text_encoders.use(adapter_id)

    def _use_base_model(self) -> None:
        self._fuse([], "")
        self.text_encoders.use("")

    def _load(self, adapter_id: str, adapter: bytes, digest: str) -> None:
        lora = linear_lora(self.pipe, adapter)
        deltas = [self._checked(delta) for delta in lora.unet]
        self._make_room(adapter_id)
        self.text_encoders.load(adapter_id, lora.text_encoders, lora.metadata)
        self._parsed[adapter_id] = deltas
        self._digests[adapter_id] = digest

    def _checked(self, delta: LayerDelta) -> LayerDelta:
        """The delta, checked against the layer it targets and moved to that layer's device."""
        import torch

        try:
            layer = self.pipe.unet.get_submodule(delta.path)
        except AttributeError as error:
            raise RenderInputError(f"adapter does not fit the base model: no layer {delta.path}") from error
        fits = isinstance(layer, torch.nn.Linear) and delta.up.shape[1] == delta.down.shape[0] \
            and (delta.up.shape[0], delta.down.shape[1]) == tuple(layer.weight.shape)
        if not fits:
            raise RenderInputError(f"adapter does not fit the base model: {delta.path} is not a "
                                   f"{delta.up.shape[0]}x{delta.down.shape[1]} linear layer")
        exact = torch.promote_types(layer.weight.dtype, torch.float32)  # float32, or the weights' own if finer
        return LayerDelta(delta.path, *(tensor.to(layer.weight.device, exact)
                                        for tensor in (delta.down, delta.up)), delta.scale)

    def _fuse(self, deltas: list[LayerDelta], digest: str) -> None:
        import torch

        if self._fused == digest:
            return
        self._fused = None  # until every layer is written
        targeted = {delta.path for delta in deltas}
        with torch.no_grad():
            for path, pristine in self._pristine.items():
                if path not in targeted:
                    _write(self.pipe.unet.get_submodule(path), pristine)
            for delta in deltas:
                layer = self.pipe.unet.get_submodule(delta.path)
                pristine = self._pristine.setdefault(delta.path, layer.weight.detach().clone())
                merged = pristine.to(delta.up.dtype) + delta.scale * (delta.up @ delta.down)
                _write(layer, merged.to(layer.weight.dtype))
        self._fused = digest

    def _evict(self, adapter_id: str) -> None:
        digest = self._digests.pop(adapter_id, None)
        self._parsed.pop(adapter_id, None)
        self.text_encoders.evict(adapter_id)
        if digest is not None and digest == self._fused and digest not in self._digests.values():
            self._fuse([], "")  # a deleted subject's weights must not stay in GPU memory


def _write(layer, weight) -> None:
    """In place, so graphs over the layer stay valid; an FP8 layer quantizes its new weight too."""
    layer.weight.copy_(weight)
    if hasattr(layer, "requantize"):
        layer.requantize()


@dataclass(frozen=True)
class LinearLora:
    """A LoRA as the fused and batched stores serve it: plain linear updates of UNet layers, and the
    text-encoder keys (empty when it has none) with their metadata, for TextEncoderLoras."""

    unet: list[LayerDelta]
    text_encoders: dict
    metadata: dict | None


def linear_lora(pipe, adapter: bytes) -> LinearLora:
    """A LoRA's bytes split as LinearLora; RenderInputError for anything else (the eager PEFT store serves
    every format, the compiled and batched ones these)."""
    from services.renderer.text_encoder_loras import text_encoder_weights

    state_dict, metadata = parse_adapter(adapter)
    try:
        state_dict, network_alphas, metadata = to_diffusers_format(pipe, state_dict, metadata)
    except Exception as error:
        raise RenderInputError(f"adapter does not fit the base model: {error}") from error
    if network_alphas:
        raise RenderInputError("adapter is in an older format with per-layer alphas, which a compiled renderer "
                               "does not fuse (STUDIO_RENDER_COMPILE off serves it)")
    text_encoders = text_encoder_weights(state_dict)
    unet = {key: value for key, value in state_dict.items() if key not in text_encoders}
    return LinearLora(layer_deltas(unet, lora_scale(metadata)), text_encoders, metadata)


def lora_scale(metadata: dict | None) -> float:
    """alpha / rank from diffusers' LoRA metadata; without metadata alpha == rank (what our trainer
    writes: it folds alpha / rank into the up weights)."""
    if not metadata:
        return 1.0
    unsupported = [name for name in ("use_dora", "use_rslora", "lora_bias", "fan_in_fan_out", "alpha_pattern",
                                     "rank_pattern") if metadata.get(f"unet.{name}")]
    if unsupported:
        raise RenderInputError(f"adapter uses {', '.join(unsupported)}, which a compiled renderer does not fuse "
                               "(STUDIO_RENDER_COMPILE off serves it)")
    rank, alpha = metadata.get("unet.r"), metadata.get("unet.lora_alpha")
    return float(alpha) / float(rank) if rank and alpha else 1.0


_DOWN_UP = {"lora.down.weight": "lora.up.weight", "lora_A.weight": "lora_B.weight"}


def layer_deltas(state_dict: dict, scale: float) -> list[LayerDelta]:
    """The UNet layers a LoRA targets; RenderInputError for weights a fused Linear LoRA cannot express."""
    others = sorted(key for key in state_dict if not key.startswith("unet."))
    if others:
        raise RenderInputError(f"adapter has weights for neither the UNet nor a text encoder, e.g. {others[0]}")
    deltas, used = [], set()
    for key in state_dict:
        for down_suffix, up_suffix in _DOWN_UP.items():
            if key.endswith("." + down_suffix):
                path = key.removeprefix("unet.").removesuffix("." + down_suffix)
                up_key = key.removesuffix(down_suffix) + up_suffix
                if up_key not in state_dict:
                    raise RenderInputError(f"adapter has no up weights for {path}")
                down, up = state_dict[key], state_dict[up_key]
                if down.dim() != 2 or up.dim() != 2:
                    raise RenderInputError(f"adapter layer {path} is not a linear LoRA")
                deltas.append(LayerDelta(path, down, up, scale))
                used |= {key, up_key}
    leftover = sorted(set(state_dict) - used)
    if leftover:
        raise RenderInputError(f"adapter holds weights a compiled renderer does not fuse, e.g. {leftover[0]}")
    return deltas
