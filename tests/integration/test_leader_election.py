"""High availability: `sil operator --leader-elect` replicas elect one leader on a Lease; only the leader acts.

Runs with client-go's timing (lease 15 s, renew deadline 10 s, retry 2 s), so a takeover after kill -9 takes about
15 to 18 s: the follower waits out the lease duration from the last renewal it saw.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.controlplane import ControlPlane, wait_until
from tests.integration.operator_process import OperatorProcess, leader_election_args
from tests.integration.test_operator import STAGES, JobWatch, apply, kwok_loop, phase
from tests.servers.processes import free_ports

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

LEASE = "selfimprove-operator"
EXIT_LOST_LEADERSHIP = 4


class Lease:
    """Reads and edits the operators' Lease through the API, as an administrator would."""

    def __init__(self, plane: ControlPlane, namespace: str) -> None:
        from kubernetes import client, config

        self._client = config.new_client_from_config(str(plane.kubeconfig))
        self._api = client.CoordinationV1Api(self._client)
        self.namespace = namespace

    def spec(self) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            lease = self._api.read_namespaced_lease(LEASE, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return self._client.sanitize_for_serialization(lease)["spec"]  # type: ignore[no-any-return]

    def holder(self) -> str | None:
        spec = self.spec()
        return None if spec is None else spec.get("holderIdentity") or ""

    def name_holder(self, holder: str) -> None:
        self._api.patch_namespaced_lease(LEASE, self.namespace, {"spec": {"holderIdentity": holder}})


def replica(
    plane: ControlPlane, namespace: str, log: Path, pod_name: str, health_port: int, metrics_port: int = 0
) -> OperatorProcess:
    liveness = ["--liveness", f"http://127.0.0.1:{health_port}/healthz"]
    metrics = ["--metrics-port", str(metrics_port)] if metrics_port else []
    return OperatorProcess(
        plane, log, namespace, {"POD_NAME": pod_name}, [*leader_election_args(namespace, LEASE), *liveness, *metrics]
    )


def leader_gauge(port: int) -> float | None:
    """selfimprove_operator_leader as the replica's /metrics says it; None when /metrics does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    for line in text.splitlines():
        if line.startswith("selfimprove_operator_leader "):
            return float(line.split()[1])
    return None


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture
def job_watch(control_plane: ControlPlane, namespace: str) -> Iterator[JobWatch]:
    watch = JobWatch(control_plane, namespace)
    yield watch
    watch.stop()


def test_two_replicas_elect_one_leader_and_the_follower_takes_over_within_30_s_of_a_kill_9(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, job_watch: JobWatch
) -> None:
    lease = Lease(control_plane, namespace)
    ports = free_ports(4)
    first = replica(control_plane, namespace, tmp_path / "operator-a.log", "operator-a", ports[0], ports[2])
    second = replica(control_plane, namespace, tmp_path / "operator-b.log", "operator-b", ports[1], ports[3])
    first.start()
    try:
        wait_until(lambda: lease.holder() == "operator-a", 30, "operator-a to lead\n" + first.log())
        second.start()
        wait_until(lambda: "operator-b is waiting to become the leader" in second.log(), 30, "operator-b to wait")
        wait_until(lambda: healthy(ports[1]), 10, "the follower to answer its liveness probe\n" + second.log())
        assert (leader_gauge(ports[2]), leader_gauge(ports[3])) == (1.0, 0.0), "both serve /metrics, one leads"

        document = kwok_loop(namespace, "ha", tmp_path / "store", maxIterations=1)
        document["spec"]["runtime"]["podAnnotations"] = {"kwok.selfimprove.dev/run-ms": "1500"}
        apply(control_plane, document)
        wait_until(lambda: "ha-1-select" in job_watch.created, 60, "select to start\n" + first.log())
        assert lease.holder() == "operator-a"
        assert "held by operator-a" in second.log()
        assert "kopf" not in second.log(), "the follower runs none of kopf while it waits:\n" + second.log()
        assert healthy(ports[1]), "the follower still answers its liveness probe"

        jobs_before = len(job_watch.order)
        first.kill()
        killed = time.monotonic()
        wait_until(lambda: lease.holder() == "operator-b", 30, "operator-b to take the Lease\n" + second.log())
        lease_moved = time.monotonic() - killed
        wait_until(lambda: len(job_watch.order) > jobs_before, 30, "the new leader's first Job\n" + second.log())
        next_job = time.monotonic() - killed
        print(f"after kill -9: the Lease moved in {lease_moved:.1f} s, the next Job came {next_job:.1f} s")
        assert next_job < 30, f"takeover took {next_job:.1f} s"
        assert lease_moved >= 10, "the follower waited for the lease to expire, it did not steal it"

        wait_until(lambda: phase(control_plane, namespace, "ha") == "Succeeded", 60, "the loop\n" + second.log())
        assert healthy(ports[1]), "the new leader's liveness endpoint (kopf's now) answers on the same port"
        assert leader_gauge(ports[3]) == 1.0, "the new leader's /metrics says it leads"
    finally:
        first.kill()
        second.stop()
    assert all(len(uids) == 1 for uids in job_watch.created.values()), job_watch.created
    assert sorted(job_watch.created) == sorted(f"ha-1-{stage}" for stage in STAGES)
    spec = lease.spec()
    assert spec is not None and spec["leaseTransitions"] == 1
    assert spec["holderIdentity"] == "", "a leader stopped with SIGTERM releases the Lease"
    assert "operator-b released the lead" in second.log()


def test_a_leader_that_finds_another_holder_in_the_lease_stops_acting_at_once(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    lease = Lease(control_plane, namespace)
    (port,) = free_ports(1)
    operator = replica(control_plane, namespace, tmp_path / "operator.log", "operator-a", port)
    operator.start()
    try:
        wait_until(lambda: lease.holder() == "operator-a", 30, "operator-a to lead\n" + operator.log())
        wait_until(lambda: "kopf" in operator.log(), 30, "kopf to start\n" + operator.log())
        lease.name_holder("intruder")
        edited = time.monotonic()
        assert operator.process is not None
        code = operator.process.wait(timeout=15)
        stopped = time.monotonic() - edited
    finally:
        operator.stop()
    log = operator.log()
    assert code == EXIT_LOST_LEADERSHIP, log
    assert stopped < 5, f"it went on for {stopped:.1f} s after the Lease named another holder"
    assert "lost the lead (Lease" in log and "the Lease names intruder" in log, log
    assert lease.holder() == "intruder", "it never writes over the new holder"
