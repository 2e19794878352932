"""Adapter stores (services/renderer/adapters.py) on the tiny random-weight model: a compiled UNet
serves many subjects, fused into its weights, without recompiling, each with its own adapter's image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from services.renderer.adapters import FusedAdapter
from services.renderer.conftest import PARAMS, differs
from services.renderer.pipeline import BatchItem, PortraitRenderer, RenderInputError, load_pipeline

# Inductor's fused kernels round differently from eager: a few levels of 255 at most.
COMPILED_TOLERANCE = 3


def _targeted_weights(renderer: PortraitRenderer) -> dict:
    return {name: parameter.detach().clone() for name, parameter in renderer.pipe.unet.named_parameters()
            if "attn" in name and name.endswith("weight")}


# "regional": each repeated block compiled on its own, one graph per block kind for every size; "-cl": with the
# convolutions NHWC inside the compiled graphs although their shapes are dynamic (unet_modes.compile_options). The
# whole UNet's static compile serves subjects from one graph too (static_shapes_test.py).
@pytest.mark.parametrize("mode", ["regional", "regional-cl"])
def test_compiled_unet_serves_every_subject_from_one_graph(
    mode: str, base_model: Path, loras: dict[str, bytes], eager_images: dict[str, np.ndarray]
) -> None:
    from torch._dynamo.utils import counters

    renderer = PortraitRenderer(load_pipeline(base_model), adapter_cache_size=2, compile_mode=mode)
    assert isinstance(renderer.adapters, FusedAdapter)
    graphs = counters["stats"]["unique_graphs"]
    assert renderer.warm_up() > 0
    assert counters["stats"]["unique_graphs"] > graphs, "the warm-up did not compile the UNet"
    graphs = counters["stats"]["unique_graphs"]
    first = renderer.render(PARAMS, "subject-a", loras["subject-a"])
    order = ["subject-b", "subject-c", "subject-a", "subject-b"]  # cache of 2: a is parsed again
    images = {adapter_id: renderer.render(PARAMS, adapter_id, loras[adapter_id]) for adapter_id in order}
    base = renderer.render(PARAMS)
    assert counters["stats"]["unique_graphs"] == graphs, "a subject or the base model recompiled the UNet"
    assert renderer.loaded_adapter_ids == ["subject-a", "subject-b"]
    assert differs(first, eager_images["subject-a"]) <= COMPILED_TOLERANCE
    for adapter_id, image in images.items():
        assert differs(image, eager_images[adapter_id]) <= COMPILED_TOLERANCE, adapter_id
    assert differs(base, eager_images["base"]) <= COMPILED_TOLERANCE
    assert differs(images["subject-a"], images["subject-b"]) > 20
    mixed = renderer.render_batch([BatchItem(PARAMS, adapter_id, loras[adapter_id]) for adapter_id in order])
    for adapter_id, image in zip(order, mixed, strict=True):  # one batch, each group fused in turn
        assert differs(image, eager_images[adapter_id]) <= COMPILED_TOLERANCE, adapter_id
    renderer.render_batch([BatchItem(PARAMS, "subject-c", loras["subject-c"])] * 3)
    # Groups of 2 (subject-b above) and 3 are other batch sizes than the first render's.
    assert counters["stats"]["unique_graphs"] == graphs, "a batch of another size recompiled the UNet"


def test_fusing_restores_from_pristine_weights_so_nothing_drifts_or_stays(
    base_model: Path, loras: dict[str, bytes], eager_images: dict[str, np.ndarray]
) -> None:
    import torch

    renderer = PortraitRenderer(load_pipeline(base_model), adapter_cache_size=2)
    renderer.adapters = FusedAdapter(renderer.pipe, 2)
    pristine = _targeted_weights(renderer)
    renderer.render(PARAMS, "tenant-1/subject-a", loras["subject-a"])
    fused_a = _targeted_weights(renderer)
    for _ in range(3):
        renderer.render(PARAMS, "tenant-2/subject-b", loras["subject-b"])
        renderer.render(PARAMS, "tenant-1/subject-a", loras["subject-a"])
    assert all(torch.equal(fused_a[name], weight) for name, weight in _targeted_weights(renderer).items())
    assert not all(torch.equal(pristine[name], weight) for name, weight in fused_a.items())
    assert differs(renderer.render(PARAMS, "tenant-1/subject-a", loras["subject-a"]),
                    eager_images["subject-a"]) <= 1

    assert renderer.evict_prefix("tenant-1/") == 1  # the fused subject is deleted: the base weights return
    assert all(torch.equal(pristine[name], weight) for name, weight in _targeted_weights(renderer).items())
    assert renderer.loaded_adapter_ids == ["tenant-2/subject-b"]
    assert np.array_equal(renderer.render(PARAMS), eager_images["base"])


def _with(lora: bytes, extra: dict | None = None, metadata: dict | None = None, **replaced) -> bytes:
    from safetensors.torch import load, save

    from services.renderer.adapters import adapter_metadata

    tensors = {**load(lora), **(extra or {}), **replaced}
    header = {"format": "pt"}
    if metadata is not None:
        header["lora_adapter_metadata"] = json.dumps({**adapter_metadata(lora), **metadata})
    return save(tensors, metadata=header)


# "batched": the slots of services/renderer/batched_adapters.py hold the same plain linear LoRAs.
@pytest.mark.parametrize("mode", ["fused", "batched"])
def test_a_compiled_renderer_refuses_what_it_cannot_fuse_and_keeps_serving(
    mode: str, base_model: Path, loras: dict[str, bytes], eager_images: dict[str, np.ndarray]
) -> None:
    import torch
    from safetensors.torch import load

    renderer = PortraitRenderer(load_pipeline(base_model), adapter_cache_size=2, compile_mode=mode)
    lora = loras["subject-a"]
    a_key = next(key for key in load(lora) if key.endswith("lora.down.weight"))
    ones = torch.ones(3)
    refused = {
        "text-encoder weights do not fit": _with(lora, {"text_encoder.text_model.encoder.layers.0.self_attn.q_proj"
                                                        ".lora_A.weight": torch.zeros(4, 32)}),
        "use_dora": _with(lora, metadata={"unet.use_dora": True}),
        r"is not a \d+x7 linear layer": _with(lora, **{a_key: torch.zeros(4, 7)}),
        "does not fuse, e.g. unet.mid_block.lora_magnitude": _with(lora, {"unet.mid_block.lora_magnitude": ones}),
        ("conv_in is not a 32x4 linear layer" if mode == "fused" else "adapter targets conv_in; a batched renderer "
         "serves LoRAs on to_q"): _with(lora, {"unet.conv_in.lora.down.weight": torch.zeros(4, 4),
                                               "unet.conv_in.lora.up.weight": torch.zeros(32, 4)}),
        "no layer": _with(lora, {"unet.nowhere.to_q.lora.down.weight": torch.zeros(4, 32),
                                 "unet.nowhere.to_q.lora.up.weight": torch.zeros(32, 4)}),
    }
    for reason, adapter in refused.items():
        with pytest.raises(RenderInputError, match=reason):
            renderer.render(PARAMS, reason, adapter)
    assert renderer.loaded_adapter_ids == []
    assert not getattr(renderer.pipe.text_encoder, "peft_config", None)  # nothing half-loaded
    assert differs(renderer.render(PARAMS, "subject-a", lora), eager_images["subject-a"]) <= 1


def test_an_eager_renderer_has_nothing_to_warm_up(base_model: Path) -> None:
    assert PortraitRenderer(load_pipeline(base_model)).warm_up() == 0.0
    assert PortraitRenderer(load_pipeline(base_model), compile_mode="fused-cl").warm_up() == 0.0


# "fused": the eager UNet with each subject's LoRA merged into its weights, no PEFT layers in the step;
# "-cl": its convolutions in channels-last layout.
@pytest.mark.parametrize("mode", ["fused", "fused-cl"])
def test_an_eager_unet_with_fused_adapters_draws_what_peft_adapters_draw(
    mode: str, base_model: Path, loras: dict[str, bytes], eager_images: dict[str, np.ndarray]
) -> None:
    import torch

    renderer = PortraitRenderer(load_pipeline(base_model), adapter_cache_size=2, compile_mode=mode)
    assert isinstance(renderer.adapters, FusedAdapter)
    convolutions = [weight for weight in renderer.pipe.unet.parameters() if weight.dim() == 4]
    channels_last = [weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
                     for weight in convolutions if weight.shape[-1] > 1]
    assert channels_last and all(channels_last) == mode.endswith("-cl") and any(channels_last) == all(channels_last)
    vae_layouts = {weight.is_contiguous() for weight in renderer.pipe.vae.parameters() if weight.dim() == 4
                   and weight.shape[-1] > 1}
    assert vae_layouts == {not mode.endswith("-cl")}
    for adapter_id in ["subject-a", "subject-b", "subject-c", "subject-a"]:
        image = renderer.render(PARAMS, adapter_id, loras[adapter_id])
        assert differs(image, eager_images[adapter_id]) <= 1, adapter_id
    assert differs(renderer.render(PARAMS), eager_images["base"]) <= 1


def test_from_env_compiles_with_fused_adapters(base_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDIO_BASE_MODEL", str(base_model))
    monkeypatch.setenv("STUDIO_RENDER_COMPILE", "cuda-graphs")
    assert isinstance(PortraitRenderer.from_env().adapters, FusedAdapter)
    monkeypatch.setenv("STUDIO_RENDER_COMPILE", "warp")
    with pytest.raises(ValueError, match="STUDIO_RENDER_COMPILE must be one of"):
        PortraitRenderer.from_env()
