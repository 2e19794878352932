"""EmbeddedStack before it starts anything: the base model a command line names (a str) is resolved where the
stack starts, and its repr keeps the blob store's credentials and extra environment out of logs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from services.cli.demo import embedded_stack
from services.cli.main import build_parser
from services.cli.stack import EmbeddedStack, store_budget
from services.common.tinymodel import write_tiny_model
from services.common.topology import DEFAULT_STORE_BYTES, MIN_STORE_BYTES


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def test_a_base_model_given_as_str_is_resolved_as_the_start_resolves_it(tiny_model: Path, tmp_path: Path) -> None:
    stack = EmbeddedStack(tmp_path / "data", base_model=str(tiny_model))
    base_model = stack._base_model(progress=lambda message: None)  # what start() calls: it crashed on a str
    assert base_model == tiny_model.resolve()
    assert stack._ranking_for("renderer", base_model) == {"STUDIO_RENDER_RANKING": "unscored"}


def test_the_demo_builds_its_embedded_stack_on_the_base_model_of_its_command_line(tiny_model: Path,
                                                                                    tmp_path: Path) -> None:
    args = build_parser().parse_args(["demo", "--photos", str(tmp_path), "--base-model", str(tiny_model),
                                      "--endpoint", "127.0.0.1:50777"])
    stack = embedded_stack(args, tmp_path / "data")
    assert stack._base_model(progress=lambda message: None) == tiny_model.resolve()
    assert stack.public_port == 50777


def test_the_repr_shows_no_blob_store_secret_nor_extra_environment(tmp_path: Path) -> None:
    stack = EmbeddedStack(tmp_path, blob_url="s3://AK:TOPSECRET@h:9000/b", extra_env={"STUDIO_X": "ALSOSECRET"})
    shown = repr(stack)
    assert "TOPSECRET" not in shown and "ALSOSECRET" not in shown
    assert str(tmp_path.resolve()) in shown  # the rest is still there to read


def test_the_embedded_store_budget_fits_the_disk(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    budget = store_budget(tmp_path / "not-yet")
    assert MIN_STORE_BYTES <= budget <= min(DEFAULT_STORE_BYTES, free * 0.75)
