"""Batched adapters (services/renderer/batched_adapters.py) on the tiny model: one UNet call renders several
subjects, each image with its own subject's LoRA, as PEFT renders it alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.renderer.batched_adapters import MAX_IMAGES_PER_CALL, BatchedAdapters, BatchedLoraLinear, subject_mixes
from services.renderer.conftest import PARAMS, differs
from services.renderer.pipeline import BatchItem, PortraitRenderer, RenderInputError, load_pipeline
from services.renderer.random_lora import make_lora

TOLERANCE = 1  # levels of 255: the same products summed in another order


def _counting_unet_calls(renderer: PortraitRenderer) -> list[int]:
    """Records the batch size of every UNet call the renderer makes from now on."""
    calls: list[int] = []
    forward = renderer.pipe.unet.forward

    def counted(sample, *args, **kwargs):
        calls.append(sample.shape[0])
        return forward(sample, *args, **kwargs)

    renderer.pipe.unet.forward = counted
    return calls


def _item(loras: dict[str, bytes], subject: str) -> BatchItem:
    return BatchItem(PARAMS, subject, loras[subject]) if subject != "base" else BatchItem(PARAMS)


def test_one_unet_call_renders_every_subject_with_its_own_adapter(
    base_model: Path, loras: dict[str, bytes], eager_images: dict[str, np.ndarray]
) -> None:
    renderer = PortraitRenderer(load_pipeline(base_model), adapter_cache_size=4, compile_mode="batched")
    assert isinstance(renderer.adapters, BatchedAdapters)
    calls = _counting_unet_calls(renderer)
    subjects = ["subject-a", "subject-b", "base", "subject-c", "subject-a"]
    images = renderer.render_batch([_item(loras, subject) for subject in subjects])
    assert calls == [2 * len(subjects)] * PARAMS.steps  # one call per step, guidance doubling the rows
    for subject, image in zip(subjects, images, strict=True):
        assert differs(image, eager_images[subject]) <= TOLERANCE, subject
    # The subjects really differ from each other, so a mixed-up slot would show.
    assert differs(eager_images["subject-a"], eager_images["subject-b"]) > 3 * TOLERANCE


def test_more_subjects_than_slots_take_more_calls_and_still_each_their_own(
    base_model: Path, loras: dict[str, bytes], eager_images: dict[str, np.ndarray]
) -> None:
    renderer = PortraitRenderer(load_pipeline(base_model), adapter_cache_size=2, compile_mode="batched")
    calls = _counting_unet_calls(renderer)
    subjects = ["subject-a", "subject-b", "subject-c", "base", "subject-a"]
    images = renderer.render_batch([_item(loras, subject) for subject in subjects])
    assert calls == [2 * 2] * PARAMS.steps + [2 * 3] * PARAMS.steps  # [a, b], then [c, base, a]
    for subject, image in zip(subjects, images, strict=True):
        assert differs(image, eager_images[subject]) <= TOLERANCE, subject
    assert len(renderer.loaded_adapter_ids) <= 2


def test_a_deleted_subject_leaves_no_weights_in_its_slot(
    base_model: Path, loras: dict[str, bytes], eager_images: dict[str, np.ndarray]
) -> None:
    renderer = PortraitRenderer(load_pipeline(base_model), adapter_cache_size=2, compile_mode="batched")
    renderer.render_batch([_item(loras, "subject-a"), _item(loras, "subject-b")])
    layers = [module for module in renderer.pipe.unet.modules() if isinstance(module, BatchedLoraLinear)]
    slot_of_a = renderer.adapters._slots["subject-a"]
    assert any(layer.down[slot_of_a].abs().sum() > 0 for layer in layers)
    assert renderer.evict_prefix("subject-a") == 1
    assert all(layer.down[slot_of_a].abs().sum() == 0 and layer.up[slot_of_a].abs().sum() == 0 for layer in layers)
    assert renderer.loaded_adapter_ids == ["subject-b"]
    assert differs(renderer.render(PARAMS, "subject-b", loras["subject-b"]), eager_images["subject-b"]) <= TOLERANCE
    assert differs(renderer.render(PARAMS), eager_images["base"]) <= TOLERANCE


def test_a_refused_adapter_fails_its_own_images_only(
    base_model: Path, loras: dict[str, bytes], eager_images: dict[str, np.ndarray]
) -> None:
    # Slots of rank 4: subject-c (rank 8) does not fit, and the bytes of "broken" are no LoRA.
    renderer = PortraitRenderer(load_pipeline(base_model), adapter_cache_size=4, compile_mode="batched", max_rank=4)
    items = [_item(loras, "subject-c"), _item(loras, "subject-a"), BatchItem(PARAMS, "broken", b"not a lora"),
             _item(loras, "base")]
    rank_error, image_a, broken_error, image_base = renderer.render_batch(items)
    assert isinstance(rank_error, RenderInputError) and "rank 8 is above" in str(rank_error)
    assert isinstance(broken_error, RenderInputError) and "safetensors" in str(broken_error)
    assert differs(image_a, eager_images["subject-a"]) <= TOLERANCE
    assert differs(image_base, eager_images["base"]) <= TOLERANCE
    assert renderer.loaded_adapter_ids == ["subject-a"]


def test_new_bytes_under_a_known_id_render_after_the_old_ones(
    base_model: Path, loras: dict[str, bytes], eager_images: dict[str, np.ndarray]
) -> None:
    renderer = PortraitRenderer(load_pipeline(base_model), adapter_cache_size=4, compile_mode="batched")
    old, new = BatchItem(PARAMS, "subject", loras["subject-a"]), BatchItem(PARAMS, "subject", loras["subject-b"])
    first, second, third = renderer.render_batch([old, new, old])
    assert differs(first, eager_images["subject-a"]) <= TOLERANCE
    assert differs(second, eager_images["subject-b"]) <= TOLERANCE
    assert differs(third, eager_images["subject-a"]) <= TOLERANCE


def test_calls_hold_at_most_the_cache_and_one_version_of_each_adapter() -> None:
    a, b, c = ("a", "1"), ("b", "2"), ("c", "3")
    base, a_again = ("", ""), ("a", "9")
    assert subject_mixes([a, b, base, a, c], size=3) == [[0, 1, 2, 3, 4]]
    assert subject_mixes([a, b, base, c], size=2) == [[0, 1, 2], [3]]
    assert subject_mixes([a, a_again, a], size=4) == [[0], [1], [2]]
    assert subject_mixes([base] * (MAX_IMAGES_PER_CALL + 1), size=1) == [list(range(MAX_IMAGES_PER_CALL)),
                                                                         [MAX_IMAGES_PER_CALL]]


# The slot table is read live by compiled code too: the regional blocks and the whole UNet (the GPU's
# cuda-graphs-batched compiles it this way, and replays what it compiled). The whole UNet's static compile pads these
# batches of 3 to 4 images: the padding's rows must not shift any image's slot.
@pytest.mark.parametrize("mode", ["regional-batched", "compile-batched-cl"])
def test_a_compiled_unet_serves_mixed_batches_from_one_graph(
    mode: str, base_model: Path, loras: dict[str, bytes], eager_images: dict[str, np.ndarray]
) -> None:
    from torch._dynamo.utils import counters

    renderer = PortraitRenderer(load_pipeline(base_model), adapter_cache_size=4, compile_mode=mode, batch_buckets=[4])
    subjects = ["subject-a", "base", "subject-b"]
    renderer.render_batch([_item(loras, subject) for subject in subjects])
    graphs = counters["stats"]["unique_graphs"]
    for order in (["subject-c", "subject-a", "subject-b"], ["base", "subject-c", "subject-a"]):
        images = renderer.render_batch([_item(loras, subject) for subject in order])
        for subject, image in zip(order, images, strict=True):
            assert differs(image, eager_images[subject]) <= 3, subject  # inductor rounds differently
    assert counters["stats"]["unique_graphs"] == graphs  # new subjects and mixes: no new graph
    assert renderer.static is None or renderer.static.eager_calls == 0


def test_a_deleted_subject_leaves_an_unused_slot_for_the_next(base_model: Path) -> None:
    renderer = PortraitRenderer(load_pipeline(base_model), adapter_cache_size=2, compile_mode="batched")
    first, second, third = (make_lora(base_model, seed=seed) for seed in (11, 12, 13))
    renderer.render_batch([BatchItem(PARAMS, "x", first), BatchItem(PARAMS, "y", second)])
    renderer.evict_prefix("x")
    renderer.render_batch([BatchItem(PARAMS, "z", third)])
    assert sorted(renderer.adapters._slots.values()) == [1, 2] and set(renderer.loaded_adapter_ids) == {"y", "z"}
