"""`studio models tiny`: the deterministic tiny random-weight model, with the CLI's own progress line (the
libraries' bars, which would name their internals and break a --json reader's stderr, are silenced)."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from services.cli.elapsed import counting_seconds


def silence_library_progress_bars() -> None:
    """No progress bars from diffusers, transformers or huggingface_hub ("Writing model shards", "Loading
    pipeline components"): the CLI shows its own. Imports the libraries: call it where a command needs them."""
    import diffusers.utils.logging
    import huggingface_hub.utils
    import transformers.utils.logging

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()


async def _write_tiny(out: Path, seed: int, quiet: bool) -> Path:
    from services.common.tinymodel import write_tiny_model

    silence_library_progress_bars()
    async with counting_seconds(f"writing the tiny model to {out}", quiet=quiet):
        return await asyncio.to_thread(write_tiny_model, out, seed)


def cmd_models_tiny(args: argparse.Namespace) -> None:
    from services.common.basemodel import base_model_id

    out = asyncio.run(_write_tiny(Path(args.out), args.seed, quiet=args.json))
    result = {"path": str(out.resolve()), "seed": args.seed, "base_model_id": base_model_id(out)}
    print(json.dumps(result) if args.json else f"tiny model written to {result['path']} ({result['base_model_id']})")


def add_models_command(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser("models", help="base models").add_subparsers(dest="models_command", required=True)
    tiny = models.add_parser("tiny", help="write the deterministic tiny random-weight model")
    tiny.add_argument("--out", required=True)
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--json", action="store_true")
    tiny.set_defaults(func=cmd_models_tiny)
