"""One store interface over `file://` and `s3://`.

Every artifact of a loop is addressed by a URI, and every write is atomic from a reader's point of view:
a file is written to a temporary name and renamed (file://) or put as one object (s3://), so a stage killed in the
middle leaves either the old state or the new one, never half of a file. A directory becomes visible by its
manifest, written last by the stage (see `contract`), not by its files.

Credentials are never passed in: boto3 reads them from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
a profile, or an IAM role on EKS), so they cannot leak into a spec, a status or a log.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from sil_stages.contract import FileEntry, StorageOptions

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class StoreError(RuntimeError):
    """A store operation failed for good; the message names the URI and what to do."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_remote(uri: str) -> bool:
    return urlparse(uri).scheme == "s3"


def to_uri(path_or_uri: str, base: Path | None = None) -> str:
    """A plain path (absolute, or relative to `base`) becomes a `file://` URI; URIs pass through."""
    parsed = urlparse(path_or_uri)
    if parsed.scheme in ("s3", "hf", "file"):
        return path_or_uri
    path = Path(path_or_uri)
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return path.resolve().as_uri()


def local_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        raise StoreError(f"{uri}: not a local path")
    return Path(unquote(parsed.path))


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts)])


@dataclass(frozen=True)
class _S3Location:
    bucket: str
    key: str


def _s3_location(uri: str) -> _S3Location:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StoreError(f"{uri}: expected s3://bucket/key")
    return _S3Location(parsed.netloc, parsed.path.lstrip("/"))


class Store:
    """Reads and writes artifacts by URI; the scheme picks the backend."""

    def __init__(self, options: StorageOptions | None = None) -> None:
        self._options = options
        self._s3: S3Client | None = None

    # -- backends -------------------------------------------------------------------------------------------
    def _client(self) -> S3Client:
        if self._s3 is None:
            import boto3
            from botocore.config import Config

            endpoint = (self._options.endpoint if self._options else None) or os.environ.get("AWS_ENDPOINT_URL")
            region = (self._options.region if self._options else None) or os.environ.get(
                "AWS_DEFAULT_REGION", "us-east-1"
            )
            self._s3 = boto3.client(
                "s3",
                endpoint_url=endpoint,
                region_name=region,
                config=Config(retries={"max_attempts": 8, "mode": "adaptive"}, s3={"addressing_style": "path"}),
            )
        return self._s3

    # -- single objects -------------------------------------------------------------------------------------
    def exists(self, uri: str) -> bool:
        if is_remote(uri):
            loc = _s3_location(uri)
            from botocore.exceptions import ClientError

            try:
                self._client().head_object(Bucket=loc.bucket, Key=loc.key)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise StoreError(f"{uri}: {error}") from error
            return True
        return local_path(uri).exists()

    def read_bytes(self, uri: str) -> bytes:
        if is_remote(uri):
            loc = _s3_location(uri)
            body = self._client().get_object(Bucket=loc.bucket, Key=loc.key)["Body"]
            data: bytes = body.read()
            return data
        path = local_path(uri)
        try:
            return path.read_bytes()
        except FileNotFoundError as error:
            raise StoreError(f"{uri}: no such file") from error

    def read_text(self, uri: str) -> str:
        return self.read_bytes(uri).decode("utf-8")

    def write_bytes(self, uri: str, data: bytes) -> None:
        """Atomic: a reader sees the previous content or the new one."""
        if is_remote(uri):
            loc = _s3_location(uri)
            self._client().put_object(Bucket=loc.bucket, Key=loc.key, Body=data)
            return
        path = local_path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def write_text(self, uri: str, text: str) -> None:
        self.write_bytes(uri, text.encode("utf-8"))

    def delete(self, uri: str) -> None:
        if is_remote(uri):
            loc = _s3_location(uri)
            self._client().delete_object(Bucket=loc.bucket, Key=loc.key)
            return
        local_path(uri).unlink(missing_ok=True)

    # -- trees ----------------------------------------------------------------------------------------------
    def list_files(self, uri: str) -> Iterator[str]:
        """Relative paths of every file under `uri` (temporary files excluded)."""
        if is_remote(uri):
            loc = _s3_location(uri)
            prefix = loc.key.rstrip("/") + "/"
            paginator = self._client().get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=loc.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield item["Key"][len(prefix) :]
            return
        root = local_path(uri)
        if not root.exists():
            return
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.name.endswith(".tmp"):
                yield path.relative_to(root).as_posix()

    def upload_file(self, local: Path, uri: str) -> FileEntry:
        entry = FileEntry(path=local.name, size=local.stat().st_size, sha256=sha256_of(local))
        if is_remote(uri):
            loc = _s3_location(uri)
            self._client().upload_file(str(local), loc.bucket, loc.key)
        else:
            target = local_path(uri)
            if target.resolve() != local.resolve():
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.upload.tmp")
                shutil.copyfile(local, tmp)
                os.replace(tmp, target)
        return entry

    def upload_dir(self, local_dir: Path, uri: str) -> list[FileEntry]:
        """Copies a local directory under `uri`; returns entries relative to `uri`'s parent stage dir."""
        entries: list[FileEntry] = []
        for path in sorted(local_dir.rglob("*")):
            if path.is_file():
                relative = path.relative_to(local_dir).as_posix()
                entry = self.upload_file(path, join(uri, relative))
                entries.append(entry.model_copy(update={"path": relative}))
        return entries

    def download_dir(self, uri: str, local_dir: Path) -> Path:
        """Makes the tree at `uri` available locally. `file://` trees are used in place, not copied."""
        if not is_remote(uri):
            path = local_path(uri)
            if not path.is_dir():
                raise StoreError(f"{uri}: no such directory")
            return path
        loc = _s3_location(uri)
        local_dir.mkdir(parents=True, exist_ok=True)
        found = False
        for relative in self.list_files(uri):
            found = True
            target = local_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            self._client().download_file(loc.bucket, f"{loc.key.rstrip('/')}/{relative}", str(target))
        if not found:
            raise StoreError(f"{uri}: no objects under this prefix")
        return local_dir

    def read_json(self, uri: str) -> Any:
        import json

        return json.loads(self.read_text(uri))
