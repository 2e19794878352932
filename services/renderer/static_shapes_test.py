"""The whole UNet compiled at static shapes (services/renderer/static_shapes.py): its batch sizes and warm-up sizes,
and on the tiny model a warmed-up, sealed compile that pads each call to its batch size and runs other shapes eager."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from services.common.styles import catalogue
from services.renderer.conftest import PARAMS, differs
from services.renderer.pipeline import BatchItem, PortraitRenderer, load_pipeline
from services.renderer.static_shapes import (
    WARM_UP_SIZES_ENV,
    bucket_for,
    image_buckets,
    parse_buckets,
    parse_sizes,
    warm_up_sizes,
)

COMPILED_TOLERANCE = 3  # levels of 255: inductor's fused kernels round differently from eager


def test_batch_sizes_are_powers_of_two_up_to_the_largest_batch_unless_listed() -> None:
    assert image_buckets(8) == [1, 2, 4, 8]
    assert image_buckets(6) == [1, 2, 4, 6]
    assert image_buckets(1) == [1]
    assert parse_buckets(" 8, 2,") == [2, 8]
    assert [bucket_for(count, [1, 2, 4, 8]) for count in (1, 3, 5, 8, 9)] == [1, 4, 8, 8, 9]
    assert bucket_for(3, []) == 3


@pytest.mark.parametrize("configured", ["0,2", "two", ","])
def test_a_bad_batch_size_list_says_what_it_expects(configured: str) -> None:
    with pytest.raises(ValueError, match="STUDIO_RENDER_BATCH_BUCKETS must list batch sizes of 1 or more"):
        parse_buckets(configured)


def test_warm_up_sizes_are_the_catalogues_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WARM_UP_SIZES_ENV, raising=False)
    assert warm_up_sizes() == sorted({(preset.width, preset.height) for preset in catalogue().values()})
    monkeypatch.setenv(WARM_UP_SIZES_ENV, "64x64, 64X96")
    assert warm_up_sizes() == [(64, 64), (64, 96)]
    assert parse_sizes("512x640") == [(512, 640)]
    for bad in ("512", "512x", "0x64", "ax b", "64x64,"):
        with pytest.raises(ValueError, match="must list WIDTHxHEIGHT sizes"):
            parse_sizes(bad)


def test_a_sealed_static_compile_pads_to_its_batch_size_and_runs_other_shapes_eager(
    base_model: Path, loras: dict[str, bytes], eager_images: dict[str, np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    from torch._dynamo.utils import counters

    renderer = PortraitRenderer(load_pipeline(base_model), adapter_cache_size=2, compile_mode="compile",
                                batch_buckets=[2])
    graphs = counters["stats"]["unique_graphs"]
    with caplog.at_level(logging.INFO, logger="services.renderer.static_shapes"):
        assert renderer.warm_up(max_batch=8, sizes=[(PARAMS.width, PARAMS.height)]) > 0
    assert counters["stats"]["unique_graphs"] == graphs + 2, "the UNet and decoder at the given batch size alone"
    scale = int(renderer.pipe.vae_scale_factor)
    latents = f"sample [{{rows}}, 4, {PARAMS.height // scale}, {PARAMS.width // scale}]"
    compiles = [record.getMessage() for record in caplog.records if "compil" in record.getMessage()]
    assert [message.split(" in ")[0] for message in compiles] == [
        f"UNet: compiling for {latents.format(rows=4)}, timestep [4], encoder_hidden_states [4, 77, 32]",
        f"UNet: compiled for {latents.format(rows=4)}, timestep [4], encoder_hidden_states [4, 77, 32]",
        f"VAE decoder: compiling for {latents.format(rows=2)}",
        f"VAE decoder: compiled for {latents.format(rows=2)}"], "a cold compile's start and end, for a cut-off warm-up"
    graphs = counters["stats"]["unique_graphs"]
    subject = ("subject-a", loras["subject-a"])

    alone = renderer.render(PARAMS, *subject)  # one image, padded to two
    pair = renderer.render_batch([BatchItem(PARAMS, *subject), BatchItem(replace(PARAMS, seed=6), *subject)])
    assert renderer.static.eager_calls == renderer.static_decoder.eager_calls == 0, "a padded call ran eager"
    assert differs(alone, eager_images["subject-a"]) <= COMPILED_TOLERANCE
    assert differs(pair[0], alone) == 0, "an image depends on what it was padded or batched with"
    assert differs(pair[0], pair[1]) > 20
    other = renderer.render(PARAMS, "subject-b", loras["subject-b"])  # fused into the weights the graph reads
    assert differs(other, eager_images["subject-b"]) <= COMPILED_TOLERANCE
    assert differs(renderer.render(PARAMS), eager_images["base"]) <= COMPILED_TOLERANCE
    assert counters["stats"]["unique_graphs"] == graphs, "a subject or the base model recompiled the UNet or decoder"

    wide = replace(PARAMS, width=96)  # a size the warm-up did not compile, and a batch above the largest size
    rendered = renderer.render_batch([BatchItem(wide, *subject)] + [BatchItem(PARAMS, *subject)] * 3)
    assert counters["stats"]["unique_graphs"] == graphs, "a sealed compile compiled in front of a customer"
    assert renderer.static.eager_calls == 2 * PARAMS.steps
    assert renderer.static_decoder.eager_calls == 2
    eager = PortraitRenderer(load_pipeline(base_model)).render(wide, *subject)
    assert differs(rendered[0], eager) <= COMPILED_TOLERANCE
    assert all(differs(image, alone) <= COMPILED_TOLERANCE for image in rendered[1:])
