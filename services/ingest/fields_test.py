"""The input checks on their own: id shapes, file names, archive names, consent times."""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.objects import new_id
from services.ingest import fields

NOW = 1_800_000_000.0
DAY = fields.SECONDS_PER_DAY


def test_ids_we_hand_out_are_well_formed_and_nothing_else_is() -> None:
    assert fields.well_formed(fields.SUBJECT_ID, new_id("subj"))
    assert fields.well_formed(fields.ORDER_ID, new_id("order"))
    for bad in ("", "bad id", "x*", "x.", "ä", "subj_missing", new_id("order"), new_id("subj") + "\n",
                new_id("subj").upper(), "subj_" + "0" * 21):
        assert not fields.well_formed(fields.SUBJECT_ID, bad), bad


def test_a_long_id_is_cut_in_the_reason() -> None:
    assert fields.subject_not_found("subj_x") == "subject 'subj_x' not found"
    assert len(fields.order_not_found("o" * 100_000)) < 100


@pytest.mark.parametrize("name", ["../x.jpg", "a/b.jpg", "a\\b.jpg", "..", ".", "a\nb.jpg", "a\x00.jpg",
                                  "a\x7f.jpg", "f" * 257])
def test_unsafe_file_names_are_refused(name: str) -> None:
    assert "filename" in fields.filename_problem(name)


@pytest.mark.parametrize("name", ["x.jpg", "Ärger mit Bildern.HEIC", "f" * 256, ".hidden.png", "x..jpg", "..x"])
def test_plain_file_names_pass(name: str) -> None:
    assert fields.filename_problem(name) is None


@pytest.mark.parametrize("stored, member", [
    ("x.jpg", "x.jpg"), ("../../etc/passwd", "passwd"), ("..\\..\\boot.ini", "boot.ini"), ("dir/", "photo"),
    ("a/..", "photo"), ("bad\nname.jpg", "badname.jpg"),
])
def test_archive_names_are_base_names(stored: str, member: str) -> None:
    assert fields.archive_name(stored) == member


def _at(seconds: float, nanos: int = 0) -> Timestamp:
    return Timestamp(seconds=int(seconds), nanos=nanos)


def test_granted_at_lies_within_the_retention_and_not_ahead() -> None:
    for fine in (NOW, NOW - 29 * DAY, NOW + fields.GRANTED_AT_CLOCK_SKEW_S):
        assert fields.granted_at_problem(_at(fine), 30, NOW) is None
    for bad in (NOW + fields.GRANTED_AT_CLOCK_SKEW_S + 1, NOW - 31 * DAY, 10**12, -(10**12), 0):
        assert "consent.granted_at" in fields.granted_at_problem(_at(bad), 30, NOW), bad
    assert "consent.granted_at" in fields.granted_at_problem(_at(NOW, nanos=-1), 30, NOW)
