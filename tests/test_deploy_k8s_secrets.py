"""deploy/k8s/make-secrets.sh against a stand-in for the API server: every Secret the pods read is filled, the
shells `kubectl apply -k` made get their data merged in, and a key that exists is never replaced."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from deploy.k8s import validate
from deploy.k8s.manifests import Manifest, pod_templates


@pytest.fixture(scope="module")
def built() -> dict[str, list[Manifest]]:
    return {"dev": validate.build(validate.K8S_DIR / "overlays" / "dev")}


# A stand-in for the API server behind kubectl: `create secret --dry-run=client` is the real kubectl (it works
# offline); `create -f` stores what it is given, `patch --type merge` merges into what is stored, `get secret`
# answers from the store (`-o jsonpath={.data}`: the data, if any). `apply` is refused: it would keep the key
# material in its last-applied annotation, and the next `apply -k` of the empty shells would delete the data.
KUBECTL_STAND_IN = """#!/usr/bin/env bash
set -euo pipefail
store="$KUBECTL_STORE"
args=("$@")
[ "${args[0]}" = "-n" ] && args=("${args[@]:2}")
case "${args[0]} ${args[1]:-}" in
  "get namespace") exit 0 ;;
  "get secret") file="$store/${args[2]}.yaml"
                [ -f "$file" ] || exit 1
                if [ "${args[3]:-}" = "-o" ]; then
                  python3 -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1])).get("data") or ""))' \\
                    "$file" | grep -v '^""$' || true
                fi ;;
  "create -f") python3 -c 'import json, shutil, sys; d = json.load(open(sys.argv[1]))
shutil.copy(sys.argv[1], sys.argv[2] + "/" + d["metadata"]["name"] + ".yaml")' "${args[2]}" "$store" ;;
  "patch secret") python3 -c 'import json, sys; stored, patch = sys.argv[1], json.load(open(sys.argv[2]))
d = json.load(open(stored)); d.setdefault("data", {}).update(patch["data"]); json.dump(d, open(stored, "w"))' \\
                    "$store/${args[2]}.yaml" "${args[-1]}" ;;
  "apply "*) echo "make-secrets must not kubectl apply" >&2; exit 1 ;;
  *) exec "$REAL_KUBECTL" "$@" ;;
esac
"""


def _run_make_secrets(tmp_path: Path, *args: str):
    import shutil
    import subprocess

    bin_dir, store = tmp_path / "bin", tmp_path / "store"
    bin_dir.mkdir(exist_ok=True)
    store.mkdir(exist_ok=True)
    stand_in = bin_dir / "kubectl"
    stand_in.write_text(KUBECTL_STAND_IN)
    stand_in.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "KUBECTL_STORE": str(store),
           "REAL_KUBECTL": shutil.which("kubectl")}
    done = subprocess.run(["bash", str(validate.K8S_DIR / "make-secrets.sh"), *args], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr, store


def _secret_data(store: Path, name: str) -> dict[str, bytes]:
    import base64

    import yaml

    document = yaml.safe_load((store / f"{name}.yaml").read_text())
    return {key: base64.b64decode(value) for key, value in document["data"].items()}


def test_make_secrets_fills_every_secret_the_pods_read(tmp_path, built):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from services.common.blobstore import S3BlobStore, blob_store_from_url
    from services.privacy.kek import FileKek

    output, store = _run_make_secrets(tmp_path, "--dev")
    kek_file = tmp_path / "kek.json"
    kek_file.write_bytes(_secret_data(store, "studio-kek")["kek.json"])
    kek_file.chmod(0o600)
    kek = FileKek(kek_file)
    assert kek.unwrap(1, kek.wrap(1, b"k" * 32, b"aad"), b"aad") == b"k" * 32
    signing = load_pem_private_key(_secret_data(store, "studio-signing-key")["signing-key.pem"], password=None)
    assert isinstance(signing, Ed25519PrivateKey)
    tokens = _secret_data(store, "studio-service-tokens")
    token_map = json.loads(tokens["tokens.json"])
    assert set(token_map) == {"ingest", "faceqa", "trainer", "renderer"}
    assert all(tokens[service].decode() == token for service, token in token_map.items())
    assert len(set(token_map.values())) == 4
    minio = _secret_data(store, "studio-minio")
    store_client = blob_store_from_url(_secret_data(store, "studio-blob")["url"].decode())
    assert isinstance(store_client, S3BlobStore)
    # every key a pod mounts or reads exists in the Secret it names
    for pod in pod_templates(built["dev"]):
        for volume in pod.volumes():
            items = (volume.get("secret") or {}).get("items") or []
            name = (volume.get("secret") or {}).get("secretName")
            for item in items:
                assert item["key"] in _secret_data(store, name), f"{pod.ref}: {name} lacks {item['key']}"
    nats_users = _secret_data(store, "studio-nats-users")
    assert set(nats_users) == {"ingest", "faceqa", "trainer", "renderer", "privacy"}
    assert len(set(nats_users.values())) == 5 and all(len(password) >= 40 for password in nats_users.values())
    for pod in pod_templates(built["dev"]):  # and every key a pod's env reads
        for container in pod.containers():
            for env in container.get("env") or []:
                key = (env.get("valueFrom") or {}).get("secretKeyRef")
                assert not key or key["key"] in _secret_data(store, key["name"]), f"{pod.ref}: {key} not written"
    operator_token = _secret_data(store, "studio-operator-token")["token"].decode()
    from services.common.secrets import hash_api_key

    assert _secret_data(store, "studio-tenant-admin")["operator-token-sha256"].decode() == hash_api_key(operator_token)
    secrets_written = [minio["root-password"].decode(), *token_map.values(), operator_token,
                       *(password.decode() for password in nats_users.values()),
                       _secret_data(store, "studio-bootstrap-tenant")["api-key"].decode()]
    assert not any(secret in output for secret in secrets_written), "a secret reached the script's output"


def test_make_secrets_fills_the_shells_kubectl_apply_made(tmp_path):
    """`kubectl apply -k` first: the Secrets exist without data. Their data is merged in, never applied."""
    store = tmp_path / "store"
    store.mkdir()
    shell = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "studio-kek"}, "type": "Opaque"}
    (store / "studio-kek.yaml").write_text(json.dumps(shell))
    output, _ = _run_make_secrets(tmp_path)
    assert "secret/studio-kek written" in output
    kek = json.loads(_secret_data(store, "studio-kek")["kek.json"])
    assert kek["current"] == 1
    stored = json.loads((store / "studio-kek.yaml").read_text())
    assert "annotations" not in stored["metadata"]  # no last-applied configuration holds the key


def test_make_secrets_never_replaces_a_key_that_exists(tmp_path):
    _, store = _run_make_secrets(tmp_path)
    before = {path.name: path.read_bytes() for path in store.iterdir()}
    output, _ = _run_make_secrets(tmp_path)
    assert {path.name: path.read_bytes() for path in store.iterdir()} == before
    assert "secret/studio-kek already holds data: left as it is" in output
