"""Checks on what a caller sends, made before anything is read or written: ids of the shape we hand
out, bounded text fields, plain file names and a believable consent time. Each check returns the
reason for INVALID_ARGUMENT (naming the field), or None when the value is fine."""

from __future__ import annotations

import re
import time
import unicodedata

from google.protobuf.timestamp_pb2 import Timestamp

# services/common/objects.py new_id(prefix): f"{prefix}_{secrets.token_hex(10)}", 20 lowercase hex digits.
SUBJECT_ID = re.compile(r"subj_[0-9a-f]{20}")
ORDER_ID = re.compile(r"order_[0-9a-f]{20}")
# An id echoed in a NOT_FOUND reason is cut to this (a real id is far shorter).
SHOWN_ID_CHARS = 64

MAX_EXTERNAL_REF_CHARS = 256
MAX_AGREEMENT_VERSION_CHARS = 256
MAX_FILENAME_CHARS = 256
MAX_CLIENT_PHOTO_ID_CHARS = 128
# Far above the catalogue's names and studio_client's keys ('auto-' and a UUID); a bound keeps every echo of
# them in a reason short (gRPC refuses trailers of more than a few KiB).
MAX_STYLE_CHARS = 64
MAX_IDEMPOTENCY_KEY_CHARS = 256
# consent.granted_at may be this far in the future (the caller's clock runs ahead of ours).
GRANTED_AT_CLOCK_SKEW_S = 300
SECONDS_PER_DAY = 86400
NANOS_PER_SECOND = 1_000_000_000


def well_formed(pattern: re.Pattern[str], resource_id: str) -> bool:
    return pattern.fullmatch(resource_id) is not None


def shown_id(resource_id: str) -> str:
    return resource_id if len(resource_id) <= SHOWN_ID_CHARS else resource_id[:SHOWN_ID_CHARS] + "..."


def subject_not_found(subject_id: str) -> str:
    """The one reason for a subject that is missing, another tenant's, malformed or being deleted."""
    return f"subject '{shown_id(subject_id)}' not found"


def order_not_found(order_id: str) -> str:
    return f"order '{shown_id(order_id)}' not found"


def too_long(field: str, value: str, limit: int) -> str | None:
    return f"{field} is longer than {limit} characters" if len(value) > limit else None


def filename_problem(filename: str) -> str | None:
    """A photo's file name ends up in export archive member names: a plain name only."""
    problem = too_long("filename", filename, MAX_FILENAME_CHARS)
    if problem:
        return problem
    # Without separators, only a whole name of "." or ".." can point anywhere but at a file.
    if any(part in filename for part in ("/", "\\")) or filename in (".", "..") or _has_control_characters(filename):
        return "filename must be a plain file name: no '/', '\\', control characters, nor '.' or '..' alone"
    return None


def archive_name(filename: str) -> str:
    """The base name of a stored file name (names stored before the upload checks may hold a path),
    safe as the last part of an archive member name."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(char for char in base if unicodedata.category(char) != "Cc")
    return "photo" if base in ("", ".", "..") else base


def granted_at_problem(granted_at: Timestamp, retention_days: int, now: float | None = None) -> str | None:
    """A consent must have been granted within its retention period, and not later than now."""
    if not 0 <= granted_at.nanos < NANOS_PER_SECOND:
        return f"consent.granted_at nanos must be 0..{NANOS_PER_SECOND - 1}"
    now = time.time() if now is None else now
    earliest = now - retention_days * SECONDS_PER_DAY
    if not earliest <= granted_at.seconds <= now + GRANTED_AT_CLOCK_SKEW_S:
        return (
            f"consent.granted_at must not be in the future nor more than the retention period "
            f"({retention_days} days) ago"
        )
    return None


def _has_control_characters(value: str) -> bool:
    return any(unicodedata.category(char) == "Cc" for char in value)
