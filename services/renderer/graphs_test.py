"""CUDA-graph replay of the UNet (services/renderer/graphs.py). On any machine: every UNet call a real
SD1.5- or SDXL-family render makes is one a graph can reproduce (else the graphed modes would quietly
run eager), its tensors rearranged for the graph give the same prediction, and the graphed modes are
refused without a GPU. On a CUDA machine also: graphed renders (compiled blocks inside the graphs or
not) match eager ones, subject by subject."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from services.common.tinymodel import write_tiny_sdxl_model
from services.renderer.graphs import UNetGraphs, graph_inputs, signature, unet_arguments
from services.renderer.pipeline import PortraitRenderer, RenderParams, load_pipeline
from services.renderer.random_lora import make_lora

PARAMS = RenderParams(prompt="a portrait", seed=3, steps=2, guidance=5.0, width=64, height=64)
CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def sdxl_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_sdxl_model(tmp_path_factory.mktemp("tiny-sdxl"))


def _record_unet_calls(pipe) -> list[tuple]:
    """Wrap the UNet's forward: each call must be graphable and give the same prediction when rebuilt
    from its graph inputs; the signatures seen, in order."""
    eager, seen = pipe.unet.forward, []

    def recording(sample, timestep, encoder_hidden_states, **options):
        inputs = graph_inputs(sample, timestep, encoder_hidden_states, options)
        assert inputs is not None, f"a render's UNet call would run eager: {sorted(options)}"
        seen.append(signature(inputs))
        direct = eager(sample, timestep, encoder_hidden_states, **options)
        rebuilt = eager(**unet_arguments(inputs), return_dict=False)[0]
        assert torch.equal(rebuilt, direct[0] if isinstance(direct, tuple) else direct.sample)
        return direct

    pipe.unet.forward = recording
    return seen


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_every_unet_call_of_a_render_is_graphable_with_one_signature_per_batch(
        family: str, base_model: Path, sdxl_model: Path) -> None:
    pipe = load_pipeline(base_model if family == "sd15" else sdxl_model)
    renderer = PortraitRenderer(pipe)
    seen = _record_unet_calls(pipe)
    renderer.render_batch([])  # nothing to render, nothing called
    assert seen == []
    renderer._run_pipeline([PARAMS, PARAMS])
    renderer._run_pipeline([PARAMS])
    pairs, single = seen[:PARAMS.steps], seen[PARAMS.steps:]
    assert len(set(pairs)) == 1 and len(set(single)) == 1 and pairs[0] != single[0]
    shapes = dict((name, shape) for name, shape, _ in pairs[0])
    assert shapes["sample"][0] == 4  # two images, each with and without guidance, in one UNet call
    added = sorted(name for name in shapes if name.startswith("added."))
    assert added == ([] if family == "sd15" else ["added.text_embeds", "added.time_ids"])


def test_calls_a_graph_cannot_reproduce_are_left_to_eager() -> None:
    sample, timestep, text = torch.zeros(2, 4, 8, 8), torch.tensor(10), torch.zeros(2, 77, 32)
    plain = graph_inputs(sample, timestep, text, {"timestep_cond": None, "cross_attention_kwargs": {},
                                                  "return_dict": False})
    assert plain is not None and list(plain) == ["sample", "timestep", "encoder_hidden_states"]
    assert graph_inputs(sample, timestep, text, {"attention_mask": torch.ones(2, 77)}) is None
    assert graph_inputs(sample, timestep, text, {"cross_attention_kwargs": {"scale": 0.5}}) is None
    assert graph_inputs(sample, timestep, text, {"down_block_additional_residuals": (sample,)}) is None
    assert graph_inputs(sample, 10, text, {}) is None  # a number: the UNet would build a new tensor each call
    bigger = graph_inputs(torch.zeros(4, 4, 8, 8), timestep, torch.zeros(4, 77, 32), {})
    assert signature(plain) != signature(bigger)


@pytest.mark.skipif(CUDA, reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("mode", ["graphed", "graphed-fp8", "regional-graphed", "graphed-batched"])
def test_graphed_modes_are_refused_without_a_gpu(mode: str, base_model: Path) -> None:
    with pytest.raises(ValueError, match="CUDA GPU"):
        PortraitRenderer(load_pipeline(base_model), compile_mode=mode)
    with pytest.raises(ValueError, match="CUDA GPU"):
        UNetGraphs(load_pipeline(base_model).unet)


@pytest.mark.skipif(not CUDA, reason="CUDA graphs need a CUDA GPU")
@pytest.mark.parametrize("mode", ["graphed", "regional-graphed", "graphed-batched"])
def test_graphed_renders_match_eager_subject_by_subject(mode: str, base_model: Path) -> None:
    loras = [make_lora(base_model, seed=seed) for seed in (1, 2)]
    eager = PortraitRenderer(load_pipeline(base_model))
    graphed = PortraitRenderer(load_pipeline(base_model), compile_mode=mode)
    graphed.warm_up(max_batch=2)
    graphs = graphed.pipe.unet.forward.__self__
    captured = len(graphs.graphs)
    for round_ in range(2):  # subjects alternate: the fused weights change under the same graphs
        for subject, lora in enumerate(loras):
            expected = eager.render(PARAMS, f"s{subject}", lora).astype(np.float32)
            image = graphed.render(PARAMS, f"s{subject}", lora).astype(np.float32)
            assert np.abs(image - expected).mean() < 2.0, (round_, subject)  # bf16: fused vs PEFT rounding
    assert len(graphs.graphs) == captured and graphs.eager_calls == 0
