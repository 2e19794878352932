"""Ed25519 signatures over canonical JSON: how the vault signs deletion certificates and audit
checkpoints, and how anyone holding its public key checks them offline."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.common.secrets import read_secret_file, write_secret_file

SIGNATURE_FIELD = "signature"
ALGORITHM = "Ed25519"
# The `type` of each kind of signed document: a valid signature over one kind never vouches for another.
CERTIFICATE_TYPE = "portrait-studio/deletion-certificate/v1"
CHECKPOINT_TYPE = "checkpoint"
_KIND_NAMES = {CERTIFICATE_TYPE: "a deletion certificate", CHECKPOINT_TYPE: "an audit checkpoint"}


class SignatureError(ValueError):
    """A document that is unsigned, malformed, signed by another key, or altered after signing."""


def canonical_json(document: Any) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def key_id_of(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(pem: str | bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    except ValueError as error:
        raise SignatureError("not a PEM public key") from error
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError("the public key is not an Ed25519 key")
    return key


class SigningKey:
    """The vault's signing key, kept in a 0600 PEM file (created on first use)."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id_of(self.public_key)

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id!r})"

    @classmethod
    def from_file(cls, path: Path, *, create: bool = True) -> SigningKey:
        """`create=False` where documents signed by the key already exist: a new key would orphan them."""
        path = Path(path)
        if not path.exists():
            if not create:
                raise SignatureError(
                    f"signing key file {path} is missing, but the vault already holds documents signed by it;"
                    " restore the file (a new key would make them unverifiable)"
                )
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            write_secret_file(path, pem)
        try:
            key = serialization.load_pem_private_key(read_secret_file(path), password=None)
        except ValueError:
            raise SignatureError(f"signing key file {path} is not a PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SignatureError(f"signing key file {path} does not hold an Ed25519 key")
        return cls(key)

    @property
    def public_pem(self) -> str:
        return public_key_pem(self.public_key)

    def sign(self, document: dict) -> dict:
        """The document with `key_id`, `algorithm` and a base64 `signature` over everything else."""
        body = {**document, "key_id": self.key_id, "algorithm": ALGORITHM}
        body.pop(SIGNATURE_FIELD, None)
        signature = self._private.sign(canonical_json(body))
        return {**body, SIGNATURE_FIELD: base64.b64encode(signature).decode()}


def verify_certificate(document: dict, public_key: Ed25519PublicKey) -> None:
    """Raise SignatureError unless `document` is a deletion certificate signed, unchanged, by `public_key`."""
    verify_document(document, public_key, expected_type=CERTIFICATE_TYPE)


def verify_checkpoint(document: dict, public_key: Ed25519PublicKey) -> None:
    """Raise SignatureError unless `document` is an audit checkpoint signed, unchanged, by `public_key`."""
    verify_document(document, public_key, expected_type=CHECKPOINT_TYPE)


def verify_document(document: dict, public_key: Ed25519PublicKey, expected_type: str | None = None) -> None:
    """Raise SignatureError unless `document` was signed, unchanged, by `public_key` (and, given
    `expected_type`, is a document of that type)."""
    if not isinstance(document, dict) or not isinstance(document.get(SIGNATURE_FIELD), str):
        raise SignatureError("the document carries no signature")
    if expected_type is not None and document.get("type") != expected_type:
        raise SignatureError(f"the document is {_kind(document.get('type'))}, not {_kind(expected_type)}")
    if document.get("algorithm") != ALGORITHM:
        raise SignatureError(f"unsupported signature algorithm {document.get('algorithm')!r}")
    if document.get("key_id") != key_id_of(public_key):
        raise SignatureError("signed by another key than the one given")
    body = {name: value for name, value in document.items() if name != SIGNATURE_FIELD}
    try:
        public_key.verify(base64.b64decode(document[SIGNATURE_FIELD], validate=True), canonical_json(body))
    except (InvalidSignature, ValueError):
        raise SignatureError("the signature does not match the document") from None


def _kind(document_type: object) -> str:
    if document_type is None:
        return "untyped"
    known = _KIND_NAMES.get(document_type) if isinstance(document_type, str) else None
    return known or f"of type {str(document_type)[:80]!r}"
