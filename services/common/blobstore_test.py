import os
import stat
import uuid
from pathlib import Path

import pytest
import pytest_asyncio

from services.common.blobstore import (
    BlobNotFound,
    BlobStore,
    BlobStoreUnavailable,
    LocalDirBlobStore,
    S3BlobStore,
    blob_store_from_url,
)
from services.common.launchers.process import free_port
from services.common.launchers.seaweed import SeaweedS3

SUBJECT = "tenants/t1/subjects/s1"
BAD_KEYS = ["", "/abs", "a//b", "a/", "a/../b", "..", "a/./b", "a/.hidden", "a\\b", "a\x00b"]


async def _s3_store(seaweed_s3: SeaweedS3) -> S3BlobStore:
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    store = blob_store_from_url(f"{seaweed_s3.url}/{bucket}")
    assert isinstance(store, S3BlobStore)
    await store.ensure_bucket()
    return store


@pytest.fixture(params=["local", "s3"])
def s3_server_or_none(request: pytest.FixtureRequest) -> SeaweedS3 | None:
    # Sync on purpose: an async fixture cannot resolve another async fixture lazily.
    return request.getfixturevalue("seaweed_s3") if request.param == "s3" else None


@pytest_asyncio.fixture
async def store(s3_server_or_none: SeaweedS3 | None, tmp_path: Path) -> BlobStore:
    if s3_server_or_none is None:
        return LocalDirBlobStore(tmp_path / "blobs")
    return await _s3_store(s3_server_or_none)


async def test_put_get_round_trip(store: BlobStore) -> None:
    data = os.urandom(300_000)
    await store.put(f"{SUBJECT}/photos/p1", data)
    assert await store.get(f"{SUBJECT}/photos/p1") == data


async def test_empty_blob(store: BlobStore) -> None:
    await store.put("empty", b"")
    assert await store.get("empty") == b""
    assert await store.exists("empty")


async def test_overwrite_replaces_content(store: BlobStore) -> None:
    await store.put("k/v", b"first version, longer")
    await store.put("k/v", b"second")
    assert await store.get("k/v") == b"second"
    assert await store.list("k") == ["k/v"]


async def test_missing_key_raises_blob_not_found(store: BlobStore) -> None:
    with pytest.raises(BlobNotFound) as caught:
        await store.get(f"{SUBJECT}/photos/none")
    assert caught.value.key == f"{SUBJECT}/photos/none"
    assert not await store.exists(f"{SUBJECT}/photos/none")


async def test_delete(store: BlobStore) -> None:
    await store.put(f"{SUBJECT}/photos/p1", b"x")
    await store.delete(f"{SUBJECT}/photos/p1")
    assert not await store.exists(f"{SUBJECT}/photos/p1")
    with pytest.raises(BlobNotFound):
        await store.get(f"{SUBJECT}/photos/p1")
    await store.delete(f"{SUBJECT}/photos/p1")  # already gone: no error
    await store.delete("never/existed")


async def test_list_matches_whole_segments(store: BlobStore) -> None:
    keys = [
        "tenants/t1/subjects/s1/photos/b",
        "tenants/t1/subjects/s1/photos/a",
        "tenants/t1/subjects/s1/lora/base",
        "tenants/t1/subjects/s10/photos/a",
        "tenants/t2/subjects/s1/photos/a",
    ]
    for key in keys:
        await store.put(key, key.encode())
    s1 = sorted(keys[:3])
    assert await store.list("tenants/t1/subjects/s1") == s1
    assert await store.list("tenants/t1/subjects/s1/") == s1
    assert await store.list("tenants/t1/subjects/s1/photos") == s1[1:]
    assert await store.list("tenants/t1/subjects/s1/photos/a") == ["tenants/t1/subjects/s1/photos/a"]
    assert await store.list("tenants/t1/subjects/s") == []
    assert await store.list("tenants/t3") == []
    assert await store.list("") == sorted(keys)


async def test_delete_prefix_removes_only_that_subject(store: BlobStore) -> None:
    for key in ["s1/photos/a", "s1/photos/b", "s1/lora/base", "s10/photos/a", "s2/photos/a"]:
        await store.put(f"tenants/t1/subjects/{key}", b"x")
    assert await store.delete_prefix(SUBJECT) == 3
    assert await store.list(SUBJECT) == []
    assert await store.list("tenants/t1/subjects") == [
        "tenants/t1/subjects/s10/photos/a",
        "tenants/t1/subjects/s2/photos/a",
    ]
    assert await store.delete_prefix(SUBJECT) == 0


async def test_exists(store: BlobStore) -> None:
    await store.put("a/b/c", b"x")
    assert await store.exists("a/b/c")
    assert not await store.exists("a/b")
    assert not await store.exists("a/b/c/d")


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_bad_keys_rejected(store: BlobStore, key: str) -> None:
    with pytest.raises(ValueError):
        await store.put(key, b"x")
    with pytest.raises(ValueError):
        await store.get(key)
    with pytest.raises(ValueError):
        await store.delete(key)
    with pytest.raises(ValueError):
        await store.exists(key)


@pytest.mark.parametrize("prefix", ["/abs", "a//b", "a/../b", "../x"])
async def test_bad_prefixes_rejected(store: BlobStore, prefix: str) -> None:
    with pytest.raises(ValueError):
        await store.list(prefix)
    with pytest.raises(ValueError):
        await store.delete_prefix(prefix)


async def test_local_files_private_and_atomic(tmp_path: Path) -> None:
    store = LocalDirBlobStore(tmp_path / "blobs")
    await store.put(f"{SUBJECT}/photos/p1", b"secret ciphertext")
    await store.put(f"{SUBJECT}/photos/p1", b"newer ciphertext")
    path = tmp_path / "blobs" / SUBJECT / "photos" / "p1"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    directory = path.parent
    while directory != tmp_path:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
        directory = directory.parent
    assert os.listdir(path.parent) == ["p1"]  # no temp files left behind


async def test_local_delete_leaves_no_empty_dirs(tmp_path: Path) -> None:
    store = LocalDirBlobStore(tmp_path / "blobs")
    await store.put(f"{SUBJECT}/photos/p1", b"x")
    await store.put("tenants/t1/other", b"x")
    await store.delete_prefix(SUBJECT)
    assert not (tmp_path / "blobs" / "tenants" / "t1" / "subjects").exists()
    assert (tmp_path / "blobs" / "tenants" / "t1" / "other").is_file()


def test_file_url() -> None:
    store = blob_store_from_url("file:///var/lib/studio/blobs")
    assert isinstance(store, LocalDirBlobStore)
    assert store.root == Path("/var/lib/studio/blobs")


@pytest.mark.parametrize("url", ["file://relative/path", "file:relative", "ftp://x/y"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(ValueError):
        blob_store_from_url(url)


def test_s3_url_decodes_secret_and_never_shows_it() -> None:
    secret = "s3cr/et+w@rd:x"
    encoded = "s3cr%2Fet%2Bw%40rd%3Ax"
    store = blob_store_from_url(f"s3://AKID:{encoded}@minio.local:9000/portraits?secure=true")
    assert isinstance(store, S3BlobStore)
    assert (store.endpoint, store.bucket) == ("minio.local:9000", "portraits")
    assert store._client._provider.retrieve().secret_key == secret
    assert secret not in repr(store) and encoded not in repr(store)


@pytest.mark.parametrize(
    "url",
    [
        "s3://AKID:hunter2hunter2@host:9000",
        "s3://AKID:hunter2hunter2@host:notaport/bucket",
        "s3://hunter2hunter2@host:9000/bucket",
        "s3://AKID:hunter2hunter2@/bucket",
    ],
)
def test_bad_s3_urls_do_not_leak_secret(url: str) -> None:
    with pytest.raises(ValueError) as caught:
        blob_store_from_url(url)
    assert "hunter2" not in str(caught.value)
    assert caught.value.__context__ is None or caught.value.__suppress_context__


async def test_s3_errors_do_not_leak_secret(seaweed_s3: SeaweedS3) -> None:
    store = S3BlobStore(seaweed_s3.endpoint, seaweed_s3.access_key, "wrong-secret-value", "nobucket")
    with pytest.raises(Exception) as caught:
        await store.put("a", b"x")
    assert "wrong-secret-value" not in str(caught.value)
    assert "wrong-secret-value" not in repr(caught.value)


async def test_an_unreachable_s3_store_is_an_outage_that_names_no_key_or_secret() -> None:
    """A store that is down (here: nothing listens) is BlobStoreUnavailable, an OSError: public calls answer
    UNAVAILABLE and jobs wait (services/common/workqueue.py), where it used to be an internal error."""
    store = S3BlobStore(f"127.0.0.1:{free_port()}", "access", "secret-value", "bucket")
    with pytest.raises(BlobStoreUnavailable) as caught:
        await store.put(f"{SUBJECT}/photos/p1", b"x")
    assert isinstance(caught.value, OSError) and "is unreachable" in str(caught.value)
    assert "subjects" not in str(caught.value) and "secret-value" not in str(caught.value)
