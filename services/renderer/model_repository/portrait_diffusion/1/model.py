"""Triton python-backend model: renders one portrait per request with an optional LoRA adapter.

The stub runs the project's Python, but the project may not be pip-installed, so the repository
root comes from STUDIO_REPO_ROOT (set by services.common.launchers.triton).
"""

from __future__ import annotations

import os
import sys
import traceback

import numpy as np
import triton_python_backend_utils as pb_utils

_REPO_ROOT = os.environ.get("STUDIO_REPO_ROOT")
if _REPO_ROOT and _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from services.renderer.pipeline import PortraitRenderer, RenderInputError, RenderParams  # noqa: E402


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


def _parse(request) -> tuple[RenderParams, str, bytes]:
    params = RenderParams(
        prompt=_text(request, "PROMPT"),
        negative_prompt=_text(request, "NEGATIVE_PROMPT"),
        seed=int(_first(request, "SEED")),
        steps=int(_first(request, "STEPS")),
        guidance=float(_first(request, "GUIDANCE")),
        width=int(_first(request, "WIDTH")),
        height=int(_first(request, "HEIGHT")),
    )
    return params, _text(request, "ADAPTER_ID"), bytes(_first(request, "ADAPTER"))


def _error_response(message: str, code_name: str) -> pb_utils.InferenceResponse:
    code = getattr(pb_utils.TritonError, code_name, None)
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        self.renderer = PortraitRenderer.from_env()
        pb_utils.Logger.log_info(
            f"portrait_diffusion loaded on {self.renderer.pipe.device} ({self.renderer.pipe.dtype})"
        )

    def execute(self, requests: list) -> list:
        return [self._render(request) for request in requests]

    def _render(self, request) -> pb_utils.InferenceResponse:
        if pb_utils.get_input_tensor_by_name(request, "EVICT_PREFIX") is not None:
            return self._evict(request)
        try:
            params, adapter_id, adapter = _parse(request)
            image = self.renderer.render(params, adapter_id, adapter)
        except RenderInputError as error:
            return _error_response(str(error), "INVALID_ARG")
        except Exception as error:  # a failed render must not take the model instance down
            pb_utils.Logger.log_error(traceback.format_exc())
            return _error_response(f"render failed: {type(error).__name__}: {error}", "INTERNAL")
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("IMAGE", np.ascontiguousarray(image))])

    def _evict(self, request) -> pb_utils.InferenceResponse:
        try:
            prefix = _text(request, "EVICT_PREFIX")
            if not prefix:
                raise RenderInputError("EVICT_PREFIX must not be empty")
        except RenderInputError as error:
            return _error_response(str(error), "INVALID_ARG")
        evicted = self.renderer.evict_prefix(prefix)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("EVICTED", np.array([evicted], np.int32))])

    def finalize(self) -> None:
        self.renderer = None
