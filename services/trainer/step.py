"""One LoRA optimisation step: noise the cached latents, predict with the UNet, MSE, AdamW.

The trainer's runs and bench/train.py's real-size measurements go through this same class, so the
benchmark times the code that trains customers' LoRAs. On a GPU it runs the frozen weights in bf16
(the LoRA weights and the optimiser stay fp32), uses the fused AdamW kernel and can compile the
UNet with torch.compile; on a CPU it stays fp32 and eager, which keeps runs bit-for-bit repeatable.

Compile modes: "full" compiles the whole UNet as one graph (fastest step, minutes of cold compile
for SDXL); "regional" compiles each transformer and resnet block on its own: the UNet repeats the
same few block shapes, so inductor compiles each shape once and reuses it, which cuts the cold
compile to a fraction while keeping most of the gain; "graphed" (CUDA only) compiles nothing and
replays the eager forward and backward as CUDA graphs (services/trainer/graphed.py), which removes
the CPU's kernel launches from the step in seconds of capture.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel

from services.common.regional_compile import compile_repeated_blocks
from services.trainer.components import Conditioning
from services.trainer.graphed import GraphedUNet
from services.trainer.modes import COMPILE_MODES


class LoraStep:
    def __init__(
        self,
        unet: UNet2DConditionModel,
        noise_scheduler: DDPMScheduler,
        trainable: Iterable[torch.nn.Parameter],
        learning_rate: float,
        *,
        device: torch.device,
        bf16: bool | None = None,
        compile_mode: str = "off",
        fused_optimizer: bool | None = None,
    ) -> None:
        self.device = torch.device(device)
        on_gpu = self.device.type == "cuda"
        self.bf16 = on_gpu if bf16 is None else bf16
        self.parameters = list(trainable)
        fused = on_gpu if fused_optimizer is None else fused_optimizer
        self.optimizer = torch.optim.AdamW(self.parameters, lr=learning_rate, fused=fused or None)
        if compile_mode == "graphed" and not on_gpu:
            raise ValueError(f"compile mode 'graphed' replays CUDA graphs and needs a CUDA device, not {self.device}")
        self.unet = compiled(unet, compile_mode)
        self.graphed = GraphedUNet(unet, self.bf16) if compile_mode == "graphed" else None
        config = noise_scheduler.config
        self.prediction_type = config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"unsupported scheduler prediction_type {self.prediction_type!r}")
        self.num_train_timesteps = int(config.num_train_timesteps)
        alphas_cumprod = noise_scheduler.alphas_cumprod.to(self.device, torch.float32)
        self.sqrt_alpha = alphas_cumprod.sqrt()
        self.sqrt_one_minus_alpha = (1.0 - alphas_cumprod).sqrt()

    def __call__(self, latents: torch.Tensor, conditioning: Conditioning, generator: torch.Generator) -> torch.Tensor:
        """One step on a batch of latents; returns the loss as a 0-d tensor (no device sync)."""
        loss = self.loss(latents, conditioning, generator)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def loss(self, latents: torch.Tensor, conditioning: Conditioning, generator: torch.Generator) -> torch.Tensor:
        """The denoising loss of one batch (forward only)."""
        noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
        timesteps = torch.randint(
            self.num_train_timesteps, (len(latents),), generator=generator, device=latents.device
        )
        sqrt_alpha = self.sqrt_alpha[timesteps].view(-1, 1, 1, 1)
        sqrt_one_minus = self.sqrt_one_minus_alpha[timesteps].view(-1, 1, 1, 1)
        noisy = sqrt_alpha * latents + sqrt_one_minus * noise
        target = noise if self.prediction_type == "epsilon" else sqrt_alpha * noise - sqrt_one_minus * latents
        batch = conditioning.expand(len(latents))
        if self.graphed is not None:
            prediction = self.graphed(noisy, timesteps, batch)
        else:
            with self._autocast():
                prediction = self.unet(
                    noisy, timesteps, batch.encoder_hidden_states,
                    added_cond_kwargs=batch.added_cond_kwargs or None, return_dict=False,
                )[0]
        return F.mse_loss(prediction.float(), target.float())

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


def compiled(unet: UNet2DConditionModel, mode: str) -> torch.nn.Module:
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode {mode!r} is not one of {', '.join(COMPILE_MODES)}")
    if mode == "graphed":
        return unet  # captured at the first step, by GraphedUNet
    if mode == "full":
        return torch.compile(unet, dynamic=False)
    if mode == "regional":
        compile_repeated_blocks(unet, dynamic=False)  # a run's shapes are fixed
    return unet


def freeze_in_bf16(module: torch.nn.Module) -> None:
    """Frozen weights in bf16 (half the bytes per step, no per-step casts); trainable ones stay fp32."""
    for parameter in module.parameters():
        parameter.data = parameter.data.to(torch.float32 if parameter.requires_grad else torch.bfloat16)
