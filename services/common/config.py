"""Service settings, read from STUDIO_* environment variables (set by `studio up` or Kubernetes)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


class ConfigError(RuntimeError):
    pass


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


@dataclass(frozen=True)
class Settings:
    service_name: str
    listen: str
    metrics_port: int
    data_dir: Path | None
    nats_url: str | None
    blob_url: str | None
    privacy_addr: str | None
    faceqa_addr: str | None
    triton_url: str | None
    base_model: Path | None
    service_token_file: Path | None
    train_steps: int
    render_steps: int

    @classmethod
    def from_env(cls, service_name: str) -> Settings:
        base_model = _env("STUDIO_BASE_MODEL")
        data_dir = _env("STUDIO_DATA_DIR")
        token_file = _env("STUDIO_SERVICE_TOKEN_FILE")
        return cls(
            service_name=service_name,
            listen=_env("STUDIO_LISTEN", "127.0.0.1:0") or "",
            metrics_port=int(_env("STUDIO_METRICS_PORT", "0") or 0),
            data_dir=Path(data_dir) if data_dir else None,
            nats_url=_env("STUDIO_NATS_URL"),
            blob_url=_env("STUDIO_BLOB_URL"),
            privacy_addr=_env("STUDIO_PRIVACY_ADDR"),
            faceqa_addr=_env("STUDIO_FACEQA_ADDR"),
            triton_url=_env("STUDIO_TRITON_URL"),
            base_model=Path(base_model) if base_model else None,
            service_token_file=Path(token_file) if token_file else None,
            train_steps=int(_env("STUDIO_TRAIN_STEPS", "8") or 8),
            render_steps=int(_env("STUDIO_RENDER_STEPS", "4") or 4),
        )

    def require(self, field: str):
        value = getattr(self, field)
        if value in (None, ""):
            raise ConfigError(f"{self.service_name}: STUDIO_{field.upper()} is not set")
        return value
