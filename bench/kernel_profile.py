"""Where one render's device time goes (bench/render.py --real-size --profile): the kernels torch.profiler
saw, summed by kind (matrix products, convolutions, attention, normalisation, FP8 scaling, layout copies,
inductor's fused kernels, other element-wise work), and how busy the device was over the render's wall
time. A device busy well under 100% waits on the CPU's launches; a large "layout" share is transposes
that a channels-last UNet would not need; a large "elementwise" share is work a compile would fuse.

On a GPU it reads the CUDA kernels' own times; on a CPU (toy widths, to try the path) the aten ops' self
times, whose names the same patterns sort.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

# First match wins. cuDNN's own layout transposes before its convolutions; convolutions (implicit GEMMs)
# before matrix products; FP8 scaling (an inductor kernel with an amax in it too) before inductor's kernels.
KINDS = (
    ("layout", r"nchwToNhwc|nhwcToNchw|transpose|permute|copy|contiguous|CatArray|\bcat\b|clone"),
    ("conv", r"conv|fprop|dgrad|wgrad|cudnn|implicit_gemm|winograd"),
    ("attention", r"flash|fmha|attention|sdpa|softmax"),
    ("fp8", r"scaled_mm|float8|fp8|e4m3|amax"),
    ("gemm", r"gemm|nvjet|cublas|cutlass|xmma|matmul|\bmm\b|addmm|bmm|linear"),
    ("fused", r"^triton_|triton|cpp_fused"),
    ("norm", r"norm|RowwiseMoments|ComputeFusedParams|welford"),
    ("elementwise", r"elementwise|vectorized|reduce|add|mul|silu|gelu|sigmoid|div|sub|exp|fill|where"),
)
_PATTERNS = [(kind, re.compile(pattern, re.IGNORECASE)) for kind, pattern in KINDS]


def kind_of(name: str) -> str:
    """The kind of a kernel or aten op, by its name; "other" when no pattern knows it."""
    return next((kind for kind, pattern in _PATTERNS if pattern.search(name)), "other")


def profile_render(render: Callable[[], object], device: str) -> dict:
    """Run `render` once under torch.profiler: {"wall_ms", "device_ms", "busy", "shares": {kind: share}},
    shares of the summed kernel (CPU: op) time, largest first."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = device == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as profiler:
        started = time.perf_counter()
        render()
        if cuda:
            torch.cuda.synchronize()
        wall_s = time.perf_counter() - started
    totals: dict[str, float] = {}
    for event in profiler.key_averages():
        # Kernels carry their own device time; the aten ops that launched them carry none of their own.
        microseconds = event.self_device_time_total if cuda else event.self_cpu_time_total
        if microseconds > 0:
            kind = kind_of(event.key)
            totals[kind] = totals.get(kind, 0.0) + microseconds
    device_s = sum(totals.values()) / 1e6
    shares = {kind: total / 1e6 / device_s for kind, total in sorted(totals.items(), key=lambda item: -item[1])}
    return {"wall_ms": wall_s * 1e3, "device_ms": device_s * 1e3, "busy": device_s / wall_s if wall_s else 0.0,
            "shares": shares}


def format_profile(profile: dict) -> str:
    shares = ", ".join(f"{kind} {share:.0%}" for kind, share in profile["shares"].items() if share >= 0.01)
    return f"device busy {profile['busy']:.0%} of {profile['wall_ms']:.0f} ms: {shares}"
