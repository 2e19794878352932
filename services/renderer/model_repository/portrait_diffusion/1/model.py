"""Triton python-backend model: renders portraits with per-request LoRA adapters.

Dynamic batching hands execute() several requests at once; PortraitRenderer.render_batch groups them
by adapter and settings, so one batch may serve several subjects, each with its own adapter.

The stub runs the project's Python, but the project may not be pip-installed, so the repository
root comes from STUDIO_REPO_ROOT (set by services.common.launchers.triton).
"""

from __future__ import annotations

import contextlib
import json
import locale
import os
import sys
import traceback

import numpy as np
import triton_python_backend_utils as pb_utils

# The stub's interpreter starts in the C locale (ASCII): torch.compile then fails to read its UTF-8 files.
with contextlib.suppress(locale.Error):
    locale.setlocale(locale.LC_CTYPE, "C.UTF-8")

_REPO_ROOT = os.environ.get("STUDIO_REPO_ROOT")
if _REPO_ROOT and _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from services.common.logs import services_log_to_stderr  # noqa: E402
from services.renderer.adapter_reference import AdapterNotLoaded  # noqa: E402
from services.renderer.pipeline import (  # noqa: E402
    DEFAULT_ADAPTER_CACHE_SIZE,
    BatchItem,
    PortraitRenderer,
    RenderInputError,
    RenderParams,
)
from services.renderer.static_shapes import warm_up_sizes  # noqa: E402


def _first(request, name: str):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        raise RenderInputError(f"missing input {name}")
    values = tensor.as_numpy().reshape(-1)
    if values.size != 1:
        raise RenderInputError(f"input {name} must hold exactly one element, got {values.size}")
    return values[0]


def _text(request, name: str) -> str:
    try:
        return bytes(_first(request, name)).decode("utf-8")
    except UnicodeDecodeError as error:
        raise RenderInputError(f"input {name} is not UTF-8 text") from error


def _optional_text(request, name: str) -> str:
    return _text(request, name) if pb_utils.get_input_tensor_by_name(request, name) is not None else ""


def _optional_bytes(request, name: str) -> bytes:
    return bytes(_first(request, name)) if pb_utils.get_input_tensor_by_name(request, name) is not None else b""


def _parse(request) -> BatchItem:
    params = RenderParams(
        prompt=_text(request, "PROMPT"),
        negative_prompt=_text(request, "NEGATIVE_PROMPT"),
        seed=int(_first(request, "SEED")),
        steps=int(_first(request, "STEPS")),
        guidance=float(_first(request, "GUIDANCE")),
        width=int(_first(request, "WIDTH")),
        height=int(_first(request, "HEIGHT")),
        scheduler=_optional_text(request, "SCHEDULER"),
    )
    # An adapter comes as its bytes, its token (adapter_reference.py: one this instance loaded before) or both.
    return BatchItem(params, _text(request, "ADAPTER_ID"), _optional_bytes(request, "ADAPTER"),
                     _optional_text(request, "ADAPTER_TOKEN"))


def _error_response(message: str, code_name: str) -> pb_utils.InferenceResponse:
    code = getattr(pb_utils.TritonError, code_name, None)
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)


def _cache_size(model_config: dict) -> int:
    value = model_config.get("parameters", {}).get("adapter_cache_size", {}).get("string_value", "")
    return int(value) if value else DEFAULT_ADAPTER_CACHE_SIZE


def _image_response(result) -> pb_utils.InferenceResponse:
    if isinstance(result, AdapterNotLoaded):
        return _error_response(str(result), "NOT_FOUND")
    if isinstance(result, RenderInputError):
        return _error_response(str(result), "INVALID_ARG")
    if isinstance(result, Exception):
        return _error_response(f"render failed: {type(result).__name__}: {result}", "INTERNAL")
    image = np.ascontiguousarray(result[np.newaxis])  # the batch dimension: one image per request
    return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("IMAGE", image)])


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        # The renderer's own INFO lines (a cold compile's start and end) into tritonserver's log, which holds the stub's
        # stderr: a load that a startup probe cuts off then says where it was.
        services_log_to_stderr("%(asctime)s portrait_diffusion %(levelname)s %(name)s: %(message)s")
        model_config = json.loads(args["model_config"])
        self.renderer = PortraitRenderer.from_env(default_cache_size=_cache_size(model_config))
        # A compiled UNet compiles here, a graphed one captures each batch size Triton may hand it, at the sizes
        # orders render: the instance is ready when warm.
        compile_s = self.renderer.warm_up(max_batch=max(1, int(model_config.get("max_batch_size", 1))),
                                          sizes=warm_up_sizes())
        pb_utils.Logger.log_info(
            f"portrait_diffusion loaded on {self.renderer.pipe.device} ({self.renderer.pipe.dtype}), "
            f"adapter cache {self.renderer.adapter_cache_size}, UNet {self.renderer.compile_mode or 'eager'}"
            + (f" (warmed up in {compile_s:.0f} s)" if compile_s else "")
        )

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        renders: list[tuple[int, BatchItem]] = []
        for index, request in enumerate(requests):  # evictions and loads now, renders together after
            if pb_utils.get_input_tensor_by_name(request, "EVICT_PREFIX") is not None:
                responses[index] = self._evict(request)
                continue
            if pb_utils.get_input_tensor_by_name(request, "PROMPT") is None:
                responses[index] = self._load(request)
                continue
            try:
                renders.append((index, _parse(request)))
            except RenderInputError as error:
                responses[index] = _error_response(str(error), "INVALID_ARG")
        if renders:
            try:
                results = self.renderer.render_batch([item for _, item in renders])
            except Exception as error:  # a failed render must not take the model instance down
                pb_utils.Logger.log_error(traceback.format_exc())
                results = [error] * len(renders)
            for (index, _), result in zip(renders, results, strict=True):
                responses[index] = _image_response(result)
        return responses

    def _evict(self, request) -> pb_utils.InferenceResponse:
        try:
            prefix = _text(request, "EVICT_PREFIX")
            if not prefix:
                raise RenderInputError("EVICT_PREFIX must not be empty")
        except RenderInputError as error:
            return _error_response(str(error), "INVALID_ARG")
        evicted = self.renderer.evict_prefix(prefix)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("EVICTED", np.array([[evicted]], np.int32))])

    def _load(self, request) -> pb_utils.InferenceResponse:
        """A load: an adapter's bytes (ADAPTER_ID, ADAPTER, ADAPTER_TOKEN), kept for the renders that name it."""
        try:
            adapter = _optional_bytes(request, "ADAPTER")
            if not adapter:
                raise RenderInputError("a request without PROMPT loads an adapter: ADAPTER must hold its bytes")
            self.renderer.load_adapter(_optional_text(request, "ADAPTER_ID"), adapter,
                                       _optional_text(request, "ADAPTER_TOKEN"))
        except RenderInputError as error:
            return _error_response(str(error), "INVALID_ARG")
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("LOADED", np.array([[1]], np.int32))])

    def finalize(self) -> None:
        self.renderer = None
