"""Base-model families the trainer knows, and the training defaults for each.

Defaults (overridable per job or on the command line):

| family | resolution | rank | alpha | steps | learning rate | batch |
|--------|-----------:|-----:|------:|------:|--------------:|------:|
| tiny   |         64 |    4 |     4 |     8 |          1e-3 |     2 |
| sd15   |        512 |   16 |    16 |   800 |          1e-4 |     4 |
| sdxl   |       1024 |   32 |    32 |  1000 |          1e-4 |     2 |

SD1.5 at rank 16 and SDXL at rank 32 are the usual sweet spots for one person's likeness from ~20
photos: enough capacity for a face, small enough (tens of MB) to load per request in the renderer.
alpha == rank keeps the LoRA's scale at 1, which is what diffusers-format loaders assume.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from services.common.basemodel import read_resolution

TINY_CROSS_ATTENTION_DIM_MAX = 64


@dataclass(frozen=True)
class FamilyDefaults:
    family: str
    resolution: int
    rank: int
    alpha: int
    steps: int
    learning_rate: float
    batch_size: int


DEFAULTS = {
    "tiny": FamilyDefaults("tiny", 64, rank=4, alpha=4, steps=8, learning_rate=1e-3, batch_size=2),
    "sd15": FamilyDefaults("sd15", 512, rank=16, alpha=16, steps=800, learning_rate=1e-4, batch_size=4),
    "sdxl": FamilyDefaults("sdxl", 1024, rank=32, alpha=32, steps=1000, learning_rate=1e-4, batch_size=2),
}


def detect_family(path: Path) -> str:
    """'sdxl' for StableDiffusionXL folders, 'tiny' for test-sized UNets, else 'sd15'."""
    path = Path(path)
    index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    if "XL" in str(index.get("_class_name", "")) or "text_encoder_2" in index:
        return "sdxl"
    unet = json.loads((path / "unet" / "config.json").read_text(encoding="utf-8"))
    if int(unet.get("cross_attention_dim", 768)) <= TINY_CROSS_ATTENTION_DIM_MAX:
        return "tiny"
    return "sd15"


def defaults_for(path: Path) -> FamilyDefaults:
    """The family's defaults, at the resolution the folder itself declares."""
    base = DEFAULTS[detect_family(path)]
    return FamilyDefaults(
        base.family, read_resolution(path), base.rank, base.alpha, base.steps, base.learning_rate, base.batch_size
    )
