"""FP8 (e4m3) matrix products for the UNet's transformer layers, for GPUs with FP8 tensor cores
(compute capability 8.9 and up: L4, L40S, H100, H200), where they run at twice bf16's peak.

Why: the transformer blocks' linear layers (attention projections and feed-forward) hold 61% of an
SDXL render's FLOPs (27% of SD1.5's), and in bf16 twice the eager images/s is out of reach by
arithmetic for SDXL (bench/render_results.md). Only those layers change; convolutions, norms and attention itself stay
in the pipeline's dtype.

Scales are per row: each output channel of the weight, quantized when the weight changes, and each
token of the input, quantized on every call (a row's absolute maximum maps to e4m3's 448); one scale
per tensor lost too much where a subject's LoRA adds large entries to some rows (the tiny model's
test LoRAs). The bf16 weight stays the master copy: FusedAdapter
(services/renderer/adapters.py) fuses a subject's LoRA into it and then calls `requantize`, which
writes the FP8 weight in place, so compiled graphs and CUDA graphs over it stay valid.
"""

from __future__ import annotations

import torch

E4M3 = torch.float8_e4m3fn
E4M3_MAX = float(torch.finfo(E4M3).max)  # 448
MIN_SCALE = 1e-12  # an all-zero tensor still gets a finite scale
MIN_CAPABILITY = (8, 9)
# Linear layers inside the transformer blocks, except the cross-attention keys and values: those read
# the 77 text tokens, a negligible product whose row count FP8 kernels need not accept.
_BLOCK_MARKER = ".transformer_blocks."
_TEXT_INPUTS = (".attn2.to_k", ".attn2.to_v")
_ALIGNMENT = 16  # FP8 GEMMs want both weight dimensions in multiples of 16


class Float8Linear(torch.nn.Linear):
    """A Linear whose product runs in FP8; `weight` (the pipeline's dtype) is the master copy."""

    weight_fp8: torch.Tensor
    weight_scale: torch.Tensor

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear) -> Float8Linear:
        layer = cls.__new__(cls)
        torch.nn.Module.__init__(layer)
        layer.in_features, layer.out_features = linear.in_features, linear.out_features
        layer.weight, layer.bias = linear.weight, linear.bias
        device = linear.weight.device
        layer.register_buffer("weight_fp8", torch.empty_like(linear.weight, dtype=E4M3))
        layer.register_buffer("weight_scale", torch.ones(1, linear.out_features, dtype=torch.float32, device=device))
        layer.requantize()
        return layer

    @torch.no_grad()
    def requantize(self) -> None:
        """Quantize the master weight again, in place (after an adapter was fused into it)."""
        scale = _row_scales(self.weight)  # [out, 1]
        self.weight_scale.copy_(scale.t())
        self.weight_fp8.copy_(_quantize(self.weight, scale))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        rows = inputs.reshape(-1, self.in_features)
        scale = _row_scales(rows)
        # Row-wise scaled FP8 GEMMs return bf16 (on a CPU, the pipeline's dtype); the bias is added after.
        product = torch._scaled_mm(_quantize(rows, scale), self.weight_fp8.t(), scale_a=scale,
                                   scale_b=self.weight_scale, out_dtype=inputs.dtype)
        if self.bias is not None:
            product = product + self.bias
        return product.reshape(*inputs.shape[:-1], self.out_features)


def _row_scales(matrix: torch.Tensor) -> torch.Tensor:
    return (matrix.abs().amax(dim=-1, keepdim=True).float() / E4M3_MAX).clamp(min=MIN_SCALE)


def _quantize(matrix: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    return (matrix.float() / scales).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)


def fp8_capable(device: torch.device) -> bool:
    """FP8 tensor cores on this CUDA device; a CPU runs the same products (slowly), for tests."""
    return device.type != "cuda" or torch.cuda.get_device_capability(device) >= MIN_CAPABILITY


def to_float8(unet: torch.nn.Module) -> list[str]:
    """Replace the transformer blocks' linear layers with Float8Linear, in place; their paths."""
    if not fp8_capable(unet.device):
        raise ValueError(f"FP8 products need compute capability {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} or newer "
                         f"(L4, L40S, H100, H200); {torch.cuda.get_device_name(unet.device)} has not")
    if unet.device.type == "cuda" and unet.dtype != torch.bfloat16:
        raise ValueError(f"row-scaled FP8 products return bf16; this UNet runs in {unet.dtype} "
                         "(set STUDIO_RENDER_DTYPE=bf16)")
    converted = []
    for path, module in list(unet.named_modules()):
        if _converts(path, module):
            parent_path, _, name = path.rpartition(".")
            setattr(unet.get_submodule(parent_path), name, Float8Linear.from_linear(module))
            converted.append(path)
    return converted


def _converts(path: str, module: torch.nn.Module) -> bool:
    dotted = f".{path}"
    return (type(module) is torch.nn.Linear and _BLOCK_MARKER in dotted and not dotted.endswith(_TEXT_INPUTS)
            and module.in_features % _ALIGNMENT == 0 and module.out_features % _ALIGNMENT == 0)
