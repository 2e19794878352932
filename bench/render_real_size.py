"""Real-size rendering (bench/render.py --real-size): random-weight SD1.5- and SDXL-size pipelines,
built from config dicts (the UNets are bench/train_real_size.py's, the trainer bench's), saved once
as diffusers folders, then rendered in-process and through a real tritonserver.

Each row is measured by bench/render_rows.py: in-process in a child process of its own, or through
Triton. FLOPs of one image (every UNet step with classifier-free
guidance, VAE decode) are counted once per model with torch.utils.flop_counter on meta tensors, no
device time spent; utilisation = FLOPs × images/s against the GPU's bf16 dense peak.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import NamedTuple

from bench.kernel_profile import format_profile
from bench.render_rows import difference_from_eager, renderer_mode, triton_row
from bench.train_real_size import BF16_DENSE_PEAK_TFLOPS, peak_for, run_child, unet_config
from services.common.machine import describe_machine
from services.renderer.unet_modes import UNET_MODES

# model -> (batch, reference images/s on one H200, eager bf16, 25 steps)
PLAN = {"sd15": (8, 8.2), "sdxl": (4, 1.9)}
REFERENCE_STEPS = 25
TEXT_SIZES = {  # (hidden, intermediate, layers, heads)
    "clip-l": (768, 3072, 12, 12), "clip-g": (1280, 5120, 32, 20), "tiny-1": (32, 37, 2, 4), "tiny-2": (32, 37, 2, 4),
}
VAE_CHANNELS = {False: [128, 256, 512, 512], True: [16, 16, 32, 32]}


def _text_encoder(kind: str, tokenizer, with_projection: bool, projection_dim: int):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    hidden, intermediate, layers, heads = TEXT_SIZES[kind]
    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
                            num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=77,
                            projection_dim=projection_dim, bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


def build_vae(tiny: bool):
    """The SD VAE's shape (4 levels, 4 latent channels), or toy widths."""
    from diffusers import AutoencoderKL

    channels = VAE_CHANNELS[tiny]
    return AutoencoderKL(block_out_channels=channels, latent_channels=4, layers_per_block=2,
                         norm_num_groups=min(32, channels[0]), down_block_types=["DownEncoderBlock2D"] * 4,
                         up_block_types=["UpDecoderBlock2D"] * 4)


def build_random_pipeline(model: str, tiny: bool, device: str):
    """A random-weight pipeline of the real model's shapes (or toy widths), on `device`."""
    import torch
    from diffusers import (
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTokenizer

    from services.common.tinymodel import tiny_vocabulary

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer(vocab=tiny_vocabulary(), merges=[], model_max_length=77)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1)
    with torch.device(device):
        unet = UNet2DConditionModel(**unet_config(model, tiny))
        vae = build_vae(tiny)
        first = _text_encoder("tiny-1" if tiny else "clip-l", tokenizer, False, 32 if tiny else 768)
        if model == "sd15":
            return StableDiffusionPipeline(vae=vae, text_encoder=first, tokenizer=tokenizer, unet=unet,
                                           scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                           requires_safety_checker=False)
        second = _text_encoder("tiny-2" if tiny else "clip-g", tokenizer, True, 32 if tiny else 1280)
    return StableDiffusionXLPipeline(vae=vae, text_encoder=first, text_encoder_2=second, tokenizer=tokenizer,
                                     tokenizer_2=tokenizer, unet=unet, scheduler=scheduler)


def write_random_model(model: str, tiny: bool, device: str, out_dir: Path) -> Path:
    import torch

    pipe = build_random_pipeline(model, tiny, device)
    if device == "cuda":
        pipe = pipe.to(torch.bfloat16)  # half the bytes to write; loaded in the run's dtype
    pipe.save_pretrained(out_dir, safe_serialization=True)
    return out_dir



class ImageFlops(NamedTuple):
    total: int  # every UNet step with classifier-free guidance + the VAE decode
    vae: int
    fp8: int  # what the FP8 modes run as FP8 products (services/renderer/fp8.py), all steps


def meta_image_flops(model: str, steps: int, tiny: bool = False) -> ImageFlops:
    """One image's FLOPs, counted on meta tensors from the configs: no weights, no device, seconds. The
    UNet is counted with the FP8 modes' layers in place (an FP8 product counts as the product it replaces),
    so one count gives the FP8 share too. The text encoders, under 0.1% at real size, are left out."""
    import torch
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    from services.renderer.fp8 import to_float8

    config = unet_config(model, tiny)
    side = config["sample_size"]
    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
        suffixes = tuple(f".{path}" for path in to_float8(unet))
        vae = build_vae(tiny)
        with FlopCounterMode(display=False) as unet_counter:
            _guided_unet_call(unet, model, config)
        with FlopCounterMode(display=False) as vae_counter:
            vae.decode(torch.randn(1, 4, side, side))
    vae_flops = vae_counter.get_total_flops()
    fp8 = sum(sum(ops.values()) for name, ops in unet_counter.get_flop_counts().items() if name.endswith(suffixes))
    return ImageFlops(steps * unet_counter.get_total_flops() + vae_flops, vae_flops, steps * fp8)


def _guided_unet_call(unet, model: str, config: dict) -> None:
    """One denoising step's UNet call with classifier-free guidance (two images), on the current device."""
    import torch

    added = None
    if model == "sdxl":
        pooled = config["projection_class_embeddings_input_dim"] - 6 * config["addition_time_embed_dim"]
        added = {"text_embeds": torch.randn(2, pooled), "time_ids": torch.randn(2, 6)}
    side = config["sample_size"]
    latents, text = torch.randn(2, 4, side, side), torch.randn(2, 77, config["cross_attention_dim"])
    unet(latents, torch.tensor([10, 10]), text, added_cond_kwargs=added)


def print_reference_flops(models: list[str], steps: int) -> None:
    """What the H200 reference's images/s mean in TFLOP/s, against the chip's bf16 peak, and the most FP8
    can give: its products run at twice bf16's peak, the rest (convolutions, attention) as before."""
    for model in models:
        flops, vae, fp8 = meta_image_flops(model, steps)
        reference = PLAN[model][1]
        print(f"# {model}: {flops / 1e12:.1f} TFLOP per image ({steps} steps with guidance, VAE {vae / flops:.1%}); "
              f"the reference's {reference} img/s = {flops * reference / 1e12:.0f} TFLOP/s = "
              f"{flops * reference / 1e12 / BF16_DENSE_PEAK_TFLOPS['H200']:.0%} of the H200's bf16 dense peak")
        share = fp8 / flops
        print(f"# {model}: the FP8 modes convert {share:.1%} of an image's FLOPs; at the same efficiency that is at "
              f"most x{1 / (1 - share / 2):.2f}, the rest must come from efficiency (fusion, fewer launches)")



def real_size(args) -> list[dict]:
    import os

    import torch

    dtype = args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    os.environ["STUDIO_RENDER_DTYPE"] = dtype  # the children and Triton inherit it

    deadline = time.monotonic() + args.budget_s
    steps = args.steps or REFERENCE_STEPS
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else ""
    peak = peak_for(gpu) or "unknown"
    print(f"# {describe_machine(with_torch=True)}; {dtype}, {steps} steps; bf16 dense peak {peak} TFLOP/s")
    print_reference_flops(args.only or list(PLAN), REFERENCE_STEPS)
    if args.flops_only:
        return []
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        for model in args.only or list(PLAN):
            rows += _model_rows(args, model, steps, work, deadline, gpu)
    _print_summary(rows)
    return rows


def _model_rows(args, model: str, steps: int, work: Path, deadline: float, gpu: str) -> list[dict]:
    from services.renderer.random_lora import make_lora

    reference = PLAN[model][1]
    folder = write_random_model(model, args.tiny_shapes, args.device, work / model)
    loras = [work / f"{model}-lora-{subject}.safetensors" for subject in range(args.subjects)]
    for subject, lora in enumerate(loras):
        # alpha 1: a trained LoRA's size of update. The test default's much larger updates make the random
        # model so sensitive that bf16 rounding alone moves the image, and the drift from eager says nothing.
        lora.write_bytes(make_lora(folder, seed=1 + subject, alpha=1))
    rows, flops = [], meta_image_flops(model, steps, args.tiny_shapes).total
    order = measurement_order(args.modes, not args.no_triton)
    for position, (mode, path) in enumerate(order):
        batch = serving_batch(args, model, mode, path)
        left = deadline - time.monotonic()
        if left < 30:
            rows.append({"model": model, "mode": mode, "path": path, "error": "skipped: bench budget spent"})
            continue
        if _unet_mode(mode).graphed and args.device != "cuda":
            rows.append({"model": model, "mode": mode, "path": path, "batch": batch,
                         "error": "skipped: CUDA graphs need a GPU"})
            print(_row_line(rows[-1]), flush=True)
            continue
        # Rows that start in seconds or a minute (graphed, regional) may take most of what is left; a whole-UNet
        # compile's share keeps one cold compile from taking all, unless no row comes after it.
        share = 0.6 if _unet_mode(mode).whole and position < len(order) - 1 else 0.9
        if path == "in-process":
            child_args = [str(folder), model, mode, str(batch), str(steps), args.device, ",".join(map(str, loras))]
            flags = [flag for flag, wanted in (("--tiny-shapes", args.tiny_shapes), ("--profile", args.profile))
                     if wanted]
            row = run_child(child_args + flags, left * share, "render.py")
            if "images_per_s" in row:
                row["levels_from_eager"] = difference_from_eager(work, model, mode)
        else:
            row = triton_row(folder, work, model, mode, batch, steps, args.tiny_shapes,
                              [lora.read_bytes() for lora in loras], left * share)
            if "images_per_s" in row:
                row["levels_from_eager"] = difference_from_eager(work, model, f"{mode}-triton")
        row = {"model": model, "mode": mode, "path": path, "batch": batch, "subjects": args.subjects,
               "reference": reference, **row}
        if "images_per_s" in row:
            row["tflops"] = flops * row["images_per_s"] / 1e12
            row["utilisation"] = row["tflops"] / peak_for(gpu) if peak_for(gpu) else None
        rows.append(row)
        print(_row_line(row), flush=True)
    return rows


def serving_batch(args, model: str, mode: str, path: str) -> int:
    """The row's batch: the reference's (PLAN), or --serve-batch for every row but the eager in-process baseline,
    which stays the reference's configuration (Triton's max_batch_size is a serving choice; the target compares
    images/s)."""
    if args.serve_batch and (mode, path) != ("eager", "in-process"):
        return args.serve_batch
    return PLAN[model][0]


def _unet_mode(mode: str):
    return UNET_MODES[renderer_mode(mode)]


def compiles(mode: str) -> bool:
    """The mode runs torch.compile: its first row pays a cold compile (minutes at real size)."""
    return _unet_mode(mode).compiles


def measurement_order(modes: list[str], with_triton: bool) -> list[tuple[str, str]]:
    """(mode, path) pairs: the baseline first (eager in-process); then through Triton (what the target is
    about) the modes that start in seconds, then eager (the serving overhead, without which a Triton row
    cannot say whether the mode or the serving cost what it lost), then those holding a cold compile, FP8
    first; then the faster modes in-process (their profiles and drift). A spent time box then cuts the
    least useful rows."""
    paths = ("in-process", "triton") if with_triton else ("in-process",)
    pairs = [(mode, path) for mode in modes for path in paths]

    def rank(pair: tuple[str, str]) -> tuple:
        mode, path = pair
        if pair == ("eager", "in-process"):
            return (0,)
        return (1, path == "in-process", compiles(mode), mode == "eager", not mode.endswith("-fp8"))

    return sorted(pairs, key=rank)


def _row_line(row: dict) -> str:
    head = f"{row['model']:5} {row['mode']:20} {row['path']:10} batch {row.get('batch', '?'):>2}"
    if row.get("subjects", 1) > 1:
        head += f" of {row['subjects']} subjects"
    if "error" in row:
        return f"{head}  {row['error']}"
    utilisation = f" = {row['utilisation']:6.1%} of bf16 peak" if row.get("utilisation") else ""
    tflops = f" {row['tflops']:8.3g} TFLOP/s{utilisation}" if "tflops" in row else ""
    load = f"Triton load {row['load_s']:.0f} s, " if "load_s" in row else ""
    if row.get("mean_batch"):
        load = (f"Triton's mean batch {row['mean_batch']:.1f}, model busy {row['model_busy']:.0%} of the wall, "
                f"{row['execute_ms']:.0f} ms an execute, {load}")
    elif row["path"] == "in-process":
        load = f"{_call_ms(row):.0f} ms a call" + (
            f" ({row['render_batch_ms']:.0f} through render_batch), " if "render_batch_ms" in row else
            " through render_batch, ")
        load += f"decode {row['decode_ms']:.0f} ms, " if "decode_ms" in row else ""
    drift = f"; first image {row['levels_from_eager']:.1f} levels from eager's" \
        if row.get("levels_from_eager") is not None else ""
    profile = f"\n{'':39}{format_profile(row['profile'], ' ' * 39)}" if row.get("profile") else ""
    profile = _syncs_text(row) + profile
    return f"{head}  {row['images_per_s']:7.2f} img/s{tflops} ({load}warm-up {row['warmup_s']:.0f} s){drift}{profile}"


def _syncs_text(row: dict) -> str:
    """Where an in-process call made the host wait for the GPU: how often a call, plain and through render_batch,
    and the lines that waited most."""
    if not row.get("syncs"):
        return ""
    counts = {path: sum(lines.values()) for path, lines in row["syncs"].items()}
    places = ", ".join(f"{line} x{count}" for line, count in sum(map(Counter, row["syncs"].values()), Counter())
                       .most_common(3))
    plain = f"{counts['pipeline']} times a call (" if "pipeline" in counts else ""
    return (f"\n{'':39}the host waited on the GPU {plain}{counts['render_batch']} times through render_batch"
            f"{')' if plain else ''}{': ' + places if places else ''}")


def _print_summary(rows: list[dict]) -> None:
    print("\n# against in-process eager (same run, same device) and the H200 eager reference:")
    for model in PLAN:
        measured = [r for r in rows if r["model"] == model and "images_per_s" in r]
        eager = next((r for r in measured if r["mode"] == "eager" and r["path"] == "in-process"), None)
        for row in measured:
            versus_eager = f"x{row['images_per_s'] / eager['images_per_s']:.2f} vs in-process eager" if eager else ""
            print(f"{model:5} {row['mode']:20} {row['path']:10}: {versus_eager}, "
                  f"x{row['images_per_s'] / row['reference']:.2f} vs reference {row['reference']} img/s"
                  f"{_execute_versus_call(row, measured)}")


def _call_ms(row: dict) -> float:
    """An in-process row's milliseconds per pipeline call of its batch."""
    return 1000 * row["batch"] / row["images_per_s"]


def _execute_versus_call(row: dict, measured: list[dict]) -> str:
    """For a Triton row: its mean execute against the same mode's in-process call of the same batch, what serving
    adds inside the model (above 1) as against between executions (model busy under 100%); and against that
    call's render_batch (one subject), whether what it adds is the renderer around the pipeline or the stub."""
    call = next((other for other in measured if other["path"] == "in-process" and other["mode"] == row["mode"]
                 and other["batch"] == row["batch"]), None)
    if not row.get("execute_ms") or call is None:
        return ""
    through_renderer = f" (x{row['execute_ms'] / call['render_batch_ms']:.2f} its render_batch)" \
        if call.get("render_batch_ms") else ""
    return (f"; execute x{row['execute_ms'] / _call_ms(call):.2f} the in-process call{through_renderer}, "
            f"model busy {row['model_busy']:.0%}")
