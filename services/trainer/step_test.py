from __future__ import annotations

import pytest
from diffusers import UNet2DConditionModel

from services.common.regional_compile import REGIONAL_BLOCKS
from services.trainer.step import compiled
from services.trainer.worker import compile_mode_from_env

TOY_UNET = {
    "sample_size": 8, "block_out_channels": [32, 64], "layers_per_block": 1, "cross_attention_dim": 32,
    "norm_num_groups": 16, "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
}


def test_regional_compile_wraps_every_repeated_block_and_leaves_the_unet_itself_eager() -> None:
    unet = UNet2DConditionModel(**TOY_UNET)
    assert compiled(unet, "regional") is unet
    blocks = [module for module in unet.modules() if type(module).__name__ in REGIONAL_BLOCKS]
    assert blocks and all(block._compiled_call_impl is not None for block in blocks)
    assert unet._compiled_call_impl is None


def test_off_leaves_the_unet_alone_and_a_typo_is_refused() -> None:
    unet = UNet2DConditionModel(**TOY_UNET)
    assert compiled(unet, "off") is unet
    assert all(module._compiled_call_impl is None for module in unet.modules())
    with pytest.raises(ValueError, match="regional"):
        compiled(unet, "fast")


@pytest.mark.parametrize(("value", "mode"), [("", "off"), ("0", "off"), ("1", "full"), ("Regional", "regional")])
def test_compile_setting_from_the_environment(value: str, mode: str) -> None:
    assert compile_mode_from_env(value) == mode


def test_an_unknown_compile_setting_stops_the_worker_with_the_choices() -> None:
    with pytest.raises(SystemExit, match="off, full, regional, graphed"):
        compile_mode_from_env("yes")
