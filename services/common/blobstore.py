"""Object storage for ciphertext: one interface, a local-directory backend and an S3 backend.

Keys are '/'-separated paths such as "tenants/t1/subjects/s1/photos/p1". A prefix selects whole
segments: "tenants/t1" (or "tenants/t1/") matches "tenants/t1" and "tenants/t1/...", never
"tenants/t10/...". The store never encrypts; callers hand it sealed envelopes.
"""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path
from typing import Protocol
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

import certifi
import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import S3Error, ServerError

from services.common.atomic_files import write_atomically

DIR_MODE = 0o700
FILE_MODE = 0o600
TEMP_PREFIX = ".tmp-"
_MISSING_CODES = {"NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"}
S3_CONNECT_TIMEOUT_S = 10.0  # minio's default is 5 minutes: a store that drops packets hung every call that long
S3_READ_TIMEOUT_S = 120.0  # between two reads of a response, not for the whole object
S3_RETRIES = 3  # minio's default is 5 (about 6 s against a closed port); our callers retry an outage themselves


class BlobNotFound(LookupError):
    def __init__(self, key: str) -> None:
        super().__init__(f"no blob at {key!r}")
        self.key = key


class BlobStoreUnavailable(OSError):
    """The object store cannot be reached or answers with a server error: retry later, the data is not
    wrong. An OSError, so a public call that meets it answers UNAVAILABLE."""


class BlobStore(Protocol):
    async def put(self, key: str, data: bytes) -> None: ...
    async def get(self, key: str) -> bytes: ...
    async def delete(self, key: str) -> None: ...
    async def delete_prefix(self, prefix: str) -> int: ...
    async def list(self, prefix: str) -> list[str]: ...
    async def exists(self, key: str) -> bool: ...


def validate_key(key: str) -> str:
    """Return the key unchanged, or raise ValueError if it is not a safe relative path."""
    if not isinstance(key, str) or not key:
        raise ValueError("blob key must be a non-empty string")
    if key.startswith("/") or ".." in key or "\\" in key or "\x00" in key:
        raise ValueError(f"invalid blob key {key!r}: no leading '/', '..', '\\' or NUL allowed")
    for segment in key.split("/"):
        if not segment:
            raise ValueError(f"invalid blob key {key!r}: empty segment")
        if segment.startswith("."):
            raise ValueError(f"invalid blob key {key!r}: segments may not start with '.'")
    return key


def normalize_prefix(prefix: str) -> str:
    """'' for everything, else a validated key without a trailing '/'."""
    stripped = prefix[:-1] if prefix.endswith("/") else prefix
    return validate_key(stripped) if stripped else ""


def _under(prefix: str, key: str) -> bool:
    return not prefix or key == prefix or key.startswith(prefix + "/")


class LocalDirBlobStore:
    """Blobs as files under `root`. A key cannot be both a blob and a prefix of another blob."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()

    def __repr__(self) -> str:
        return f"LocalDirBlobStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._put, self._path(key), bytes(data))

    async def get(self, key: str) -> bytes:
        return await asyncio.to_thread(self._get, key, self._path(key))

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._delete, self._path(key))

    async def delete_prefix(self, prefix: str) -> int:
        keys = await self.list(prefix)
        for key in keys:
            await self.delete(key)
        return len(keys)

    async def list(self, prefix: str) -> list[str]:
        return await asyncio.to_thread(self._list, normalize_prefix(prefix))

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._path(key).is_file)

    def _make_dirs(self, directory: Path) -> None:
        missing = []
        while not directory.is_dir():
            missing.append(directory)
            directory = directory.parent
        for path in reversed(missing):
            try:
                os.mkdir(path, DIR_MODE)
            except FileExistsError:
                if not path.is_dir():
                    raise ValueError(f"blob path {path} conflicts with an existing blob") from None

    def _put(self, path: Path, data: bytes) -> None:
        self._make_dirs(path.parent)
        write_atomically(path, data, FILE_MODE, TEMP_PREFIX)

    @staticmethod
    def _get(key: str, path: Path) -> bytes:
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise BlobNotFound(key) from None

    def _delete(self, path: Path) -> None:
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        self._prune_empty_dirs(path.parent)

    def _prune_empty_dirs(self, directory: Path) -> None:
        # Empty directories would keep tenant and subject ids around after a deletion.
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    def _list(self, prefix: str) -> list[str]:
        base = self.root.joinpath(*prefix.split("/")) if prefix else self.root
        if base.is_file():
            return [prefix]
        keys = []
        for dirpath, _dirnames, filenames in os.walk(base):
            relative = Path(dirpath).relative_to(self.root)
            for name in filenames:
                if not name.startswith(TEMP_PREFIX):
                    keys.append((relative / name).as_posix())
        return sorted(keys)


class S3BlobStore:
    """Blobs as objects in one bucket of an S3-compatible store (MinIO, SeaweedFS, AWS)."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        secure: bool = False,
        region: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.bucket = bucket
        self._client = Minio(endpoint, access_key, secret_key, secure=secure, region=region, http_client=_http_client())

    def __repr__(self) -> str:
        return f"S3BlobStore(endpoint={self.endpoint!r}, bucket={self.bucket!r})"

    async def ensure_bucket(self) -> None:
        await self._call(self._ensure_bucket)

    async def put(self, key: str, data: bytes) -> None:
        validate_key(key)
        await self._call(self._client.put_object, self.bucket, key, io.BytesIO(data), len(data))

    async def get(self, key: str) -> bytes:
        validate_key(key)
        return await self._call(self._get, key)

    async def delete(self, key: str) -> None:
        validate_key(key)
        await self._call(self._client.remove_object, self.bucket, key)

    async def delete_prefix(self, prefix: str) -> int:
        keys = await self.list(prefix)
        if keys:
            await self._call(self._delete_many, keys)
        return len(keys)

    async def list(self, prefix: str) -> list[str]:
        return await self._call(self._list, normalize_prefix(prefix))

    async def exists(self, key: str) -> bool:
        validate_key(key)
        return await self._call(self._exists, key)

    async def _call(self, function, *args):
        """`function` off the event loop; an outage of the store becomes BlobStoreUnavailable, without the
        request's URL (its key names tenant and subject)."""
        try:
            return await asyncio.to_thread(function, *args)
        except urllib3.exceptions.HTTPError as error:
            reason = f"object store {self.endpoint} is unreachable ({type(error).__name__})"
            raise BlobStoreUnavailable(reason) from None
        except ServerError as error:
            raise BlobStoreUnavailable(f"object store {self.endpoint} answered HTTP {error.status_code}") from None
        except S3Error as error:
            if error.response is not None and error.response.status >= 500:
                raise BlobStoreUnavailable(f"object store {self.endpoint} answered {error.code}") from None
            raise

    def _ensure_bucket(self) -> None:
        if self._client.bucket_exists(self.bucket):
            return
        try:
            self._client.make_bucket(self.bucket)
        except S3Error as error:
            if error.code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise

    def _get(self, key: str) -> bytes:
        try:
            response = self._client.get_object(self.bucket, key)
        except S3Error as error:
            if error.code in _MISSING_CODES:
                raise BlobNotFound(key) from None
            raise
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def _exists(self, key: str) -> bool:
        try:
            self._client.stat_object(self.bucket, key)
        except S3Error as error:
            if error.code in _MISSING_CODES:
                return False
            raise
        return True

    def _list(self, prefix: str) -> list[str]:
        listing_prefix = prefix + "/" if prefix else ""
        objects = self._client.list_objects(self.bucket, prefix=listing_prefix, recursive=True)
        keys = [obj.object_name for obj in objects if obj.object_name and not obj.is_dir]
        if prefix and self._exists(prefix):
            keys.append(prefix)
        return sorted(key for key in keys if _under(prefix, key))

    def _delete_many(self, keys: list[str]) -> None:
        errors = list(self._client.remove_objects(self.bucket, (DeleteObject(k) for k in keys)))
        if errors:
            failed = ", ".join(f"{e.name}: {e.code}" for e in errors[:5])
            raise OSError(f"could not delete {len(errors)} of {len(keys)} blobs ({failed})")


def _http_client() -> urllib3.PoolManager:
    """minio's own HTTP client, with the timeouts and retries above: an outage shows in seconds."""
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=S3_CONNECT_TIMEOUT_S, read=S3_READ_TIMEOUT_S), maxsize=16,
        cert_reqs="CERT_REQUIRED", ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(total=S3_RETRIES, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )


def blob_store_from_url(url: str) -> BlobStore:
    """file:///abs/path, or s3://ACCESS:SECRET@host:port/bucket[?secure=true&region=R]."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return _local_from_url(parts.netloc, parts.path)
    if parts.scheme == "s3":
        return _s3_from_url(parts)
    raise ValueError(f"unsupported blob store scheme {parts.scheme!r} (use file:// or s3://)")


def _local_from_url(netloc: str, path: str) -> LocalDirBlobStore:
    root = unquote(path)
    if netloc not in ("", "localhost") or not root.startswith("/"):
        raise ValueError("file blob store URL must be file:///absolute/path")
    return LocalDirBlobStore(Path(root))


def _s3_from_url(parts: SplitResult) -> S3BlobStore:
    # Messages here never echo the URL: it carries the secret key.
    bucket = parts.path.strip("/")
    if not parts.hostname or not bucket or "/" in bucket:
        raise ValueError("s3 blob store URL must be s3://ACCESS:SECRET@host:port/bucket")
    if parts.username is None or parts.password is None:
        raise ValueError("s3 blob store URL needs ACCESS:SECRET credentials before '@'")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("s3 blob store URL has an invalid port") from None
    query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
    endpoint = parts.hostname + (f":{port}" if port else "")
    return S3BlobStore(
        endpoint,
        unquote(parts.username),
        unquote(parts.password),
        bucket,
        secure=query.get("secure", "false").lower() in {"1", "true", "yes"},
        region=query.get("region"),
    )


async def open_blob_store(url: str) -> BlobStore:
    """The store a service uses, ready to take writes (an S3 bucket is created if missing)."""
    store = blob_store_from_url(url)
    if isinstance(store, S3BlobStore):
        await store.ensure_bucket()
    return store
