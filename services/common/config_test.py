"""Service settings (services/common/config.py)."""

from __future__ import annotations

import pytest

from services.common.config import Settings


@pytest.mark.parametrize(("url", "shown"), [
    ("s3://ACCESS:SECRET@minio:9000/blobs?secure=true", "'s3://***@minio:9000/blobs?secure=true'"),
    ("s3://ACCESS:SE/CR@ET@minio:9000/blobs", "'s3://***@minio:9000/blobs'"),  # unencoded '/' and '@' too
    ("file:///var/lib/studio/blobs", "'file:///var/lib/studio/blobs'"),
])
def test_repr_hides_the_blob_urls_credentials(monkeypatch: pytest.MonkeyPatch, url: str, shown: str) -> None:
    monkeypatch.setenv("STUDIO_BLOB_URL", url)
    text = repr(Settings.from_env("ingest"))
    assert f"blob_url={shown}, " in text and "ACCESS" not in text
    assert text.startswith("Settings(service_name='ingest', listen=")
