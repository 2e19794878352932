"""What provenance costs per portrait: the plain PNG the renderer used to store against the labelled
and signed one (XMP, C2PA manifest, signature made by a real vault over gRPC on loopback), at the
portrait sizes we render; then `studio provenance verify`'s check of a signed portrait.

    python bench/provenance.py [--rounds 15] [--sizes 512 1024] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from studio.v1 import common_pb2, events_pb2, privacy_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.local_vault import local_vault  # noqa: E402
from services.cli.provenance import VERIFIED, verify  # noqa: E402
from services.common.machine import describe_machine  # noqa: E402
from services.common.provenance_certs import DevChainFiles, write_dev_chain  # noqa: E402
from services.common.secrets import SERVICE_TOKEN_METADATA  # noqa: E402
from services.privacy.provenance_key import ProvenanceKey  # noqa: E402
from services.renderer.provenance import PortraitProvenance  # noqa: E402
from services.renderer.worker import encode_png  # noqa: E402

TOKEN = "bench-renderer-token-0123456789"


@dataclasses.dataclass
class RendererVault:
    stub: privacy_pb2_grpc.PrivacyStub
    metadata: tuple


async def measure(sizes: list[int], rounds: int) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        chain = DevChainFiles(root / "p.key", root / "chain.pem", root / "root.pem")
        write_dev_chain(chain)
        async with local_vault(root, {"renderer": TOKEN}) as (servicer, channel):
            servicer.provenance = ProvenanceKey.from_files(chain.key, chain.chain)
            vault = RendererVault(privacy_pb2_grpc.PrivacyStub(channel), ((SERVICE_TOKEN_METADATA, TOKEN),))
            return {str(size): await _one_size(PortraitProvenance(vault, "bench"), size, rounds, chain.root, root)
                    for size in sizes}


async def _one_size(provenance: PortraitProvenance, size: int, rounds: int, anchor: Path, scratch: Path) -> dict:
    pixels = np.random.default_rng(size).integers(0, 256, (size, size, 3), dtype=np.uint8)
    item = events_pb2.RenderItem(portrait_id="p", style="studio-frontal-soft")
    plain_job = events_pb2.RenderJob(tenant_id="t", order_id="o", items=[item])
    label_job = events_pb2.RenderJob(tenant_id="t", order_id="o", items=[item],
                                     visible_label=common_pb2.VisibleLabel(enabled=True))
    timings: dict[str, list[float]] = {"plain_png": [], "signed_png": [], "signed_labelled_png": [], "verify": []}
    signed = b""
    for _ in range(rounds):  # interleaved, so load on a shared machine hits every variant alike
        started = time.perf_counter()
        plain = encode_png(pixels)
        timings["plain_png"].append(time.perf_counter() - started)
        started = time.perf_counter()
        signed = await provenance.portrait_png(pixels, plain_job, item)
        timings["signed_png"].append(time.perf_counter() - started)
        started = time.perf_counter()
        await provenance.portrait_png(pixels, label_job, item)
        timings["signed_labelled_png"].append(time.perf_counter() - started)
        path = scratch / "signed.png"
        path.write_bytes(signed)
        started = time.perf_counter()
        outcome = verify(path, anchor, "bench").outcome
        timings["verify"].append(time.perf_counter() - started)
        assert outcome == VERIFIED, outcome
    medians = {f"{name}_ms": statistics.median(samples) * 1e3 for name, samples in timings.items()}
    return {**medians, "signed_vs_plain": medians["signed_png_ms"] / medians["plain_png_ms"],
            "plain_bytes": len(plain), "signed_bytes": len(signed), "manifest_overhead_bytes": len(signed) - len(plain)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sizes = asyncio.run(measure(args.sizes, args.rounds))
    result = {"machine": describe_machine(), "rounds": args.rounds, "sizes": sizes}
    if args.json:
        print(json.dumps(result))
        return
    print(f"machine: {result['machine']}")
    for size, row in result["sizes"].items():
        print(f"{size}x{size}: plain PNG {row['plain_png_ms']:.1f} ms vs signed (XMP + C2PA, vault signs over gRPC)"
              f" {row['signed_png_ms']:.1f} ms -> ratio {row['signed_vs_plain']:.2f};"
              f" with visible label {row['signed_labelled_png_ms']:.1f} ms; verify {row['verify_ms']:.1f} ms;"
              f" +{row['manifest_overhead_bytes']} bytes ({row['plain_bytes']} -> {row['signed_bytes']})")


if __name__ == "__main__":
    main()
