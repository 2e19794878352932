"""Many subjects' LoRAs in one UNet call (render modes with `-batched`): batching across customers on the GPU.

Why: Triton's dynamic batcher fills a batch with whatever requests are waiting, and with many customers
ordering at once a batch of 8 holds several subjects. The other stores serve one adapter per pipeline
call (PEFT's active adapter, or a LoRA fused into the weights), so such a batch is split into one call per
subject: four subjects' two images each become four UNet calls of two, each a quarter as efficient.

How: each layer a LoRA may target (the trainer's targets) becomes a BatchedLoraLinear that holds every
cached subject's LoRA in a slot of its own (down [slots, rank, in], up [slots, out, rank], the scale folded
into up, slot 0 all zeros for the base model) and reads which slot each row of the batch uses from one
index tensor shared by all of them (SlotRows). A call is then the base product plus two small batched
products, whatever the mix of subjects. The base weights never change, so compiled blocks and CUDA graphs
captured over these buffers stay valid as subjects come and go (slots are written in place), and FP8 base
layers need no requantizing. A subject's slot is zeroed when it is evicted or deleted.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from services.renderer.adapter_reference import AdapterNotLoaded
from services.renderer.adapters import LeastRecentlyUsed, linear_lora
from services.renderer.errors import RenderInputError
from services.renderer.text_encoder_loras import TextEncoderLoras

# The layers the trainer puts LoRAs on (services/trainer/lora.py UNET_TARGET_MODULES).
TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
DEFAULT_MAX_RANK = 32  # the SDXL family's training rank (services/trainer/families.py)
MAX_IMAGES_PER_CALL = 64  # the row table holds two rows (classifier-free guidance) per image
BASE_SLOT = 0


class SlotRows:
    """Which adapter slot each row of the next UNet call uses, shared by every BatchedLoraLinear. One
    buffer for the instance's life: compiled graphs and CUDA graphs read it in place."""

    def __init__(self, device: torch.device) -> None:
        self.rows = torch.zeros(2 * MAX_IMAGES_PER_CALL, dtype=torch.long, device=device)

    def set(self, slots: Sequence[int]) -> None:
        """One slot per image; the UNet sees the images twice with guidance (unconditional rows first,
        then conditional, each in the images' order), once without: both read a prefix of this table."""
        if len(slots) > MAX_IMAGES_PER_CALL:
            raise ValueError(f"at most {MAX_IMAGES_PER_CALL} images per call, got {len(slots)}")
        doubled = torch.tensor(list(slots) * 2, dtype=torch.long)
        self.rows[: len(doubled)].copy_(doubled)


class BatchedLoraLinear(torch.nn.Module):
    """`base(x)` plus, for each row of x, the LoRA of that row's slot."""

    def __init__(self, base: torch.nn.Linear, table: SlotRows, slots: int, max_rank: int) -> None:
        super().__init__()
        self.base, self.table = base, table
        options = {"dtype": base.weight.dtype, "device": base.weight.device}
        self.register_buffer("down", torch.zeros(slots, max_rank, base.in_features, **options), persistent=False)
        self.register_buffer("up", torch.zeros(slots, base.out_features, max_rank, **options), persistent=False)

    @property
    def weight(self) -> torch.Tensor:  # diffusers reads attention layers' weights (dtype, shape)
        return self.base.weight

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        output = self.base(inputs).contiguous()  # a no-op for a linear's fresh result; the view below needs it
        rows = self.table.rows[: inputs.shape[0]]
        tokens = inputs.reshape(inputs.shape[0], -1, inputs.shape[-1])
        hidden = torch.bmm(tokens, self.down[rows].transpose(1, 2))
        # Added by the product itself (its epilogue), in place: the up-projection's full-size result is neither
        # written apart nor read back for an add (1.5x the layer's speed at SD1.5's first level on a CPU).
        output.view(tokens.shape[0], tokens.shape[1], -1).baddbmm_(hidden, self.up[rows].transpose(1, 2))
        return output

    @torch.no_grad()
    def write(self, slot: int, down: torch.Tensor | None, up: torch.Tensor | None) -> None:
        """Slot `slot` holds this LoRA (scale folded into `up`), or zeros when None."""
        self.down[slot].zero_()
        self.up[slot].zero_()
        if down is not None and up is not None:
            rank = down.shape[0]
            self.down[slot, :rank].copy_(down)
            self.up[slot, :, :rank].copy_(up)


def install_batched_layers(unet: torch.nn.Module, slots: int, max_rank: int) -> SlotRows:
    """Wrap every TARGETS layer of `unet` in a BatchedLoraLinear, in place; the row table they share."""
    table = SlotRows(unet.device)
    suffixes = tuple(f".{name}" for name in TARGETS)
    for path, module in list(unet.named_modules()):
        if f".{path}".endswith(suffixes) and isinstance(module, torch.nn.Linear):
            parent, _, name = path.rpartition(".")
            setattr(unet.get_submodule(parent), name, BatchedLoraLinear(module, table, slots, max_rank))
    return table


class BatchedAdapters(LeastRecentlyUsed):
    """Cached subjects' LoRAs in slots of the UNet's BatchedLoraLinear layers; `prepare` loads a batch's
    adapters, `use_rows` says which image uses which."""

    def __init__(self, pipe, size: int, max_rank: int = DEFAULT_MAX_RANK) -> None:
        super().__init__(pipe, size)
        self.max_rank = max_rank
        self.table = install_batched_layers(pipe.unet, size + 1, max_rank)
        self._layers = {path: module for path, module in pipe.unet.named_modules()
                        if isinstance(module, BatchedLoraLinear)}
        self._slots: dict[str, int] = {}
        self.text_encoders = TextEncoderLoras(pipe)

    def prepare(self, adapters: dict[str, tuple[bytes, str]]) -> dict[str, RenderInputError]:
        """Load each (id -> (bytes, their token)) not yet in a slot, at most `size` at once, without evicting
        any of them; the ids that could not be loaded, with why (AdapterNotLoaded: a token without bytes)."""
        if len(adapters) > self.size:
            raise ValueError(f"{len(adapters)} adapters in one call, the cache holds {self.size}")
        for adapter_id, (_, digest) in adapters.items():  # most recent: loading the others evicts none of these
            if self._digests.get(adapter_id) == digest:
                self._digests.move_to_end(adapter_id)
        failures = {}
        for adapter_id, (adapter, digest) in adapters.items():
            if self._digests.get(adapter_id) != digest:
                try:
                    if not adapter:
                        raise AdapterNotLoaded(adapter_id)
                    self._load(adapter_id, adapter, digest)
                except RenderInputError as error:
                    failures[adapter_id] = error
        return failures

    def calls(self, adapter_ids: Sequence[str]) -> list[list[int]]:
        """Positions of loaded `adapter_ids` grouped into pipeline calls: one call for every subject whose
        LoRA is UNet-only (and the base model), one per subject with text-encoder weights (a call encodes all
        its prompts with one text encoder)."""
        groups: dict[str, list[int]] = {}
        for position, adapter_id in enumerate(adapter_ids):
            groups.setdefault(adapter_id if adapter_id in self.text_encoders else "", []).append(position)
        return list(groups.values())

    def use_rows(self, adapter_ids: Sequence[str]) -> None:
        """The next call's images, in order, each with its adapter ("" = the base model); a subject with
        text-encoder weights only in a call of its own (`calls`)."""
        encoders = {adapter_id for adapter_id in adapter_ids if adapter_id in self.text_encoders}
        if len(encoders) > 1 or (encoders and len(set(adapter_ids)) > 1):
            raise ValueError("a subject with text-encoder weights needs a pipeline call of its own")
        self.text_encoders.use(next(iter(encoders), ""))
        self.table.set([self._slots[adapter_id] if adapter_id else BASE_SLOT for adapter_id in adapter_ids])

    def _load(self, adapter_id: str, adapter: bytes, digest: str) -> None:
        lora = linear_lora(self.pipe, adapter)
        deltas = self._deltas(lora.unet)
        self._make_room(adapter_id)
        self.text_encoders.load(adapter_id, lora.text_encoders, lora.metadata)
        slot = min(set(range(1, self.size + 1)) - set(self._slots.values()))
        self._write(slot, deltas)
        self._slots[adapter_id] = slot
        self._digests[adapter_id] = digest

    def _deltas(self, layers: list) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        deltas = {}
        for delta in layers:
            layer = self._layer(delta.path)
            rank = delta.down.shape[0]
            if rank > self.max_rank:
                raise RenderInputError(f"adapter rank {rank} is above this renderer's maximum of {self.max_rank} "
                                       "(STUDIO_RENDER_MAX_RANK)")
            if tuple(delta.down.shape) != (rank, layer.in_features) or \
                    tuple(delta.up.shape) != (layer.out_features, rank):
                raise RenderInputError(f"adapter does not fit the base model: {delta.path} is not a "
                                       f"{delta.up.shape[0]}x{delta.down.shape[1]} linear layer")
            options = {"dtype": layer.down.dtype, "device": layer.down.device}
            deltas[delta.path] = (delta.down.to(**options), (delta.up.float() * delta.scale).to(**options))
        return deltas

    def _layer(self, path: str) -> BatchedLoraLinear:
        try:
            layer = self.pipe.unet.get_submodule(path)
        except AttributeError as error:
            raise RenderInputError(f"adapter does not fit the base model: no layer {path}") from error
        if not isinstance(layer, BatchedLoraLinear):
            raise RenderInputError(f"adapter targets {path}; a batched renderer serves LoRAs on "
                                   f"{', '.join(TARGETS)} only (STUDIO_RENDER_COMPILE off serves it)")
        return layer

    def _write(self, slot: int, deltas: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        for path, module in self._layers.items():
            module.write(slot, *deltas.get(path, (None, None)))

    def _use(self, adapter_id: str, digest: str) -> None:
        self.use_rows([adapter_id] * MAX_IMAGES_PER_CALL)

    def _use_base_model(self) -> None:
        self.use_rows([""] * MAX_IMAGES_PER_CALL)

    def _evict(self, adapter_id: str) -> None:
        self._digests.pop(adapter_id, None)
        self.text_encoders.evict(adapter_id)
        slot = self._slots.pop(adapter_id, None)
        if slot is not None:
            self._write(slot, {})  # a deleted subject's weights must not stay in GPU memory


def subject_mixes(keys: Sequence[tuple[str, str]], size: int) -> list[list[int]]:
    """Positions of `keys` ((adapter id, digest) per image; ("", "") for the base model) in calls of at most
    MAX_IMAGES_PER_CALL images and `size` adapters (all of a call's adapters must be in slots at once), each
    id with one digest (other bytes under a known id replace its slot, so they wait for the next call)."""
    calls: list[list[int]] = []
    adapters: dict[str, str] = {}
    for position, (adapter_id, digest) in enumerate(keys):
        known = adapters.get(adapter_id)
        fits = calls and len(calls[-1]) < MAX_IMAGES_PER_CALL and known in (None, digest) and \
            (known is not None or not adapter_id or len(adapters) < size)
        if not fits:
            calls.append([])
            adapters = {}
        calls[-1].append(position)
        if adapter_id:
            adapters[adapter_id] = digest
    return calls
