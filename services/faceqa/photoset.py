"""Checks across a subject's photos: identity against the headshot (and the consensus of the photos
that match it), near-duplicates, and the set verdict (enough accepted photos, a headshot, a varied set)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from services.faceqa import reasons as codes
from services.faceqa.checks import PhotoCheck
from services.faceqa.measures import hash_distance
from services.faceqa.thresholds import DEFAULTS, Thresholds

TOO_FEW_PHOTOS = "TOO_FEW_PHOTOS"
NO_HEADSHOT = "NO_HEADSHOT"
LOW_POSE_VARIETY = "LOW_POSE_VARIETY"
LOW_LIGHT_VARIETY = "LOW_LIGHT_VARIETY"
ADVICE_MESSAGES = {
    LOW_POSE_VARIETY: "Your photos are all taken from the same angle. Add some with your head turned a little "
    "to each side.",
    LOW_LIGHT_VARIETY: "Your photos all have the same light. Add some taken indoors and outdoors, or by a window.",
}


@dataclass
class SetPhoto:
    """One photo of the set: its own check plus what the set checks add."""

    photo_id: str
    headshot: bool
    check: PhotoCheck
    identity_distance: float | None = None
    consensus_distance: float | None = None
    duplicate_of: str = ""

    @property
    def embedding(self) -> np.ndarray:
        return np.asarray(self.check.embedding, dtype=np.float64)


@dataclass(frozen=True)
class SetSummary:
    sufficient: bool
    accepted_photos: int
    min_accepted_photos: int
    recommended_photos: int
    headshot_accepted: bool
    problems: tuple[str, ...]
    messages: tuple[str, ...]
    yaw_range: tuple[float, float] = (0.0, 0.0)
    pitch_range: tuple[float, float] = (0.0, 0.0)
    luminance_range: tuple[float, float] = (0.0, 0.0)
    advice: tuple[str, ...] = field(default=())
    # Accepted photos with the OLD_PHOTO note: used, but counted apart (the customer may look different now).
    old_photos: int = 0
    old_photos_message: str = ""


def consensus(embeddings: list[np.ndarray]) -> np.ndarray:
    """Coordinate-wise median: one stranger in a set of the same person barely moves it."""
    return np.median(np.stack(embeddings), axis=0)


def judge_set(
    accepted_before: list[SetPhoto], new: list[SetPhoto], thresholds: Thresholds = DEFAULTS,
    min_accepted_photos: int | None = None,
) -> SetSummary:
    """Adds IDENTITY_MISMATCH and DUPLICATE to the new photos (in place) and judges the whole set.

    accepted_before are photos accepted by earlier uploads (their verdicts stand). Among the new
    photos the headshot is judged first, then the others in order; an earlier photo wins a
    duplicate pair. The subject's first accepted headshot anchors identity: every other photo, a
    later headshot too, must match it (and the consensus of the photos that match it). Photos
    judged while the subject has no accepted headshot get no identity check here: ingest sends
    them again, as new photos, with the upload that brings the first headshot.
    """
    kept = list(accepted_before)
    for photo in sorted((p for p in new if p.check.accepted), key=lambda p: not p.headshot):
        problems = _identity_problems(photo, kept, thresholds) + _duplicate_problems(photo, kept, thresholds)
        if problems:
            _reject(photo, problems)
        else:
            kept.append(photo)
    return summarise(kept, thresholds, min_accepted_photos)


def anchor_of(photos: list[SetPhoto]) -> SetPhoto | None:
    """The first headshot: the identity every other photo of the subject must match."""
    return next((p for p in photos if p.headshot), None)


def _identity_problems(photo: SetPhoto, kept: list[SetPhoto], thresholds: Thresholds) -> tuple[str, ...]:
    anchor = anchor_of(kept)
    if anchor is None:
        return ()
    limit = thresholds.identity_max_distance
    photo.identity_distance = round(_distance(photo, anchor), 4)
    # Only photos that match the headshot shape the consensus: strangers among them cannot outvote it.
    matching = [p.embedding for p in kept if _distance(p, anchor) <= limit]
    if len(matching) >= thresholds.consensus_min_faces:
        photo.consensus_distance = round(float(np.linalg.norm(photo.embedding - consensus(matching))), 4)
    too_far = [d for d in (photo.identity_distance, photo.consensus_distance) if d is not None and d > limit]
    return (codes.IDENTITY_MISMATCH,) if too_far else ()


def _distance(photo: SetPhoto, other: SetPhoto) -> float:
    return float(np.linalg.norm(photo.embedding - other.embedding))


def _duplicate_problems(photo: SetPhoto, kept: list[SetPhoto], thresholds: Thresholds) -> tuple[str, ...]:
    for other in kept:
        close = _distance(photo, other) <= thresholds.duplicate_max_embedding_distance
        if close and hash_distance(photo.check.face_hash, other.check.face_hash) <= thresholds.duplicate_max_hash_bits:
            photo.duplicate_of = other.photo_id
            return (codes.DUPLICATE,)
    return ()


def _reject(photo: SetPhoto, problems: tuple[str, ...]) -> None:
    photo.check = dataclasses.replace(
        photo.check, accepted=False, reasons=problems, messages=tuple(map(codes.message_for, problems)),
        crop_png=None, notes=(),
    )


def summarise(
    accepted: list[SetPhoto], thresholds: Thresholds = DEFAULTS, min_accepted_photos: int | None = None
) -> SetSummary:
    minimum = min_accepted_photos or thresholds.min_accepted_photos
    headshot = any(p.headshot for p in accepted)
    problems = []
    if len(accepted) < minimum:
        problems.append(TOO_FEW_PHOTOS)
    if not headshot:
        problems.append(NO_HEADSHOT)
    messages = {
        TOO_FEW_PHOTOS: f"{len(accepted)} photo(s) accepted; at least {minimum} are needed "
        f"({thresholds.recommended_photos} recommended).",
        NO_HEADSHOT: "An accepted frontal headshot is needed.",
    }
    yaws = [p.check.pose.yaw for p in accepted] or [0.0]
    pitches = [p.check.pose.pitch for p in accepted] or [0.0]
    lights = [p.check.exposure.luminance for p in accepted] or [0.0]
    advice = []
    if len(accepted) >= 2 and max(yaws) - min(yaws) < thresholds.min_yaw_spread_deg:
        advice.append(LOW_POSE_VARIETY)
    if len(accepted) >= 2 and max(lights) - min(lights) < thresholds.min_luminance_spread:
        advice.append(LOW_LIGHT_VARIETY)
    old = sum(codes.OLD_PHOTO in p.check.notes for p in accepted)
    old_message = (
        f"{old} of your {len(accepted)} accepted photos were taken a long time ago; portraits look most like you "
        "today when most photos are recent." if old else ""
    )
    return SetSummary(
        sufficient=not problems, accepted_photos=len(accepted), min_accepted_photos=minimum,
        recommended_photos=thresholds.recommended_photos, headshot_accepted=headshot, problems=tuple(problems),
        messages=tuple(messages[p] for p in problems), yaw_range=(min(yaws), max(yaws)),
        pitch_range=(min(pitches), max(pitches)), luminance_range=(min(lights), max(lights)), advice=tuple(advice),
        old_photos=old, old_photos_message=old_message,
    )
