"""`studio train`: an operator tries a base model on a folder of photos without the stack.

In one process: photo checks and aligned crops (faceqa's checks), LoRA training with the base
model family's defaults, validation renders scored for identity every K steps, and the best LoRA
written to --out as pytorch_lora_weights.safetensors (loadable with `pipe.load_lora_weights`),
with a report.json beside it.
"""

from __future__ import annotations

import io
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from services.cli.arguments import whole_number
from services.cli.failures import fail
from services.cli.output_files import check_out_folder
from services.cli.photo_files import no_photos_message, photos_in
from services.trainer.modes import COMPILE_MODES, has_cuda

if TYPE_CHECKING:
    from PIL import Image

    from services.trainer.training import TrainingConfig

LORA_FILE = "pytorch_lora_weights.safetensors"


def add_parser(commands) -> None:
    train = commands.add_parser("train", help="train a LoRA on a folder of photos, in-process (no stack)")
    train.add_argument("--photos", required=True, help="folder of one person's photos")
    train.add_argument("--base-model", required=True, help="diffusers SD1.5- or SDXL-family folder")
    train.add_argument("--out", required=True, help="folder for the LoRA and report.json")
    train.add_argument("--steps", type=whole_number(1), help="training steps (default: the model family's)")
    train.add_argument("--validate-every", type=whole_number(1), help="validation every K steps (default: steps/4)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--rank", type=whole_number(1), help="LoRA rank (default: the model family's)")
    train.add_argument("--text-encoder", action="store_true", help="also train a text-encoder LoRA")
    train.add_argument("--gradient-checkpointing", action="store_true", help="less memory, slower steps")
    train.add_argument("--batch-size", type=whole_number(1), help="images per step (default: the model family's)")
    train.add_argument("--compile", default="off", choices=COMPILE_MODES,
                       help="GPU speed-ups: torch.compile of the whole UNet or of each block, or CUDA graphs "
                            "without compiling (docs/operations.md)")
    train.add_argument("--json", action="store_true")
    train.set_defaults(func=cmd_train)


def cmd_train(args) -> None:
    started = time.monotonic()
    if args.compile == "graphed" and not has_cuda(None):
        fail("--compile graphed replays CUDA graphs: this machine has no CUDA GPU", args.json)
    out = Path(args.out)
    check_out_folder(out, args.json)  # now, not after the training: a LoRA with nowhere to go is lost
    base_model = Path(args.base_model)
    _check_base_model(base_model, args.json)
    photo_files = photos_in(Path(args.photos))
    if not photo_files:
        fail(no_photos_message(Path(args.photos)), args.json)
    # The training stack (torch, diffusers, peft, dlib) loads only once the arguments are known to be usable.
    from services.trainer.identity import chip_embedding
    from services.trainer.training import TrainingRun
    from services.trainer.validation import IdentityValidator

    config = _config(args, base_model)
    photos, crops = check_photos(photo_files, config.resolution, quiet=args.json)
    if not crops:
        fail(f"no usable photo in {args.photos}: every photo was rejected", args.json)
    out.mkdir(parents=True, exist_ok=True)
    run = TrainingRun(base_model, crops, config)
    validator = IdentityValidator([chip_embedding(crop) for crop in crops], run.resolution, config.subject_token,
                                  seed=args.seed)
    with tqdm(total=config.steps, desc="training", unit="step", disable=args.json, file=sys.stderr) as bar:
        def progress(report) -> None:
            bar.update(report.step - bar.n)
            best = max((p.identity_score for p in report.validation), default=None)
            bar.set_postfix(loss=f"{report.loss:.4f}", identity="-" if best is None else f"{best:.3f}")

        lora = run.run(progress=progress, validator=validator)
    (out / LORA_FILE).write_bytes(lora.safetensors_bytes)
    report = {
        "lora": str((out / LORA_FILE).resolve()), "base_model_id": lora.base_model_id, "family_defaults": {
            "rank": config.rank, "alpha": config.alpha, "learning_rate": config.learning_rate,
            "batch_size": config.batch_size, "resolution": config.resolution},
        "steps": lora.steps, "final_loss": lora.final_loss, "best_step": lora.best_step,
        "best_identity_score": lora.best_identity_score, "validation": [asdict(p) for p in lora.validation],
        "photos": photos, "seconds": round(time.monotonic() - started, 2),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report) if args.json else _summary(report))


def _check_base_model(base_model: Path, quiet: bool) -> None:
    from services.common.basemodel import base_model_id

    try:
        base_model_id(base_model)
    except FileNotFoundError as error:
        fail(str(error), quiet)


def _config(args, base_model: Path) -> TrainingConfig:
    """The base model family's defaults, with what the flags override."""
    from services.trainer.training import TrainingConfig

    config = TrainingConfig.for_base_model(
        base_model, steps=args.steps, seed=args.seed, rank=args.rank, alpha=args.rank,
        train_text_encoder=args.text_encoder, gradient_checkpointing=args.gradient_checkpointing,
        batch_size=args.batch_size, compile_mode=args.compile,
    )
    validate_every = args.validate_every or max(1, config.steps // 4)
    return TrainingConfig.for_base_model(base_model, **{**asdict(config), "validate_every": validate_every})


def check_photos(files: list[Path], resolution: int, quiet: bool) -> tuple[list[dict], list[Image.Image]]:
    """faceqa's checks on every photo; the accepted ones' aligned crops at the training resolution.
    QUIET (--json): no progress bar."""
    from PIL import Image  # here: the CLI also runs where no photo is read (the privacy image has no Pillow)

    from services.faceqa.checks import check_photo

    verdicts, crops = [], []
    for path in tqdm(files, desc="checking photos", unit="photo", disable=quiet, file=sys.stderr):
        result = check_photo(path.read_bytes(), crop_size=resolution)
        verdicts.append({"file": path.name, "accepted": result.accepted, "reasons": list(result.reasons)})
        if result.accepted and result.crop_png:
            crops.append(Image.open(io.BytesIO(result.crop_png)).convert("RGB"))
    return verdicts, crops


def _summary(report: dict) -> str:
    accepted = sum(photo["accepted"] for photo in report["photos"])
    rejected = [f"{p['file']} ({', '.join(p['reasons'])})" for p in report["photos"] if not p["accepted"]]
    curve = ", ".join(f"{p['step']}: {p['identity_score']:.3f}" for p in report["validation"]) or "not scored"
    lines = [
        f"photos: {accepted} of {len(report['photos'])} accepted" + (f"; rejected: {'; '.join(rejected)}" if rejected
                                                                     else ""),
        f"trained {report['steps']} steps, final loss {report['final_loss']:.4f}",
        f"identity by step: {curve}; delivered step {report['best_step']}",
        f"LoRA for base model {report['base_model_id']}: {report['lora']} ({report['seconds']} s)",
    ]
    return "\n".join(lines)
