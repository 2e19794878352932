"""Each image its own guidance scale within one pipeline call, so styles that differ only in guidance share
a batch.

Why: the catalogue's styles use guidance from 5.5 to 7.0. With guidance in the batch key, a Triton batch
holding several customers' styles became one pipeline call per guidance value: smaller, less efficient
UNet calls, the case batching across customers is meant to avoid.

How: with classifier-free guidance the pipeline combines the UNet's two halves as u + g·(c − u), one g
per call; the call gets its images' largest guidance. A forward hook on the UNet first rescales each
image's conditional half, c' = u + (g_i / g)·(c − u), so the pipeline's combination gives
u + g_i·(c − u): that image's own guidance. An image with guidance at most 1 (no guidance: the
conditional prediction alone) gets g_i = 1. A call whose images share one guidance is not touched. The
hook runs outside compiled code and CUDA graphs: a few elementwise operations per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch


class RowGuidance:
    """The per-image guidance of the next pipeline call, applied by a forward hook on `unet`."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self._ratios: torch.Tensor | None = None  # g_i / g per image, None when all images share g
        unet.register_forward_hook(self._rescale)

    def use(self, guidances: Sequence[float]) -> float:
        """Prepare a call whose images want `guidances`; the guidance scale to hand the pipeline."""
        top = max(guidances)
        if top <= 1 or len(set(guidances)) == 1:
            self._ratios = None
            return guidances[0]
        self._ratios = torch.tensor([max(guidance, 1.0) / top for guidance in guidances], dtype=torch.float32)
        return top

    def clear(self) -> None:
        self._ratios = None

    @torch._dynamo.disable  # not part of any compiled graph: it changes with every call's mix
    def _rescale(self, module: torch.nn.Module, args: tuple, output):
        ratios = self._ratios
        noise = output[0] if isinstance(output, tuple) else getattr(output, "sample", None)
        if ratios is None or noise is None or noise.shape[0] != 2 * len(ratios):
            return None  # a shared guidance, or a call without guidance (a warm-up): the output as it is
        if ratios.device != noise.device:  # once a call: a copy from the host makes it wait for the GPU
            ratios = self._ratios = ratios.to(noise.device)
        unconditional, conditional = noise.float().chunk(2)
        ratios = ratios.view(-1, *[1] * (noise.dim() - 1))
        rescaled = torch.cat([unconditional, unconditional + ratios * (conditional - unconditional)]).to(noise.dtype)
        return (rescaled, *output[1:]) if isinstance(output, tuple) else replace(output, sample=rescaled)
