"""studio_client.ClientTls: its repr never shows the client's private key."""

from __future__ import annotations

from studio_client.client import ClientTls


def test_repr_hides_the_private_key() -> None:
    tls = ClientTls(ca=b"ca-pem", cert=b"cert-pem", key=b"PRIVATE-KEY-PEM")
    assert "cert-pem" in repr(tls) and "PRIVATE-KEY-PEM" not in repr(tls)
