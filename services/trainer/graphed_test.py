"""What of the "graphed" mode a CPU can check: the tensors-only UNet call predicts exactly what the
eager step's call does (SD1.5- and SDXL-style conditioning), and the mode is refused where it cannot
run. The capture itself needs a GPU: bench/gpu_host/trainer_check.py compares it with eager there."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DConditionModel

from services.trainer.components import Conditioning
from services.trainer.graphed import GraphedUNet, UNetCall, call_arguments
from services.trainer.step import LoraStep
from services.trainer.worker import TrainerOptions

SD15_TOY = {
    "sample_size": 8, "block_out_channels": [32, 64], "layers_per_block": 1, "cross_attention_dim": 32,
    "norm_num_groups": 16, "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
}
SDXL_TOY = {
    **SD15_TOY, "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 16 + 6 * 8,
}


def _conditioning(sdxl: bool) -> Conditioning:
    generator = torch.Generator().manual_seed(3)
    hidden = torch.randn(1, 7, 32, generator=generator)
    if not sdxl:
        return Conditioning(hidden)
    return Conditioning(hidden, {"time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]]),
                                 "text_embeds": torch.randn(1, 16, generator=generator)})


@pytest.mark.parametrize("sdxl", [False, True], ids=["sd15", "sdxl"])
def test_the_tensors_only_call_predicts_what_the_eager_step_predicts(sdxl: bool) -> None:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**(SDXL_TOY if sdxl else SD15_TOY)).eval()
    sample, timesteps = torch.randn(2, 4, 8, 8), torch.tensor([10, 500])
    batch = _conditioning(sdxl).expand(2)
    arguments = call_arguments(sample, timesteps, batch)
    names = tuple(sorted(batch.added_cond_kwargs))
    with torch.no_grad():
        direct = unet(sample, timesteps, batch.encoder_hidden_states,
                      added_cond_kwargs=batch.added_cond_kwargs or None, return_dict=False)[0]
        called = UNetCall(unet, bf16=False, added_names=names)(*arguments)
    assert len(arguments) == (5 if sdxl else 3)
    assert torch.equal(direct, called)


def test_graphed_mode_is_refused_without_a_cuda_device() -> None:
    unet = UNet2DConditionModel(**SD15_TOY)
    parameters = [torch.nn.Parameter(torch.zeros(1))]
    with pytest.raises(ValueError, match="needs a CUDA device"):
        LoraStep(unet, DDPMScheduler(), parameters, 1e-4, device=torch.device("cpu"), compile_mode="graphed")


def test_graphed_mode_is_refused_with_gradient_checkpointing() -> None:
    unet = UNet2DConditionModel(**SD15_TOY)
    unet.enable_gradient_checkpointing()
    with pytest.raises(ValueError, match="gradient checkpointing"):
        GraphedUNet(unet, bf16=True)


def test_a_worker_without_cuda_refuses_to_start_graphed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDIO_TRAIN_COMPILE", "graphed")
    monkeypatch.setenv("STUDIO_TRAIN_DEVICE", "cpu")
    with pytest.raises(SystemExit, match="replays CUDA graphs; this worker's device is cpu"):
        TrainerOptions.from_env()
    monkeypatch.setenv("STUDIO_TRAIN_COMPILE", "regional")
    assert TrainerOptions.from_env().compile_mode == "regional"
