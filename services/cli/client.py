"""The tenant client used by `studio demo`, the CLI and the tests: the typed client library
(studio_client), re-exported under its historical name."""

from studio_client import CHUNK_BYTES, PORTRAIT_CONSENT, StudioClient

__all__ = ["CHUNK_BYTES", "PORTRAIT_CONSENT", "StudioClient"]
