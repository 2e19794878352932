"""Images with different schedulers in one pipeline call: one UNet call a step, each image as its own scheduler
alone would render it, the plain diffusers render unchanged, one CUDA-graph signature whatever the mix."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from services.common.tinymodel import write_tiny_sdxl_model
from services.renderer.conftest import PARAMS, differs
from services.renderer.graphs_test import _record_unet_calls
from services.renderer.pipeline import SCHEDULER_CLASSES, BatchItem, PortraitRenderer, build_scheduler, load_pipeline

CATALOGUE_SCHEDULERS = ["dpmpp-2m", "euler", "euler-a", "ddim", "unipc", ""]  # "": the base model's own


def mixed(schedulers: list[str]) -> list[BatchItem]:
    # Other seeds and guidances too: each image keeps its own noise, guidance and scheduler.
    return [BatchItem(dataclasses.replace(PARAMS, seed=index + 3, guidance=5.0 + index / 2, scheduler=name))
            for index, name in enumerate(schedulers)]


def unet_calls(renderer: PortraitRenderer) -> list[int]:
    calls = [0]
    renderer.pipe.unet.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.fixture(scope="module")
def sdxl_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_sdxl_model(tmp_path_factory.mktemp("tiny-sdxl"))


@pytest.mark.parametrize(("family", "mode"), [("sd15", ""), ("sd15", "batched"), ("sdxl", "")])
def test_every_scheduler_of_the_catalogue_in_one_call(
        base_model: Path, sdxl_model: Path, loras: dict[str, bytes], family: str, mode: str) -> None:
    renderer = PortraitRenderer(load_pipeline(base_model if family == "sd15" else sdxl_model), compile_mode=mode)
    items = mixed(CATALOGUE_SCHEDULERS)
    if family == "sd15":  # and two subjects among them where the mode batches subjects too
        items = [dataclasses.replace(item, adapter_id=subject, adapter=loras[subject])
                 for item, subject in zip(items, ["subject-a", "subject-b"] * 3, strict=True)]
    alone = [renderer.render_batch([item])[0] for item in items]
    calls = unet_calls(renderer)
    together = renderer.render_batch(items)
    expected_calls = PARAMS.steps * (1 if mode == "batched" or family == "sdxl" else 2)  # eager: one per subject
    assert calls[0] == expected_calls
    for item, single, shared in zip(items, alone, together, strict=True):
        assert differs(single, shared) <= 1, item.params.scheduler  # batch rounding, nothing more
    assert min(differs(alone[0], image) for image in alone[1:]) > 5  # the schedulers do differ


def test_one_scheduler_renders_what_the_plain_pipeline_renders(base_model: Path) -> None:
    """The stand-in scheduler changes nothing for a call of one scheduler: bit for bit the diffusers render."""
    renderer = PortraitRenderer(load_pipeline(base_model))
    plain = load_pipeline(base_model)
    for name in ("euler-a", "dpmpp-2m"):
        params = dataclasses.replace(PARAMS, scheduler=name, seed=11)
        plain.scheduler = build_scheduler(plain, name, plain.scheduler)
        expected = plain(prompt=[params.prompt], negative_prompt=[params.negative_prompt],
                         num_inference_steps=params.steps, guidance_scale=params.guidance, width=params.width,
                         height=params.height, generator=[torch.Generator("cpu").manual_seed(params.seed)],
                         output_type="np").images[0]
        expected = (np.clip(expected, 0.0, 1.0) * 255.0).round().astype(np.uint8)
        assert np.array_equal(renderer.render(params), expected), name


def test_a_mix_of_schedulers_keeps_the_unets_input_signature(base_model: Path) -> None:
    """CUDA graphs are captured per input signature: a mixed call must not need graphs of its own."""
    renderer = PortraitRenderer(load_pipeline(base_model))
    seen = _record_unet_calls(renderer.pipe)
    renderer._run_pipeline([item.params for item in mixed(["ddim", "ddim"])])
    renderer._run_pipeline([item.params for item in mixed(["euler", "dpmpp-2m"])])
    assert len(set(seen)) == 1


def test_schedulers_that_disagree_on_timesteps_render_in_calls_of_their_own(
        base_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SCHEDULER_CLASSES, "heun", ("HeunDiscreteScheduler", {}))  # 2 × steps − 1 timesteps
    renderer = PortraitRenderer(load_pipeline(base_model))
    items = mixed(["heun", "euler", "heun"])
    assert renderer.schedulers.timestep_count("heun", PARAMS.steps) != PARAMS.steps
    alone = [renderer.render_batch([item])[0] for item in items]
    together = renderer.render_batch(items)
    assert all(differs(single, shared) <= 1 for single, shared in zip(alone, together, strict=True))


def host_waits(renderer: PortraitRenderer, items: list[BatchItem]) -> int:
    """How often one render_batch of `items` made the host wait for the GPU (torch's CUDA sync debug mode)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            renderer.render_batch(items)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(warning.message) for warning in caught)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the host waits on a CUDA GPU only")
def test_a_call_of_mixed_schedulers_and_guidances_waits_on_the_gpu_per_call_not_per_step(base_model: Path) -> None:
    renderer = PortraitRenderer(load_pipeline(base_model))
    # Not Euler ancestral, which draws its noise on the host each step (our generators are CPU ones), nor UniPC, whose
    # corrector solves a small system on the GPU (torch.linalg.solve checks it on the host). DDIM indexes host tensors
    # with the timestep it is given.
    items = mixed(["dpmpp-2m", "euler", "ddim"])
    renderer.render_batch(items)  # first-call set-up
    short, long = ([dataclasses.replace(item, params=dataclasses.replace(item.params, steps=steps)) for item in items]
                   for steps in (4, 12))
    assert host_waits(renderer, long) == host_waits(renderer, short), "a denoising step made the host wait"
