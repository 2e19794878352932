"""`studio train` as an operator runs it: photos checked, a LoRA trained in-process on the tiny
model with validation, and written with a report; bad input answered with a clear message."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch

from services.common.basemodel import base_model_id
from services.common.lora_file import BASE_MODEL_METADATA_KEY, lora_metadata
from services.common.tinymodel import write_tiny_model
from tests.fixtures_stack import FACES_DIR, faces

STUDIO = [sys.executable, "-m", "services.cli.main"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def test_train_writes_the_best_lora_and_a_report(tiny_model: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for photo in faces("lisa")[:3]:
        (photos / photo.name).symlink_to(photo)
    (photos / "notes.txt").write_text("not a photo")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 64)
    out = tmp_path / "out"
    run = subprocess.run([*STUDIO, "train", "--photos", str(photos), "--base-model", str(tiny_model),
                          "--out", str(out), "--steps", "4", "--validate-every", "2", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report == json.loads((out / "report.json").read_text())
    assert [(p["file"], p["accepted"]) for p in report["photos"]] == [
        ("broken.jpg", False), *[(p.name, True) for p in faces("lisa")[:3]]]
    assert report["steps"] == 4 and report["best_step"] in (2, 4)
    assert [point["step"] for point in report["validation"]] == [2, 4]
    lora = (out / "pytorch_lora_weights.safetensors").read_bytes()
    assert lora_metadata(lora)[BASE_MODEL_METADATA_KEY] == base_model_id(tiny_model) == report["base_model_id"]
    assert all(key.startswith("unet.") for key in safetensors.torch.load(lora))


@pytest.mark.parametrize(("flags", "message"), [
    pytest.param(["--compile", "graphed"], "replays CUDA graphs: this machine has no CUDA GPU",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine can replay CUDA graphs")),
    (["--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
    (["--steps", "-3"], "--steps: must be at least 1, got -3"),
    (["--compile", "fast"], "invalid choice: 'fast'"),
])
def test_train_refuses_settings_it_cannot_run_before_touching_photos(
    tiny_model: Path, tmp_path: Path, flags: list[str], message: str
) -> None:
    run = subprocess.run([*STUDIO, "train", "--photos", str(FACES_DIR / "lisa"), "--base-model", str(tiny_model),
                          "--out", str(tmp_path / "out"), *flags], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and message in run.stderr, run.stderr[-500:]
    assert not (tmp_path / "out").exists()


def test_train_refuses_a_folder_without_usable_photos(tiny_model: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    run = subprocess.run([*STUDIO, "train", "--photos", str(empty), "--base-model", str(tiny_model),
                          "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "no photos" in run.stderr
    assert not (tmp_path / "out").exists()


def test_train_refuses_a_folder_that_is_not_a_model(tmp_path: Path) -> None:
    run = subprocess.run([*STUDIO, "train", "--photos", str(FACES_DIR / "lisa"), "--base-model", str(tmp_path),
                          "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "not a diffusers model folder" in run.stderr
