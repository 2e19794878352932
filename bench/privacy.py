"""Vault costs: data-key issue (RegisterSubject) and unwrap (GetDataKey) latency over gRPC on loopback,
unwrap in-process, and envelope encryption throughput against raw `cryptography` AES-GCM on the same
bytes (the ratio is what our envelope format and associated data cost).

    python bench/privacy.py [--subjects 200] [--mib 8] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from studio.v1 import common_pb2, privacy_pb2, privacy_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.local_vault import local_vault  # noqa: E402
from services.common.envelope import object_aad, open_sealed, seal  # noqa: E402
from services.common.machine import describe_machine  # noqa: E402
from services.common.secrets import SERVICE_TOKEN_METADATA  # noqa: E402

TOKENS = {"ingest": "bench-ingest-token-0123456789", "faceqa": "bench-faceqa-token-0123456789"}
CONSENT = common_pb2.ConsentRecord(agreement_version="bench", scopes=[1], retention_days=30)



def percentiles(samples_s: list[float]) -> dict[str, float]:
    ordered = sorted(samples_s)
    return {"p50_ms": statistics.median(ordered) * 1e3, "p99_ms": ordered[int(len(ordered) * 0.99) - 1] * 1e3}


async def key_latencies(subjects: int) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as scratch:
        async with local_vault(Path(scratch), TOKENS) as (servicer, channel):
            stub = privacy_pb2_grpc.PrivacyStub(channel)
            issue, unwrap = [], []
            for index in range(subjects):
                started = time.perf_counter()
                await stub.RegisterSubject(privacy_pb2.RegisterSubjectRequest(
                    tenant_id="t", subject_id=f"s{index}", consent=CONSENT),
                    metadata=((SERVICE_TOKEN_METADATA, TOKENS["ingest"]),))
                issue.append(time.perf_counter() - started)
            for index in range(subjects):
                started = time.perf_counter()
                await stub.GetDataKey(privacy_pb2.GetDataKeyRequest(
                    tenant_id="t", subject_id=f"s{index}", purpose=privacy_pb2.KEY_PURPOSE_DECRYPT_PHOTO),
                    metadata=((SERVICE_TOKEN_METADATA, TOKENS["faceqa"]),))
                unwrap.append(time.perf_counter() - started)
            in_process = []
            for index in range(subjects):
                started = time.perf_counter()
                await servicer.vault.data_key("t", f"s{index}")
                in_process.append(time.perf_counter() - started)
    return {"issue_grpc": percentiles(issue), "unwrap_grpc": percentiles(unwrap),
            "unwrap_in_process": percentiles(in_process)}


def throughput(mib: int, rounds: int = 15) -> dict[str, float]:
    """Each round times ours and raw back to back on the same bytes (interleaved, so load on a shared
    machine hits both alike); the medians are compared."""
    data = os.urandom(mib * 1024 * 1024)
    key, nonce = AESGCM.generate_key(bit_length=256), os.urandom(12)
    aad = object_aad("tenant", "subject", "tenants/tenant/subjects/subject/photos/p1")
    sealed = seal(key, key_id="dek-bench", key_version=1, aad=aad, plaintext=data)
    raw = AESGCM(key).encrypt(nonce, data, aad)
    operations = {
        "seal_mib_s": lambda: seal(key, key_id="dek-bench", key_version=1, aad=aad, plaintext=data),
        "raw_encrypt_mib_s": lambda: AESGCM(key).encrypt(nonce, data, aad),
        "open_mib_s": lambda: open_sealed(key, aad=aad, blob=sealed),
        "raw_decrypt_mib_s": lambda: AESGCM(key).decrypt(nonce, raw, aad),
    }
    timings: dict[str, list[float]] = {name: [] for name in operations}
    for _ in range(rounds):
        for name, operation in operations.items():
            started = time.perf_counter()
            operation()
            timings[name].append(time.perf_counter() - started)
    return {name: mib / statistics.median(samples) for name, samples in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=200)
    parser.add_argument("--mib", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    latencies = asyncio.run(key_latencies(args.subjects))
    rates = throughput(args.mib)
    result = {
        "machine": describe_machine(), "subjects": args.subjects, "payload_mib": args.mib, **latencies, **rates,
        "seal_vs_raw": rates["seal_mib_s"] / rates["raw_encrypt_mib_s"],
        "open_vs_raw": rates["open_mib_s"] / rates["raw_decrypt_mib_s"],
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"machine: {result['machine']}")
    for name in ("issue_grpc", "unwrap_grpc", "unwrap_in_process"):
        print(f"{name:18} P50 {result[name]['p50_ms']:.2f} ms  P99 {result[name]['p99_ms']:.2f} ms"
              f"  ({args.subjects} subjects; every gRPC call audited, fsync'd)")
    print(f"envelope seal {rates['seal_mib_s']:.0f} MiB/s vs raw AES-GCM {rates['raw_encrypt_mib_s']:.0f} MiB/s"
          f" -> ratio {result['seal_vs_raw']:.2f} ({args.mib} MiB payload)")
    print(f"envelope open {rates['open_mib_s']:.0f} MiB/s vs raw AES-GCM {rates['raw_decrypt_mib_s']:.0f} MiB/s"
          f" -> ratio {result['open_vs_raw']:.2f}")


if __name__ == "__main__":
    main()
