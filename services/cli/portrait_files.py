"""An order's delivered portraits, downloaded into a folder: one PNG per portrait, named by its id."""

from __future__ import annotations

from pathlib import Path

from studio.v1 import common_pb2
from tqdm import tqdm

from services.cli.failures import fail
from services.cli.output_files import whole_file
from studio_client import StudioClient


async def download_portraits(client: StudioClient, order: common_pb2.Order, out_dir: Path,
                             as_json: bool) -> list[dict]:
    """Each portrait is written whole or not at all, owner-only (the customer's face, in clear).
    What each is (style, seed, size, identity score) comes back beside its file."""
    if out_dir.exists() and not out_dir.is_dir():
        fail(f"--out {out_dir} is a file, not a folder", as_json)
    delivered = []
    with tqdm(total=len(order.portraits), unit="portrait", desc="download", disable=as_json) as bar:
        for portrait in order.portraits:
            path = out_dir / f"{portrait.portrait_id}.png"
            data = await client.download(order.order_id, portrait.portrait_id)
            with whole_file(path, as_json, private=True) as handle:
                handle.write(data)
            delivered.append({"portrait_id": portrait.portrait_id, "style": portrait.style, "seed": portrait.seed,
                              "width": portrait.width, "height": portrait.height,
                              "identity_score": round(portrait.identity_score, 4), "file": str(path)})
            bar.update()
    return delivered
