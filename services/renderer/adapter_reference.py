"""Adapters by reference: a Triton instance keeps each subject's LoRA after one request loaded it (a load request,
or a render that carried the bytes), so a job's renders send a token instead of the LoRA.

Why: every request used to carry the whole LoRA. Our trainer writes fp32 LoRAs: SD1.5 at rank 16 is about
13 MB, SDXL at rank 32 about 185 MB. Each request paid for it in gRPC, in Triton's copy into the python
stub's shared memory and in a hash, and a job of 40 candidates shipped it 40 times (bench/adapter_shipping.py).

The token is a SHA-256 of the decrypted bytes under a label of its own, so the adapter id (which shows a prefix
of the plain digest) says nothing about it. Only a holder of the decrypted LoRA can compute it: knowing an
adapter id is not enough to render a person's face from Triton's cache. It is as secret as the bytes: never
logged, never in an error or an event.
"""

from __future__ import annotations

import hashlib

from services.renderer.errors import RenderInputError

TOKEN_LABEL = b"portrait-studio adapter reference v1\0"
# The start of the error a reference without its adapter in memory gets; the client then sends the bytes.
NOT_LOADED = "adapter not loaded on this instance"


def adapter_token(adapter: bytes) -> str:
    digest = hashlib.sha256(TOKEN_LABEL)
    digest.update(adapter)
    return digest.hexdigest()


def checked_token(adapter: bytes, claimed: str) -> str:
    """The token of a request's adapter: of its bytes when it carries them (a `claimed` token that disagrees is
    refused), else the one it names ("" for the base model)."""
    if not adapter:
        return claimed
    token = adapter_token(adapter)
    if claimed and claimed != token:
        raise RenderInputError("ADAPTER_TOKEN does not match the ADAPTER bytes")
    return token


class AdapterNotLoaded(RenderInputError):
    """A request named its adapter by token, and this instance does not hold it (evicted, restarted, or another
    replica): the sender must send the bytes once more."""

    def __init__(self, adapter_id: str) -> None:
        super().__init__(f"{NOT_LOADED}: {adapter_id}; send the adapter's bytes")
