"""Photo recency: the EXIF capture date, and the OLD_PHOTO note on accepted photos taken longer
ago than the tenant allows (the portraits should look like the customer today). Photos without a
date are not penalised."""

from __future__ import annotations

import dataclasses
import datetime
import io
import time

from PIL import Image

from services.faceqa import reasons as codes
from services.faceqa.decode import DECODE_ERRORS

DEFAULT_MAX_PHOTO_AGE_DAYS = 3 * 365 + 1  # three years, whichever one is a leap year
SECONDS_PER_DAY = 86_400
_EXIF_IFD = 0x8769
_DATE_TIME_ORIGINAL = 0x9003
_DATE_TIME = 0x0132
_EXIF_DATE_FORMAT = "%Y:%m:%d %H:%M:%S"


def capture_time(data: bytes) -> float | None:
    """When the photo was taken (seconds since the epoch, read as UTC): EXIF DateTimeOriginal, else
    DateTime; None when the file has no readable date. Reads the header only."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            exif = image.getexif()
            stamp = exif.get_ifd(_EXIF_IFD).get(_DATE_TIME_ORIGINAL) or exif.get(_DATE_TIME)
    except DECODE_ERRORS:
        return None
    if not isinstance(stamp, str):
        return None
    try:
        taken = datetime.datetime.strptime(stamp.strip("\x00 ")[:19], _EXIF_DATE_FORMAT)
    except ValueError:  # "0000:00:00 00:00:00" and other placeholders
        return None
    return taken.replace(tzinfo=datetime.UTC).timestamp()


def is_old(captured_at: float | None, max_age_days: int, now: float) -> bool:
    return captured_at is not None and now - captured_at > max_age_days * SECONDS_PER_DAY


def with_recency_note(check, max_age_days: int = 0, now: float | None = None):
    """The check with OLD_PHOTO among its notes exactly when it is accepted and too old (a later
    call with another tenant limit re-decides)."""
    limit = max_age_days or DEFAULT_MAX_PHOTO_AGE_DAYS
    notes = tuple(note for note in check.notes if note != codes.OLD_PHOTO)
    if check.accepted and is_old(check.captured_at, limit, time.time() if now is None else now):
        notes += (codes.OLD_PHOTO,)
    return check if notes == check.notes else dataclasses.replace(check, notes=notes)
