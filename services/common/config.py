"""Service settings, read from STUDIO_* environment variables (set by `studio up` or Kubernetes)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from pathlib import Path

NATS_USER_ENV = "STUDIO_NATS_USER"  # Kubernetes: each service its own NATS user (nats_permissions.py)


class ConfigError(RuntimeError):
    pass


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _without_credentials(url: str | None) -> str | None:
    """The URL with everything between the scheme and its last '@' (an s3:// URL's ACCESS:SECRET) as ***."""
    return re.sub(r"^([^:/?#]+://).*@", r"\1***@", url, flags=re.DOTALL) if url else url


def url_with_token(url: str, token: str | None) -> str:
    """`url` with `token` as its user part (nats://TOKEN@host:port, which nats-py sends as its auth token) in place
    of any it had; `url` itself without a token."""
    if not token:
        return url
    return re.sub(r"^([^:/?#]+://)(?:[^/?#]*@)?", lambda match: f"{match.group(1)}{token}@", url, count=1)


# What a NATS user name or password may hold: it travels in the URL's user part, which nats-py does not unquote.
_URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+")


def _nats_token() -> str | None:
    """The token of STUDIO_NATS_TOKEN_FILE (the embedded stack's nats-server requires one)."""
    token_file = _env("STUDIO_NATS_TOKEN_FILE")
    if not token_file:
        return None
    try:
        return Path(token_file).read_text().strip()
    except OSError as error:
        raise ConfigError(f"STUDIO_NATS_TOKEN_FILE {token_file}: {error.strerror}") from None


def _nats_user() -> str | None:
    """`user:password` of STUDIO_NATS_USER and STUDIO_NATS_PASSWORD (Kubernetes: one NATS user per service)."""
    user, password = _env(NATS_USER_ENV), _env("STUDIO_NATS_PASSWORD")
    if not user and not password:
        return None
    if not user or not password:
        raise ConfigError("STUDIO_NATS_USER and STUDIO_NATS_PASSWORD are set together or not at all")
    if not _URL_SAFE.fullmatch(user) or not _URL_SAFE.fullmatch(password):
        raise ConfigError("STUDIO_NATS_USER and STUDIO_NATS_PASSWORD may hold only letters, digits and . _ ~ -")
    return f"{user}:{password}"


def _nats_url() -> str | None:
    """STUDIO_NATS_URL with the credential it needs: the token of STUDIO_NATS_TOKEN_FILE or a service's user."""
    url, token, user = _env("STUDIO_NATS_URL"), _nats_token(), _nats_user()
    if token and user:
        raise ConfigError("STUDIO_NATS_TOKEN_FILE and STUDIO_NATS_USER exclude each other")
    return url_with_token(url, token or user) if url else url


@dataclass(frozen=True, repr=False)
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
            nats_url=_nats_url(),
            blob_url=_env("STUDIO_BLOB_URL"),
            privacy_addr=_env("STUDIO_PRIVACY_ADDR"),
            faceqa_addr=_env("STUDIO_FACEQA_ADDR"),
            triton_url=_env("STUDIO_TRITON_URL"),
            base_model=Path(base_model) if base_model else None,
            service_token_file=Path(token_file) if token_file else None,
            train_steps=int(_env("STUDIO_TRAIN_STEPS", "8") or 8),
            render_steps=int(_env("STUDIO_RENDER_STEPS", "4") or 4),
        )

    def __repr__(self) -> str:
        # blob_url may carry the object store's secret key, nats_url the bus's token or password: a logged or
        # printed Settings must show neither.
        shown = {item.name: getattr(self, item.name) for item in fields(self)}
        shown["blob_url"] = _without_credentials(self.blob_url)
        shown["nats_url"] = _without_credentials(self.nats_url)
        return f"Settings({', '.join(f'{name}={value!r}' for name, value in shown.items())})"

    def require(self, field: str):
        value = getattr(self, field)
        if value in (None, ""):
            raise ConfigError(f"{self.service_name}: STUDIO_{field.upper()} is not set")
        return value
