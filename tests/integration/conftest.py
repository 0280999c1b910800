"""Fixtures for the integration tests: one real control plane per test session, a namespace per test.

The control plane's binaries are built by ``bash hack/testenv/build.sh`` (``make test`` runs it first).
When they are missing, every integration test fails and says how to build them: it never skips.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_REPO_ROOT = str(Path(__file__).resolve().parents[2])
if _REPO_ROOT not in sys.path:  # `pytest` (unlike `python -m pytest`) does not put the repo root there
    sys.path.insert(0, _REPO_ROOT)

from tests.integration.controlplane import ControlPlane, ControlPlaneError  # noqa: E402
from tests.servers.prometheus import PrometheusServer, running_prometheus  # noqa: E402
from tests.servers.seaweedfs import S3Server, running_seaweedfs  # noqa: E402

_started: list[ControlPlane] = []


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd, kube-apiserver, controller-manager, scheduler, kwok GPU nodes and the local pod runner."""
    try:
        plane = ControlPlane.start(tmp_path_factory.mktemp("controlplane"))
    except ControlPlaneError as exc:
        pytest.fail(str(exc), pytrace=False)
    _started.append(plane)
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS S3 server per test module that asks for one (a module may define its own instead)."""
    with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """Prometheus with its Pushgateway per test module that asks for one (a module may define its own instead)."""
    with running_prometheus(tmp_path_factory.mktemp("prometheus")) as server:
        yield server


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how long the control plane took to start (the warm start time of hack/testenv)."""
    for plane in _started:
        terminalreporter.write_line(
            f"test control plane ({plane.bin_dir}): API ready in {plane.timings['api_ready_s']:.1f} s, "
            f"nodes and controllers ready in {plane.timings['ready_s']:.1f} s; logs in {plane.work_dir / 'logs'}"
        )


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test (ready for pods), deleted afterwards."""
    name = control_plane.create_namespace(request.node.name.removeprefix("test_"))
    yield name
    control_plane.delete_namespace(name)
