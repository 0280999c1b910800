"""A real Prometheus and Pushgateway on 127.0.0.1 for tests, plus a canned stand-in for its query API.

`running_prometheus` starts the Debian packages' binaries (`apt-get install prometheus prometheus-pushgateway`)
as child processes: a Pushgateway, and a Prometheus that scrapes it every second with `honor_labels: true` (the
pushed `namespace`, `loop`, `iteration` labels are kept, as on a cluster) and any extra targets, e.g. the
operator's metrics port. Both listen on free loopback ports and keep their data in the given folder, so `stop()`
and `start()` of Prometheus work on the same TSDB, the way a test takes it away during a gate and brings it back.
A missing binary is an error that names the package to install: the tests never skip.

`canned_query_api` is a tiny HTTP(S) server that answers `/api/v1/query` with a fixed body and checks the
bearer token, for what Prometheus 2.42 itself cannot do (auth, TLS, slow answers).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

from tests.servers.processes import die_with_parent, free_port

SCRAPE_INTERVAL_SECONDS = 1
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0

_BINARIES = {
    "prometheus": ("prometheus", "prometheus"),
    "pushgateway": ("prometheus-pushgateway", "prometheus-pushgateway"),
}
"""Process name → (binary on PATH, Debian package that installs it)."""


class PrometheusServerError(RuntimeError):
    """A server could not be found, started or stopped."""


def binary(name: str) -> str:
    """The path of a server binary, or PrometheusServerError naming the apt package to install."""
    command, package = _BINARIES[name]
    found = shutil.which(command)
    if found is None:
        raise PrometheusServerError(
            f"{command} is not installed; install it with: apt-get install -y {package} "
            "(the tests start it as a process; the system service need not run)"
        )
    return found


@dataclass
class _Server:
    """One server process: how to start it, where it logs, how to tell it is ready."""

    name: str
    command: list[str]
    ready_url: str
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None

    def start(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            return
        self.log_file = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            code = self.popen.poll()
            if code is not None:
                raise PrometheusServerError(f"{self.name} exited with code {code}; the end of its log:\n{self.tail()}")
            if _answers_ok(self.ready_url):
                return
            time.sleep(0.1)
        raise PrometheusServerError(
            f"{self.name} was not ready at {self.ready_url} within {START_TIMEOUT_SECONDS:g} s:\n{self.tail()}"
        )

    def stop(self) -> None:
        """SIGTERM (Prometheus closes its TSDB cleanly), SIGKILL if it does not exit in time."""
        if self.popen is not None:
            if self.popen.poll() is None:
                self.popen.terminate()
                try:
                    self.popen.wait(STOP_TIMEOUT_SECONDS)
                except subprocess.TimeoutExpired:
                    self.popen.kill()
                    self.popen.wait()
            self.popen = None
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _answers_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def prometheus_config(pushgateway: str, scrape_targets: Sequence[str]) -> dict[str, Any]:
    """Scrape the Pushgateway (keeping pushed labels) and the extra targets every second."""
    interval = f"{SCRAPE_INTERVAL_SECONDS}s"
    jobs: list[dict[str, Any]] = [
        {"job_name": "pushgateway", "honor_labels": True, "static_configs": [{"targets": [pushgateway]}]},
    ]
    if scrape_targets:
        jobs.append({"job_name": "targets", "static_configs": [{"targets": list(scrape_targets)}]})
    return {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "scrape_configs": jobs,
    }


@dataclass
class PrometheusServer:
    """A running Pushgateway and Prometheus. `stop()`/`start()` act on Prometheus only, keeping its data."""

    url: str
    pushgateway_url: str
    work_dir: Path
    _prometheus: _Server
    _pushgateway: _Server

    def stop(self) -> None:
        self._prometheus.stop()

    def start(self) -> None:
        """Starts Prometheus again on the same port and data folder; returns when it is ready to answer."""
        self._prometheus.start()

    def logs(self) -> str:
        return f"--- prometheus\n{self._prometheus.tail()}\n--- pushgateway\n{self._pushgateway.tail()}"

    def close(self) -> None:
        self._prometheus.stop()
        self._pushgateway.stop()


@contextlib.contextmanager
def running_prometheus(
    tmp_dir: Path, scrape_targets: Sequence[str] = (), host: str = "127.0.0.1"
) -> Iterator[PrometheusServer]:
    """A Pushgateway and a Prometheus scraping it (and `scrape_targets`, "host:port"), stopped on exit. `host`: the
    address both listen on (loopback but in the node tier, whose pods push to the node address in its namespace)."""
    prometheus_bin, pushgateway_bin = binary("prometheus"), binary("pushgateway")
    tmp_dir.mkdir(parents=True, exist_ok=True)
    pushgateway_address = f"{host}:{free_port()}"
    prometheus_address = f"{host}:{free_port()}"
    config = tmp_dir / "prometheus.yml"
    config.write_text(json.dumps(prometheus_config(pushgateway_address, scrape_targets), indent=2))  # YAML ⊇ JSON
    pushgateway = _Server(
        "prometheus-pushgateway",
        # Debian's build persists every group to /var/lib/prometheus/pushgateway.data by default: one file shared
        # by every test (and every run) would feed one test's groups to another's alerts. Each server its own.
        [
            pushgateway_bin,
            f"--web.listen-address={pushgateway_address}",
            f"--persistence.file={tmp_dir / 'pushgateway.data'}",
            "--log.level=warn",
        ],
        f"http://{pushgateway_address}/-/ready",
        tmp_dir / "pushgateway.log",
    )
    prometheus = _Server(
        "prometheus",
        [
            prometheus_bin,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_dir / 'data'}",
            f"--web.listen-address={prometheus_address}",
            "--log.level=warn",
        ],
        f"http://{prometheus_address}/-/ready",
        tmp_dir / "prometheus.log",
    )
    server = PrometheusServer(
        url=f"http://{prometheus_address}",
        pushgateway_url=f"http://{pushgateway_address}",
        work_dir=tmp_dir,
        _prometheus=prometheus,
        _pushgateway=pushgateway,
    )
    try:
        pushgateway.start()
        prometheus.start()
        yield server
    finally:
        server.close()


@dataclass
class CannedQueryApi:
    """What `canned_query_api` serves and what it saw."""

    url: str
    requests: list[dict[str, str]]


@contextlib.contextmanager
def canned_query_api(
    body: dict[str, Any],
    token: str | None = None,
    delay_seconds: float = 0.0,
    tls: tuple[Path, Path] | None = None,
) -> Iterator[CannedQueryApi]:
    """Serves `body` for `GET /api/v1/query` on 127.0.0.1, like a Prometheus behind an auth proxy.

    With `token`, a request without `Authorization: Bearer <token>` gets 401. `delay_seconds` holds every answer
    back (for timeouts). `tls` = (certificate, key) serves HTTPS.
    """
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({"path": self.path, "authorization": self.headers.get("Authorization", "")})
            time.sleep(delay_seconds)
            if token is not None and self.headers.get("Authorization") != f"Bearer {token}":
                self._answer(401, b"Unauthorized\n", "text/plain")
            elif not self.path.startswith("/api/v1/query?"):
                self._answer(404, b"404 page not found\n", "text/plain")
            else:
                self._answer(200, json.dumps(body).encode(), "application/json")

        def _answer(self, code: int, payload: bytes, content_type: str) -> None:
            try:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:  # the client gave up (a timeout test)
                pass

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    scheme = "http"
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certfile=str(tls[0]), keyfile=str(tls[1]))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield CannedQueryApi(f"{scheme}://127.0.0.1:{server.server_port}", seen)
    finally:
        server.shutdown()
        server.server_close()


def self_signed_certificate(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A certificate for `host` (its own CA) and its key, made with openssl; (certificate, key)."""
    if shutil.which("openssl") is None:
        raise PrometheusServerError("openssl is needed for the TLS tests: apt-get install -y openssl")
    certificate, key = directory / "tls.crt", directory / "tls.key"
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={host}"]
    command += ["-addext", f"subjectAltName=IP:{host}", "-keyout", str(key), "-out", str(certificate)]
    subprocess.run(command, check=True, capture_output=True)
    return certificate, key
