"""The trainer's whole in-process path on a GPU: bf16 frozen base weights, training steps, validation
renders every K steps, a checkpoint serialised as the worker stores it, a resume from it in a new
run that must end where the uninterrupted run ended, and (on a GPU) the same run in the "graphed"
mode (CUDA graphs, services/trainer/graphed.py), which must end where the eager run ended.

What it cannot show here, the CPU suite shows: faceqa's identity scoring (dlib, CPU), the sealed
checkpoint in the object store and the queue's kill-and-resume (tests/test_trainer_queue.py). The
validator below therefore scores with image statistics, so a score exists and the best-checkpoint
bookkeeping runs; its values say nothing about identity.

    python bench/gpu_host/trainer_check.py [--models sd15 sdxl] [--real-size] [--steps 6] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

JOB_ID = "gpu-check"


class ImageStatisticsScorer:
    """Check-only stand-in for identity: the renders' contrast, in [0, 1]."""

    def score(self, images) -> list[float]:
        import numpy as np

        return [float(min(np.asarray(image, dtype=np.float32).std() / 128.0, 1.0)) for image in images]


def training_images(count: int, side: int) -> list:
    import numpy as np
    from PIL import Image

    generator = np.random.default_rng(7)
    return [Image.fromarray(generator.integers(0, 256, (side, side, 3), dtype=np.uint8)) for _ in range(count)]


def check_model(model: str, real_size: bool, steps: int, work: Path, device: str) -> dict:
    import torch
    from safetensors.torch import load

    from bench.render_real_size import write_random_model
    from bench.render_rows import image_side
    from services.trainer.checkpoint import checkpoint_bytes, read_checkpoint
    from services.trainer.training import TrainingConfig, TrainingRun
    from services.trainer.validation import IdentityValidator

    folder = write_random_model(model, not real_size, device, work / model)
    side = image_side(model, not real_size)
    config = TrainingConfig.for_base_model(folder, steps=steps, batch_size=2, validate_every=2,
                                           checkpoint_every=steps // 2, resolution=side)
    validator = IdentityValidator(ImageStatisticsScorer(), side, config.subject_token)
    images = training_images(4, side)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    whole = TrainingRun(folder, images, config, device)
    checkpoints: list[bytes] = []
    result = whole.run(validator=validator,
                       on_checkpoint=lambda state: checkpoints.append(checkpoint_bytes(state, JOB_ID,
                                                                                       whole.base_model_id)))
    whole_seconds = time.perf_counter() - started
    state = read_checkpoint(checkpoints[0], JOB_ID, whole.base_model_id)
    resumed_run = TrainingRun(folder, images, config, device, resume=state)
    resumed = resumed_run.run(validator=validator)
    final, final_resumed = load(whole.lora_bytes()), load(resumed_run.lora_bytes())
    difference = _max_difference(final, final_resumed)
    scale = max(float(tensor.float().abs().max()) for tensor in final.values())
    tolerance = 1e-2 * max(scale, 1e-6)
    graphed = _graphed_difference(folder, images, config, device, validator, final) if device == "cuda" else None
    unet_dtypes = sorted({str(p.dtype) for p in whole.parts.unet.parameters() if not p.requires_grad})
    return {
        "model": model, "side": side, "steps": steps, "checkpoint_step": state.step,
        "checkpoint_bytes": len(checkpoints[0]), "frozen_unet_dtypes": unet_dtypes,
        "losses": [round(x, 5) for x in result.losses], "resumed_losses": [round(x, 5) for x in resumed.losses],
        "validation": [[p.step, round(p.identity_score, 4)] for p in result.validation],
        "best_step": result.best_step, "lora_max_abs_difference": difference, "lora_max_abs": scale,
        "resume_matches": difference <= tolerance and len(resumed.losses) == steps,
        "seconds": round(whole_seconds, 1),
        "graphed_max_abs_difference": graphed,
        "graphed_matches": graphed is None or graphed <= tolerance,
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0, 2),
        "lora_loads_in_renderer": _renders_with(folder, resumed.safetensors_bytes, side),
    }


def _graphed_difference(folder: Path, images: list, config, device: str, validator, eager: dict) -> float:
    """The same run with the UNet replayed as CUDA graphs: its LoRA against the eager run's."""
    from dataclasses import replace

    from safetensors.torch import load

    from services.trainer.training import TrainingRun

    run = TrainingRun(folder, images, replace(config, compile_mode="graphed"), device)
    run.run(validator=validator)
    return _max_difference(eager, load(run.lora_bytes()))


def _max_difference(first: dict, second: dict) -> float:
    return max(float((first[name].float() - second[name].float()).abs().max()) for name in first)


def _renders_with(folder: Path, lora: bytes, side: int) -> bool:
    """The delivered LoRA loads into the renderer's pipeline and changes its output."""
    import numpy as np

    from services.renderer.pipeline import PortraitRenderer, RenderParams, load_pipeline

    renderer = PortraitRenderer(load_pipeline(folder))
    params = RenderParams(prompt="a portrait photo of sks person", steps=4, width=side, height=side, seed=3)
    plain, adapted = renderer.render(params), renderer.render(params, "check", lora)
    return bool(np.abs(plain.astype(int) - adapted.astype(int)).max() > 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["sd15", "sdxl"], choices=("sd15", "sdxl"))
    parser.add_argument("--real-size", action="store_true", help="real widths (default: toy widths)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--device", default="cuda", help="cpu: a smoke run of this script (toy widths)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here (--device cpu runs this script's path at toy widths)")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for model in args.models:
            try:
                rows.append(check_model(model, args.real_size, args.steps, Path(work), args.device))
            except Exception as error:  # noqa: BLE001 - report and go on to the next model
                rows.append({"model": model, "error": f"{type(error).__name__}: {error}"[:2000]})
            print(json.dumps(rows[-1]) if args.json else _line(rows[-1]), flush=True)
    if any("error" in row or not (row["resume_matches"] and row["graphed_matches"]) for row in rows):
        raise SystemExit(1)


def _line(row: dict) -> str:
    if "error" in row:
        return f"{row['model']}: FAILED {row['error']}"
    return (f"{row['model']} {row['side']} px: {row['steps']} steps in {row['seconds']} s, frozen UNet "
            f"{'/'.join(row['frozen_unet_dtypes'])}, validation {row['validation']}, best step {row['best_step']}, "
            f"checkpoint at {row['checkpoint_step']} ({row['checkpoint_bytes'] / 1e6:.1f} MB), resume "
            f"{'matches' if row['resume_matches'] else 'DIFFERS'} (max |diff| {row['lora_max_abs_difference']:.2e} "
            f"of {row['lora_max_abs']:.2e}), graphed {_graphed(row)}, LoRA renders: {row['lora_loads_in_renderer']}, "
            f"peak {row['peak_gib']} GiB")


def _graphed(row: dict) -> str:
    if row["graphed_max_abs_difference"] is None:
        return "not run (CUDA only)"
    verdict = "matches eager" if row["graphed_matches"] else "DIFFERS from eager"
    return f"{verdict} (max |diff| {row['graphed_max_abs_difference']:.2e})"


if __name__ == "__main__":
    main()
