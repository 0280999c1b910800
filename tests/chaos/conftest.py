"""Fixtures of the chaos suite: a control plane of its own (the suite restarts its kube-apiserver), SeaweedFS that
can be killed and restarted, Prometheus with its Pushgateway. The counts of each run are printed at the end of the
pytest run (terminal summary), so `pytest tests/chaos` shows them without `-s`."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_REPO_ROOT = str(Path(__file__).resolve().parents[2])
if _REPO_ROOT not in sys.path:  # `pytest` (unlike `python -m pytest`) does not put the repo root there
    sys.path.insert(0, _REPO_ROOT)

from tests.chaos.settings import ChaosSettings, chosen  # noqa: E402
from tests.integration.controlplane import ControlPlane, ControlPlaneError  # noqa: E402
from tests.servers.prometheus import PrometheusServer, running_prometheus  # noqa: E402
from tests.servers.seaweedfs import SeaweedFSProcess, restartable_seaweedfs  # noqa: E402

REPORTS: list[str] = []
"""One line of counts per chaos run, printed in the terminal summary."""


@pytest.fixture(scope="module")
def chaos_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    try:
        plane = ControlPlane.start(tmp_path_factory.mktemp("chaos-controlplane"), pod_runner=False)
    except ControlPlaneError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFSProcess]:
    with restartable_seaweedfs(tmp_path_factory.mktemp("chaos-seaweedfs")) as process:
        yield process


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    with running_prometheus(tmp_path_factory.mktemp("chaos-prometheus")) as server:
        yield server


@pytest.fixture
def settings() -> ChaosSettings:
    return chosen()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in REPORTS:
        terminalreporter.write_line(line)
