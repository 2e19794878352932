"""Validation during training: render a few prompts with the LoRA as it is now, score identity
with an IdentityScorer (in-process dlib or faceqa over gRPC: services/trainer/scoring.py)."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

from services.trainer.components import BaseModelParts
from services.trainer.scoring import IdentityScorer, InProcessScorer

log = logging.getLogger(__name__)

VALIDATION_PROMPTS = (
    "a portrait photo of {token}, studio lighting, looking at the camera",
    "a photo of {token} smiling, natural light",
)
INFERENCE_STEPS = {"tiny": 2, "sd15": 20, "sdxl": 20}


@dataclass
class IdentityValidator:
    """Mean identity score of the validation renders; None (an unscored point) when the scorer
    could not score them. `scorer` may also be the crops' embeddings, scored in-process."""

    scorer: IdentityScorer | list[np.ndarray]
    resolution: int
    subject_token: str
    seed: int = 1234

    def __post_init__(self) -> None:
        if isinstance(self.scorer, list):
            self.scorer = InProcessScorer(self.scorer)

    def __call__(self, parts: BaseModelParts, step: int) -> float | None:
        started = time.monotonic()
        pipeline = _pipeline(parts)
        images = []
        for index, prompt in enumerate(VALIDATION_PROMPTS):
            device = parts.unet.device
            with _autocast(device):
                images.append(pipeline(
                    prompt.format(token=self.subject_token), num_inference_steps=INFERENCE_STEPS[parts.family],
                    height=self.resolution, width=self.resolution,
                    generator=torch.Generator(device=device).manual_seed(self.seed + index),
                ).images[0])
        rendered = time.monotonic()
        scores = self.scorer.score(images)
        score = None if scores is None else float(np.mean(scores))
        log.info("validation at step %d: %d renders in %.1f s, scored in %.1f s: %s", step, len(images),
                 rendered - started, time.monotonic() - rendered, "unscored" if score is None else f"{score:.3f}")
        return score


def _pipeline(parts: BaseModelParts):
    scheduler = DDIMScheduler.from_config(parts.noise_scheduler.config)
    if parts.is_sdxl:
        pipeline = StableDiffusionXLPipeline(
            vae=parts.vae, text_encoder=parts.text_encoders[0], text_encoder_2=parts.text_encoders[1],
            tokenizer=parts.tokenizers[0], tokenizer_2=parts.tokenizers[1], unet=parts.unet, scheduler=scheduler,
        )
    else:
        pipeline = StableDiffusionPipeline(
            vae=parts.vae, text_encoder=parts.text_encoders[0], tokenizer=parts.tokenizers[0], unet=parts.unet,
            scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
