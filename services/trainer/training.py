"""In-process LoRA training on one subject's photos: SD1.5-family, SDXL-family or the tiny model.

The VAE latents of the photos and the caption's embeddings never change during a run, so they are
computed once up front; each step then only runs the UNet (services/trainer/step.py). A run can
be checkpointed (RunState) and resumed; on a CPU a resumed run gives the same bytes as one that was
never interrupted. Every `validate_every` steps a validator scores the current LoRA and the best
one is what the run delivers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from services.common.basemodel import base_model_id
from services.trainer.components import BaseModelParts, Conditioning, encode_caption, encode_latents, load_parts
from services.trainer.families import defaults_for
from services.trainer.lora import add_lora, lora_safetensors_bytes, trainable_parameters
from services.trainer.step import LoraStep, freeze_in_bf16


@dataclass(frozen=True)
class TrainingConfig:
    steps: int = 20
    rank: int = 4
    alpha: int | None = None
    learning_rate: float = 1e-3
    batch_size: int = 2
    seed: int = 0
    subject_token: str = "sks person"
    resolution: int | None = None  # None: the base model's own
    train_text_encoder: bool = False
    gradient_checkpointing: bool = False
    compile_mode: str = "off"  # services/trainer/step.py COMPILE_MODES
    validate_every: int = 0  # 0: no validation, the last step's LoRA is delivered
    checkpoint_every: int = 0  # 0: no checkpoints

    @classmethod
    def for_base_model(cls, path: Path, **overrides) -> TrainingConfig:
        """The base model family's documented defaults (services/trainer/families.py), overridden."""
        family = defaults_for(path)
        config = cls(
            steps=family.steps, rank=family.rank, alpha=family.alpha, learning_rate=family.learning_rate,
            batch_size=family.batch_size, resolution=family.resolution,
        )
        return replace(config, **{key: value for key, value in overrides.items() if value is not None})

    @property
    def caption(self) -> str:
        return f"a photo of {self.subject_token}"


# identity_score of a validation point whose renders could not be scored (faceqa unreachable):
# below every real score (0..1), so it is never the best and reads as "no score" in events.
UNSCORED = -1.0


@dataclass(frozen=True)
class ValidationPoint:
    step: int
    identity_score: float
    loss: float

    @property
    def scored(self) -> bool:
        return self.identity_score != UNSCORED


@dataclass(frozen=True)
class TrainingProgress:
    step: int
    total_steps: int
    loss: float
    eta_seconds: float = 0.0
    validation: tuple[ValidationPoint, ...] = ()


@dataclass
class RunState:
    """Everything a resumed run needs (what a checkpoint holds)."""

    step: int = 0
    losses: list[float] = field(default_factory=list)
    curve: list[ValidationPoint] = field(default_factory=list)
    best_step: int = 0
    best_score: float = -1.0
    best_lora: bytes = b""
    trainable: dict[str, torch.Tensor] = field(default_factory=dict)
    optimizer: dict = field(default_factory=dict)
    generator: torch.Tensor | None = None


@dataclass(frozen=True)
class TrainedLora:
    safetensors_bytes: bytes
    base_model_id: str
    steps: int
    final_loss: float
    losses: tuple[float, ...]
    seconds: float
    best_step: int = 0
    best_identity_score: float = 0.0
    validation: tuple[ValidationPoint, ...] = ()


class TrainingCancelled(Exception):
    """Raised when `should_stop` asked the run to end before its last step."""


class ResumeMismatch(ValueError):
    """The RunState to resume from does not fit this run (other adapters, rank or optimiser)."""


# Scores the LoRA as it is now (the UNet in `parts` carries it); None: not scored this time (the
# point is recorded as UNSCORED and cannot become the best).
Validator = Callable[[BaseModelParts, int], float | None]


class TrainingRun:
    def __init__(self, base_model: Path, images: Sequence[Image.Image], config: TrainingConfig,
                 device: str | None = None, resume: RunState | None = None) -> None:
        _check_arguments(images, config)
        self.base_model = Path(base_model)
        self.base_model_id = base_model_id(self.base_model)
        self.config = config
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.parts = load_parts(self.base_model)
        self.resolution = config.resolution or defaults_for(self.base_model).resolution
        self.alpha = config.alpha or config.rank
        add_lora(self.parts, config.rank, self.alpha, config.seed, text_encoder=config.train_text_encoder)
        self.trainable = trainable_parameters(self.parts, config.train_text_encoder)
        self._place_on_device()
        self.latents = encode_latents(self.parts.vae, prepare_pixels(images, self.resolution).to(self.device))
        self.step = LoraStep(
            self.parts.unet, self.parts.noise_scheduler, self.trainable.values(), config.learning_rate,
            device=self.device, compile_mode=config.compile_mode,
        )
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.state = RunState()
        if resume is not None:
            self._restore(resume)
        self._cached_conditioning = None if config.train_text_encoder else self._conditioning()

    def run(self, progress: Callable[[TrainingProgress], None] | None = None,
            should_stop: Callable[[], bool] | None = None,
            on_checkpoint: Callable[[RunState], None] | None = None,
            validator: Validator | None = None) -> TrainedLora:
        started, first_step = time.monotonic(), self.state.step + 1
        total = self.config.steps
        for step in range(first_step, total + 1):
            if should_stop is not None and should_stop():
                raise TrainingCancelled(f"stopped before step {step} of {total}")
            picks = torch.randint(len(self.latents), (self.config.batch_size,), generator=self.generator,
                                  device=self.device)
            loss = self.step(self.latents[picks], self._cached_conditioning or self._conditioning(), self.generator)
            self._record_loss(float(loss.item()))
            self.state.step = step
            if validator is not None and self._validates_at(step):
                self._validate(validator, step)
            if progress is not None:
                eta = (time.monotonic() - started) / (step - first_step + 1) * (total - step)
                progress(TrainingProgress(step, total, self.state.losses[-1], eta, tuple(self.state.curve)))
            if on_checkpoint is not None and self.config.checkpoint_every and step % self.config.checkpoint_every == 0 \
                    and step < total:
                on_checkpoint(self.snapshot())
        return self._result(time.monotonic() - started)

    def lora_bytes(self) -> bytes:
        return lora_safetensors_bytes(
            self.parts, self.config.rank, self.alpha, self.base_model_id, text_encoder=self.config.train_text_encoder
        )

    def snapshot(self) -> RunState:
        state = self.state
        return replace(
            state, losses=list(state.losses), curve=list(state.curve),
            trainable={name: p.detach().to("cpu", copy=True) for name, p in self.trainable.items()},
            optimizer=_to_cpu(self.step.optimizer.state_dict()), generator=self.generator.get_state().cpu(),
        )

    def _place_on_device(self) -> None:
        if self.device.type == "cuda":
            freeze_in_bf16(self.parts.unet)
        for module in self.parts.frozen_modules():
            module.to(self.device)
        if self.config.gradient_checkpointing:
            self.parts.unet.enable_gradient_checkpointing()
        for module in self.parts.trainable_modules(self.config.train_text_encoder):
            module.train()

    def _conditioning(self) -> Conditioning:
        with torch.set_grad_enabled(self.config.train_text_encoder):
            return encode_caption(self.parts, self.config.caption, self.resolution)

    def _restore(self, state: RunState) -> None:
        missing = set(self.trainable) ^ set(state.trainable)
        if missing:
            raise ResumeMismatch(f"{len(missing)} adapter tensors differ from this run's")
        try:
            with torch.no_grad():
                for name, parameter in self.trainable.items():
                    parameter.copy_(state.trainable[name])
            self.step.optimizer.load_state_dict(state.optimizer)
        except (RuntimeError, ValueError, KeyError) as error:
            raise ResumeMismatch(str(error)) from error
        if state.generator is not None:
            self.generator.set_state(state.generator)
        self.state = replace(state, trainable={}, optimizer={}, generator=None)

    def _record_loss(self, value: float) -> None:
        if not math.isfinite(value):
            raise FloatingPointError(f"training loss became {value}; lower the learning rate")
        self.state.losses.append(value)

    def _validates_at(self, step: int) -> bool:
        every = self.config.validate_every
        return bool(every) and (step % every == 0 or step == self.config.steps)

    def _validate(self, validator: Validator, step: int) -> None:
        for module in self.parts.trainable_modules(self.config.train_text_encoder):
            module.eval()
        try:
            with torch.no_grad():
                score = validator(self.parts, step)
        finally:
            for module in self.parts.trainable_modules(self.config.train_text_encoder):
                module.train()
        self.state.curve.append(ValidationPoint(step, UNSCORED if score is None else float(score),
                                                self.state.losses[-1]))
        if score is None:
            return
        if score >= self.state.best_score:  # ties go to the later, longer-trained LoRA
            self.state.best_step, self.state.best_score, self.state.best_lora = step, float(score), self.lora_bytes()

    def _result(self, seconds: float) -> TrainedLora:
        state = self.state
        delivered = state.best_lora or self.lora_bytes()
        return TrainedLora(
            safetensors_bytes=delivered, base_model_id=self.base_model_id, steps=self.config.steps,
            final_loss=state.losses[-1], losses=tuple(state.losses), seconds=seconds,
            best_step=state.best_step if state.best_lora else self.config.steps,
            best_identity_score=max(state.best_score, 0.0), validation=tuple(state.curve),
        )


def train_lora(base_model: Path, images: Sequence[Image.Image], *, steps: int = 20, rank: int = 4,
               alpha: int | None = None, learning_rate: float = 1e-3, batch_size: int = 2, seed: int = 0,
               subject_token: str = "sks person", device: str | None = None,
               progress: Callable[[TrainingProgress], None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> TrainedLora:
    """Train a LoRA on `images` captioned "a photo of {subject_token}"; deterministic per seed on CPU."""
    config = TrainingConfig(steps=steps, rank=rank, alpha=alpha, learning_rate=learning_rate,
                            batch_size=batch_size, seed=seed, subject_token=subject_token)
    return TrainingRun(base_model, images, config, device).run(progress, should_stop)


def prepare_pixels(images: Sequence[Image.Image], resolution: int) -> torch.Tensor:
    """RGB images resized and centre-cropped to resolution², as an N×3×H×W tensor in [-1, 1]."""
    squares = [
        ImageOps.fit(image.convert("RGB"), (resolution, resolution), method=Image.Resampling.BICUBIC)
        for image in images
    ]
    array = np.stack([np.asarray(square, dtype=np.float32) for square in squares])
    return torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1.0


def _check_arguments(images: Sequence[Image.Image], config: TrainingConfig) -> None:
    if not images:
        raise ValueError("at least one training image is needed")
    for name in ("steps", "rank", "batch_size"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(config, name)}")


def _to_cpu(value):
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: _to_cpu(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(item) for item in value)
    return value
