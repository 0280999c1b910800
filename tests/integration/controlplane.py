"""A real Kubernetes control plane on 127.0.0.1 for the integration tests.

It runs the binaries that ``hack/testenv/build.sh`` builds from Go modules, each as a local process:
etcd, kube-apiserver (static token authentication, RBAC), kube-controller-manager (Job controller,
garbage collector, namespace and service-account controllers, ...), kube-scheduler, kwok (fake
nodes with ``nvidia.com/gpu`` capacity whose pods run, succeed or fail on a schedule, see
``testdata/kwok-stages.yaml``) and, optionally, the local pod runner (``tests/podrunner``: a node
whose pods are run as real local processes).

Use it from pytest through the ``control_plane`` fixture (``conftest.py``), or by hand::

    python -m tests.integration.controlplane            # prints the kubeconfig, runs until Ctrl-C

The binaries come from ``$SIL_TESTENV_ASSETS`` when set, otherwise from the cache folder of
``hack/testenv/build.sh``; when neither has them, starting fails with a message that says how to
build them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tests.servers.processes import die_with_parent, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTDATA = Path(__file__).resolve().parent / "testdata"
BUILD_SCRIPT = REPO_ROOT / "hack" / "testenv" / "build.sh"

# Fake nodes that kwok manages; pods that do not target the pod runner land on them.
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
FAKE_GPU_NODES = ("kwok-gpu-0", "kwok-gpu-1")
FAKE_GPUS_PER_NODE = 8
FAKE_PODS_PER_NODE = 110


@dataclass(frozen=True)
class FakeNodes:
    """How many kwok GPU nodes to register and what each can hold. The default is what the tests use; a benchmark
    with a thousand concurrent stage pods needs more (e.g. ``FakeNodes(10, gpus=110, pods=110)``)."""

    count: int = len(FAKE_GPU_NODES)
    gpus: int = FAKE_GPUS_PER_NODE
    pods: int = FAKE_PODS_PER_NODE

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f"kwok-gpu-{index}" for index in range(self.count))


# The node of the local pod runner; see tests/podrunner/README.md for how a pod targets it.
POD_RUNNER_NODE = "pod-runner"

REQUIRED_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok")


class ControlPlaneError(RuntimeError):
    """The control plane could not be started, or a command against it failed."""


def find_bin_dir() -> Path:
    """The folder with the control plane's binaries, or a ControlPlaneError saying how to build them.

    ``$SIL_TESTENV_ASSETS`` wins; otherwise ``build.sh --check`` names the cache folder of the
    pinned versions (and fails when they are not built).
    """
    assets = os.environ.get("SIL_TESTENV_ASSETS")
    if assets:
        bin_dir = Path(assets)
        missing = [name for name in REQUIRED_BINARIES if not os.access(bin_dir / name, os.X_OK)]
        if missing:
            raise ControlPlaneError(
                f"SIL_TESTENV_ASSETS={assets} lacks {', '.join(missing)}. Unset it and build the test "
                "control plane with 'bash hack/testenv/build.sh' (needs Go, see hack/testenv/README.md)."
            )
        return bin_dir
    try:
        result = subprocess.run(
            ["bash", str(BUILD_SCRIPT), "--check"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ControlPlaneError(f"could not run {BUILD_SCRIPT} --check: {exc}") from exc
    if result.returncode != 0:
        raise ControlPlaneError(
            "The test control plane (kube-apiserver, etcd, kwok, ... built from Go modules) is missing.\n"
            + result.stderr.strip()
            + "\nThen rerun the tests; see hack/testenv/README.md."
        )
    return Path(result.stdout.strip().splitlines()[-1])


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class ControlPlane:
    """A running control plane: where it is, how to talk to it, and how to stop it."""

    bin_dir: Path
    work_dir: Path
    kubeconfig: Path
    server: str
    token: str
    ca_file: Path
    pod_runner_node: str | None = None
    pod_runner_root: Path | None = None
    fake_nodes: FakeNodes = field(default_factory=FakeNodes)
    controllers_qps: float | None = None
    """--kube-api-qps of kube-controller-manager and kube-scheduler (burst twice that); None keeps their defaults
    (20 and 50 requests/s), which throttle the Job controller when hundreds of Jobs run at once."""
    audited_users: tuple[str, ...] = ()
    """Extra users (cluster admins, each with a token and `user_kubeconfig`) whose every request the API server
    writes to `audit_log`: what one client did, which `apiserver_request_total` (no client label) cannot say."""
    timings: dict[str, float] = field(default_factory=dict)
    _processes: list[_Process] = field(default_factory=list)
    _owns_work_dir: bool = False
    _user_tokens: dict[str, str] = field(default_factory=dict)
    _namespace_counter: int = 0

    # ----------------------------------------------------------------------------------------------
    # Starting and stopping

    @classmethod
    def start(
        cls,
        work_dir: Path | None = None,
        *,
        bin_dir: Path | None = None,
        crd_dir: Path | None = REPO_ROOT / "crds",
        pod_runner: bool = True,
        fake_nodes: FakeNodes | None = None,
        controllers_qps: float | None = None,
        audited_users: Sequence[str] = (),
        ready_timeout: float = 60.0,
        address: str = "127.0.0.1",
    ) -> ControlPlane:
        """Start every component and return once the API server serves and the nodes are Ready.

        ``fake_nodes`` sizes the kwok GPU nodes (default: ``FAKE_GPU_NODES``, 8 GPUs and 110 pods each);
        ``controllers_qps`` lifts the client rate limit of the Job controller and the scheduler (see the field);
        ``audited_users`` get their own kubeconfig and an audit log of their requests (see the field).
        ``address``: where the API server listens and what it advertises (the `kubernetes` Service's endpoint).
        Loopback everywhere but in the node tier (tests/node), whose namespace has no route out and whose real
        kubelet and in-cluster pods need a node address; there the Service's endpoint is kept by the API server.

        On any failure the processes already started are stopped before the error propagates.
        """
        started = time.monotonic()
        owns = work_dir is None
        work_dir = Path(tempfile.mkdtemp(prefix="sil-controlplane-")) if work_dir is None else work_dir
        work_dir.mkdir(parents=True, exist_ok=True)
        bin_dir = find_bin_dir() if bin_dir is None else bin_dir
        token = secrets.token_hex(16)
        port = free_port()
        plane = cls(
            bin_dir=bin_dir,
            work_dir=work_dir,
            kubeconfig=work_dir / "kubeconfig",
            server=f"https://{address}:{port}",
            token=token,
            ca_file=work_dir / "pki" / "apiserver.crt",
            fake_nodes=fake_nodes or FakeNodes(),
            controllers_qps=controllers_qps,
            audited_users=tuple(audited_users),
            _owns_work_dir=owns,
        )
        try:
            plane._start_etcd_and_apiserver(port, address)
            plane._wait_ready(ready_timeout)
            plane.timings["api_ready_s"] = time.monotonic() - started
            plane._start_controllers()
            plane._register_fake_nodes()
            if pod_runner:
                plane._start_pod_runner()
            if crd_dir is not None:
                plane.apply_crds(crd_dir)
            plane._wait_nodes_ready(ready_timeout)
            plane.wait_for_service_account("default", ready_timeout)
            plane.timings["ready_s"] = time.monotonic() - started
        except BaseException:
            plane.stop()
            raise
        return plane

    def stop(self) -> None:
        """Stop every process, the last started first (etcd last: kube-apiserver hangs in its shutdown
        when etcd goes before it), SIGTERM then SIGKILL after 10 s; remove a temporary work dir."""
        for proc in reversed(self._processes):
            if proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.send_signal(signal.SIGTERM)
                try:
                    proc.popen.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.popen.kill()
                    proc.popen.wait()
            proc.log_file.close()
        self._processes.clear()
        if self._owns_work_dir and not os.environ.get("SIL_TESTENV_KEEP"):
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def restart_apiserver(
        self, down_seconds: float = 0.0, ready_timeout: float = 60.0, while_down: Callable[[], None] | None = None
    ) -> None:
        """SIGKILL kube-apiserver, wait `down_seconds`, start it again with the same flags (port, serving
        certificate, tokens) and return once it is ready. etcd and every other component keep running, so the
        cluster's data is all there; clients see their connections and watches break, as in an API server crash.
        `while_down` runs while it is down (e.g. `delete_from_etcd`: a change no watch can deliver)."""
        proc = next(p for p in self._processes if p.name == "kube-apiserver")
        argv = [str(arg) for arg in proc.popen.args]  # type: ignore[union-attr]
        if proc.popen.poll() is None:
            proc.popen.kill()
            proc.popen.wait()
        proc.log_file.close()
        self._processes.remove(proc)
        time.sleep(down_seconds)
        try:
            if while_down is not None:
                while_down()
        finally:
            self._spawn("kube-apiserver", argv)
            self._wait_ready(ready_timeout)

    def delete_from_etcd(self, key: str) -> int:
        """Deletes one key from etcd directly (its JSON gateway), e.g. `/registry/jobs/NS/NAME`: an object gone
        without the API server knowing, as if deleted while no watch was open. Returns how many keys went."""
        import base64

        etcd = next(p for p in self._processes if p.name == "etcd")
        flag = next(str(a) for a in etcd.popen.args if str(a).startswith("--listen-client-urls="))  # type: ignore[union-attr]
        request = urllib.request.Request(
            flag.split("=", 1)[1].split(",")[0] + "/v3/kv/deleterange",
            data=json.dumps({"key": base64.b64encode(key.encode()).decode()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(json.loads(response.read()).get("deleted", 0))

    def _spawn(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> _Process:
        log_dir = self.work_dir / "logs"
        log_dir.mkdir(exist_ok=True)
        log_path = log_dir / f"{name}.log"
        log_file = log_path.open("ab")
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=self.work_dir,
            env=env,
            preexec_fn=die_with_parent,
        )
        proc = _Process(name, popen, log_path, log_file)
        self._processes.append(proc)
        return proc

    def _check_alive(self) -> None:
        for proc in self._processes:
            code = proc.popen.poll()
            if code is not None:
                raise ControlPlaneError(
                    f"{proc.name} exited with code {code}; the end of {proc.log_path}:\n{proc.tail()}"
                )

    def _start_etcd_and_apiserver(self, apiserver_port: int, address: str = "127.0.0.1") -> None:
        pki = self.work_dir / "pki"
        pki.mkdir(exist_ok=True)
        sa_key, sa_pub = pki / "sa.key", pki / "sa.pub"
        if shutil.which("openssl") is None:
            raise ControlPlaneError("openssl is needed for the service-account keys: apt-get install openssl")
        subprocess.run(["openssl", "genrsa", "-out", str(sa_key), "2048"], check=True, capture_output=True)
        subprocess.run(
            ["openssl", "rsa", "-in", str(sa_key), "-pubout", "-out", str(sa_pub)],
            check=True,
            capture_output=True,
        )
        tokens = pki / "tokens.csv"
        lines = [f'{self.token},admin,admin,"system:masters"']
        for user in self.audited_users:
            self._user_tokens[user] = secrets.token_hex(16)
            lines.append(f'{self._user_tokens[user]},{user},{user},"system:masters"')
        tokens.write_text("\n".join(lines) + "\n")
        tokens.chmod(0o600)
        audit: list[str] = []
        if self.audited_users:
            policy = pki / "audit-policy.json"
            rules = [
                {"level": "Metadata", "users": list(self.audited_users), "omitStages": ["RequestReceived"]},
                {"level": "None"},
            ]
            policy.write_text(json.dumps({"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": rules}))
            audit = [
                f"--audit-policy-file={policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-mode=batch",  # buffered: auditing adds no latency to the requests
                "--audit-log-maxsize=0",
            ]

        etcd_client, etcd_peer = free_port(), free_port()
        self._spawn(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                "--name=default",
                f"--data-dir={self.work_dir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_client}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_client}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=default=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync",  # test data: speed over durability
                "--log-level=warn",
            ],
        )
        self._spawn(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_client}",
                f"--bind-address={address}",
                f"--advertise-address={address}",
                f"--secure-port={apiserver_port}",
                f"--cert-dir={pki}",  # self-signed serving certificate: apiserver.crt
                f"--token-auth-file={tokens}",
                "--authorization-mode=Node,RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={sa_pub}",
                f"--service-account-signing-key-file={sa_key}",
                "--service-cluster-ip-range=10.96.0.0/16",
                # Loopback cannot be the `kubernetes` Service's endpoint; the node tier's in-cluster clients need one.
                f"--endpoint-reconciler-type={'none' if address == '127.0.0.1' else 'lease'}",
                # A real kubelet is reached by its InternalIP, never by a DNS lookup of its name (logs, exec).
                "--kubelet-preferred-address-types=InternalIP",
                "--allow-privileged=true",
                "--profiling=false",
                *audit,
            ],
        )
        self._write_kubeconfig()

    @property
    def audit_log(self) -> Path:
        """One JSON line per request of an `audited_users` user (written in batches, about a second late)."""
        return self.work_dir / "logs" / "audit.log"

    def user_kubeconfig(self, user: str) -> Path:
        """A kubeconfig that authenticates as one of `audited_users`."""
        path = self.work_dir / f"kubeconfig-{user}"
        self._write_kubeconfig(path, user, self._user_tokens[user])
        return path

    def _write_kubeconfig(self, path: Path | None = None, user: str = "admin", token: str | None = None) -> None:
        path = self.kubeconfig if path is None else path
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "selfimprove-test",
                    "cluster": {"server": self.server, "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [{"name": user, "user": {"token": token or self.token}}],
            "contexts": [{"name": "selfimprove-test", "context": {"cluster": "selfimprove-test", "user": user}}],
            "current-context": "selfimprove-test",
        }
        # JSON is YAML; kubectl and the Python client read it as a kubeconfig.
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)

    def _wait_ready(self, timeout: float) -> None:
        """Poll /readyz (with the admin token) until the API server answers ok."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the serving certificate may not be written yet
        request = urllib.request.Request(f"{self.server}/readyz", headers={"Authorization": f"Bearer {self.token}"})
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with urllib.request.urlopen(request, timeout=5, context=context) as response:
                    if response.status == 200 and self.ca_file.exists():
                        return
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}: {exc.read().decode(errors='replace')[-300:]}"
            except (OSError, urllib.error.URLError) as exc:
                last = str(exc)
            time.sleep(0.2)
        raise ControlPlaneError(f"kube-apiserver was not ready within {timeout:.0f} s ({last})")

    def _start_controllers(self) -> None:
        common = [f"--kubeconfig={self.kubeconfig}", "--leader-elect=false", "--bind-address=127.0.0.1"]
        if self.controllers_qps is not None:
            qps = self.controllers_qps
            common += [f"--kube-api-qps={qps:g}", f"--kube-api-burst={2 * qps:g}"]
        self._spawn(
            "kube-controller-manager",
            [
                str(self.bin_dir / "kube-controller-manager"),
                *common,
                f"--secure-port={free_port()}",
                "--controllers=*",
                "--use-service-account-credentials=false",
                # the service-account token controller signs with the API server's key
                f"--service-account-private-key-file={self.work_dir / 'pki' / 'sa.key'}",
                f"--root-ca-file={self.ca_file}",  # published as ConfigMap kube-root-ca.crt
            ],
        )
        self._spawn(
            "kube-scheduler",
            [str(self.bin_dir / "kube-scheduler"), *common, f"--secure-port={free_port()}"],
        )
        self._spawn(
            "kwok",
            [
                str(self.bin_dir / "kwok"),
                f"--kubeconfig={self.kubeconfig}",
                f"--config={TESTDATA / 'kwok-stages.yaml'}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                "--node-ip=10.244.0.1",
                "--cidr=10.244.0.0/16",
                "--node-lease-duration-seconds=40",
            ],
            env={**os.environ, "HOME": str(self.work_dir)},  # no ~/.kwok config of the user
        )

    def _register_fake_nodes(self) -> None:
        nodes = []
        size = self.fake_nodes
        for name in size.names:
            capacity = {"cpu": "64", "memory": "512Gi", "pods": str(size.pods), "nvidia.com/gpu": str(size.gpus)}
            nodes.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "annotations": {KWOK_NODE_ANNOTATION: "fake"},
                        "labels": {
                            "kubernetes.io/hostname": name,
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/arch": "amd64",
                            "type": "kwok",
                            "nvidia.com/gpu.present": "true",
                        },
                    },
                    "status": {"capacity": capacity, "allocatable": capacity},
                }
            )
        if nodes:  # none for the node tier, whose one node is a real kubelet
            self.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes}))

    def _start_pod_runner(self) -> None:
        self.pod_runner_node = POD_RUNNER_NODE
        self.pod_runner_root = self.work_dir / "pods"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        }
        self._spawn(
            "pod-runner",
            [
                sys.executable,
                "-m",
                "tests.podrunner",
                f"--kubeconfig={self.kubeconfig}",
                f"--node-name={POD_RUNNER_NODE}",
                f"--root={self.pod_runner_root}",
            ],
            env=env,
        )

    def _wait_nodes_ready(self, timeout: float) -> None:
        wanted = set(self.fake_nodes.names) | ({self.pod_runner_node} if self.pod_runner_node else set())
        deadline = time.monotonic() + timeout
        ready: set[str] = set()
        while time.monotonic() < deadline:
            self._check_alive()
            nodes = self.get_json("nodes")
            ready = {
                item["metadata"]["name"]
                for item in nodes["items"]
                if any(
                    c["type"] == "Ready" and c["status"] == "True" for c in item.get("status", {}).get("conditions", [])
                )
            }
            if wanted <= ready:
                return
            time.sleep(0.3)
        raise ControlPlaneError(f"nodes not Ready within {timeout:.0f} s: {sorted(wanted - ready)}")

    # ----------------------------------------------------------------------------------------------
    # Helpers for tests

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this control plane; with check, a failure raises with its stderr."""
        argv = [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise ControlPlaneError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr.strip()}")
        return result

    def get_json(self, *args: str) -> Any:
        """``kubectl get ARGS -o json``, parsed."""
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def apply_crds(self, crd_dir: Path) -> None:
        """Apply every ``*.yaml`` in crd_dir (server-side) and wait until the CRDs are Established."""
        files = sorted(crd_dir.glob("*.yaml"))
        if not files:
            return
        for path in files:
            self.kubectl("apply", "--server-side", "-f", str(path))
        self.kubectl("wait", "--for=condition=Established", "--timeout=30s", "crd", "--all")

    def wait_for_service_account(self, namespace: str, timeout: float = 30) -> None:
        """Wait until the namespace has its ``default`` ServiceAccount (pods cannot be created before)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.kubectl("get", "serviceaccount", "default", "-n", namespace, check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise ControlPlaneError(f"namespace {namespace} got no default ServiceAccount within {timeout:.0f} s")

    def create_namespace(self, prefix: str = "test") -> str:
        """Create a fresh namespace (name derived from prefix) that can take pods at once; return its name."""
        self._namespace_counter += 1
        base = "".join(ch if ch.isalnum() else "-" for ch in prefix.lower()).strip("-")[:40] or "test"
        name = f"{base}-{self._namespace_counter}-{secrets.token_hex(2)}"
        self.kubectl("create", "namespace", name)
        self.wait_for_service_account(name)
        return name

    def delete_namespace(self, name: str) -> None:
        """Delete a namespace without waiting for its contents to go."""
        self.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)

    def log_tail(self, component: str, lines: int = 50) -> str:
        """The last lines of a component's log (etcd, kube-apiserver, kwok, pod-runner, ...)."""
        for proc in self._processes:
            if proc.name == component:
                return proc.tail(lines)
        return ""

    def env(self) -> dict[str, str]:
        """Environment variables a child process needs to reach this control plane."""
        return {"KUBECONFIG": str(self.kubeconfig), "SIL_TESTENV_BIN": str(self.bin_dir)}


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.3) -> None:
    """Poll predicate until it returns something truthy; after timeout seconds fail, naming what."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextlib.contextmanager
def running_control_plane(**kwargs: Any) -> Iterator[ControlPlane]:
    """``ControlPlane.start`` as a context manager: stopped on exit, also when the body fails."""
    plane = ControlPlane.start(**kwargs)
    try:
        yield plane
    finally:
        plane.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Start a control plane by hand (for debugging) and keep it until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m tests.integration.controlplane", description=main.__doc__)
    parser.add_argument("--work-dir", type=Path, help="data, logs and kubeconfig (default: a temporary folder)")
    parser.add_argument("--no-pod-runner", action="store_true", help="do not start the local pod runner")
    args = parser.parse_args(argv)
    try:
        plane = ControlPlane.start(args.work_dir, pod_runner=not args.no_pod_runner)
    except ControlPlaneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        print(
            f"control plane ready in {plane.timings['ready_s']:.1f} s (API after {plane.timings['api_ready_s']:.1f} s)"
        )
        print(f"export KUBECONFIG={plane.kubeconfig}")
        print(f"export PATH={plane.bin_dir}:$PATH")
        print(f"logs: {plane.work_dir / 'logs'}    Ctrl-C stops everything")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        plane.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
