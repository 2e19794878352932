"""The studio's provenance certificates: a self-signed development chain for the embedded stack
(root CA + ES256 signing certificate with the extensions C2PA requires), and loading a production
certificate chain and key by path."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.common.secrets import write_secret_file

ORGANISATION = "Portrait Studio"
SIGNING_CERT_DAYS = 2 * 365
ROOT_CERT_DAYS = 10 * 365


@dataclass(frozen=True)
class DevChainFiles:
    """Where the embedded stack keeps its development chain (under the data dir)."""

    key: Path  # the signing key: 0600, read by the vault only
    chain: Path  # signing certificate, then the root (PEM)
    root: Path  # the trust anchor `studio provenance verify` trusts by default


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
    ])


def _key_usage(*, sign: bool, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=sign, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False,
    )


def _certificate(subject: x509.Name, issuer: x509.Name, public_key, days: int) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def write_dev_chain(files: DevChainFiles, studio_name: str = "Portrait Studio (development)") -> None:
    """A fresh root CA and an ES256 signing certificate under it. The root's private key is not
    kept: nothing else is ever signed under this development root."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = _name(f"{studio_name} root CA")
    root = (
        _certificate(root_name, root_name, root_key.public_key(), ROOT_CERT_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(sign=False, ca=True), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    signing_key = ec.generate_private_key(ec.SECP256R1())
    # C2PA: an end-entity certificate, digitalSignature, and an allowed EKU (emailProtection here).
    signing = (
        _certificate(_name(f"{studio_name} provenance signing"), root_name, signing_key.public_key(), SIGNING_CERT_DAYS)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(sign=True, ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    write_secret_file(files.key, signing_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    files.chain.write_bytes(signing.public_bytes(pem) + root.public_bytes(pem))
    files.root.write_bytes(root.public_bytes(pem))


def ensure_dev_chain(files: DevChainFiles) -> None:
    """Generate the development chain on first start, or again when its signing certificate expired."""
    if files.key.exists() and files.chain.exists() and files.root.exists() and not _expired(files.chain):
        return
    write_dev_chain(files)


def _expired(chain: Path) -> bool:
    try:
        certificate = x509.load_pem_x509_certificates(chain.read_bytes())[0]
    except ValueError:
        return True
    return certificate.not_valid_after_utc <= datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)


if __name__ == "__main__":  # python -m services.common.provenance_certs DIR: a development chain in DIR
    import sys

    folder = Path(sys.argv[1])
    root = folder / "provenance-root.pem"
    write_dev_chain(DevChainFiles(folder / "provenance.key", folder / "provenance-chain.pem", root))
    print(f"development C2PA chain written to {folder} (trust anchor: {root})")
