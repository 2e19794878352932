"""The mode table (services/renderer/unet_modes.py): which inductor options each compiled mode asks for."""

from __future__ import annotations

import pytest

from services.renderer.unet_modes import UNET_MODES, WHOLE_COMPILE_OPTIONS, compile_options, unet_mode


@pytest.mark.parametrize(("name", "nhwc"), [("regional-graphed-cl", True), ("cuda-graphs-cl-fp8", True),
                                            ("regional-graphed-batched-cl", True), ("regional-graphed", False),
                                            ("graphed-cl", False), ("fused-cl", False), ("", False)])
def test_only_compiled_channels_last_modes_force_nhwc_convolutions(name: str, nhwc: bool) -> None:
    assert compile_options(unet_mode(name)).get("force_layout_optimization", False) is nhwc


@pytest.mark.parametrize(("name", "as_products"), [("compile", True), ("cuda-graphs-batched-cl", True),
                                                   ("regional-graphed", False), ("graphed", False), ("", False)])
def test_whole_compiles_run_pointwise_convolutions_as_matrix_products(name: str, as_products: bool) -> None:
    assert compile_options(unet_mode(name)).get("conv_1x1_as_mm", False) is as_products


def test_every_whole_compile_mode_has_its_inductor_options() -> None:
    import torch._inductor

    wholes = {mode.whole for mode in UNET_MODES.values() if mode.whole}
    assert wholes == set(WHOLE_COMPILE_OPTIONS)
    for whole, options in WHOLE_COMPILE_OPTIONS.items():
        assert torch._inductor.list_mode_options(whole) == options
