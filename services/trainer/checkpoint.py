"""Training checkpoints: a RunState as bytes (sealed by the worker before it reaches the store).

torch's weights-only loader reads them, so a checkpoint can hold tensors, numbers and strings but
never code. A checkpoint names the job and base model it belongs to; one that does not match, or
cannot be read, raises CheckpointUnreadable and is never half-applied.
"""

from __future__ import annotations

import io
import pickle

import torch

from services.common.objects import subject_prefix
from services.trainer.training import RunState, ValidationPoint

FORMAT_VERSION = 1


class CheckpointUnreadable(ValueError):
    """The stored checkpoint is corrupt, from another job or base model, or of an unknown format."""


def checkpoint_key(tenant_id: str, subject_id: str, job_id: str) -> str:
    return f"{subject_prefix(tenant_id, subject_id)}checkpoints/{job_id}.ckpt"


def checkpoint_bytes(state: RunState, job_id: str, base_model_id: str) -> bytes:
    document = {
        "format": FORMAT_VERSION, "job_id": job_id, "base_model_id": base_model_id, "step": state.step,
        "losses": list(state.losses), "curve": [[p.step, p.identity_score, p.loss] for p in state.curve],
        "best_step": state.best_step, "best_score": state.best_score,
        "best_lora": torch.frombuffer(bytearray(state.best_lora), dtype=torch.uint8) if state.best_lora else None,
        "trainable": state.trainable, "optimizer": state.optimizer, "generator": state.generator,
    }
    buffer = io.BytesIO()
    torch.save(document, buffer)
    return buffer.getvalue()


def read_checkpoint(data: bytes, job_id: str, base_model_id: str) -> RunState:
    try:
        document = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, KeyError) as error:
        raise CheckpointUnreadable(f"not a readable checkpoint ({type(error).__name__})") from error
    if not isinstance(document, dict) or document.get("format") != FORMAT_VERSION:
        raise CheckpointUnreadable("unknown checkpoint format")
    if document.get("job_id") != job_id or document.get("base_model_id") != base_model_id:
        raise CheckpointUnreadable("checkpoint belongs to another job or base model")
    best_lora = document.get("best_lora")
    return RunState(
        step=int(document["step"]), losses=[float(x) for x in document["losses"]],
        curve=[ValidationPoint(int(s), float(score), float(loss)) for s, score, loss in document["curve"]],
        best_step=int(document["best_step"]), best_score=float(document["best_score"]),
        best_lora=best_lora.numpy().tobytes() if best_lora is not None else b"",
        trainable=document["trainable"], optimizer=document["optimizer"], generator=document["generator"],
    )
