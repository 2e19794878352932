"""Service settings (services/common/config.py)."""

from __future__ import annotations

import pytest

from services.common.config import ConfigError, Settings, url_with_token


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


def test_the_nats_token_file_reaches_the_url_and_never_its_repr(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    token_file = tmp_path / "nats.token"
    token_file.write_text("TOKEN-xyz\n")
    monkeypatch.setenv("STUDIO_NATS_URL", "nats://127.0.0.1:4222")
    monkeypatch.setenv("STUDIO_NATS_TOKEN_FILE", str(token_file))
    settings = Settings.from_env("renderer")
    assert settings.require("nats_url") == "nats://TOKEN-xyz@127.0.0.1:4222"
    assert "TOKEN" not in repr(settings) and "nats_url='nats://***@127.0.0.1:4222'" in repr(settings)
    token_file.unlink()
    with pytest.raises(ConfigError, match=f"STUDIO_NATS_TOKEN_FILE {token_file}: No such file"):
        Settings.from_env("renderer")


@pytest.mark.parametrize(("url", "token", "joined"), [
    ("nats://nats:4222", "t0k", "nats://t0k@nats:4222"),
    ("nats://old@nats:4222", "t0k", "nats://t0k@nats:4222"),  # the token file's token, not the URL's
    ("nats://nats:4222", None, "nats://nats:4222"),
])
def test_url_with_token(url: str, token: str | None, joined: str) -> None:
    assert url_with_token(url, token) == joined


def test_the_nats_user_reaches_the_url_and_never_its_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDIO_NATS_URL", "nats://nats:4222")
    monkeypatch.setenv("STUDIO_NATS_USER", "trainer")
    monkeypatch.setenv("STUDIO_NATS_PASSWORD", "Pa55-word_x")
    settings = Settings.from_env("trainer")
    assert settings.require("nats_url") == "nats://trainer:Pa55-word_x@nats:4222"
    assert "Pa55" not in repr(settings) and "nats_url='nats://***@nats:4222'" in repr(settings)


@pytest.mark.parametrize(("user", "password", "token_file", "error"), [
    ("trainer", "", False, "set together"),
    ("", "secret", False, "set together"),
    ("trainer", "p@ss:word", False, "only letters"),
    ("trainer", "secret", True, "exclude each other"),
])
def test_a_nats_user_without_its_password_or_beside_a_token_is_refused(
        monkeypatch: pytest.MonkeyPatch, tmp_path, user: str, password: str, token_file: bool, error: str) -> None:
    monkeypatch.setenv("STUDIO_NATS_URL", "nats://nats:4222")
    monkeypatch.setenv("STUDIO_NATS_USER", user)
    monkeypatch.setenv("STUDIO_NATS_PASSWORD", password)
    if token_file:
        (tmp_path / "token").write_text("t0k")
        monkeypatch.setenv("STUDIO_NATS_TOKEN_FILE", str(tmp_path / "token"))
    with pytest.raises(ConfigError, match=error) as raised:
        Settings.from_env("trainer")
    assert "p@ss" not in str(raised.value) and "secret" not in str(raised.value)
