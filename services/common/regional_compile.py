"""Regional compilation: torch.compile each of a UNet's repeated building blocks on its own, used by
the trainer's "regional" mode and the renderer's "regional" modes.

Why: a UNet repeats the same few block shapes (SDXL stacks up to ten transformer blocks per level),
and a whole-UNet compile traces and generates code for every copy, minutes cold (bench/train_results.md:
SDXL did not finish in 280 s). Compiled block by block, each distinct shape is traced once and reused,
which cuts the cold compile to a fraction while keeping most of the fused kernels (norms, activations,
residual adds all live inside the blocks).
"""

from __future__ import annotations

REGIONAL_BLOCKS = ("BasicTransformerBlock", "ResnetBlock2D")
# Each distinct block shape (channels, resolution, with or without a shortcut) can be its own graph;
# SDXL has a few dozen at static shapes.
REGIONAL_GRAPH_LIMIT = 64


def compile_repeated_blocks(unet, dynamic: bool, options: dict | None = None) -> int:
    """Compile each REGIONAL_BLOCKS module of `unet` in place (Module.compile: names and weights stay where
    they are); how many. dynamic=True: one graph per block kind covers every batch and image size.
    `options`: inductor settings for these compiles only."""
    import torch

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, REGIONAL_GRAPH_LIMIT)
    blocks = [module for module in unet.modules() if type(module).__name__ in REGIONAL_BLOCKS]
    for module in blocks:
        module.compile(dynamic=dynamic, options=options)
    return len(blocks)
