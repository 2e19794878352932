"""In-process quality check of one photo: decoding, faces, face size, pose, sharpness, exposure,
plus what the set checks need (embedding, perceptual hash) and the aligned training crop.

Pure function of the bytes (plus the dlib models); no I/O besides loading the models once.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass, field

import dlib
import numpy as np
from PIL import Image

from services.faceqa import reasons as codes
from services.faceqa.decode import decode_upright
from services.faceqa.measures import Exposure, Pose, exposure, face_region, head_pose, perceptual_hash, sharpness
from services.faceqa.models import face_models
from services.faceqa.reasons import message_for
from services.faceqa.recency import capture_time
from services.faceqa.thresholds import DEFAULTS, Thresholds

# Kept for callers of the first version of this module.
MAX_SIDE_PX = DEFAULTS.max_side_px
MAX_PIXELS = DEFAULTS.max_pixels
DETECTION_LONG_SIDE_PX = DEFAULTS.detection_long_side_px
_HASH_CHIP_PX = 64


@dataclass(frozen=True)
class PhotoCheck:
    """Outcome of check_photo.

    face_box is (left, top, right, bottom) in the upright image's pixels, right and bottom
    exclusive (Pillow's crop convention). width and height are those of the upright image, 0 when
    the photo was rejected before decoding. Measurements are present whenever a face was found,
    the embedding and crop only when the photo passed every per-photo check.
    """

    accepted: bool
    reasons: tuple[str, ...] = ()
    messages: tuple[str, ...] = ()
    face_box: tuple[int, int, int, int] | None = None
    embedding: tuple[float, ...] | None = None
    crop_png: bytes | None = None
    width: int = 0
    height: int = 0
    pose: Pose | None = None
    sharpness: float | None = None
    exposure: Exposure | None = None
    face_hash: int | None = None
    background_faces: int = 0
    notes: tuple[str, ...] = field(default=())
    # EXIF capture time (seconds since the epoch), None when the file has no date.
    captured_at: float | None = None


def check_photo(
    data: bytes, *, crop_size: int = 64, headshot: bool = False, thresholds: Thresholds = DEFAULTS
) -> PhotoCheck:
    """Check one photo on its own; the headshot must also face the camera."""
    if crop_size < 1:
        raise ValueError(f"crop_size must be positive, got {crop_size}")
    decoded = decode_upright(data, thresholds)
    if decoded.image is None:
        return rejected(decoded.reason)
    checked = _check_faces(decoded.image, crop_size, headshot, thresholds)
    return dataclasses.replace(checked, captured_at=capture_time(data))


def _check_faces(upright: Image.Image, crop_size: int, headshot: bool, thresholds: Thresholds) -> PhotoCheck:
    width, height = upright.size
    faces = sorted(detect_faces(upright, thresholds), key=lambda rect: rect.area(), reverse=True)
    if not faces:
        return rejected(codes.NO_FACE, width, height)
    face = faces[0]
    if len(faces) > 1 and face.area() < thresholds.dominant_face_area_ratio * faces[1].area():
        return rejected(codes.MULTIPLE_FACES, width, height)
    pixels = np.asarray(upright)
    models = face_models()
    landmarks = models.landmarks(pixels, face)
    points = np.array([(landmarks.part(i).x, landmarks.part(i).y) for i in range(5)], dtype=np.float64)
    box = _clamped_box(face, width, height)
    region = face_region(upright.convert("L"), box, thresholds.sharpness_face_px)
    measured = {
        "face_box": box, "width": width, "height": height, "pose": head_pose(points),
        "sharpness": sharpness(_gain_normalised(region)), "exposure": exposure(region),
        "background_faces": len(faces) - 1,
    }
    problems = _cut_off(face, width, height, thresholds)
    problems += _quality_problems(face.width(), headshot, thresholds, **measured)
    if problems:
        return PhotoCheck(False, problems, tuple(map(message_for, problems)), **measured)
    notes = (codes.BACKGROUND_FACES,) if len(faces) > 1 else ()
    return PhotoCheck(
        True, (), (), embedding=models.descriptor(pixels, landmarks),
        crop_png=_png(dlib.get_face_chip(pixels, landmarks, size=crop_size, padding=thresholds.crop_padding)),
        face_hash=perceptual_hash(dlib.get_face_chip(pixels, landmarks, size=_HASH_CHIP_PX)),
        notes=notes, **measured,
    )


def _cut_off(face: dlib.rectangle, width: int, height: int, thresholds: Thresholds) -> tuple[str, ...]:
    """FACE_CUT_OFF when the detection reaches past the image's edge: the face is partly missing and
    its training crop would be padded with black where the head should be."""
    face_width, face_height = face.width(), face.height()
    outside = max(
        -face.left() / face_width, (face.right() + 1 - width) / face_width,
        -face.top() / face_height, (face.bottom() + 1 - height) / face_height,
    )
    return (codes.FACE_CUT_OFF,) if outside > thresholds.max_face_outside_ratio else ()


def _quality_problems(
    face_width: int, headshot: bool, thresholds: Thresholds, *, pose: Pose, sharpness: float,
    exposure: Exposure, **_: object,
) -> tuple[str, ...]:
    problems = []
    if face_width < thresholds.min_face_px:
        problems.append(codes.FACE_TOO_SMALL)
    badly_lit = _exposure_problem(exposure, thresholds)
    if badly_lit:
        problems.append(badly_lit)
    elif sharpness < thresholds.min_sharpness:
        # Judged only on a usable exposure: clipping and noise make the figure meaningless.
        problems.append(codes.BLURRY)
    if headshot and not is_frontal(pose, thresholds):
        problems.append(codes.NOT_FRONTAL)
    return tuple(problems)


def _exposure_problem(measured: Exposure, thresholds: Thresholds) -> str | None:
    if measured.luminance < thresholds.min_face_luminance or measured.shadows > thresholds.max_crushed_shadows:
        return codes.UNDEREXPOSED
    if measured.luminance > thresholds.max_face_luminance or measured.highlights > thresholds.max_clipped_highlights:
        return codes.OVEREXPOSED
    return None


def is_frontal(pose: Pose, thresholds: Thresholds = DEFAULTS) -> bool:
    return (
        abs(pose.yaw) <= thresholds.max_headshot_yaw_deg
        and abs(pose.roll) <= thresholds.max_headshot_roll_deg
        and abs(pose.pitch) <= thresholds.max_headshot_pitch_deg
    )


def _gain_normalised(region: np.ndarray) -> np.ndarray:
    """The face scaled to a mean of 128, so sharpness does not also measure brightness."""
    return region * (128.0 / max(float(region.mean()), 1.0))


def detect_faces(upright: Image.Image, thresholds: Thresholds = DEFAULTS) -> list[dlib.rectangle]:
    """HOG detections on a copy scaled to the detection size, mapped back to upright pixels.

    One pass without upsampling finds faces down to 1/8 of the long side; only when it finds
    nothing does a second, upsampled (4× slower) pass look for smaller faces.
    """
    width, height = upright.size
    scale = thresholds.detection_long_side_px / max(width, height)
    small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = upright if small_size == upright.size else upright.resize(small_size, Image.Resampling.BILINEAR)
    pixels = np.asarray(small)
    detector = face_models().detector
    detections = detector(pixels, 0) or detector(pixels, 1)
    x_factor, y_factor = width / small_size[0], height / small_size[1]
    return [_scale_rect(rect, x_factor, y_factor) for rect in detections]


def _scale_rect(rect: dlib.rectangle, x_factor: float, y_factor: float) -> dlib.rectangle:
    # dlib rectangles are inclusive of right/bottom, so scale the exclusive edge and step back.
    return dlib.rectangle(
        round(rect.left() * x_factor),
        round(rect.top() * y_factor),
        round((rect.right() + 1) * x_factor) - 1,
        round((rect.bottom() + 1) * y_factor) - 1,
    )


def _clamped_box(face: dlib.rectangle, width: int, height: int) -> tuple[int, int, int, int]:
    """The detection as (left, top, right, bottom), right/bottom exclusive, kept inside the image."""
    left, top = min(max(face.left(), 0), width - 1), min(max(face.top(), 0), height - 1)
    return (left, top, min(max(face.right() + 1, left + 1), width), min(max(face.bottom() + 1, top + 1), height))


def _png(chip: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(chip, "RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def rejected(reason: str, width: int = 0, height: int = 0) -> PhotoCheck:
    return PhotoCheck(accepted=False, reasons=(reason,), messages=(message_for(reason),), width=width, height=height)


@dataclass(frozen=True)
class FaceEmbedding:
    face_box: tuple[int, int, int, int]
    embedding: tuple[float, ...]


def main_face_embedding(data: bytes, thresholds: Thresholds = DEFAULTS) -> FaceEmbedding | None:
    """The largest face's embedding, with no quality judgement (for scoring generated images)."""
    decoded = decode_upright(data, thresholds)
    if decoded.image is None:
        return None
    faces = detect_faces(decoded.image, thresholds)
    if not faces:
        return None
    face = max(faces, key=lambda rect: rect.area())
    pixels = np.asarray(decoded.image)
    models = face_models()
    embedding = models.descriptor(pixels, models.landmarks(pixels, face))
    return FaceEmbedding(_clamped_box(face, *decoded.image.size), embedding)
