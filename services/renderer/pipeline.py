"""In-process portrait rendering: one diffusion pipeline, LoRA adapters loaded from bytes.

Used by the Triton python-backend model (model_repository/portrait_diffusion) and directly by
benchmarks. Adapters arrive as the bytes of a diffusers LoRA safetensors file and are loaded from
memory only: a subject's adapter is never written to disk in clear.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from services.renderer.adapter_reference import checked_token
from services.renderer.adapters import FusedAdapter, NamedAdapters
from services.renderer.batched_adapters import DEFAULT_MAX_RANK, BatchedAdapters, subject_mixes
from services.renderer.errors import RenderInputError
from services.renderer.row_guidance import RowGuidance
from services.renderer.row_schedulers import RowTimesteps, SchedulerSet
from services.renderer.static_shapes import BUCKETS_ENV, bucket_for, compile_decoder, image_buckets, parse_buckets
from services.renderer.unet_modes import COMPILE_ENV, compile_options, prepare_unet, unet_mode

BASE_MODEL_ENV = "STUDIO_BASE_MODEL"
ADAPTER_CACHE_ENV = "STUDIO_ADAPTER_CACHE"
DTYPE_ENV = "STUDIO_RENDER_DTYPE"
MAX_RANK_ENV = "STUDIO_RENDER_MAX_RANK"  # the largest LoRA rank a batched mode's slots hold
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
DEFAULT_ADAPTER_CACHE_SIZE = 8
WARM_UP_STEPS = 2
MAX_STEPS = 100
MAX_SIDE = 2048
MAX_GUIDANCE = 50.0
# Catalogue scheduler names (services/common/styles.py SCHEDULERS) -> diffusers scheduler classes.
SCHEDULER_CLASSES = {
    "ddim": ("DDIMScheduler", {}),
    "dpmpp-2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
}


@dataclass(frozen=True)
class RenderParams:
    prompt: str
    negative_prompt: str = ""
    seed: int = 0
    steps: int = 20
    guidance: float = 7.0
    width: int = 512
    height: int = 512
    scheduler: str = ""  # a SCHEDULER_CLASSES name; empty = the base model's own

    @property
    def batch_key(self) -> tuple:
        """Requests with equal keys (and the same adapter, and schedulers that agree on the number of timesteps)
        can share one pipeline call; each image keeps its own guidance and scheduler within it
        (services/renderer/row_guidance.py, row_schedulers.py)."""
        return (self.steps, self.width, self.height)

    def validate(self) -> None:
        for name, side in (("width", self.width), ("height", self.height)):
            if side < 8 or side > MAX_SIDE or side % 8:
                raise RenderInputError(f"{name} must be a multiple of 8 in 8..{MAX_SIDE}, got {side}")
        if not 1 <= self.steps <= MAX_STEPS:
            raise RenderInputError(f"steps must be in 1..{MAX_STEPS}, got {self.steps}")
        if not math.isfinite(self.guidance) or not 0 <= self.guidance <= MAX_GUIDANCE:
            raise RenderInputError(f"guidance must be in 0..{MAX_GUIDANCE}, got {self.guidance}")
        if self.scheduler and self.scheduler not in SCHEDULER_CLASSES:
            raise RenderInputError(f"unknown scheduler '{self.scheduler}' (known: {', '.join(SCHEDULER_CLASSES)})")


@dataclass(frozen=True)
class BatchItem:
    """One request of a batch: what to render and with which adapter: its bytes, its token
    (services/renderer/adapter_reference.py) or both; neither = the base model."""

    params: RenderParams
    adapter_id: str = ""
    adapter: bytes = field(default=b"", repr=False)  # decrypted: no repr shows it, nor its token
    adapter_token: str = field(default="", repr=False)

    def token(self) -> str:
        """The adapter's token ("" for the base model); bytes and a token that disagree are refused."""
        return checked_token(self.adapter, self.adapter_token)


def pick_device_and_dtype():
    """CUDA in bf16 (fp16 where bf16 is missing), else the CPU in fp32; STUDIO_RENDER_DTYPE overrides."""
    import torch

    chosen = os.environ.get(DTYPE_ENV, "")
    if chosen and chosen not in DTYPES:
        raise ValueError(f"{DTYPE_ENV} must be one of {', '.join(DTYPES)}, got '{chosen}'")
    if torch.cuda.is_available():
        default = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.device("cuda"), getattr(torch, DTYPES[chosen]) if chosen else default
    return torch.device("cpu"), getattr(torch, DTYPES[chosen]) if chosen else torch.float32


def load_pipeline(base_model: Path):
    """The base model's pipeline (SD1.5 or SDXL family, by its model_index.json) on the best device."""
    from diffusers import DiffusionPipeline

    device, dtype = pick_device_and_dtype()
    pipe = DiffusionPipeline.from_pretrained(
        str(base_model),
        dtype=dtype,
        safety_checker=None,
        requires_safety_checker=False,
        local_files_only=True,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def build_scheduler(pipe, name: str, default):
    import diffusers

    class_name, options = SCHEDULER_CLASSES[name]
    return getattr(diffusers, class_name).from_config(default.config, **options)


def use_channels_last_vae(vae) -> None:
    """The VAE's convolutions in NHWC too: its decoder runs full-resolution convolutions (128 channels at
    the image's size), where NCHW costs a layout transpose around each one. On a GPU, cuDNN then times its
    algorithms for each new convolution shape once (a graphed or compiled mode's warm-up pays it) instead of
    taking its heuristic's pick."""
    import torch

    vae.to(memory_format=torch.channels_last)
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


class PortraitRenderer:
    """One pipeline, its LoRA adapters cached by id (LRU); renders batches grouped by adapter, or with the
    subjects of a batch together in the -batched modes.

    compile_mode ("" eager, or a services/renderer/unet_modes.py UNET_MODES name) compiles the UNet or
    captures it as CUDA graphs; adapters are then fused into its weights in place
    (services/renderer/adapters.py) or held in slots beside them (services/renderer/batched_adapters.py),
    so it is compiled or captured once. A whole-UNet compile is static, the VAE's decoder compiled beside it: each
    pipeline call is padded to one of `batch_buckets` images (set by warm_up, or given), and the padding's images
    dropped."""

    def __init__(self, pipe, adapter_cache_size: int = DEFAULT_ADAPTER_CACHE_SIZE, compile_mode: str = "",
                 max_rank: int = DEFAULT_MAX_RANK, batch_buckets: Sequence[int] = ()) -> None:
        self.adapters: NamedAdapters | FusedAdapter | BatchedAdapters | None = None

        def install_batched(unet) -> None:  # the slot layers go in before any compile or capture
            self.adapters = BatchedAdapters(pipe, adapter_cache_size, max_rank)

        batched = unet_mode(compile_mode).batched_adapters
        self.unet_mode, self.static = prepare_unet(pipe.unet, compile_mode, install_batched if batched else None)
        self.batch_buckets = sorted(batch_buckets)
        if self.unet_mode.channels_last:
            use_channels_last_vae(pipe.vae)
        self.static_decoder = compile_decoder(pipe.vae, compile_options(self.unet_mode)) if self.static else None
        self.pipe = pipe
        self.compile_mode = compile_mode
        self.adapter_cache_size = adapter_cache_size
        if self.adapters is None:
            store = FusedAdapter if self.unet_mode.fused_adapters else NamedAdapters
            self.adapters = store(pipe, adapter_cache_size)
        default = pipe.scheduler  # the pipeline's attribute holds each call's RowSchedulers from now on
        self.schedulers = SchedulerSet(default, lambda name: build_scheduler(pipe, name, default))
        self.guidance = RowGuidance(pipe.unet)
        self.row_timesteps = RowTimesteps(pipe.unet)

    @classmethod
    def from_env(cls, default_cache_size: int = DEFAULT_ADAPTER_CACHE_SIZE) -> PortraitRenderer:
        """STUDIO_BASE_MODEL's pipeline; STUDIO_ADAPTER_CACHE overrides the cache size, STUDIO_RENDER_COMPILE
        compiles the UNet, STUDIO_RENDER_BATCH_BUCKETS sets the batch sizes a whole-UNet compile serves."""
        base_model = os.environ.get(BASE_MODEL_ENV)
        if not base_model:
            raise RuntimeError(f"{BASE_MODEL_ENV} must name a diffusers model folder")
        cache_size = int(os.environ.get(ADAPTER_CACHE_ENV) or default_cache_size)
        max_rank = int(os.environ.get(MAX_RANK_ENV) or DEFAULT_MAX_RANK)
        buckets = parse_buckets(os.environ.get(BUCKETS_ENV, ""))
        return cls(load_pipeline(Path(base_model)), cache_size, os.environ.get(COMPILE_ENV, ""), max_rank, buckets)

    def warm_up(self, max_batch: int = 1, sizes: Sequence[tuple[int, int]] = ()) -> float:
        """Compile or capture now, before serving (a Triton instance calls this while loading, so it is not
        ready until warm and no customer's request waits on a cold compile); seconds taken, 0 if eager.
        At each of `sizes` ((width, height); the base model's resolution when none), denoising only unless the VAE's
        decoder is compiled too:
        - a whole-UNet compile (static shapes) compiles the UNet and the decoder at each of `batch_buckets` (the
          powers of two up to `max_batch` unless given), then both are sealed: a shape not warmed up runs eager;
        - the regional compiles (dynamic shapes) denoise `max_batch` images and one (dynamo still specialises
          some sizes at the first trace, such as dimensions of 1);
        - the graphed modes capture every batch size up to `max_batch`, largest first so the smaller graphs reuse
          its memory. Other image sizes are captured on first use, in about two UNet calls' time."""
        if not (self.unet_mode.compiles or self.unet_mode.graphed):
            return 0.0
        started = time.monotonic()
        if self.static is not None:
            self.batch_buckets = self.batch_buckets or image_buckets(max_batch)
            batches = sorted(self.batch_buckets, reverse=True)
        else:
            batches = range(max_batch, 0, -1) if self.unet_mode.graphed else sorted({max_batch, 1}, reverse=True)
        side = int(self.pipe.unet.config.sample_size) * int(self.pipe.vae_scale_factor)
        for width, height in sizes or [(side, side)]:
            params = RenderParams(prompt="warm-up", steps=WARM_UP_STEPS, width=width, height=height)
            for size in batches:
                self._run_pipeline([params] * size, decode=self.static_decoder is not None)
        for compiled in (self.static, self.static_decoder):
            if compiled is not None:
                compiled.seal()
        return time.monotonic() - started

    @property
    def loaded_adapter_ids(self) -> list[str]:
        return self.adapters.loaded_ids

    def render(self, params: RenderParams, adapter_id: str = "", adapter: bytes = b"") -> np.ndarray:
        """Render one image as uint8 HxWx3. Empty `adapter` means the base model alone."""
        result = self.render_batch([BatchItem(params, adapter_id, adapter)])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def render_batch(self, items: Sequence[BatchItem]) -> list[np.ndarray | Exception]:
        """Each item's image (uint8 HxWx3) or the error that refused it, in order. Items with the same
        batch key share one pipeline call, and with the same adapter too unless the mode batches adapters;
        each item gets its own adapter's result."""
        results: list[np.ndarray | Exception | None] = [None] * len(items)
        groups: dict[tuple, list[tuple[int, str, str]]] = {}
        mixes = isinstance(self.adapters, BatchedAdapters)
        for index, item in enumerate(items):
            try:
                item.params.validate()
                digest = item.token()
            except RenderInputError as error:
                results[index] = error
                continue
            adapter_id = (item.adapter_id or digest) if digest else ""
            params = item.params
            key = (*params.batch_key, self.schedulers.timestep_count(params.scheduler, params.steps))
            key = key if mixes else (adapter_id, digest, *key)
            groups.setdefault(key, []).append((index, adapter_id, digest))
        for group in groups.values():
            calls = subject_mixes([entry[1:] for entry in group], self.adapter_cache_size) if mixes else [
                list(range(len(group)))]
            for positions in calls:
                entries = [group[position] for position in positions]
                for (index, *_), image in zip(entries, self._render_call(items, entries), strict=True):
                    results[index] = image
        return results  # type: ignore[return-value]

    def _render_call(self, items: Sequence[BatchItem], entries: list[tuple[int, str, str]]) -> list:
        """One pipeline call for `entries` ((index, adapter id, digest)); an image or error per entry."""
        if isinstance(self.adapters, BatchedAdapters):
            return self._render_mixed(items, entries)
        _, adapter_id, digest = entries[0]
        try:
            self.adapters.activate(adapter_id, _bytes_among(items, entries).get(adapter_id, b""), digest)
            return self._run_pipeline([items[index].params for index, *_ in entries])
        except RenderInputError as error:
            return [error] * len(entries)

    def _render_mixed(self, items: Sequence[BatchItem], entries: list[tuple[int, str, str]]) -> list:
        """Several subjects in one call (each with text-encoder weights in one of its own): an adapter that
        cannot load fails its own items only."""
        assert isinstance(self.adapters, BatchedAdapters)
        carried = _bytes_among(items, entries)
        failures: dict[str, Exception] = dict(self.adapters.prepare(
            {adapter_id: (carried.get(adapter_id, b""), digest) for _, adapter_id, digest in entries if adapter_id}))
        rendered = [entry for entry in entries if entry[1] not in failures]
        outcomes: dict[int, object] = {}
        for positions in self.adapters.calls([adapter_id for _, adapter_id, _ in rendered]):
            call = [rendered[position] for position in positions]
            self.adapters.use_rows(self._padded([adapter_id for _, adapter_id, _ in call]))
            try:
                images = self._run_pipeline([items[index].params for index, *_ in call])
            except RenderInputError as error:
                images = [error] * len(call)
            outcomes.update(zip((index for index, *_ in call), images, strict=True))
        return [failures[adapter_id] if adapter_id in failures else outcomes[index] for index, adapter_id, _ in entries]

    def load_adapter(self, adapter_id: str, adapter: bytes, token: str = "") -> None:
        """Keep `adapter` for the renders that name it by token (Triton's load requests); RenderInputError when
        the bytes are no LoRA this mode serves, or disagree with `token`."""
        self.adapters.activate(adapter_id, adapter, checked_token(adapter, token))

    def evict_prefix(self, prefix: str) -> int:
        """Forget every adapter whose id starts with `prefix` (a deleted subject's); how many."""
        return self.adapters.evict_prefix(prefix)

    def _run_pipeline(self, batch: Sequence[RenderParams], decode: bool = True) -> list[np.ndarray]:
        """One pipeline call for params sharing a batch key; one image per params, in order (none when
        not `decode`: a warm-up that runs the UNet and skips the VAE)."""
        import torch

        count = len(batch)
        batch = self._padded(batch)
        first = batch[0]
        self.pipe.scheduler = self.row_timesteps.schedulers = self.schedulers.for_call([p.scheduler for p in batch])
        # CPU generators give the same starting noise on every device, one per image: an image does
        # not depend on what it was batched with.
        generators = [torch.Generator("cpu").manual_seed(params.seed) for params in batch]
        guidance = self.guidance.use([params.guidance for params in batch])
        try:
            with torch.inference_mode():
                result = self.pipe(
                    prompt=[params.prompt for params in batch],
                    negative_prompt=[params.negative_prompt for params in batch],
                    num_inference_steps=first.steps,
                    guidance_scale=guidance,
                    width=first.width,
                    height=first.height,
                    generator=generators,
                    output_type="pt" if decode else "latent",
                )
        finally:
            self.guidance.clear()
            self.row_timesteps.schedulers = None
        return list(to_uint8(result.images[:count])) if decode else []

    def _padded(self, batch: Sequence) -> list:
        """`batch` with its last entry repeated up to the static compile's next batch size (as is without one)."""
        if self.static is None:
            return list(batch)
        return [*batch, *[batch[-1]] * (bucket_for(len(batch), self.batch_buckets) - len(batch))]


def to_uint8(images) -> np.ndarray:
    """A decoded batch ([N, 3, H, W], 0..1, on the pipeline's device) as uint8 HxWx3 images, converted where it
    lies: from a GPU, bytes cross instead of float32 pixels, and the host, which the GPU waits on between Triton's
    batches, does no per-pixel work (SD1.5 batch 8: 15 ms of numpy on a 2-core VM). Rounds as numpy did (float32,
    half to even), so the pixels are those of output_type="np"."""
    import torch

    pixels = (images.float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def _bytes_among(items: Sequence[BatchItem], entries: list[tuple[int, str, str]]) -> dict[str, bytes]:
    """Adapter id -> its bytes, from any entry that carried them: a request by token and one with the bytes (a
    retry after NOT_FOUND) may share a call, in any order."""
    return {adapter_id: items[index].adapter for index, adapter_id, _ in entries if items[index].adapter}
