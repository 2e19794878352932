"""What a benchmark ran on, printed next to its figures (timings mean nothing without it)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def cpu_model() -> str:
    if CPUINFO.exists():
        for line in CPUINFO.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def describe_machine(*, with_torch: bool = False) -> str:
    """Host, CPU model and cores, the load when the run started; with_torch adds torch and its GPU."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = f"{platform.node()}: {cpu_model()}, {os.cpu_count()} cores, load average {load:.1f} at start"
    if with_torch:
        import torch

        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
        text += f", torch {torch.__version__}, {device}"
    return text
