"""The whole UNet compiled at static shapes (render modes `compile` and `cuda-graphs`, with their suffixes), a few
batch sizes warmed up, and every other shape run eager once the instance serves.

Why static: compiled with dynamic shapes, one graph covered every batch and image size, but the cold compile took
4.0x as long (SD1.5's UNet at toy widths, 16x16 latents, on a 2-core VM: 374 s against 94 s; bench/static_compile.py)
and never finished on an H200 in the 259 s its Triton load had. Inductor also lays convolutions out NHWC on its own
only for static shapes (torch/_inductor/graph.py decide_layout_opt).

How a few compiles serve every batch: PortraitRenderer pads a pipeline call's images up to the next of a few batch
sizes (`image_buckets`; the padding rows are copies whose images are dropped), and its warm-up compiles each of them
at the image sizes orders use. Once warm, the instance is sealed: a call of a shape it did not warm up (an image size
no style asks for) runs the eager UNet instead of compiling for minutes in front of a customer.

The VAE's decoder compiles the same way beside the UNet (`compile_decoder`): once the UNet's steps are fused, the decode
is a larger share of a call (on an H200 at SD1.5 batch 8 the eager decode and the rest of a call outside the denoising
loop took about 9% of it; bench/render_results.md), and its full-resolution group norms, activations and layout
conversions fuse like the UNet's.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence

from services.renderer.graphs import graph_inputs, signature

BUCKETS_ENV = "STUDIO_RENDER_BATCH_BUCKETS"  # e.g. "1,2,4,8"; unset: powers of two up to Triton's max_batch_size
WARM_UP_SIZES_ENV = "STUDIO_RENDER_WARM_UP_SIZES"  # e.g. "512x640,1024x1024"; unset: the style catalogue's sizes
# Graphs one compiled forward keeps (dynamo's recompile limit): buckets x warm-up sizes, with room to spare.
COMPILED_SHAPES_LIMIT = 64

log = logging.getLogger(__name__)


def parse_buckets(configured: str) -> list[int]:
    """STUDIO_RENDER_BATCH_BUCKETS ("1,2,8") as ascending batch sizes; [] when blank."""
    if not configured.strip():
        return []
    try:
        sizes = sorted({int(part) for part in configured.split(",") if part.strip()})
    except ValueError:
        sizes = []
    if not sizes or sizes[0] < 1:
        raise ValueError(f"{BUCKETS_ENV} must list batch sizes of 1 or more, like '1,2,4,8'; got '{configured}'")
    return sizes


def image_buckets(max_batch: int) -> list[int]:
    """The batch sizes (images per pipeline call) a static compile serves when none are configured, ascending: the
    powers of two below `max_batch` and `max_batch` itself."""
    if max_batch < 1:
        raise ValueError(f"a batch holds at least 1 image, got {max_batch}")
    return sorted({1 << power for power in range(max_batch.bit_length()) if 1 << power < max_batch} | {max_batch})


def bucket_for(count: int, buckets: Sequence[int]) -> int:
    """The smallest of `buckets` that holds `count` images; `count` itself above them all (or with none)."""
    return min((size for size in buckets if size >= count), default=count)


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """'512x640,1024x1024' as [(width, height), ...]: the image sizes a warm-up compiles or captures."""
    sizes = []
    for part in (part.strip() for part in text.split(",")):
        width, _, height = part.lower().partition("x")
        if not (width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
            raise ValueError(f"{WARM_UP_SIZES_ENV} must list WIDTHxHEIGHT sizes, like '512x640'; got '{text}'")
        sizes.append((int(width), int(height)))
    return sizes


def warm_up_sizes() -> list[tuple[int, int]]:
    """The image sizes a Triton instance warms up: STUDIO_RENDER_WARM_UP_SIZES, or every size the style catalogue's
    presets render at (what orders ask for unless an item overrides it)."""
    configured = os.environ.get(WARM_UP_SIZES_ENV, "").strip()
    if configured:
        return parse_sizes(configured)
    from services.common.styles import catalogue

    return sorted({(preset.width, preset.height) for preset in catalogue().values()})


def unet_inputs(sample, timestep, encoder_hidden_states, **options) -> dict | None:
    """A UNet call's tensors by name, or None where it has options a compiled graph does not take (graphs.py)."""
    return graph_inputs(sample, timestep, encoder_hidden_states, options)


def decoder_inputs(sample, latent_embeds=None) -> dict | None:
    """A VAE decoder call's latents, or None with latent embeddings (no pipeline of ours passes them)."""
    return {"sample": sample} if latent_embeds is None else None


class StaticShapes:
    """Replaces `module.forward` in place (the adapter stores and FP8 layers keep reaching the UNet's layers by name)
    with a forward compiled at static shapes: one graph per input signature (`inputs_of` names a call's tensors; None
    where a call must run eager), compiled on first use until `seal`, after which signatures never seen run eager."""

    def __init__(self, module, options: dict | None = None,
                 inputs_of: Callable[..., dict | None] = unet_inputs, part: str = "UNet") -> None:
        import torch

        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, COMPILED_SHAPES_LIMIT)
        self.eager_forward = module.forward
        self.compiled_forward = torch.compile(module.forward, dynamic=False, options=options or None)
        self.inputs_of = inputs_of
        self.part = part
        self.signatures: set[tuple] = set()
        self.sealed = False
        self.eager_calls = 0
        self._reported: set[tuple | None] = set()
        module.forward = self.forward

    def seal(self) -> None:
        """From now on only the signatures compiled so far run compiled."""
        self.sealed = True

    def forward(self, *args, **kwargs):
        inputs = self.inputs_of(*args, **kwargs)
        key = signature(inputs) if inputs is not None else None
        if key is None or (self.sealed and key not in self.signatures):
            if key not in self._reported:
                self._reported.add(key)
                log.warning("%s calls of a shape not compiled at warm-up run eager (%s)", self.part,
                            "unusual options" if key is None else _described(key))
            self.eager_calls += 1
            return self.eager_forward(*args, **kwargs)
        if key in self.signatures:
            return self.compiled_forward(*args, **kwargs)
        return self._first_call(key, *args, **kwargs)

    def _first_call(self, key: tuple, *args, **kwargs):
        """A signature's first call, its cold compile (minutes at real size), logged as it starts and ends: a warm-up
        cut off by a time box or a startup probe then says where it was."""
        shapes = _described(key)
        log.info("%s: compiling for %s", self.part, shapes)
        started = time.monotonic()
        output = self.compiled_forward(*args, **kwargs)
        self.signatures.add(key)
        log.info("%s: compiled for %s in %.1f s", self.part, shapes, time.monotonic() - started)
        return output


def _described(key: tuple) -> str:
    return ", ".join(f"{name} {list(shape)}" for name, shape, _ in key)


def compile_decoder(vae, options: dict) -> StaticShapes:
    """The VAE's decoder compiled at static shapes, warmed up and sealed with the UNet; `options` are the layout's
    (unet_modes.compile_options), in inductor's default mode whatever the UNet's: one decode a call launches few
    kernels against its work, so CUDA graphs of it would only hold memory."""
    return StaticShapes(vae.decoder, options, decoder_inputs, "VAE decoder")
