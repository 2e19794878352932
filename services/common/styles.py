"""The style catalogue (a data file): one preset per look, shared by ingest (validation, ListStyles)
and the renderer (prompts, sizes, schedulers).

The file (services/common/styles.json, or the one STUDIO_STYLE_CATALOGUE names) declares the axes a
preset is described by (angle, lighting, expression, outfit), the schedulers the renderer knows and
the presets. It is validated when loaded: a bad catalogue is refused with every problem named.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

CATALOGUE_FILE = Path(__file__).with_name("styles.json")
CATALOGUE_ENV = "STUDIO_STYLE_CATALOGUE"
SUBJECT_TOKEN = "sks person"
AXES = ("angle", "lighting", "expression", "outfit")
# The schedulers services/renderer/pipeline.py can build; a catalogue may name only these.
SCHEDULERS = ("ddim", "dpmpp-2m", "euler", "euler-a", "unipc")
MAX_STEPS = 100
MAX_GUIDANCE = 50.0
MAX_SIDE = 2048
_TEXT_FIELDS = ("title", "prompt", "negative_prompt", "scheduler", *AXES)
_FIELDS = {*_TEXT_FIELDS, "width", "height", "steps", "guidance"}


class CatalogueError(ValueError):
    """The catalogue file is not a valid catalogue; the message lists every problem found."""


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
    scheduler: str
    angle: str
    lighting: str
    expression: str
    outfit: str

    def prompt_for(self, subject_token: str = SUBJECT_TOKEN) -> str:
        return self.prompt.format(subject=subject_token)

    def as_message(self):
        """The preset as the public API's studio.v1.StylePreset."""
        from studio.v1 import studio_pb2

        return studio_pb2.StylePreset(
            name=self.name, title=self.title, prompt=self.prompt, negative_prompt=self.negative_prompt,
            width=self.width, height=self.height, steps=self.steps, guidance=self.guidance,
            scheduler=self.scheduler, angle=self.angle, lighting=self.lighting, expression=self.expression,
            outfit=self.outfit,
        )

    def size_for(self, base_resolution: int) -> tuple[int, int]:
        """Keep the preset's portrait aspect at the base model's scale, in multiples of 8."""
        scale = base_resolution / min(self.width, self.height)
        return _multiple_of_8(self.width * scale), _multiple_of_8(self.height * scale)


def _multiple_of_8(value: float) -> int:
    return max(8, int(round(value / 8)) * 8)


def _preset_problems(name: str, fields: object, axes: dict[str, list[str]]) -> list[str]:
    if not isinstance(fields, dict):
        return [f"preset '{name}' must be an object"]
    problems = [f"preset '{name}': missing '{key}'" for key in sorted(_FIELDS - fields.keys())]
    problems += [f"preset '{name}': unknown field '{key}'" for key in sorted(fields.keys() - _FIELDS)]
    if problems:
        return problems
    problems += [f"preset '{name}': '{key}' must be non-empty text" for key in _TEXT_FIELDS
                 if not isinstance(fields[key], str) or not fields[key].strip()]
    for side in ("width", "height"):
        value = fields[side]
        if not isinstance(value, int) or not 8 <= value <= MAX_SIDE or value % 8:
            problems.append(f"preset '{name}': {side} must be a multiple of 8 in 8..{MAX_SIDE}, got {value!r}")
    if not problems and fields["height"] <= fields["width"]:
        problems.append(f"preset '{name}': a half-body portrait is taller than wide, got "
                        f"{fields['width']}x{fields['height']}")
    if not isinstance(fields["steps"], int) or not 1 <= fields["steps"] <= MAX_STEPS:
        problems.append(f"preset '{name}': steps must be 1..{MAX_STEPS}, got {fields['steps']!r}")
    guidance = fields["guidance"]
    if not isinstance(guidance, int | float) or not math.isfinite(guidance) or not 0 <= guidance <= MAX_GUIDANCE:
        problems.append(f"preset '{name}': guidance must be 0..{MAX_GUIDANCE}, got {guidance!r}")
    if fields["scheduler"] not in SCHEDULERS:
        problems.append(f"preset '{name}': unknown scheduler '{fields['scheduler']}' (known: {', '.join(SCHEDULERS)})")
    if isinstance(fields["prompt"], str) and "{subject}" not in fields["prompt"]:
        problems.append(f"preset '{name}': prompt must contain {{subject}}")
    for axis in AXES:
        if fields[axis] not in axes.get(axis, []):
            problems.append(f"preset '{name}': {axis} '{fields[axis]}' is not one of {axes.get(axis, [])}")
    return problems


def _axes_problems(axes: object) -> list[str]:
    if not isinstance(axes, dict):
        return ["'axes' must map each of angle, lighting, expression, outfit to its values"]
    return [f"axis '{axis}' must list its values" for axis in AXES
            if not isinstance(axes.get(axis), list) or not axes[axis]]


def parse_catalogue(raw: object, source: str = "catalogue") -> dict[str, StylePreset]:
    """The presets of a decoded catalogue; CatalogueError naming every problem when it is invalid."""
    if not isinstance(raw, dict) or not isinstance(raw.get("presets"), dict):
        raise CatalogueError(f"{source}: expected an object with 'axes' and 'presets'")
    problems = _axes_problems(raw.get("axes"))
    if not raw["presets"]:
        problems.append("no presets")
    if not problems:
        for name, fields in raw["presets"].items():
            problems += _preset_problems(name, fields, raw["axes"])
    if problems:
        raise CatalogueError(f"{source} is invalid: " + "; ".join(problems))
    return {name: StylePreset(name=name, **fields) for name, fields in raw["presets"].items()}


def load_catalogue(path: Path) -> dict[str, StylePreset]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CatalogueError(f"style catalogue {path} cannot be read: {error}") from error
    return parse_catalogue(raw, f"style catalogue {path}")


def catalogue_path() -> Path:
    return Path(os.environ.get(CATALOGUE_ENV) or CATALOGUE_FILE)


@cache
def catalogue() -> dict[str, StylePreset]:
    return load_catalogue(catalogue_path())


def unknown_styles(names: list[str]) -> list[str]:
    known = catalogue()
    return [name for name in names if name not in known]
