"""The style catalogue: the shipped file covers every axis value, a bad file is refused by name."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from services.common.styles import AXES, CATALOGUE_FILE, CatalogueError, load_catalogue, parse_catalogue

REQUIRED_AXIS_VALUES = {
    "angle": {"frontal", "three-quarter-left", "three-quarter-right", "slightly-high", "slightly-low"},
    "lighting": {"soft-studio", "rembrandt", "butterfly", "window-light", "golden-hour", "low-key"},
    "expression": {"neutral", "soft-smile", "laughing", "serious"},
    "outfit": {"business", "casual", "traditional", "outdoor"},
}


def shipped() -> dict:
    return json.loads(CATALOGUE_FILE.read_text())


def test_shipped_catalogue_covers_every_axis_value_in_portrait_aspect() -> None:
    presets = load_catalogue(CATALOGUE_FILE)
    for axis in AXES:
        assert {getattr(p, axis) for p in presets.values()} == REQUIRED_AXIS_VALUES[axis], axis
    assert all(p.height > p.width for p in presets.values())
    assert {"studio-frontal-soft", "three-quarter-rembrandt", "window-light-smile"} <= presets.keys()
    assert "sks person" in presets["studio-frontal-soft"].prompt_for()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda raw: raw["presets"]["studio-frontal-soft"].pop("scheduler"), "missing 'scheduler'"),
        (lambda raw: raw["presets"]["studio-frontal-soft"].update(scheduler="warp"), "unknown scheduler 'warp'"),
        (lambda raw: raw["presets"]["studio-frontal-soft"].update(width=640, height=512), "taller than wide"),
        (lambda raw: raw["presets"]["studio-frontal-soft"].update(width=500), "width must be a multiple of 8"),
        (lambda raw: raw["presets"]["studio-frontal-soft"].update(steps=0), "steps must be 1..100"),
        (lambda raw: raw["presets"]["studio-frontal-soft"].update(lighting="disco"), "lighting 'disco' is not one of"),
        (lambda raw: raw["presets"]["studio-frontal-soft"].update(prompt="a person"), "must contain {subject}"),
        (lambda raw: raw["presets"]["studio-frontal-soft"].update(colour="red"), "unknown field 'colour'"),
        (lambda raw: raw.pop("axes"), "'axes' must map"),
        (lambda raw: raw.update(presets={}), "no presets"),
    ],
)
def test_bad_catalogue_is_refused_naming_the_problem(change, message: str) -> None:
    raw = copy.deepcopy(shipped())
    change(raw)
    with pytest.raises(CatalogueError, match="is invalid") as refused:
        parse_catalogue(raw)
    assert message in str(refused.value)


def test_unreadable_catalogue_file_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "styles.json"
    broken.write_text('{"presets": ')
    with pytest.raises(CatalogueError, match="cannot be read"):
        load_catalogue(broken)
