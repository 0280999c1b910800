"""A real node for the test control plane: containerd (CRI), a kubelet and kube-proxy, in the node tier's network
namespace.

The kubelet registers with the API server as `sil-node` at the namespace's node address, runs pods with runc
(Debian's) through containerd's CRI plugin, networks them with the CNI bridge plugin (10.88.0.0/16 inside the
namespace, no route out of it) and enforces what a kubelet enforces: the image's user, `runAsNonRoot`, a read-only
root filesystem, memory limits (OOM kills), grace periods, termination messages. Images get into containerd by
import (`podman save | ctr import`), never by a pull: the kubelet is told never to pull them.

What this machine needs, found by hand and kept here: the kubelet refuses a cgroup v1 host unless
`failCgroupV1: false`; the cgroupfs driver (no systemd); containerd's `restrict_oom_score_adj`, because this kernel
refuses a negative `oom_score_adj` even to root and runc then fails every sandbox ("can't get final child's PID from
pipe"); the sandbox image built locally (`pause`, a static C program) and imported under the name containerd pins.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.containers.images import podman
from tests.integration.controlplane import ControlPlane
from tests.servers.processes import die_with_parent, free_port

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "hack" / "node" / "build.sh"
NODE_NAME = "sil-node"
RELEASE_NAMESPACE = "selfimprove-system"
"""Where the tests install the operator with the Helm chart."""
TASK_IMAGE = "localhost/selfimprove/stage-arithmetic:dev"
"""The demo's verifier on top of the CPU stage image: how a team ships its task code."""
POD_SUBNET = "10.88.0.0/16"


def node_versions() -> dict[str, str]:
    values = {}
    for line in (REPO / "hack" / "node" / "versions.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def find_node_bin() -> Path:
    """The node binaries (hack/node/build.sh builds them once, about 10 minutes)."""
    done = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"hack/node/build.sh failed:\n{done.stderr[-4000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def cache_root() -> Path:
    """Where containerd keeps its content and snapshots between runs: an 8 GB stage image is imported once."""
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "selfimprove" / "node"


@dataclass
class RealNode:
    plane: ControlPlane
    bin_dir: Path
    work_dir: Path
    address: str
    _processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return self.work_dir / "containerd" / "containerd.sock"

    @property
    def containerd_root(self) -> Path:
        return cache_root() / "containerd-root"

    # -- start and stop -----------------------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._start_containerd()
        self._import_pause_image()
        self._start_kubelet()
        self._start_kube_proxy()
        self.wait_ready(timeout)

    def stop(self) -> None:
        """Pods first (the kubelet unmounts their volumes and containerd removes their containers), then the node's
        processes, then whatever they left mounted under the work folder (a kubelet never stops cleanly alone)."""
        if self._processes:
            with contextlib.suppress(Exception):
                self.plane.kubectl("delete", "pods", "--all", "--all-namespaces", "--wait=true", timeout=90)
        for _name, process in reversed(self._processes):
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._processes.clear()
        # The shims (and their containers) outlive containerd by design: end them with the node.
        subprocess.run(["pkill", "-9", "-f", f"containerd-shim-runc-v2.*{self.socket}"], check=False)
        self._unmount_leftovers()

    def _unmount_leftovers(self) -> None:
        root = str(self.work_dir.resolve())
        with open("/proc/self/mounts", encoding="utf-8") as mounts:
            points = [line.split()[1] for line in mounts if line.split()[1].startswith(root)]
        for point in sorted(points, key=len, reverse=True):  # the deepest first
            subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        logs = self.work_dir / "logs"
        logs.mkdir(exist_ok=True)
        with (logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.work_dir,
                env=env,
                preexec_fn=die_with_parent,  # a killed test run leaves no node behind (netns.sh kills the rest)
            )
        self._processes.append((name, process))
        return process

    def log(self, name: str) -> str:
        path = self.work_dir / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _start_containerd(self) -> None:
        cni = self.work_dir / "cni"
        (cni / "net.d").mkdir(parents=True, exist_ok=True)
        (cni / "net.d" / "10-sil-pods.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": "sil-pods",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": "sil-br0",
                            "isGateway": True,
                            "ipMasq": False,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": POD_SUBNET}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                                "dataDir": str(cni / "ipam"),
                            },
                        },
                        {"type": "portmap", "capabilities": {"portMappings": True}},
                    ],
                }
            )
        )
        state = self.work_dir / "containerd"
        state.mkdir(exist_ok=True)
        self.containerd_root.mkdir(parents=True, exist_ok=True)
        config = state / "config.toml"
        config.write_text(
            textwrap.dedent(
                f"""\
                version = 3
                root = "{self.containerd_root}"
                state = "{state / "state"}"
                [grpc]
                  address = "{self.socket}"
                [plugins."io.containerd.cri.v1.images"]
                  snapshotter = "overlayfs"
                  [plugins."io.containerd.cri.v1.images".pinned_images]
                    sandbox = "{node_versions()["PAUSE_IMAGE"]}"
                [plugins."io.containerd.cri.v1.runtime"]
                  restrict_oom_score_adj = true
                  netns_mounts_under_state_dir = true
                  enable_unprivileged_ports = true
                  [plugins."io.containerd.cri.v1.runtime".containerd]
                    default_runtime_name = "runc"
                    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
                      runtime_type = "io.containerd.runc.v2"
                      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
                        BinaryName = "{shutil.which("runc") or "/usr/sbin/runc"}"
                        SystemdCgroup = false
                  [plugins."io.containerd.cri.v1.runtime".cni]
                    bin_dirs = ["{self.bin_dir / "cni"}"]
                    conf_dir = "{cni / "net.d"}"
                [plugins."io.containerd.grpc.v1.cri"]
                  stream_server_address = "{self.address}"
                  stream_server_port = "0"
                """
            )
        )
        # containerd finds its shim on PATH
        env = {**os.environ, "PATH": f"{self.bin_dir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"}
        self._spawn("containerd", [str(self.bin_dir / "containerd"), "--config", str(config)], env)
        deadline = time.monotonic() + 30
        while not self.socket.exists():
            self._check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"containerd did not serve {self.socket}:\n{self.log('containerd')[-3000:]}")
            time.sleep(0.2)

    def ctr(self, *arguments: str, input_file: int | None = None, timeout: float = 120) -> str:
        done = subprocess.run(
            [str(self.bin_dir / "ctr"), "--address", str(self.socket), "--namespace", "k8s.io", *arguments],
            stdin=input_file,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(arguments)}: {done.stderr.strip()}")
        return done.stdout

    def has_image(self, name: str) -> bool:
        return name in self.ctr("images", "list", "--quiet").split()

    def import_from_podman(self, image: str, timeout: float = 1800) -> None:
        """`podman save IMAGE | ctr import -` unless containerd already holds this build of it (same image ID)."""
        image_id = subprocess.run(
            [podman(), "image", "inspect", image, "--format", "{{.Id}}"], capture_output=True, text=True, check=True
        ).stdout.strip()
        marker = self.containerd_root / "imported" / image.replace("/", "_").replace(":", "_")
        if self.has_image(image) and marker.exists() and marker.read_text() == image_id:
            return
        save = subprocess.Popen(
            [podman(), "save", "--format", "docker-archive", image], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert save.stdout is not None
        try:
            self.ctr("images", "import", "--no-unpack=false", "-", input_file=save.stdout.fileno(), timeout=timeout)
        finally:
            save.stdout.close()
            save.wait()
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(image_id)

    @staticmethod
    def podman_images() -> list[str]:
        listed = subprocess.run(
            [podman(), "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True, check=True
        )
        return listed.stdout.split()

    def tag_and_import(self, image: str, name: str) -> None:
        """`image` under another name, in podman and in the node's containerd."""
        subprocess.run([podman(), "tag", image, name], check=True, capture_output=True)
        self.import_from_podman(name)

    def _import_pause_image(self) -> None:
        name = node_versions()["PAUSE_IMAGE"]
        if self.has_image(name):
            return
        context = self.work_dir / "pause-image"
        context.mkdir(exist_ok=True)
        shutil.copy2(self.bin_dir / "pause", context / "pause")
        (context / "Containerfile").write_text(
            'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n'
        )
        subprocess.run([podman(), "build", "-q", "-t", name, str(context)], check=True, capture_output=True)
        self.import_from_podman(name)

    def _start_kubelet(self) -> None:
        root = self.work_dir / "kubelet"
        root.mkdir(exist_ok=True)
        resolv = self.work_dir / "resolv.conf"
        resolv.write_text("nameserver 127.0.0.1\n")  # there is no DNS in the namespace; pods must not look for one
        config = self.work_dir / "kubelet-config.json"
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "kubelet.config.k8s.io/v1beta1",
                    "kind": "KubeletConfiguration",
                    "failCgroupV1": False,
                    "cgroupDriver": "cgroupfs",
                    "containerRuntimeEndpoint": f"unix://{self.socket}",
                    "address": self.address,
                    "port": free_port(),
                    "readOnlyPort": 0,
                    "healthzBindAddress": "127.0.0.1",
                    "healthzPort": free_port(),
                    "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
                    "authorization": {"mode": "AlwaysAllow"},
                    "failSwapOn": False,
                    "resolvConf": str(resolv),
                    "podCIDR": POD_SUBNET,
                    "maxPods": 30,
                    "serializeImagePulls": False,
                    # The imported images are all there is: never collect them, never evict for a full disk.
                    "imageGCHighThresholdPercent": 100,
                    "imageGCLowThresholdPercent": 99,
                    "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
                    "shutdownGracePeriod": "0s",
                    "registerNode": True,
                }
            )
        )
        self._spawn(
            "kubelet",
            [
                str(self.bin_dir / "kubelet"),
                f"--config={config}",
                f"--kubeconfig={self.plane.kubeconfig}",
                f"--root-dir={root}",
                f"--cert-dir={root / 'pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={self.address}",
                "--v=1",
            ],
        )

    def _start_kube_proxy(self) -> None:
        """Services' cluster IPs (the `kubernetes` Service for the in-cluster operator) as iptables rules."""
        config = self.work_dir / "kube-proxy-config.json"
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                    "kind": "KubeProxyConfiguration",
                    "clientConnection": {"kubeconfig": str(self.plane.kubeconfig)},
                    "hostnameOverride": NODE_NAME,
                    "clusterCIDR": POD_SUBNET,
                    "mode": "iptables",
                    "bindAddress": self.address,
                    "healthzBindAddress": f"127.0.0.1:{free_port()}",
                    "metricsBindAddress": f"127.0.0.1:{free_port()}",
                    # No conntrack sysctls: the namespace's own defaults serve a test node.
                    "conntrack": {"maxPerCore": 0, "min": 0},
                    "iptables": {"localhostNodePorts": False},
                }
            )
        )
        self._spawn("kube-proxy", [str(self.bin_dir / "kube-proxy"), f"--config={config}", "--v=1"])

    def _check_alive(self) -> None:
        for name, process in self._processes:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.log(name)[-4000:]}")

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(Exception):
                node = self.plane.get_json("node", NODE_NAME)
                conditions = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
                if conditions.get("Ready") == "True":
                    return
            time.sleep(0.5)
        raise RuntimeError(f"node {NODE_NAME} not Ready in {timeout:.0f} s:\n{self.log('kubelet')[-4000:]}")
