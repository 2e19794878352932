"""EXIF capture dates and the OLD_PHOTO note, on real JPEGs written with Pillow."""

from __future__ import annotations

import datetime
import io

from PIL import Image

from services.faceqa import reasons as codes
from services.faceqa.checks import PhotoCheck
from services.faceqa.measures import Exposure, Pose
from services.faceqa.photoset import SetPhoto, summarise
from services.faceqa.recency import capture_time, with_recency_note

NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC).timestamp()


def jpeg(original: str | None = None, plain: str | None = None) -> bytes:
    image = Image.new("RGB", (32, 32), (120, 90, 70))
    exif = image.getexif()
    if plain:
        exif[0x0132] = plain
    if original:
        exif.get_ifd(0x8769)[0x9003] = original
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    return buffer.getvalue()


def test_capture_time_prefers_date_time_original() -> None:
    taken = capture_time(jpeg(original="2015:07:04 10:30:00", plain="2020:01:01 00:00:00"))
    assert taken == datetime.datetime(2015, 7, 4, 10, 30, tzinfo=datetime.UTC).timestamp()
    new_year = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC).timestamp()
    assert capture_time(jpeg(plain="2020:01:01 00:00:00")) == new_year


def test_no_date_placeholder_or_garbage_is_no_date() -> None:
    assert capture_time(jpeg()) is None
    assert capture_time(jpeg(original="0000:00:00 00:00:00")) is None
    assert capture_time(b"not an image at all") is None


def test_old_photo_note_on_accepted_photos_only_and_per_tenant_limit() -> None:
    old = PhotoCheck(True, captured_at=capture_time(jpeg(original="2015:07:04 10:30:00")))
    assert with_recency_note(old, now=NOW).notes == (codes.OLD_PHOTO,)
    assert with_recency_note(old, max_age_days=20 * 365, now=NOW).notes == ()  # this tenant allows older photos
    assert with_recency_note(PhotoCheck(True), now=NOW).notes == ()  # no date: not penalised
    recent = PhotoCheck(True, captured_at=NOW - 200 * 86_400)
    assert with_recency_note(recent, now=NOW).notes == ()
    assert with_recency_note(PhotoCheck(False, captured_at=old.captured_at), now=NOW).notes == ()
    marked = with_recency_note(old, now=NOW)
    assert with_recency_note(marked, now=NOW).notes == (codes.OLD_PHOTO,)  # never twice
    assert codes.message_for(codes.OLD_PHOTO).startswith("Accepted")


def accepted(captured_at: float | None = None) -> PhotoCheck:
    return PhotoCheck(True, pose=Pose(0.0, 0.0, 0.0), exposure=Exposure(0.5, 0.0, 0.0), captured_at=captured_at)


def test_set_verdict_counts_old_photos_apart() -> None:
    old = with_recency_note(accepted(captured_at=0.0), now=NOW)
    summary = summarise([SetPhoto("a", True, old), SetPhoto("b", False, accepted())], min_accepted_photos=1)
    assert summary.sufficient and summary.accepted_photos == 2
    assert summary.old_photos == 1 and "1 of your 2" in summary.old_photos_message
    assert summarise([SetPhoto("b", True, accepted())], min_accepted_photos=1).old_photos_message == ""
