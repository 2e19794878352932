"""dlib face models, loaded by path once per process.

The model files come from the installed `face_recognition_models` package, but that package is
never imported: its __init__ needs pkg_resources, which may be absent. Only the 5-point landmark
model is used; the 68-point model's training data forbids commercial use.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import dlib
import numpy as np

MODELS_DIR_ENV = "STUDIO_FACE_MODELS_DIR"
SHAPE_PREDICTOR_FILE = "shape_predictor_5_face_landmarks.dat"
FACE_ENCODER_FILE = "dlib_face_recognition_resnet_model_v1.dat"


def models_dir() -> Path:
    """Directory holding the dlib model files: $STUDIO_FACE_MODELS_DIR, else the installed package's."""
    override = os.environ.get(MODELS_DIR_ENV)
    if override:
        return Path(override)
    # find_spec on a top-level name locates the package without running its __init__.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"face_recognition_models is not installed; install it or set {MODELS_DIR_ENV}"
        )
    return Path(spec.submodule_search_locations[0]) / "models"


def _model_path(name: str) -> str:
    path = models_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"dlib model file missing: {path} (set {MODELS_DIR_ENV} to override)")
    return str(path)


@dataclass(frozen=True)
class FaceModels:
    detector: dlib.fhog_object_detector
    shape_predictor: dlib.shape_predictor
    face_encoder: dlib.face_recognition_model_v1
    # The ResNet keeps per-call state inside the network, so concurrent calls must not overlap.
    _encoder_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def landmarks(self, image: np.ndarray, face: dlib.rectangle) -> dlib.full_object_detection:
        return self.shape_predictor(image, face)

    def descriptor(self, image: np.ndarray, landmarks: dlib.full_object_detection) -> tuple[float, ...]:
        """128-d embedding of the face the landmarks point at."""
        with self._encoder_lock:
            vector = self.face_encoder.compute_face_descriptor(image, landmarks)
        return tuple(float(value) for value in vector)


@functools.cache
def face_models() -> FaceModels:
    """The HOG detector, 5-point landmark model and ResNet encoder, loaded on first use."""
    return FaceModels(
        detector=dlib.get_frontal_face_detector(),
        shape_predictor=dlib.shape_predictor(_model_path(SHAPE_PREDICTOR_FILE)),
        face_encoder=dlib.face_recognition_model_v1(_model_path(FACE_ENCODER_FILE)),
    )
