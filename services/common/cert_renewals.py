"""Certificates renewed under a running process. cert-manager renews a certificate, with a new key, at about
two thirds of its lifetime and swaps the mounted Secret's files; a pod runs longer than that. Servers (here) and
internal channels (services/common/renewing_channel.py) take up the new files without a restart, and only once
they are consistent again: a certificate with its own key, every file parsed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization


@dataclass(frozen=True)
class Generation:
    """One consistent set of the files' contents: a certificate chain, its key, and a CA bundle when watched."""

    cert: bytes
    key: bytes = field(repr=False)
    ca: bytes | None = None


class WatchedFiles:
    """A certificate, its key and optionally a CA bundle at fixed paths, whose contents a renewal replaces."""

    def __init__(self, cert: Path, key: Path, ca: Path | None = None) -> None:
        self._paths = (cert, key) + ((ca,) if ca else ())
        self._taken: tuple | None = None  # the stamp of the generation last handed out

    def read(self) -> Generation:
        """The files' contents now. Raises OSError when one is unreadable, ValueError when they are inconsistent
        (caught mid-renewal: a certificate and a key from different generations, a file half written)."""
        before = _stamp(self._paths)
        generation = Generation(*(path.read_bytes() for path in self._paths))
        if _stamp(self._paths) != before:
            raise ValueError(f"{self._paths[0]}: the files changed while read (a renewal in progress)")
        _check(generation)
        self._taken = before
        return generation

    def renewed(self) -> Generation | None:
        """The new contents once the files changed and are consistent; None keeps the generation in use. It runs
        on gRPC's own threads and in calls' paths, so it never raises: until the files settle, the old one stays."""
        try:
            if _stamp(self._paths) == self._taken:
                return None
            return self.read()
        except Exception:  # unreadable, unparsable or mismatched files: keep serving what works
            return None


class CertificateRenewals:
    """A server's certificate (and its CA bundle for verifying clients, when given): gRPC asks `fetch` at each
    TLS handshake whether to serve new ones."""

    def __init__(self, cert: Path, key: Path, ca: Path | None = None) -> None:
        self._files = WatchedFiles(cert, key, ca)
        self._initial = self._files.read()

    def server_credentials(self, require_client_auth: bool) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            _configuration(self._initial), self.fetch, require_client_authentication=require_client_auth,
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """The renewed files' configuration once they changed and settled; None keeps the one served."""
        generation = self._files.renewed()
        return _configuration(generation) if generation else None


def _configuration(generation: Generation) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration([(generation.key, generation.cert)],
                                                     root_certificates=generation.ca)


def _check(generation: Generation) -> None:
    certificate = x509.load_pem_x509_certificates(generation.cert)[0]
    key = serialization.load_pem_private_key(generation.key, password=None)
    if _public_der(certificate.public_key()) != _public_der(key.public_key()):
        raise ValueError("the key does not belong to the certificate (a renewal in progress)")
    if generation.ca is not None:
        x509.load_pem_x509_certificates(generation.ca)


def _public_der(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _stamp(paths: tuple[Path, ...]) -> tuple:
    # A Secret volume swaps a symbolic link to new files: stat follows it.
    return tuple((info.st_ino, info.st_mtime_ns, info.st_size) for info in (path.stat() for path in paths))
