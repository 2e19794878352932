"""Real-size LoRA training steps on random-weight SD1.5- and SDXL-size UNets (bench/train.py
--real-size). Each measurement runs in its own child process, so a slow torch.compile can be cut
off at its time box without losing what was already measured, and memory starts clean.

The step is services/trainer/step.py's LoraStep, the trainer's own; the LoRA is added by
services/trainer/lora.py, as in training runs. Nothing is downloaded: the UNets are built from the
config dicts below with random weights.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROGRESS_PREFIX = "# progress "  # a child's progress lines on stderr (log_progress)
BF16_DENSE_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0}
LORA_RANK = 32

SD15_UNET = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 768, "attention_head_dim": 8,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
SDXL_UNET = {
    "sample_size": 128, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280], "cross_attention_dim": 2048, "attention_head_dim": [5, 10, 20],
    "transformer_layers_per_block": [1, 2, 10], "use_linear_projection": True,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
# Same block structure at toy widths, for a CPU smoke run of this whole path (--tiny-shapes).
TINY_OVERRIDES = {
    "sd15": {"sample_size": 8, "block_out_channels": [32, 32, 64, 64], "cross_attention_dim": 32,
             "attention_head_dim": 8, "norm_num_groups": 16},
    "sdxl": {"sample_size": 8, "block_out_channels": [32, 64, 64], "cross_attention_dim": 64,
             "attention_head_dim": [2, 4, 4], "transformer_layers_per_block": [1, 1, 2], "norm_num_groups": 16,
             "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 32 + 6 * 8},
}
TEXT_TOKENS = 77
# Bench mode → LoraStep compile mode (every mode but eager runs bf16 frozen weights + fused AdamW).
COMPILE_BY_MODE = {"compiled": "full", "regional": "regional", "graphed": "graphed"}


def unet_config(model: str, tiny: bool) -> dict:
    config = dict(SD15_UNET if model == "sd15" else SDXL_UNET)
    return {**config, **TINY_OVERRIDES[model]} if tiny else config


def measure(model: str, mode: str, batch: int, steps: int, device: str, tiny: bool) -> dict:
    """One child's work: build the UNet, add the LoRA, time `steps` LoraSteps after warm-up."""
    import torch

    from services.trainer.lora import trainable_parameters
    from services.trainer.step import LoraStep, freeze_in_bf16

    config = unet_config(model, tiny)
    unet, parts = _unet_with_lora(model, config, device)
    optimized = mode != "eager"
    if optimized:
        freeze_in_bf16(unet)
    bf16 = device == "cuda" or optimized
    latents, conditioning = unet_inputs(config, batch, device, model)
    flops = _step_flops(unet, parts, bf16, latents, conditioning)  # before any compile touches the UNet
    trained = trainable_parameters(parts, False)
    step = LoraStep(unet, parts.noise_scheduler, trained.values(), 1e-4,
                    device=torch.device(device), bf16=bf16,
                    compile_mode=COMPILE_BY_MODE.get(mode, "off"), fused_optimizer=optimized and device == "cuda")
    generator = torch.Generator(device=device).manual_seed(0)

    compile_started = time.perf_counter()
    for _ in range(3):  # warm-up (and compilation)
        step(latents, conditioning, generator)
    sync_device(device)
    warmup_s = time.perf_counter() - compile_started
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        loss = step(latents, conditioning, generator)
        sync_device(device)
        times.append(time.perf_counter() - started)
    step_s = statistics.median(times)
    return {
        "model": model, "mode": mode, "batch": batch, "step_ms": step_s * 1e3, "images_per_s": batch / step_s,
        "tflops": flops / step_s / 1e12, "gflop_per_step": flops / 1e9, "warmup_s": warmup_s,
        "loss": float(loss), "peak_gib": _peak_gib(device), "steps_timed": steps,
        "lora_update_norm": _update_norm(trained),
    }


def _update_norm(trained: dict) -> float:
    """Norm of the LoRA up-projections, which start at zero: how far training moved them. Two modes that run
    the same steps from the same seed must agree (a graph that did not train would show 0)."""
    import torch

    ups = [parameter.detach().float().norm() for name, parameter in trained.items() if "lora_B" in name]
    return float(torch.stack(ups).norm()) if ups else 0.0


def _unet_with_lora(model: str, config: dict, device: str):
    """A random-weight UNet of `config` with the trainer's LoRA on it, frozen base, in train mode."""
    import torch
    from diffusers import DDPMScheduler, UNet2DConditionModel

    from services.trainer.components import BaseModelParts
    from services.trainer.lora import add_lora

    with torch.device(device):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(**config)
    unet.requires_grad_(False)
    parts = BaseModelParts(model, [], [], None, unet, DDPMScheduler(beta_schedule="scaled_linear",
                                                                        beta_start=0.00085, beta_end=0.012))
    add_lora(parts, LORA_RANK, LORA_RANK, seed=0)
    unet.to(device).train()
    return unet, parts


def count_step_ops(model: str, batch: int = 2) -> dict:
    """The aten ops one bf16 LoRA step's forward and backward dispatch, on the CPU: the real block
    structure at toy widths (the count does not depend on widths or batch). On a GPU nearly every op
    that is not a view is a kernel launch, each costing the CPU several microseconds in eager mode."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from services.trainer.lora import trainable_parameters
    from services.trainer.step import LoraStep, freeze_in_bf16

    class Counter(TorchDispatchMode):
        ops = launches = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops += 1
            self.launches += not (func.is_view or func.overloadpacket is torch.ops.aten._unsafe_view)
            return func(*args, **(kwargs or {}))

    config = {**unet_config(model, True), "transformer_layers_per_block": unet_config(model, False).get(
        "transformer_layers_per_block", 1)}
    unet, parts = _unet_with_lora(model, config, "cpu")
    freeze_in_bf16(unet)
    latents, conditioning = unet_inputs(config, batch, "cpu", model)
    step = LoraStep(unet, parts.noise_scheduler, trainable_parameters(parts, False).values(), 1e-4,
                    device=torch.device("cpu"), bf16=True)
    generator = torch.Generator().manual_seed(0)
    step.loss(latents, conditioning, generator).backward()  # first call: lazy initialisation
    counter = Counter()
    with counter:
        step.loss(latents, conditioning, generator).backward()
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        step.loss(latents, conditioning, generator).backward()
        timings.append(time.perf_counter() - started)
    return {"model": model, "ops": counter.ops, "non_view_ops": counter.launches,
            "lora_layers": sum(1 for name, _ in unet.named_modules() if name.endswith(".lora_A")),
            "cpu_step_s_at_toy_widths": min(timings)}


def _step_flops(unet, parts, bf16: bool, latents, conditioning) -> int:
    """Forward + backward FLOPs of one uncompiled step (the compiled step does the same math)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from services.trainer.lora import trainable_parameters
    from services.trainer.step import LoraStep

    parameters = list(trainable_parameters(parts, False).values())
    counting = LoraStep(unet, parts.noise_scheduler, parameters, 0.0, device=latents.device, bf16=bf16)
    with FlopCounterMode(display=False) as counter:
        counting.loss(latents, conditioning, torch.Generator(device=latents.device).manual_seed(2)).backward()
    for parameter in parameters:
        parameter.grad = None
    return counter.get_total_flops()


def unet_inputs(config: dict, batch: int, device: str, model: str):
    """Random latents of `batch` images and one caption's conditioning (SDXL's added conditioning too)."""
    import torch

    from services.trainer.components import Conditioning

    size = config["sample_size"]
    generator = torch.Generator(device="cpu").manual_seed(1)
    latents = torch.randn(batch, 4, size, size, generator=generator).to(device)
    hidden = torch.randn(1, TEXT_TOKENS, config["cross_attention_dim"], generator=generator).to(device)
    added = {}
    if model == "sdxl":
        pooled_dim = config["projection_class_embeddings_input_dim"] - 6 * config["addition_time_embed_dim"]
        added = {"text_embeds": torch.randn(1, pooled_dim, generator=generator).to(device),
                 "time_ids": torch.tensor([[size * 8, size * 8, 0, 0, size * 8, size * 8]], dtype=torch.float32,
                                          device=device)}
    return latents, Conditioning(hidden, added)


def sync_device(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _peak_gib(device: str) -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0


def matmul_tflops() -> dict:
    """Measured bf16 dense ceiling: an 8192³ matrix product on random data."""
    import torch

    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    started, repeats = time.perf_counter(), 20
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return {"matmul_tflops": 2 * 8192**3 * repeats / (time.perf_counter() - started) / 1e12,
            "gpu": torch.cuda.get_device_name(0)}


def run_child(args: list[str], timeout_s: float, script: str = "train.py") -> dict:
    """Run `python bench/<script> --child ...` and return its last JSON line (or why it has none)."""
    command = [sys.executable, str(REPO_ROOT / "bench" / script), "--child", *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=max(timeout_s, 1), cwd=REPO_ROOT)
    except subprocess.TimeoutExpired as error:
        return {"error": timed_out(error, timeout_s)}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {done.returncode}: {' | '.join(tail)}"}
    return json.loads(lines[-1])


def log_progress() -> None:
    """A child's progress lines (our services' INFO logs, such as a cold compile's start and end) on stderr, where
    `timed_out` finds the last one."""
    from services.common.logs import services_log_to_stderr

    services_log_to_stderr(f"{PROGRESS_PREFIX}%(relativeCreated).0f ms: %(message)s")


def timed_out(error: subprocess.TimeoutExpired, timeout_s: float) -> str:
    """Why a child has no result: its time box, and the last progress line it logged (where a compile was)."""
    stderr = error.stderr.decode(errors="replace") if isinstance(error.stderr, bytes) else error.stderr or ""
    progress = [line.removeprefix(PROGRESS_PREFIX) for line in stderr.splitlines() if line.startswith(PROGRESS_PREFIX)]
    return f"time box of {timeout_s:.0f} s reached" + (f"; last at {progress[-1]}" if progress else "")


def peak_for(gpu: str) -> float | None:
    return next((peak for name, peak in BF16_DENSE_PEAK_TFLOPS.items() if name in gpu), None)
