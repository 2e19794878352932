from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from services.common.basemodel import base_model_id, read_resolution
from services.common.tinymodel import TINY_RESOLUTION, write_tiny_model


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture()
def model_copy(tiny_model: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model, tmp_path / "copy"))


def edit_json(file: Path, **changes: object) -> None:
    config = json.loads(file.read_text())
    config.update(changes)
    file.write_text(json.dumps(config, indent=2))


def test_id_is_short_and_stable(tiny_model: Path) -> None:
    identity = base_model_id(tiny_model)
    assert re.fullmatch(r"bm-[0-9a-f]{16}", identity)
    assert base_model_id(tiny_model) == identity


def test_id_depends_on_content_not_location(tiny_model: Path, model_copy: Path) -> None:
    assert base_model_id(model_copy) == base_model_id(tiny_model)


def test_id_changes_when_a_config_value_changes(tiny_model: Path, model_copy: Path) -> None:
    edit_json(model_copy / "scheduler" / "scheduler_config.json", beta_end=0.02)
    assert base_model_id(model_copy) != base_model_id(tiny_model)


def test_id_changes_when_a_weight_file_changes_size(tiny_model: Path, model_copy: Path) -> None:
    weights = next((model_copy / "unet").glob("*.safetensors"))
    with weights.open("ab") as file:
        file.write(b"\0")
    assert base_model_id(model_copy) != base_model_id(tiny_model)


def test_id_reads_weight_sizes_not_weight_bytes(tiny_model: Path, model_copy: Path) -> None:
    # Documented trade-off: multi-GB weights are identified by path and size only.
    weights = next((model_copy / "vae").glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert base_model_id(model_copy) == base_model_id(tiny_model)


def test_id_ignores_docs_and_hidden_caches(tiny_model: Path, model_copy: Path) -> None:
    (model_copy / "README.md").write_text("# my model\n")
    (model_copy / ".cache").mkdir()
    (model_copy / ".cache" / "download.json").write_text("{}")
    assert base_model_id(model_copy) == base_model_id(tiny_model)


def test_id_rejects_a_folder_that_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        base_model_id(tmp_path)


def test_resolution_of_the_tiny_model(tiny_model: Path) -> None:
    assert read_resolution(tiny_model) == TINY_RESOLUTION == 64


def test_resolution_of_an_sd15_shaped_config(model_copy: Path) -> None:
    edit_json(model_copy / "unet" / "config.json", sample_size=64)
    edit_json(model_copy / "vae" / "config.json", block_out_channels=[128, 256, 512, 512])
    assert read_resolution(model_copy) == 512
