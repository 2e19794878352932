"""The style catalogue (a data file): one preset per look, shared by ingest (validation) and the
renderer (prompts)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

CATALOGUE_FILE = Path(__file__).with_name("styles.json")
SUBJECT_TOKEN = "sks person"


@dataclass(frozen=True)
class StylePreset:
    name: str
    title: str
    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance: float

    def prompt_for(self, subject_token: str = SUBJECT_TOKEN) -> str:
        return self.prompt.format(subject=subject_token)

    def size_for(self, base_resolution: int) -> tuple[int, int]:
        """Keep the preset's portrait aspect at the base model's scale, in multiples of 8."""
        scale = base_resolution / min(self.width, self.height)
        return _multiple_of_8(self.width * scale), _multiple_of_8(self.height * scale)


def _multiple_of_8(value: float) -> int:
    return max(8, int(round(value / 8)) * 8)


@cache
def catalogue() -> dict[str, StylePreset]:
    raw = json.loads(CATALOGUE_FILE.read_text())
    return {name: StylePreset(name=name, **fields) for name, fields in raw.items()}


def unknown_styles(names: list[str]) -> list[str]:
    known = catalogue()
    return [name for name in names if name not in known]
