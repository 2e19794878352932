"""How the renderer runs its UNet (STUDIO_RENDER_COMPILE): eager, compiled whole or block by block,
replayed as CUDA graphs, with or without FP8 transformer linears, with or without channels-last
convolutions. docs/rendering.md compares them.

Every mode but eager fuses subjects' LoRAs into the UNet's weights in place
(services/renderer/adapters.py), so a compiled or captured UNet stays valid across subjects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.renderer.static_shapes import StaticShapes

COMPILE_ENV = "STUDIO_RENDER_COMPILE"
CHANNELS_LAST_SUFFIX = "-cl"
FP8_SUFFIX = "-fp8"


@dataclass(frozen=True)
class UNetMode:
    # torch.compile mode for the whole UNet, at static shapes (services/renderer/static_shapes.py): "default" is
    # inductor's (max-autotune would add a GEMM search to every cold start of an instance), "reduce-overhead" adds
    # torch's own CUDA graphs.
    whole: str | None = None
    regional: bool = False  # compile each repeated block on its own (services/common/regional_compile.py)
    graphed: bool = False  # replay the forward as CUDA graphs of our own capture (services/renderer/graphs.py)
    fp8: bool = False  # transformer linears as FP8 products (services/renderer/fp8.py)
    # Convolution weights, and so activations, in NHWC: tensor-core convolutions without the layout
    # transposes NCHW costs around each one, and a transformer block's NCHW-to-tokens permute becomes a view.
    channels_last: bool = False
    # Subjects' LoRAs merged into the weights (services/renderer/adapters.py FusedAdapter); eager alone keeps
    # them as PEFT adapters, which serve every LoRA format.
    fused_adapters: bool = True
    # Every cached subject's LoRA in slots beside the base weights, so one UNet call renders several subjects
    # (services/renderer/batched_adapters.py); instead of fused_adapters.
    batched_adapters: bool = False

    @property
    def compiles(self) -> bool:
        """An instance pays a cold torch.compile when it starts (minutes at real size for a whole UNet)."""
        return self.whole is not None or self.regional


_ONE_ADAPTER_MODES = {
    "": UNetMode(fused_adapters=False),
    "fused": UNetMode(),  # eager, with the subject's LoRA fused into the weights instead of PEFT layers
    "compile": UNetMode(whole="default"),
    "cuda-graphs": UNetMode(whole="reduce-overhead"),
    "regional": UNetMode(regional=True),
    "graphed": UNetMode(graphed=True),
    "regional-graphed": UNetMode(regional=True, graphed=True),
}
_BATCHED_MODES = {
    "batched": UNetMode(fused_adapters=False, batched_adapters=True),  # eager, several subjects per UNet call
    **{f"{name}-batched": replace(_ONE_ADAPTER_MODES[name], fused_adapters=False, batched_adapters=True)
       for name in ("compile", "cuda-graphs", "graphed", "regional", "regional-graphed")},
}
_BASE_MODES = {**_ONE_ADAPTER_MODES, **_BATCHED_MODES}
_LAYOUTS = {**_BASE_MODES, **{name + CHANNELS_LAST_SUFFIX: replace(mode, channels_last=True)
                              for name, mode in _BASE_MODES.items() if name}}
UNET_MODES = {**_LAYOUTS, **{name + FP8_SUFFIX: replace(mode, fp8=True) for name, mode in _LAYOUTS.items() if name}}


# torch.compile's modes as inductor options (a compile takes a mode or options, not both).
WHOLE_COMPILE_OPTIONS = {"default": {}, "reduce-overhead": {"triton.cudagraphs": True}}


def compile_options(mode: UNetMode) -> dict:
    """Inductor options for a mode's compiles. With `-cl`, convolutions stay NHWC inside the compiled graphs:
    inductor does that on its own only for static shapes (torch/_inductor/graph.py decide_layout_opt skips
    dynamic ones, pytorch/pytorch#102670), and the regional compiles are dynamic so that one compile serves every
    batch size; the whole-UNet compiles are static, where `-cl` makes the layout certain.
    Without it cuDNN converts each NCHW input to NHWC first: 7-8% of an H200's device time at SD1.5 batch 8
    (bench/render_results.md).
    A whole-UNet compile (and the VAE decoder's beside it) also runs 1x1 convolutions as matrix products, which
    inductor can fuse with their bias and neighbours: the resnets' shortcuts and SD1.5's transformer projections, the
    flag diffusers' guide to compiled SDXL sets (its "Accelerate inference of text-to-image diffusion models")."""
    options = {"force_layout_optimization": True} if mode.channels_last and mode.compiles else {}
    return {**options, "conv_1x1_as_mm": True} if mode.whole else options


def unet_mode(name: str) -> UNetMode:
    if name not in UNET_MODES:
        raise ValueError(f"{COMPILE_ENV} must be one of {sorted(UNET_MODES)}, got '{name}'")
    return UNET_MODES[name]


def prepare_unet(unet, name: str, install_adapters: Callable[[object], None] | None = None
                 ) -> tuple[UNetMode, StaticShapes | None]:
    """Convert, compile and capture `unet` in place as mode `name` says; the mode, and the whole UNet's static
    compile where it has one (the renderer pads batches to its sizes and seals it once warm). `install_adapters(unet)`
    runs after the conversions and before any compile or capture (batched adapter layers go there)."""
    mode = unet_mode(name)
    if mode.channels_last:
        import torch

        unet.to(memory_format=torch.channels_last)  # 4-D weights only: the convolutions
    if mode.fp8:
        from services.renderer.fp8 import to_float8

        to_float8(unet)
    if install_adapters is not None:
        install_adapters(unet)
    # In place, not a wrapper: the adapter stores reach the UNet's layers by name. The blocks compile with dynamic
    # shapes: Triton's batches vary in size (each adapter's group is one pipeline call), and one compile of a block
    # covers every batch size. The whole UNet compiles at a few static batch sizes instead (static_shapes.py).
    options = compile_options(mode)
    if mode.regional:
        from services.common.regional_compile import compile_repeated_blocks

        compile_repeated_blocks(unet, dynamic=True, options=options)
    static = None
    if mode.whole:
        from services.renderer.static_shapes import StaticShapes

        static = StaticShapes(unet, options={**WHOLE_COMPILE_OPTIONS[mode.whole], **options})
    if mode.graphed:  # last: the capture replays whatever the forward runs, compiled blocks included
        from services.renderer.graphs import UNetGraphs

        UNetGraphs(unet)  # kept alive by the forward it installs
    return mode, static
