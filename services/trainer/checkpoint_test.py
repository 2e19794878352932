from __future__ import annotations

from pathlib import Path

import pytest

from services.common.basemodel import base_model_id
from services.common.lora_file import BASE_MODEL_METADATA_KEY, WrongBaseModel, lora_metadata, require_base_model
from services.common.tinymodel import write_tiny_model
from services.trainer.checkpoint import CheckpointUnreadable, checkpoint_bytes, read_checkpoint
from services.trainer.families import DEFAULTS, detect_family
from services.trainer.training import RunState, TrainingConfig, TrainingRun
from services.trainer.training_test import gradient_image

CONFIG = TrainingConfig(steps=6, checkpoint_every=3, validate_every=2, seed=5)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def images() -> list:
    return [gradient_image(200, 90, 10), gradient_image(10, 90, 200)]


def fake_validator(parts, step: int) -> float:
    return {2: 0.3, 4: 0.7, 6: 0.5}[step]  # step 4 is the best LoRA


@pytest.fixture(scope="module")
def uninterrupted(tiny_model: Path, images: list) -> tuple:
    snapshots: list[RunState] = []
    result = TrainingRun(tiny_model, images, CONFIG).run(on_checkpoint=snapshots.append, validator=fake_validator)
    return result, snapshots


def test_a_resumed_run_gives_the_same_lora_as_an_uninterrupted_one(tiny_model: Path, images: list,
                                                                     uninterrupted: tuple) -> None:
    result, snapshots = uninterrupted
    assert [state.step for state in snapshots] == [3]  # every 3 steps, not after the last
    stored = checkpoint_bytes(snapshots[0], "job-1", base_model_id(tiny_model))
    resumed_state = read_checkpoint(stored, "job-1", base_model_id(tiny_model))
    steps_seen: list[int] = []
    resumed = TrainingRun(tiny_model, images, CONFIG, resume=resumed_state).run(
        progress=lambda p: steps_seen.append(p.step), validator=fake_validator)
    assert steps_seen == [4, 5, 6]
    assert resumed.losses == result.losses
    assert resumed.safetensors_bytes == result.safetensors_bytes


def test_the_best_validated_lora_is_delivered(tiny_model: Path, images: list, uninterrupted: tuple) -> None:
    result, _ = uninterrupted
    assert [(p.step, p.identity_score) for p in result.validation] == [(2, 0.3), (4, 0.7), (6, 0.5)]
    assert result.best_step == 4 and result.best_identity_score == pytest.approx(0.7)
    last = TrainingRun(tiny_model, images, CONFIG).run()  # no validator: the last step's LoRA
    assert last.safetensors_bytes != result.safetensors_bytes
    assert last.losses == result.losses


def test_the_lora_records_its_base_model_and_is_refused_on_another(tiny_model: Path, uninterrupted: tuple) -> None:
    lora = uninterrupted[0].safetensors_bytes
    assert lora_metadata(lora)[BASE_MODEL_METADATA_KEY] == base_model_id(tiny_model)
    require_base_model(lora, base_model_id(tiny_model))
    with pytest.raises(WrongBaseModel, match="trained on base model bm-"):
        require_base_model(lora, "bm-0000000000000000")


@pytest.mark.parametrize("damage", [
    lambda data: data[: len(data) // 2],
    lambda data: b"\x00" * len(data),
    lambda data: b"",
])
def test_a_damaged_checkpoint_is_refused(tiny_model: Path, uninterrupted: tuple, damage) -> None:
    stored = checkpoint_bytes(uninterrupted[1][0], "job-1", base_model_id(tiny_model))
    with pytest.raises(CheckpointUnreadable):
        read_checkpoint(damage(stored), "job-1", base_model_id(tiny_model))


def test_a_checkpoint_of_another_job_is_refused(tiny_model: Path, uninterrupted: tuple) -> None:
    stored = checkpoint_bytes(uninterrupted[1][0], "job-1", base_model_id(tiny_model))
    with pytest.raises(CheckpointUnreadable, match="another job"):
        read_checkpoint(stored, "job-2", base_model_id(tiny_model))


def test_family_defaults(tiny_model: Path) -> None:
    assert detect_family(tiny_model) == "tiny"
    config = TrainingConfig.for_base_model(tiny_model, steps=3)
    assert (config.steps, config.rank, config.resolution) == (3, DEFAULTS["tiny"].rank, 64)
    assert DEFAULTS["sdxl"].resolution == 1024 and DEFAULTS["sd15"].resolution == 512
