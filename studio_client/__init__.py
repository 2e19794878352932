"""Typed Python client for the Portrait Studio public API (see studio_client/client.py and
examples/integration.py)."""

from studio_client.admin import AdminClient
from studio_client.client import (
    CHUNK_BYTES,
    PORTRAIT_CONSENT,
    ClientTls,
    Photo,
    StudioClient,
    UploadResult,
)
from studio_client.retry import NO_RETRIES, RetryPolicy

__all__ = [
    "CHUNK_BYTES", "NO_RETRIES", "PORTRAIT_CONSENT", "AdminClient", "ClientTls", "Photo", "RetryPolicy",
    "StudioClient", "UploadResult",
]
