"""Unit tests for the face measurements, the threshold config and the set judgement (synthetic data)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.faceqa import reasons
from services.faceqa.checks import PhotoCheck
from services.faceqa.measures import Exposure, Pose, exposure, hash_distance, head_pose, perceptual_hash, sharpness
from services.faceqa.photoset import LOW_POSE_VARIETY, SetPhoto, judge_set
from services.faceqa.thresholds import DEFAULTS, Thresholds

# A level frontal face: eye corners at x 40..60 / 140..160, nose base centred 71 px below the eyes
# (the level drop ratio 0.71 of the 100 px eye distance).
LEVEL = np.array([(160, 100), (140, 100), (40, 100), (60, 100), (100, 171)], dtype=np.float64)


def rotated(points: np.ndarray, degrees: float) -> np.ndarray:
    angle = math.radians(degrees)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    centre = points.mean(axis=0)
    return (points - centre) @ rotation.T + centre


def test_level_frontal_face_has_no_rotation() -> None:
    assert head_pose(LEVEL) == Pose(yaw=0.0, roll=0.0, pitch=0.0)


@pytest.mark.parametrize("degrees", [-25, -10, 10, 25])
def test_in_plane_rotation_is_roll_only(degrees: float) -> None:
    pose = head_pose(rotated(LEVEL, degrees))
    assert pose.roll == pytest.approx(degrees, abs=0.2)
    assert abs(pose.yaw) < 0.5 and abs(pose.pitch) < 0.5


def test_nose_shifted_sideways_is_yaw_and_raised_nose_is_chin_up() -> None:
    turned = LEVEL.copy()
    turned[4, 0] += 50  # half an eye distance: atan(0.5 / 0.5) = 45 degrees
    assert head_pose(turned).yaw == pytest.approx(45, abs=0.5)
    raised = LEVEL.copy()
    raised[4, 1] -= 20
    assert head_pose(raised).pitch > 10


def test_sharpness_and_exposure_figures() -> None:
    flat = np.full((64, 64), 128.0, dtype=np.float32)
    noisy = flat + np.random.default_rng(0).normal(0, 20, flat.shape).astype(np.float32)
    assert sharpness(flat) == 0 and sharpness(noisy) > 1000
    clipped = np.concatenate([np.full((32, 64), 255.0), np.full((32, 64), 0.0)]).astype(np.float32)
    measured = exposure(clipped)
    assert measured.highlights == 0.5 and measured.shadows == 0.5 and measured.luminance == 0.5


def test_perceptual_hash_is_stable_under_small_noise_and_differs_for_other_images() -> None:
    rng = np.random.default_rng(1)
    chip = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    noisy = np.clip(chip.astype(int) + rng.integers(-3, 4, chip.shape), 0, 255).astype(np.uint8)
    other = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    assert hash_distance(perceptual_hash(chip), perceptual_hash(noisy)) <= 6
    assert hash_distance(perceptual_hash(chip), perceptual_hash(other)) > 16


def test_thresholds_come_from_the_environment() -> None:
    tuned = Thresholds.from_env({"STUDIO_FACEQA_IDENTITY_MAX_DISTANCE": "0.45", "STUDIO_FACEQA_MIN_FACE_PX": "96"})
    assert tuned.identity_max_distance == 0.45 and tuned.min_face_px == 96
    assert Thresholds.from_env({}) == DEFAULTS


def accepted(embedding: list[float], yaw: float = 0.0, face_hash: int = 0) -> PhotoCheck:
    return PhotoCheck(True, embedding=tuple(embedding), pose=Pose(yaw, 0, 0), face_hash=face_hash,
                      exposure=Exposure(0.5, 0, 0), sharpness=100.0)


def test_earlier_photos_anchor_identity_and_duplicates() -> None:
    person = [0.0] * 128
    earlier = [SetPhoto("headshot", True, accepted(person)), SetPhoto("ref", False, accepted([0.2] + [0.0] * 127))]
    stranger = SetPhoto("stranger", False, accepted([0.8] + [0.0] * 127, face_hash=1 << 40))
    copy = SetPhoto("copy", False, accepted([0.21] + [0.0] * 127))
    fine = SetPhoto("fine", False, accepted([0.1, 0.3] + [0.0] * 126, yaw=20, face_hash=(1 << 63) - 1))
    summary = judge_set(earlier, [stranger, copy, fine], min_accepted_photos=3)
    assert stranger.check.reasons == (reasons.IDENTITY_MISMATCH,) and stranger.identity_distance == 0.8
    assert copy.check.reasons == (reasons.DUPLICATE,) and copy.duplicate_of == "ref"
    assert fine.check.accepted and summary.accepted_photos == 3 and summary.sufficient
    assert LOW_POSE_VARIETY not in summary.advice and summary.yaw_range == (0.0, 20.0)
