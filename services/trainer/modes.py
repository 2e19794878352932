"""The trainer's compile modes (services/trainer/step.py runs them), kept free of torch at import so
the CLI can offer them as choices without loading torch for every command."""

from __future__ import annotations

COMPILE_MODES = ("off", "full", "regional", "graphed")


def has_cuda(device: str | None) -> bool:
    """Whether training runs on a CUDA device: the one named, else the one TrainingRun would pick."""
    import torch

    return device.startswith("cuda") if device else torch.cuda.is_available()
