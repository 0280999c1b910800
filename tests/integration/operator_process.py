"""Runs `sil operator` against the test control plane as a separate process, as a deployment would."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.controlplane import ControlPlane


@dataclass
class OperatorProcess:
    plane: ControlPlane
    log_path: Path
    namespace: str
    extra_env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    """More `sil operator` flags, e.g. `leader_election_args(...)` or `["--liveness", URL]`."""
    image: str | None = None
    """Run the operator image's entrypoint (`sil operator`) with podman instead of this checkout's CLI: host
    network, read-only root, the image's user; the control plane's folder and `mounts` mounted at the same paths."""
    mounts: list[Path] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            **self.plane.env(),
            "SIL_STAGE_IMAGE": "selfimprove/stage:test",
            "SIL_RESYNC_SECONDS": "30",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        command = [sys.executable, "-m", "sil_operator.cli", "operator", "--namespace", self.namespace]
        if self.image is not None:
            command = self._container_command(env)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [*command, *self.extra_args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()

    @property
    def container_name(self) -> str:
        return f"sil-operator-{self.namespace}-{os.getpid()}"

    def _container_command(self, env: dict[str, str]) -> list[str]:
        from tests.containers.images import podman, run_flags

        passed = {k: v for k, v in env.items() if k in self._CONTAINER_ENV or k.startswith("SIL_")}
        mounts = {self.plane.work_dir, *self.mounts}
        return [
            podman(),
            "run",
            "--rm",
            f"--name={self.container_name}",
            *run_flags(),
            "--network=host",
            "--read-only",
            "--tmpfs=/tmp",
            "--cap-drop=all",
            "--security-opt=no-new-privileges",
            *(f"--volume={path}:{path}:ro" for path in sorted(mounts)),
            *(f"--env={key}={value}" for key, value in sorted(passed.items())),
            str(self.image),
            "--namespace",
            self.namespace,
        ]

    _CONTAINER_ENV = ("KUBECONFIG", "PYTHONUNBUFFERED")

    def kill(self) -> None:
        """kill -9: no cleanup, no graceful shutdown."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self._remove_container()

    def _remove_container(self) -> None:
        if self.image is not None:
            from tests.containers.images import podman

            subprocess.run(
                [podman(), "rm", "--force", "--time=0", self.container_name], capture_output=True, check=False
            )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._remove_container()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def leader_election_args(lease_namespace: str, lease_name: str = "selfimprove-operator") -> list[str]:
    """The flags of an operator replica that acts only while it holds the Lease `lease_namespace/lease_name`."""
    return ["--leader-elect", "--leader-election-namespace", lease_namespace, "--leader-election-id", lease_name]


@contextlib.contextmanager
def running_operator(
    plane: ControlPlane,
    namespace: str,
    log_path: Path,
    extra_env: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
    image: str | None = None,
    mounts: list[Path] | None = None,
) -> Iterator[OperatorProcess]:
    operator = OperatorProcess(
        plane, log_path, namespace, dict(extra_env or {}), list(extra_args or []), image, list(mounts or [])
    )
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()
