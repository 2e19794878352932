"""The studio's provenance signing key, held by the vault alone: signs C2PA claims for the renderer
and derives pseudonymous order references. The key is loaded from a file (0600) and never leaves
this process; callers get signatures, the public certificate chain and references only."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from services.common.config import ConfigError
from services.common.secrets import read_secret_file

MAX_PAYLOAD_BYTES = 1 << 20
ORDER_REFERENCE_PREFIX = "ord_"
_REFERENCE_INFO = b"portrait-studio order reference v1"


@dataclass(frozen=True)
class ProvenanceKey:
    private_key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey = field(repr=False)
    chain_pem: str
    algorithm: str  # "es256" or "ed25519", as c2pa names them
    _reference_key: bytes = field(repr=False, default=b"")

    @classmethod
    def from_files(cls, key_file: Path, chain_file: Path) -> ProvenanceKey:
        try:
            private_key = serialization.load_pem_private_key(read_secret_file(key_file), password=None)
            certificates = x509.load_pem_x509_certificates(chain_file.read_bytes())
        except (OSError, ValueError) as error:
            raise ConfigError(f"provenance key {key_file} or certificate chain {chain_file} is unreadable") from error
        algorithm = _algorithm_of(private_key)
        if certificates[0].public_key() != private_key.public_key():
            raise ConfigError(f"the first certificate in {chain_file} is not for the provenance key {key_file}")
        pem = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in _without_root(certificates))
        return cls(private_key, pem, algorithm, _derive_reference_key(private_key))

    def sign(self, payload: bytes) -> bytes:
        if isinstance(self.private_key, ed25519.Ed25519PrivateKey):
            return self.private_key.sign(payload)
        r, s = decode_dss_signature(self.private_key.sign(payload, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def order_reference(self, tenant_id: str, order_id: str) -> str:
        """Stable per order, unlinkable to the order id or subject without this key."""
        message = f"{len(tenant_id)}:{tenant_id}|{order_id}".encode()
        return ORDER_REFERENCE_PREFIX + hmac.new(self._reference_key, message, hashlib.sha256).hexdigest()[:32]


def _algorithm_of(private_key) -> str:
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(private_key, ec.EllipticCurvePrivateKey) and isinstance(private_key.curve, ec.SECP256R1):
        return "es256"
    raise ConfigError("the provenance key must be an EC P-256 (ES256) or Ed25519 private key")


def _without_root(certificates: list[x509.Certificate]) -> list[x509.Certificate]:
    """C2PA wants the chain without its self-signed root (verifiers bring their own anchors)."""
    kept = [c for c in certificates if c.subject != c.issuer]
    return kept or certificates[:1]


def _derive_reference_key(private_key) -> bytes:
    secret = private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_REFERENCE_INFO).derive(secret)
