import os

import pytest

from services.common.envelope import (
    EnvelopeError,
    EnvelopeHeader,
    header_of,
    object_aad,
    open_sealed,
    seal,
)

DEK = os.urandom(32)
AAD = object_aad("tenant-1", "subject-1", "tenants/tenant-1/subjects/subject-1/photos/p1")
PLAINTEXT = b"\xff\xd8 pretend this is a jpeg " * 100


def sealed(aad: bytes = AAD, plaintext: bytes = PLAINTEXT) -> bytes:
    return seal(DEK, key_id="subject-1", key_version=3, aad=aad, plaintext=plaintext)


def test_round_trip() -> None:
    assert open_sealed(DEK, aad=AAD, blob=sealed()) == PLAINTEXT


def test_empty_plaintext_round_trip() -> None:
    assert open_sealed(DEK, aad=AAD, blob=sealed(plaintext=b"")) == b""


def test_each_seal_uses_a_fresh_nonce() -> None:
    assert sealed() != sealed()


def test_header_readable_without_key() -> None:
    blob = sealed()
    assert blob.startswith(b"PSE1")
    assert header_of(blob) == EnvelopeHeader(key_id="subject-1", key_version=3)


def test_unicode_key_id() -> None:
    blob = seal(DEK, key_id="sübject-✓", key_version=0, aad=b"", plaintext=b"x")
    assert header_of(blob) == EnvelopeHeader("sübject-✓", 0)


@pytest.mark.parametrize(
    "other_aad",
    [
        object_aad("tenant-1", "subject-2", "tenants/tenant-1/subjects/subject-1/photos/p1"),
        object_aad("tenant-1", "subject-1", "tenants/tenant-1/subjects/subject-1/photos/p2"),
        object_aad("tenant-2", "subject-1", "tenants/tenant-1/subjects/subject-1/photos/p1"),
        b"",
    ],
    ids=["other-subject", "other-object-key", "other-tenant", "no-aad"],
)
def test_wrong_aad_fails(other_aad: bytes) -> None:
    with pytest.raises(EnvelopeError):
        open_sealed(DEK, aad=other_aad, blob=sealed())


def test_object_aad_is_unambiguous() -> None:
    assert object_aad("a", "bc", "d") != object_aad("ab", "c", "d")
    assert object_aad("a", "b", "c/d") != object_aad("a", "b/c", "d")


def test_wrong_key_fails() -> None:
    with pytest.raises(EnvelopeError):
        open_sealed(os.urandom(32), aad=AAD, blob=sealed())


@pytest.mark.parametrize("position", [4, 7, 30, -20, -1])
def test_tampering_any_byte_fails(position: int) -> None:
    blob = bytearray(sealed())
    blob[position] ^= 0x01
    with pytest.raises(EnvelopeError):
        open_sealed(DEK, aad=AAD, blob=bytes(blob))


def test_relabelled_key_version_fails() -> None:
    blob = sealed()
    header_length = len(b"PSE1") + 2 + len(b"subject-1") + 4
    other_header = seal(DEK, key_id="subject-1", key_version=4, aad=AAD, plaintext=b"")[:header_length]
    relabelled = other_header + blob[header_length:]
    assert header_of(relabelled).key_version == 4
    with pytest.raises(EnvelopeError):
        open_sealed(DEK, aad=AAD, blob=relabelled)


@pytest.mark.parametrize("blob", [b"", b"PSE", b"XXXX" + bytes(40), b"PSE1\x00\x05abc"])
def test_malformed_blobs_fail(blob: bytes) -> None:
    with pytest.raises(EnvelopeError):
        header_of(blob)
    with pytest.raises(EnvelopeError):
        open_sealed(DEK, aad=AAD, blob=blob)


def test_errors_never_contain_key_material() -> None:
    wrong_key = os.urandom(32)
    failures = []
    for attempt in (
        lambda: open_sealed(wrong_key, aad=AAD, blob=sealed()),
        lambda: open_sealed(DEK, aad=b"other", blob=sealed()),
        lambda: open_sealed(wrong_key[:16], aad=AAD, blob=sealed()),
    ):
        with pytest.raises(EnvelopeError) as caught:
            attempt()
        failures.append(caught.value)
    for error in failures:
        text = f"{error!s} {error!r} {error.args!r}"
        for key in (DEK, wrong_key):
            assert key.hex() not in text
            assert repr(key) not in text
            assert repr(key[:16])[2:-1] not in text
        # A chained cause would print the cryptography internals' own message in tracebacks.
        assert error.__cause__ is None
        assert error.__context__ is None or error.__suppress_context__


def test_bad_seal_arguments() -> None:
    with pytest.raises(ValueError):
        seal(DEK, key_id="", key_version=1, aad=b"", plaintext=b"")
    with pytest.raises(ValueError):
        seal(DEK, key_id="k", key_version=-1, aad=b"", plaintext=b"")
    with pytest.raises(EnvelopeError):
        seal(b"short", key_id="k", key_version=1, aad=b"", plaintext=b"")
