"""The test control plane behaves like a cluster: the operator's integration tests rely on all of this.

CRD schema and CEL validation, Jobs scheduled by GPU requests onto kwok's fake GPU nodes, the Job
controller's Complete and Failed conditions, and garbage collection of a deleted Job's pods.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.integration.controlplane import FAKE_GPU_NODES, ControlPlane, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

TESTDATA = Path(__file__).resolve().parent / "testdata"


def gpu_job(name: str, *, annotations: dict[str, str] | None = None, backoff_limit: int = 0) -> dict[str, Any]:
    """A one-pod Job whose container asks for one nvidia.com/gpu (only the kwok nodes have them)."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {
                "metadata": {"annotations": annotations or {}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "train",
                            "image": "example.invalid/train:latest",
                            "resources": {"limits": {"nvidia.com/gpu": "1"}},
                        }
                    ],
                },
            },
        },
    }


def job_pods(plane: ControlPlane, namespace: str, job: str) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = plane.get_json("pods", "-n", namespace, "-l", f"batch.kubernetes.io/job-name={job}")[
        "items"
    ]
    return pods


def test_control_plane_is_ready_within_30_seconds_with_cached_binaries(control_plane: ControlPlane) -> None:
    """Every test session starts its own control plane, so the start must stay cheap."""
    assert control_plane.timings["api_ready_s"] < 30
    assert control_plane.timings["ready_s"] < 30


def test_api_server_reports_the_pinned_kubernetes_version(control_plane: ControlPlane) -> None:
    """The binaries are built with version ldflags, so clients see a real version, not v0.0.0."""
    version = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.")
    assert version["serverVersion"]["gitVersion"] == version["clientVersion"]["gitVersion"]


def test_crd_schema_and_cel_rules_reject_invalid_custom_resources(control_plane: ControlPlane, namespace: str) -> None:
    """The API server enforces a CRD's structural schema and CEL rules with the messages they declare."""
    control_plane.kubectl("apply", "-f", str(TESTDATA / "widgets-crd.yaml"))
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=30s", "crd/widgets.testing.selfimprove.dev")

    def widget(name: str, spec: dict[str, int]) -> str:
        return json.dumps(
            {"apiVersion": "testing.selfimprove.dev/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec}
        )

    control_plane.kubectl("create", "-n", namespace, "-f", "-", input=widget("good", {"replicas": 2, "maxReplicas": 3}))

    too_few = control_plane.kubectl(
        "create", "-n", namespace, "-f", "-", input=widget("zero", {"replicas": 0}), check=False
    )
    assert too_few.returncode != 0
    assert "spec.replicas" in too_few.stderr
    assert "should be greater than or equal to 1" in too_few.stderr

    missing = control_plane.kubectl("create", "-n", namespace, "-f", "-", input=widget("empty", {}), check=False)
    assert missing.returncode != 0
    assert "spec.replicas: Required value" in missing.stderr

    inverted = control_plane.kubectl(
        "create", "-n", namespace, "-f", "-", input=widget("inverted", {"replicas": 3, "maxReplicas": 1}), check=False
    )
    assert inverted.returncode != 0
    assert "maxReplicas must be at least replicas" in inverted.stderr

    names = [item["metadata"]["name"] for item in control_plane.get_json("widgets", "-n", namespace)["items"]]
    assert names == ["good"]


def test_status_subresource_is_separate_from_spec(control_plane: ControlPlane, namespace: str) -> None:
    """With the status subresource, a status write goes through /status and does not bump the generation."""
    control_plane.kubectl("apply", "-f", str(TESTDATA / "widgets-crd.yaml"))
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=30s", "crd/widgets.testing.selfimprove.dev")
    body = {
        "apiVersion": "testing.selfimprove.dev/v1",
        "kind": "Widget",
        "metadata": {"name": "w"},
        "spec": {"replicas": 1},
    }
    control_plane.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(body))
    control_plane.kubectl(
        "patch",
        "widget",
        "w",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"observedReplicas": 1}}),
    )
    widget = control_plane.get_json("widget", "w", "-n", namespace)
    assert widget["status"] == {"observedReplicas": 1}
    assert widget["metadata"]["generation"] == 1


def test_gpu_job_runs_on_a_fake_gpu_node_completes_and_its_pods_are_garbage_collected(
    control_plane: ControlPlane, namespace: str
) -> None:
    """A Job asking for nvidia.com/gpu is scheduled onto a kwok GPU node, kwok runs its pod to Succeeded,
    the Job controller marks the Job Complete, and deleting the Job (Background) deletes its pods."""
    control_plane.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(gpu_job("train")))
    control_plane.kubectl("wait", "-n", namespace, "--for=condition=Complete", "--timeout=60s", "job/train")

    pods = job_pods(control_plane, namespace, "train")
    assert len(pods) == 1
    assert pods[0]["spec"]["nodeName"] in FAKE_GPU_NODES
    assert pods[0]["status"]["phase"] == "Succeeded"
    assert pods[0]["metadata"]["ownerReferences"][0]["kind"] == "Job"

    control_plane.kubectl("delete", "job", "train", "-n", namespace, "--cascade=background", "--wait=true")
    wait_until(lambda: not job_pods(control_plane, namespace, "train"), 60, "the Job's pods to be garbage collected")


def test_kwok_fails_a_pod_annotated_with_an_exit_code(control_plane: ControlPlane, namespace: str) -> None:
    """The annotation kwok.selfimprove.dev/exit-code makes a fake pod fail with that exit code, so tests can
    drive a Job into Failed without a real process."""
    job = gpu_job("doomed", annotations={"kwok.selfimprove.dev/exit-code": "3"}, backoff_limit=0)
    control_plane.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(job))
    control_plane.kubectl("wait", "-n", namespace, "--for=condition=Failed", "--timeout=60s", "job/doomed")

    (pod,) = job_pods(control_plane, namespace, "doomed")
    assert pod["status"]["phase"] == "Failed"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3
    conditions = {
        c["type"]: c for c in control_plane.get_json("job", "doomed", "-n", namespace)["status"]["conditions"]
    }
    assert conditions["Failed"]["reason"] == "BackoffLimitExceeded"


def test_kwok_runs_a_pod_for_the_milliseconds_its_annotation_asks(control_plane: ControlPlane, namespace: str) -> None:
    """kwok.selfimprove.dev/run-ms sets how long a fake pod runs before it completes (tests and benchmarks
    use it to give stages a duration); kwok wants a Go duration, so the stage appends the unit."""
    job = gpu_job("slow", annotations={"kwok.selfimprove.dev/run-ms": "3000"})
    control_plane.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(job))
    control_plane.kubectl("wait", "-n", namespace, "--for=condition=Complete", "--timeout=60s", "job/slow")

    (pod,) = job_pods(control_plane, namespace, "slow")
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    ran = datetime.fromisoformat(terminated["finishedAt"]) - datetime.fromisoformat(terminated["startedAt"])
    assert ran.total_seconds() >= 2  # the timestamps have whole seconds
