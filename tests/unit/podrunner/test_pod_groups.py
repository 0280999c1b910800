"""What an Indexed Job's pods need from the pod runner: their index, their names in the group's DNS, their host name,
and, as in a container, no process outliving the pod."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.podrunner.runner import POD_UID_ENV, field_value, hostname, local_dns, pod_processes

INDEX = "batch.kubernetes.io/job-completion-index"


def group_pod(subdomain: str | None = "arith-1-optimize", namespace: str = "ml") -> dict[str, object]:
    spec: dict[str, object] = {"hostname": "arith-1-optimize-1"}
    if subdomain is not None:
        spec["subdomain"] = subdomain
    return {
        "metadata": {
            "name": "arith-1-optimize-1-x7k2p",
            "namespace": namespace,
            "labels": {INDEX: "1"},
            "annotations": {INDEX: "1"},
        },
        "spec": spec,
    }


@pytest.mark.parametrize("kind", ["annotations", "labels"])
def test_job_completion_index_resolves_from_the_fieldref_the_job_controller_adds(kind: str) -> None:
    assert field_value(group_pod(), f"metadata.{kind}['{INDEX}']") == "1"


@pytest.mark.parametrize(
    "name",
    [
        "arith-1-optimize-0.arith-1-optimize",
        "arith-1-optimize-0.arith-1-optimize.ml",
        "arith-1-optimize-0.arith-1-optimize.ml.svc",
        "arith-1-optimize-0.arith-1-optimize.ml.svc.cluster.local",
        "arith-1-optimize-1.arith-1-optimize.ml.svc",
    ],
)
def test_a_name_in_the_pods_own_subdomain_reaches_this_machine(name: str) -> None:
    env = {"SIL_MASTER_ADDR": name, "OTHER": "x"}
    assert local_dns(group_pod(), env) == {"SIL_MASTER_ADDR": "127.0.0.1", "OTHER": "x"}


@pytest.mark.parametrize(
    ("pod", "value"),
    [
        (group_pod(), "arith-1-optimize-0.other-service.ml.svc"),  # another subdomain
        (group_pod(), "arith-1-optimize-0.arith-1-optimize.other-ns.svc"),  # another namespace
        (group_pod(), "arith-1-optimize.ml.svc"),  # the Service itself, not a pod in it
        (group_pod(), "http://arith-1-optimize-0.arith-1-optimize.ml.svc:8080"),  # not a bare name
        (group_pod(subdomain=None), "arith-1-optimize-0.arith-1-optimize.ml.svc"),  # a pod without subdomain
    ],
)
def test_other_values_are_left_alone(pod: dict[str, object], value: str) -> None:
    assert local_dns(pod, {"V": value}) == {"V": value}


def test_the_host_name_is_the_pods_spec_hostname_as_a_kubelet_sets_it() -> None:
    assert hostname(group_pod()) == "arith-1-optimize-1"
    assert hostname({"metadata": {"name": "plain-pod"}, "spec": {}}) == "plain-pod"


def test_a_pods_processes_are_found_by_its_marker_even_in_their_own_session() -> None:
    """A stage may start children in their own session (the launcher does): a kill by process group misses them."""
    marker = f"test-{os.getpid()}-{time.monotonic_ns()}"
    env = {**os.environ, POD_UID_ENV: marker}
    code = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'], start_new_session=True); "
        "time.sleep(30)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while len(pod_processes(marker)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        found = pod_processes(marker)
        assert parent.pid in found and len(found) == 2, found
        assert os.getpid() not in found and pod_processes("no-such-pod") == []
    finally:
        for pid in pod_processes(marker):
            os.kill(pid, 9)
        parent.wait()
