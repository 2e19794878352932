"""Operator commands as docs/operations.md runs them inside the privacy pod: the CLI (a real process) connects to
127.0.0.1, verifies the vault's certificate (which names only `privacy`) by --tls-server-name, and calls as the
--tls-identity folder's certificate rather than the pod's own STUDIO_TLS_* one, which may not administer."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from services.common.config import Settings
from services.common.signatures import SigningKey
from services.common.tls import CA_ENV, CERT_ENV, KEY_ENV, TlsFiles
from services.privacy.mtls_test import NOW, _name, _pem_key, issue, make_ca
from services.privacy.server import add_to_server, build_servicer

REPO = Path(__file__).resolve().parents[2]
PRIVACY_NAMES = ["privacy", "privacy.studio.svc", "privacy.studio.svc.cluster.local"]  # as cert-manager issues it


@dataclasses.dataclass
class PodVault:
    port: int
    identities: dict[str, Path]  # cert-manager-style folders: tls.crt, tls.key, ca.crt


def _serving_files(directory: Path, ca, ca_file: Path) -> TlsFiles:
    """The vault's certificate as in Kubernetes: its DNS names only, no 127.0.0.1."""
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("privacy")).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW).not_valid_after(NOW + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name) for name in PRIVACY_NAMES]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = TlsFiles(directory / "serving.crt", directory / "serving.key", ca_file)
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(_pem_key(key))
    return files


def _identity(folder: Path, ca, common_name: str, ca_file: Path) -> Path:
    """A folder as cert-manager writes a Secret's keys: tls.crt, tls.key, ca.crt."""
    folder.mkdir()
    files = issue(folder, ca, common_name, ca_file)
    files.cert.rename(folder / "tls.crt")
    files.key.rename(folder / "tls.key")
    shutil.copy(ca_file, folder / "ca.crt")
    return folder


@pytest_asyncio.fixture(loop_scope="session")
async def pod_vault(tmp_path: Path) -> AsyncIterator[PodVault]:
    ca = make_ca("portrait-studio-internal-ca")
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))
    identities = {name: _identity(tmp_path / name, ca, name, ca_file) for name in ("privacy", "operator")}
    settings = dataclasses.replace(Settings.from_env("privacy"), data_dir=tmp_path / "data")
    servicer = build_servicer(settings, kek_file=tmp_path / "kek.json")  # no tokens: mTLS only
    server = grpc.aio.server()
    add_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", _serving_files(tmp_path, ca, ca_file).server_credentials())
    await server.start()
    try:
        yield PodVault(port, identities)
    finally:
        await server.stop(grace=None)
        servicer.close()


async def studio(vault: PodVault, cwd: Path, *args: str) -> tuple[int, str, str]:
    """`python -m services.cli.main ARGS` in the privacy pod: the pod's own certificate in STUDIO_TLS_*."""
    own = vault.identities["privacy"]
    env = {**os.environ, "PYTHONPATH": str(REPO), CERT_ENV: str(own / "tls.crt"), KEY_ENV: str(own / "tls.key"),
           CA_ENV: str(own / "ca.crt")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli.main", *args, "--privacy-addr", f"127.0.0.1:{vault.port}",
        cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode, out.decode(), err.decode()


async def test_operator_identity_rotates_and_exports(pod_vault: PodVault, tmp_path: Path) -> None:
    operator = ("--tls-server-name", "privacy", "--tls-identity", str(pod_vault.identities["operator"]))
    code, out, err = await studio(pod_vault, tmp_path, "keys", "rotate", *operator, "--json")
    assert (code, err) == (0, "")
    assert json.loads(out)["new_version"] == 2
    code, out, err = await studio(pod_vault, tmp_path, "audit", "export", *operator, "--json")
    assert code == 0, err
    records = json.loads(out)["records"]
    entries = [(record.get("service"), record.get("action"), record.get("outcome")) for record in records]
    assert ("operator", "RotateKek", "ALLOWED") in entries


async def test_the_pods_own_certificate_may_not_administer(pod_vault: PodVault, tmp_path: Path) -> None:
    code, out, err = await studio(pod_vault, tmp_path, "keys", "rotate", "--tls-server-name", "privacy")
    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and err.startswith("error: PERMISSION_DENIED"), err


async def test_without_server_name_127_0_0_1_fails_verification(pod_vault: PodVault, tmp_path: Path) -> None:
    operator = str(pod_vault.identities["operator"])
    code, out, err = await studio(pod_vault, tmp_path, "audit", "export", "--tls-identity", operator, "--json")
    assert (code, err, out.count("\n")) == (1, "", 1), err
    reason = json.loads(out)["error"]
    assert reason.startswith("UNAVAILABLE") and "Hostname Verification" in reason, reason


async def test_an_incomplete_identity_folder_is_named(pod_vault: PodVault, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    code, out, _ = await studio(pod_vault, tmp_path, "keys", "rotate", "--tls-identity", str(tmp_path / "empty"),
                                "--json")
    assert code == 1
    assert json.loads(out) == {"ok": False, "error": f"--tls-identity {tmp_path / 'empty'} lacks tls.crt, tls.key, "
                                                      "ca.crt"}


async def test_the_export_streams_out_of_the_pod_and_verifies(pod_vault: PodVault, tmp_path: Path) -> None:
    """As docs/operations.md runs it: JSON lines on stdout (through `kubectl exec`, nothing written in the pod),
    progress on stderr; then verified offline, and straight from the vault as it streams in."""
    operator = ("--tls-server-name", "privacy", "--tls-identity", str(pod_vault.identities["operator"]))
    await studio(pod_vault, tmp_path, "keys", "rotate", *operator, "--json")
    code, out, err = await studio(pod_vault, tmp_path, "audit", "export", *operator)
    assert code == 0, err
    export, pem = tmp_path / "audit.jsonl", tmp_path / "vault-signing.pub"
    export.write_text(out)
    pem.write_text(SigningKey.from_file(tmp_path / "data" / "privacy" / "signing-key.pem", create=False).public_pem)
    for source in (("--file", str(export)), operator):
        code, out, err = await studio(pod_vault, tmp_path, "audit", "verify", *source, "--public-key", str(pem),
                                      "--json")
        assert code == 0 and json.loads(out)["ok"], (out, err)
