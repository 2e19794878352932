"""The UNet's forward and backward replayed as CUDA graphs, captured from eager PyTorch with
torch.cuda.make_graphed_callables: no torch.compile, so no cold compile, and each step launches two
graphs instead of kernels one by one.

Why: an eager LoRA step on an SDXL-size UNet runs about 31,000 aten ops (forward and backward; the
LoRA layers' are 58% of the forward's), and on an H200 its step time barely moved between batch 2 and batch 4
(462 and 464 ms, bench/train_results.md): the GPU waited on the CPU's launches. Replaying graphs
leaves the GPU's own time.

What a capture needs, and how it is met here:
- only tensors in and out: `UNetCall` takes the conditioning as positional tensors;
- static shapes: one capture per input signature (the trainer's batch size is fixed per run);
- autocast without its weight cache, inside the captured function;
- no CPU-GPU sync inside, which gradient checkpointing's RNG bookkeeping would do: refused together.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel

from services.trainer.components import Conditioning

MAX_CAPTURES = 4  # input signatures kept; a run uses one, a run with a different batch one more


class UNetCall(torch.nn.Module):
    """The UNet's noise prediction as a function of positional tensors only."""

    def __init__(self, unet: UNet2DConditionModel, bf16: bool, added_names: tuple[str, ...]) -> None:
        super().__init__()
        self.unet = unet
        self.bf16 = bf16
        self.added_names = added_names

    def forward(self, sample: torch.Tensor, timesteps: torch.Tensor, encoder_hidden_states: torch.Tensor,
                *added: torch.Tensor) -> torch.Tensor:
        added_cond_kwargs = dict(zip(self.added_names, added, strict=True)) or None
        with torch.autocast(sample.device.type, dtype=torch.bfloat16, enabled=self.bf16, cache_enabled=False):
            return self.unet(sample, timesteps, encoder_hidden_states, added_cond_kwargs=added_cond_kwargs,
                             return_dict=False)[0]


def call_arguments(sample: torch.Tensor, timesteps: torch.Tensor, conditioning: Conditioning) -> tuple:
    """UNetCall's arguments for a batch; the added conditioning in name order."""
    added = conditioning.added_cond_kwargs
    return (sample, timesteps, conditioning.encoder_hidden_states, *(added[name] for name in sorted(added)))


class GraphedUNet:
    """Predicts like `UNetCall`, through CUDA graphs captured on first use of each input signature."""

    def __init__(self, unet: UNet2DConditionModel, bf16: bool) -> None:
        if getattr(unet, "is_gradient_checkpointing", False):
            raise ValueError("CUDA graphs cannot capture gradient checkpointing (it syncs the RNG state with the "
                             "CPU); turn one of them off")
        self.unet = unet
        self.bf16 = bf16
        self.captures: dict[tuple, torch.nn.Module] = {}

    def __call__(self, sample: torch.Tensor, timesteps: torch.Tensor, conditioning: Conditioning) -> torch.Tensor:
        arguments = call_arguments(sample, timesteps, conditioning)
        signature = (tuple(sorted(conditioning.added_cond_kwargs)),
                     *((a.shape, a.dtype, a.requires_grad) for a in arguments))
        graphed = self.captures.get(signature)
        if graphed is None:
            if len(self.captures) >= MAX_CAPTURES:
                raise RuntimeError(f"more than {MAX_CAPTURES} input shapes in one run; CUDA graphs need fixed shapes")
            graphed = self._capture(signature[0], arguments)
            self.captures[signature] = graphed
        return graphed(*arguments)  # copied into the graph's own (dense) input buffers

    def _capture(self, added_names: tuple[str, ...], arguments: tuple) -> torch.nn.Module:
        # Dense copies: the captured inputs become the graph's buffers, and an expanded (stride-0) buffer
        # could not take the next batch's values.
        samples = tuple(a.detach().contiguous().clone().requires_grad_(a.requires_grad) for a in arguments)
        call = UNetCall(self.unet, self.bf16, added_names)
        return torch.cuda.make_graphed_callables(call, samples)

