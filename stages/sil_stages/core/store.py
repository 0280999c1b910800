"""One store interface over `file://` and `s3://`.

Every artifact of a loop is addressed by a URI, and every write is atomic from a reader's point of view:
a file is written to a temporary name and renamed (file://) or put as one object (s3://; a multipart upload
becomes visible only when it is completed), so a stage killed in the middle leaves either the old state or the
new one, never half of a file. A directory becomes visible by its manifest, written last by the stage
(see `contract`), not by its files.

Credentials are never passed in: boto3 reads them from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
a profile, or an IAM role on EKS), so they cannot leak into a spec, a status or a log.

On S3, checkpoints move as multipart transfers of `TRANSFER_CHUNK_BYTES` parts, `TRANSFER_CONCURRENCY` at a time,
and the files of a tree `TREE_WORKERS` at a time (`bench/s3_throughput.py` measured these against a single
`put_object` / `get_object`; see bench/RESULTS.md). Transient failures (5xx, throttling, dropped connections)
are retried twice over: each request by botocore (`RETRY_ATTEMPTS`, exponential backoff with jitter), and each
whole-object transfer again (`TRANSFER_ATTEMPTS`), because a download that breaks mid-body or an upload whose
parts ran out of retries is not retried by botocore. Permanent failures (no bucket, wrong credentials, access
denied) become a `StoreError` at once, naming the URI and what to do.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlparse

from sil_stages.core.contract import FileEntry, StorageOptions

if TYPE_CHECKING:
    from boto3.s3.transfer import TransferConfig
    from mypy_boto3_s3 import S3Client

MIB = 1 << 20
TRANSFER_CHUNK_BYTES = 32 * MIB
"""Multipart part size, and the size above which a file is sent in parts (ranged GETs on download).

32 MiB because S3 allows 10,000 parts: objects up to 312 GiB (boto3's default 8 MiB: 78 GiB, less than one
large unsharded checkpoint). bench/s3_throughput.py found 8 to 64 MiB parts equally fast against a local server
(bench/RESULTS.md), so the limit decides."""
TRANSFER_CONCURRENCY = 8
"""Parts of one file in flight at once. 2 to 10 measured alike against a local server; against a remote S3 each
part waits for a round trip, and 8 keeps those waits overlapped while bounding one file to 8 parts in flight."""
TREE_WORKERS = 4
"""Files of one tree in flight at once (small files gain most: each is one request's latency)."""
RETRY_ATTEMPTS = 8
"""Attempts per request, botocore's own retries (adaptive mode: backoff with jitter, client-side rate limit)."""
TRANSFER_ATTEMPTS = 3
"""Attempts per whole-object transfer, on top of the per-request retries."""
TRANSFER_BACKOFF_SECONDS = 1.0
"""First pause between whole-object attempts; doubled each time."""


@dataclass(frozen=True)
class StoreTimeouts:
    """How long one S3 call may take before it gives up: connect and read timeouts of each request, requests per
    call (botocore's retries) and whole-object attempts. A stage moving gigabytes keeps the patient defaults; the
    operator, which only reads manifests and writes a pointer, passes shorter ones so that an endpoint that
    accepts connections and never answers fails in seconds."""

    connect_seconds: float = 10.0
    read_seconds: float = 60.0
    attempts: int = RETRY_ATTEMPTS
    transfer_attempts: int = TRANSFER_ATTEMPTS


_T = TypeVar("_T")
_R = TypeVar("_R")

_CREDENTIALS_HINT = (
    "check the credentials in spec.storage.credentialsSecret (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
)
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
_TRANSIENT_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError", "ServiceUnavailable"}
)


class StoreError(RuntimeError):
    """A store operation failed for good; the message names the URI and what to do."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@functools.cache
def process_umask() -> int:
    """This process's umask, read without changing it (os.umask can only be read by setting it, racing threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def is_remote(uri: str) -> bool:
    return urlparse(uri).scheme == "s3"


_ACCEPTED = "the store reads s3://bucket/key, file:///path or a path"


def _unknown_scheme(uri: str, scheme: str) -> StoreError:
    return StoreError(f"{uri}: unknown scheme '{scheme}://': {_ACCEPTED} (and models also hf://org/name)")


def to_uri(path_or_uri: str, base: Path | None = None) -> str:
    """A plain path (absolute, or relative to `base`) becomes a `file://` URI; s3://, file:// and hf:// pass through.

    Any other scheme is refused: taken for a relative path, `ftp://host/x` would become a local folder.
    """
    parsed = urlparse(path_or_uri)
    if parsed.scheme in ("s3", "hf", "file"):
        return path_or_uri
    if parsed.scheme:
        raise _unknown_scheme(path_or_uri, parsed.scheme)
    path = Path(path_or_uri)
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return path.resolve().as_uri()


def local_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file", "s3", "hf"):
        raise _unknown_scheme(uri, parsed.scheme)
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


def transfer_config() -> TransferConfig:
    """The multipart settings of every upload and download (one place, so the benchmark measures these)."""
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(
        multipart_threshold=TRANSFER_CHUNK_BYTES,
        multipart_chunksize=TRANSFER_CHUNK_BYTES,
        max_concurrency=TRANSFER_CONCURRENCY,
        use_threads=True,
    )


# -- S3 errors ------------------------------------------------------------------------------------------------
def _root_cause(error: BaseException) -> BaseException:
    """The botocore error behind boto3's transfer wrappers (they hide the ClientError's code)."""
    from boto3.exceptions import RetriesExceededError, S3UploadFailedError

    last: BaseException | None = getattr(error, "last_exception", None)  # untyped in the stubs
    if isinstance(error, RetriesExceededError) and last is not None:
        return _root_cause(last)
    if isinstance(error, S3UploadFailedError) and error.__context__ is not None:
        return _root_cause(error.__context__)
    return error


def _error_code(error: BaseException) -> str:
    from botocore.exceptions import ClientError

    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", ""))
    return ""


def _is_transient(error: BaseException) -> bool:
    """Worth another whole-object attempt: the server was busy or the connection broke, not a refusal."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError, IncompleteReadError

    cause = _root_cause(error)
    if isinstance(cause, ClientError):
        status = int(cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return status >= 500 or _error_code(cause) in _TRANSIENT_CODES
    return isinstance(cause, ConnectionError | HTTPClientError | IncompleteReadError)


def _explain(uri: str, error: BaseException) -> StoreError:
    """A StoreError that says which URI failed, why, and what to do about it."""
    from botocore.exceptions import NoCredentialsError

    cause = _root_cause(error)
    code = _error_code(cause)
    bucket = _s3_location(uri).bucket
    if isinstance(cause, NoCredentialsError):
        why = f"no S3 credentials found: {_CREDENTIALS_HINT}, or give the pod an IAM role"
    elif code == "NoSuchBucket":
        why = f"bucket '{bucket}' does not exist: create the bucket, or fix spec.storage.uri"
    elif code == "InvalidAccessKeyId":
        why = f"the S3 server does not know this access key: {_CREDENTIALS_HINT}"
    elif code == "SignatureDoesNotMatch":
        why = f"the secret key does not match the access key: {_CREDENTIALS_HINT}"
    elif code in ("AccessDenied", "403"):
        why = (
            f"access denied (HTTP 403): {_CREDENTIALS_HINT}, and that they may read, write and list "
            f"bucket '{bucket}' (without list rights S3 answers 403 for a missing object too)"
        )
    elif code in _NOT_FOUND:
        why = "no such object"
    elif _is_transient(cause):
        why = f"the S3 server did not answer successfully after retries ({cause}); check spec.storage.endpoint"
    else:
        why = str(cause)
    return StoreError(f"{uri}: {why}")


_CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)
"""The environment that decides which credentials a new boto3 session finds."""


@dataclass(frozen=True)
class S3Credentials:
    """Keys given to a Store explicitly instead of found in the environment: the operator reads them from a loop's
    `spec.storage.credentialsSecret`, the Secret its stage pods get, so that one operator serves loops whose stores
    have different owners. Held in memory only: never in a config, a manifest or a log (repr hides the secret)."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


class S3Clients:
    """boto3 S3 clients, made on demand and shared: one per endpoint, region, timeouts and credentials.

    A boto3 session parses the S3 service model again (about 12 MB and 0.3 s of CPU each, measured with
    bench/scale.py); a client of an existing session costs a tenth of that, and one client serves any number of
    threads. The operator keeps a Store per loop, so with a session per Store a thousand loops held gigabytes;
    sharing one `S3Clients` makes them share one client per endpoint. Each set of credential variables in the
    environment gets a session of its own (boto3's default session would keep the credentials it found first),
    so changed credentials are picked up by the next client made.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # boto3 clients are thread-safe to use, not to create
        self._sessions: dict[tuple[str | None, ...], Any] = {}
        self._clients: dict[tuple[Any, ...], S3Client] = {}

    def get(
        self, endpoint: str | None, region: str, timeouts: StoreTimeouts, explicit: S3Credentials | None = None
    ) -> S3Client:
        """A client for `explicit` credentials, or for those the environment leads boto3 to."""
        if explicit is not None:
            credentials: tuple[str | None, ...] = (
                "explicit",
                explicit.access_key_id,
                explicit.secret_access_key,
                explicit.session_token,
            )
        else:
            credentials = tuple(os.environ.get(name) for name in _CREDENTIAL_VARIABLES)
        key = (endpoint, region, timeouts, credentials)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._make(self._session(credentials, explicit), endpoint, region, timeouts)
                self._clients[key] = client
            return client

    def _session(self, credentials: tuple[str | None, ...], explicit: S3Credentials | None) -> Any:
        import boto3

        session = self._sessions.get(credentials)
        if session is None:
            if explicit is None:
                session = boto3.session.Session()
            else:
                session = boto3.session.Session(
                    aws_access_key_id=explicit.access_key_id,
                    aws_secret_access_key=explicit.secret_access_key,
                    aws_session_token=explicit.session_token,
                )
            self._sessions[credentials] = session
        return session

    @staticmethod
    def _make(session: Any, endpoint: str | None, region: str, timeouts: StoreTimeouts) -> S3Client:
        from botocore.config import Config

        client: S3Client = session.client(
            "s3",
            endpoint_url=endpoint,
            region_name=region,
            config=Config(
                retries={"max_attempts": timeouts.attempts, "mode": "adaptive"},
                s3={"addressing_style": "path"},
                # Every part of every file in flight gets its own connection instead of waiting for one.
                max_pool_connections=TRANSFER_CONCURRENCY * TREE_WORKERS,
                connect_timeout=timeouts.connect_seconds,
                read_timeout=timeouts.read_seconds,
            ),
        )
        return client


class Store:
    """Reads and writes artifacts by URI; the scheme picks the backend."""

    def __init__(
        self,
        options: StorageOptions | None = None,
        timeouts: StoreTimeouts | None = None,
        clients: S3Clients | None = None,
        credentials: S3Credentials | None = None,
    ) -> None:
        """`clients` shares S3 clients with other Stores of the process (the operator's one Store per loop);
        without it the Store makes its own, on first use. `credentials`: S3 keys to use instead of the
        environment's (the operator's reading of a loop's credentials Secret)."""
        self._options = options
        self._credentials = credentials
        self._timeouts = timeouts or StoreTimeouts()
        self._clients = clients or S3Clients()
        self._s3: S3Client | None = None
        self._s3_lock = threading.Lock()
        self._buckets_seen: set[str] = set()

    # -- backends -------------------------------------------------------------------------------------------
    def _client(self) -> S3Client:
        with self._s3_lock:
            if self._s3 is None:
                endpoint = (self._options.endpoint if self._options else None) or os.environ.get("AWS_ENDPOINT_URL")
                region = (self._options.region if self._options else None) or os.environ.get(
                    "AWS_DEFAULT_REGION", "us-east-1"
                )
                self._s3 = self._clients.get(endpoint, region, self._timeouts, self._credentials)
            return self._s3

    @contextmanager
    def _s3_errors(self, uri: str) -> Iterator[None]:
        """Turns botocore's errors into a StoreError naming `uri` (after botocore's own retries)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (ClientError, BotoCoreError) as error:
            raise _explain(uri, error) from error

    def _transfer(self, uri: str, action: Callable[[], _T]) -> _T:
        """Runs a whole-object transfer, again after a transient failure, and explains a permanent one."""
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        pause = TRANSFER_BACKOFF_SECONDS
        attempts = max(1, self._timeouts.transfer_attempts)
        for attempt in range(1, attempts + 1):
            try:
                return action()
            except (ClientError, BotoCoreError, Boto3Error) as error:
                if attempt == attempts or not _is_transient(error):
                    raise _explain(uri, error) from error
            time.sleep(pause)
            pause *= 2
        raise AssertionError("unreachable")

    def _require_bucket(self, uri: str) -> None:
        """After a 404: tell a missing object from a missing bucket (S3 answers HEAD 404 for both)."""
        loc = _s3_location(uri)
        if loc.bucket in self._buckets_seen:
            return
        from botocore.exceptions import ClientError

        try:
            self._client().head_bucket(Bucket=loc.bucket)
        except ClientError as error:
            code = _error_code(error)
            if code in _NOT_FOUND or code == "NoSuchBucket":
                raise StoreError(
                    f"{uri}: bucket '{loc.bucket}' does not exist: create the bucket, or fix spec.storage.uri"
                ) from error
            raise _explain(uri, error) from error
        self._buckets_seen.add(loc.bucket)

    def _head(self, uri: str) -> int | None:
        """The object's size, or None when there is no such object (a missing bucket is an error)."""
        loc = _s3_location(uri)
        from botocore.exceptions import ClientError

        with self._s3_errors(uri):
            try:
                size = self._client().head_object(Bucket=loc.bucket, Key=loc.key)["ContentLength"]
            except ClientError as error:
                if _error_code(error) not in _NOT_FOUND:
                    raise
                self._require_bucket(uri)
                return None
        return int(size)

    # -- single objects -------------------------------------------------------------------------------------
    def exists(self, uri: str) -> bool:
        if is_remote(uri):
            return self._head(uri) is not None
        return local_path(uri).exists()

    def size(self, uri: str) -> int | None:
        """The size in bytes, or None when there is no such file."""
        if is_remote(uri):
            return self._head(uri)
        path = local_path(uri)
        return path.stat().st_size if path.is_file() else None

    def sha256(self, uri: str) -> str:
        """The sha256 of the bytes stored now (read back in full: S3 keeps no sha256 of multipart objects)."""
        if not is_remote(uri):
            path = local_path(uri)
            if not path.is_file():
                raise StoreError(f"{uri}: no such file")
            return sha256_of(path)
        loc = _s3_location(uri)

        def digest() -> str:
            body = self._client().get_object(Bucket=loc.bucket, Key=loc.key)["Body"]
            hasher = hashlib.sha256()
            for chunk in body.iter_chunks(MIB):
                hasher.update(chunk)
            return hasher.hexdigest()

        return self._transfer(uri, digest)

    def read_bytes(self, uri: str) -> bytes:
        if is_remote(uri):
            loc = _s3_location(uri)

            def read() -> bytes:
                data: bytes = self._client().get_object(Bucket=loc.bucket, Key=loc.key)["Body"].read()
                return data

            return self._transfer(uri, read)
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
            with self._s3_errors(uri):
                self._client().put_object(Bucket=loc.bucket, Key=loc.key, Body=data)
            return
        path = local_path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            # mkstemp's 0600 would outlive the rename: give the file the mode a plain write gets (0666 less the umask),
            # so that another user (a serving process, a stage container's user) can read a file store's artifacts.
            os.fchmod(fd, 0o666 & ~process_umask())
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
            with self._s3_errors(uri):
                self._client().delete_object(Bucket=loc.bucket, Key=loc.key)
            return
        local_path(uri).unlink(missing_ok=True)

    # -- trees ----------------------------------------------------------------------------------------------
    def list_files(self, uri: str) -> Iterator[str]:
        """Relative paths of every file under `uri` (temporary files and folder markers excluded)."""
        if is_remote(uri):
            loc = _s3_location(uri)
            prefix = loc.key.rstrip("/") + "/"
            with self._s3_errors(uri):
                paginator = self._client().get_paginator("list_objects_v2")
                for page in paginator.paginate(Bucket=loc.bucket, Prefix=prefix):
                    for item in page.get("Contents", []):
                        if not item["Key"].endswith("/"):
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
            self._transfer(
                uri,
                lambda: self._client().upload_file(str(local), loc.bucket, loc.key, Config=transfer_config()),
            )
        else:
            target = local_path(uri)
            if target.resolve() != local.resolve():
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.upload.tmp")
                shutil.copyfile(local, tmp)
                os.replace(tmp, target)
        return entry

    def download_file(self, uri: str, local: Path) -> Path:
        """Copies one object or file to `local` (written under a temporary name, then renamed)."""
        local.parent.mkdir(parents=True, exist_ok=True)
        if is_remote(uri):
            loc = _s3_location(uri)
            self._transfer(
                uri,
                lambda: self._client().download_file(loc.bucket, loc.key, str(local), Config=transfer_config()),
            )
            return local
        source = local_path(uri)
        if not source.is_file():
            raise StoreError(f"{uri}: no such file")
        tmp = local.with_name(f".{local.name}.download.tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, local)
        return local

    def upload_dir(self, local_dir: Path, uri: str) -> list[FileEntry]:
        """Copies a local directory under `uri`; returns entries relative to `uri`, in path order."""
        files = sorted(path for path in local_dir.rglob("*") if path.is_file())

        def upload(path: Path) -> FileEntry:
            relative = path.relative_to(local_dir).as_posix()
            entry = self.upload_file(path, join(uri, relative))
            return entry.model_copy(update={"path": relative})

        if not is_remote(uri):
            return [upload(path) for path in files]
        return in_parallel(upload, files, cost=lambda path: path.stat().st_size)

    def download_dir(self, uri: str, local_dir: Path) -> Path:
        """Makes the tree at `uri` available locally. `file://` trees are used in place, not copied."""
        if not is_remote(uri):
            path = local_path(uri)
            if not path.is_dir():
                raise StoreError(f"{uri}: no such directory")
            return path
        relatives = list(self.list_files(uri))
        if not relatives:
            raise StoreError(f"{uri}: no objects under this prefix")
        local_dir.mkdir(parents=True, exist_ok=True)
        in_parallel(lambda relative: self.download_file(join(uri, relative), inside(local_dir, relative)), relatives)
        return local_dir

    def read_json(self, uri: str) -> Any:
        import json

        return json.loads(self.read_text(uri))


def inside(root: Path, relative: str) -> Path:
    """`root / relative`, refusing a relative path that would leave `root` (a key like `../x` in a bucket)."""
    target = (root / relative).resolve()
    if not target.is_relative_to(root.resolve()):
        raise StoreError(f"{relative}: leaves the target directory {root}; refusing to write there")
    return target


def in_parallel(
    action: Callable[[_T], _R], items: Iterable[_T], *, cost: Callable[[_T], int] | None = None
) -> list[_R]:
    """`action` over `items` on `TREE_WORKERS` threads; results in `items` order, the first error raised.

    With `cost`, the costliest items start first, so a large file does not start last and run alone.
    """
    ordered = list(items)
    start_order = sorted(range(len(ordered)), key=lambda i: -cost(ordered[i])) if cost else range(len(ordered))
    with ThreadPoolExecutor(max_workers=TREE_WORKERS, thread_name_prefix="store") as pool:
        futures = {i: pool.submit(action, ordered[i]) for i in start_order}
        try:
            return [futures[i].result() for i in range(len(ordered))]
        except BaseException:
            for future in futures.values():
                future.cancel()
            raise
