"""Reloading a model whose python stub died.

A model instance's stub (the process that runs model.py) can die: killed for memory, a fatal CUDA error, a crash
in a native library. Triton does not start it again: the model stays "ready", and every request to it fails with
"Stub process '<instance>' is not healthy" until the model is loaded anew. The renderer, the first to see the
failure, reloads the model (Triton's explicit model control); jobs wait meanwhile, as for a Triton that is down.
The dead stub's memory (decrypted adapters included) went with its process; the new instances start empty and
adapters reload on demand.

A load of an unchanged model is a no-op in Triton, so the reload sends the model's own configuration with one
parameter changed (RELOAD_PARAMETER, the time). One renderer reloads at a time per URL, a reload is not repeated
within REPAIR_INTERVAL_S (a stub that dies again at once would otherwise be reloaded in a loop), and a stub that
answers a probe (another renderer repaired it) is left alone."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import numpy as np
import tritonclient.grpc.aio as triton_grpc
from tritonclient.utils import InferenceServerException

from services.renderer.triton_channels import triton_client

log = logging.getLogger(__name__)

STUB_DIED = "is not healthy"  # Triton: "Stub process '<instance>' is not healthy."
RELOAD_PARAMETER = "studio_reloaded_at"
REPAIR_INTERVAL_S = 60.0
LOAD_TIMEOUT_S = 900.0  # a cold compile of a large model runs minutes inside the load (deploy: startupProbe)
PROBE_TIMEOUT_S = 60.0  # queued behind the batch the instance is rendering
# An eviction whose prefix no adapter id has (ids start with a subject id): it passes through the stub, changes
# nothing, and fails as renders do while the stub is dead.
PROBE_PREFIX = "\x1fprobe"

_locks: dict[tuple[asyncio.AbstractEventLoop, str], asyncio.Lock] = {}
_repaired_at: dict[str, float] = {}


def is_stub_death(status: str, message: str) -> bool:
    return status == "StatusCode.INTERNAL" and message.startswith("Stub process") and STUB_DIED in message


async def repair_model(url: str, model: str) -> None:
    """Reload `model` on the server at `url` if its stub is dead; failures are logged, never raised: the caller
    retries its request either way."""
    async with _lock(url):
        if time.monotonic() - _repaired_at.get(url, -REPAIR_INTERVAL_S) < REPAIR_INTERVAL_S:
            return
        try:
            if await _stub_answers(url, model):
                return
            log.warning("the python stub of %s at %s died; reloading the model", model, url)
            started = time.monotonic()
            await _reload(url, model)
            log.info("reloaded %s at %s in %.0f s", model, url, time.monotonic() - started)
        except InferenceServerException as error:
            log.warning("could not reload %s at %s: %s", model, url, error.message() or error)
        finally:
            _repaired_at[url] = time.monotonic()


def _lock(url: str) -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    for finished in [key for key in _locks if key[0].is_closed()]:
        del _locks[finished]
    return _locks.setdefault((loop, url), asyncio.Lock())


async def _stub_answers(url: str, model: str) -> bool:
    probe = triton_grpc.InferInput("EVICT_PREFIX", [1, 1], "BYTES")
    probe.set_data_from_numpy(np.array([[PROBE_PREFIX.encode()]], dtype=np.object_))
    try:
        await triton_client(url).infer(model, [probe], client_timeout=PROBE_TIMEOUT_S)
    except InferenceServerException as error:
        if is_stub_death(str(error.status()), error.message() or ""):
            return False
        raise
    return True


async def _reload(url: str, model: str) -> None:
    client = triton_client(url)
    config = (await client.get_model_config(model, as_json=True, client_timeout=PROBE_TIMEOUT_S))["config"]
    config.setdefault("parameters", {})[RELOAD_PARAMETER] = {"string_value": f"{time.time():.3f}"}
    await client.load_model(model, config=json.dumps(config), client_timeout=LOAD_TIMEOUT_S)
