"""Check results as protobuf messages (PhotoVerdict, SetVerdict) and as plain dicts (CLI JSON)."""

from __future__ import annotations

from studio.v1 import common_pb2

from services.faceqa.checks import PhotoCheck
from services.faceqa.photoset import ADVICE_MESSAGES, SetPhoto, SetSummary
from services.faceqa.reasons import message_for


def verdict_of(result: PhotoCheck, photo: SetPhoto | None = None) -> common_pb2.PhotoVerdict:
    verdict = common_pb2.PhotoVerdict(
        accepted=result.accepted, reasons=result.reasons, messages=result.messages, notes=result.notes,
        note_messages=[message_for(note) for note in result.notes],
    )
    if result.captured_at is not None:
        verdict.captured_at.FromSeconds(int(result.captured_at))
    if result.face_box:
        left, top, right, bottom = result.face_box
        verdict.face_box.CopyFrom(common_pb2.FaceBox(left=left, top=top, right=right, bottom=bottom))
    if result.pose:
        verdict.measurements.CopyFrom(_measurements(result, photo))
    return verdict


def _measurements(result: PhotoCheck, photo: SetPhoto | None) -> common_pb2.FaceMeasurements:
    measured = common_pb2.FaceMeasurements(
        yaw_deg=result.pose.yaw, roll_deg=result.pose.roll, pitch_deg=result.pose.pitch,
        sharpness=result.sharpness, luminance=result.exposure.luminance,
        clipped_highlights=result.exposure.highlights, crushed_shadows=result.exposure.shadows,
        background_faces=result.background_faces,
    )
    if photo is not None:
        if photo.identity_distance is not None:
            measured.identity_distance = photo.identity_distance
        if photo.consensus_distance is not None:
            measured.consensus_distance = photo.consensus_distance
        measured.duplicate_of = photo.duplicate_of
    return measured


def set_verdict_of(summary: SetSummary) -> common_pb2.SetVerdict:
    return common_pb2.SetVerdict(
        sufficient=summary.sufficient, accepted_photos=summary.accepted_photos,
        min_accepted_photos=summary.min_accepted_photos, recommended_photos=summary.recommended_photos,
        headshot_accepted=summary.headshot_accepted, problems=summary.problems, messages=summary.messages,
        old_photos=summary.old_photos, old_photos_message=summary.old_photos_message,
        diversity=common_pb2.SetDiversity(
            yaw_min_deg=summary.yaw_range[0], yaw_max_deg=summary.yaw_range[1],
            pitch_min_deg=summary.pitch_range[0], pitch_max_deg=summary.pitch_range[1],
            luminance_min=summary.luminance_range[0], luminance_max=summary.luminance_range[1],
            advice=summary.advice, advice_messages=[ADVICE_MESSAGES[code] for code in summary.advice],
        ),
    )


def photo_dict(file: str, photo: SetPhoto) -> dict:
    """One photo's verdict for `studio qa --json`."""
    result = photo.check
    return {
        "file": file, "role": "headshot" if photo.headshot else "reference", "accepted": result.accepted,
        "reasons": list(result.reasons), "messages": list(result.messages), "notes": list(result.notes),
        "note_messages": [message_for(note) for note in result.notes],
        "face_box": list(result.face_box) if result.face_box else None,
        "yaw": result.pose.yaw if result.pose else None, "roll": result.pose.roll if result.pose else None,
        "pitch": result.pose.pitch if result.pose else None, "sharpness": result.sharpness,
        "exposure": vars(result.exposure) if result.exposure else None,
        "identity_distance": photo.identity_distance, "consensus_distance": photo.consensus_distance,
        "duplicate_of": photo.duplicate_of or None, "captured_at": result.captured_at,
    }


def set_dict(summary: SetSummary) -> dict:
    return {
        "sufficient": summary.sufficient, "accepted_photos": summary.accepted_photos,
        "min_accepted_photos": summary.min_accepted_photos, "recommended_photos": summary.recommended_photos,
        "headshot_accepted": summary.headshot_accepted, "problems": list(summary.problems),
        "messages": list(summary.messages), "yaw_range": list(summary.yaw_range),
        "pitch_range": list(summary.pitch_range), "luminance_range": list(summary.luminance_range),
        "advice": list(summary.advice), "advice_messages": [ADVICE_MESSAGES[code] for code in summary.advice],
        "old_photos": summary.old_photos, "old_photos_message": summary.old_photos_message,
    }
