"""Measurements of one detected face: head pose from the 5 landmarks, sharpness, exposure, and a
perceptual hash of the aligned face. Pure numpy on arrays the caller already has."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

# dlib's 5-point model: 0/1 outer/inner corner of the eye on the image's right, 2/3 outer/inner
# corner of the eye on the image's left, 4 the base of the nose.
_RIGHT_EYE, _LEFT_EYE, _NOSE = (0, 1), (2, 3), 4
# Depth of the nose base in front of the eye-centre plane, in inter-ocular distances
# (anthropometric average: ~3 cm against ~6.3 cm between eye centres).
_NOSE_DEPTH_RATIO = 0.5
# Vertical eye-line to nose-base distance, in inter-ocular distances, of a level frontal face:
# the median over the London set (frontal by protocol) — pitch 0 by definition.
_LEVEL_NOSE_DROP_RATIO = 0.71
_HASH_SIDE = 32
_HASH_KEEP = 8


@dataclass(frozen=True)
class Pose:
    yaw: float
    roll: float
    pitch: float


@dataclass(frozen=True)
class Exposure:
    luminance: float  # mean face luminance, 0..1
    highlights: float  # share of face pixels clipped white
    shadows: float  # share of face pixels crushed black


def head_pose(points: np.ndarray) -> Pose:
    """Yaw, roll and an estimated pitch in degrees from the 5 landmarks (x, y rows).

    Roll is the eye line's angle. Yaw: the nose base, which sits in front of the eyes, shifts
    sideways from the eyes' midpoint as the head turns. Pitch: the eye-to-nose drop shrinks or
    grows against its level-head ratio as the head tips. Signs: positive yaw = nose towards the
    image's right; positive pitch = chin up.
    """
    left_eye = points[list(_LEFT_EYE)].mean(axis=0)
    right_eye = points[list(_RIGHT_EYE)].mean(axis=0)
    nose = points[_NOSE]
    eye_vector = right_eye - left_eye
    eye_distance = float(np.hypot(*eye_vector)) or 1.0
    roll = math.degrees(math.atan2(eye_vector[1], eye_vector[0]))
    # Into the face's own frame (eye line horizontal) so roll does not leak into yaw or pitch.
    angle = math.radians(roll)
    rotation = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
    offset = rotation @ (nose - (left_eye + right_eye) / 2) / eye_distance
    yaw = math.degrees(math.atan2(offset[0], _NOSE_DEPTH_RATIO))
    # A turned head also shortens the projected eye distance, which inflates the drop ratio.
    drop = offset[1] * math.cos(math.radians(yaw))
    # Nose at (drop0, depth) in the face frame tipped by pitch p: drop = drop0·cos p − depth·sin p.
    reach = math.hypot(_LEVEL_NOSE_DROP_RATIO, _NOSE_DEPTH_RATIO)
    tilt = math.atan2(_NOSE_DEPTH_RATIO, _LEVEL_NOSE_DROP_RATIO)
    pitch = math.degrees(math.acos(max(-1.0, min(1.0, drop / reach))) - tilt)
    return Pose(yaw=round(yaw, 1), roll=round(roll, 1), pitch=round(pitch, 1))


def face_region(grey: Image.Image, box: tuple[int, int, int, int], side: int) -> np.ndarray:
    """The face box resampled to side×side (area averaging when shrinking), as float32 0..255."""
    return np.asarray(grey.resize((side, side), Image.Resampling.BOX, box=box), dtype=np.float32)


def sharpness(face: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian; the face is already at a fixed size."""
    laplacian = (
        face[:-2, 1:-1] + face[2:, 1:-1] + face[1:-1, :-2] + face[1:-1, 2:] - 4.0 * face[1:-1, 1:-1]
    )
    return round(float(laplacian.var()), 2)


def exposure(face: np.ndarray) -> Exposure:
    return Exposure(
        luminance=round(float(face.mean()) / 255.0, 3),
        highlights=round(float((face >= 250).mean()), 3),
        shadows=round(float((face <= 5).mean()), 3),
    )


@functools.cache
def _dct_matrix(size: int) -> np.ndarray:
    rows = np.arange(size)[:, None]
    columns = np.arange(size)[None, :]
    matrix = np.cos(np.pi * (2 * columns + 1) * rows / (2 * size)) * math.sqrt(2 / size)
    matrix[0] /= math.sqrt(2)
    return matrix


def perceptual_hash(chip: np.ndarray) -> int:
    """64-bit pHash of an aligned face chip (RGB array): signs of the low DCT frequencies vs their median."""
    grey = Image.fromarray(chip).convert("L").resize((_HASH_SIDE, _HASH_SIDE), Image.Resampling.BOX)
    dct = _dct_matrix(_HASH_SIDE)
    coefficients = (dct @ np.asarray(grey, dtype=np.float64) @ dct.T)[:_HASH_KEEP, :_HASH_KEEP].flatten()
    bits = coefficients[1:] > np.median(coefficients[1:])
    return int(sum(1 << index for index, bit in enumerate(bits) if bit))


def hash_distance(first: int, second: int) -> int:
    return (first ^ second).bit_count()
