"""The stub's side of bench/stub_speed.py: the same workload, timed in this process (the python backend's stub)."""

from __future__ import annotations

import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

_REPO_ROOT = os.environ.get("STUDIO_REPO_ROOT")  # set by services.common.launchers.triton
if _REPO_ROOT and _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from bench.stub_speed import libpython_in_use, workload  # noqa: E402


class TritonPythonModel:
    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            rounds = int(pb_utils.get_input_tensor_by_name(request, "ROUNDS").as_numpy().reshape(-1)[0])
            seconds = workload(rounds)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("SECONDS", np.array([seconds], np.float64)),
                pb_utils.Tensor("LIBPYTHON", np.array([libpython_in_use().encode()], np.object_)),
            ]))
        return responses
