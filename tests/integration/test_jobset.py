"""A multi-node optimize as a JobSet, on a real API server, with the test in the JobSet controller's place.

The JobSet controller cannot run here, so `jobset_crd` applies a stand-in of its CRD (testdata/jobset-crd.yaml)
for these tests only, and deletes it afterwards: every other test sees a control plane without JobSets. The
operator starts after the CRD exists, so it watches JobSets; the tests write the JobSet's status as its controller
would (running, restarted, completed or failed) and check that the loop follows. Acquire, select and evaluate run
on kwok's nodes with their manifests written beforehand; optimize's manifest is written by the test with the
stages' own code (StageOutputs), as rank 0 would, before the JobSet completes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sil_operator.kube.jobset import JOBSET_NAME_LABEL
from sil_stages.core.contract import StorageOptions, stage_uri
from sil_stages.core.manifest import StageOutputs
from sil_stages.core.store import Store
from tests.integration.controlplane import ControlPlane, wait_until
from tests.integration.operator_process import running_operator
from tests.integration.test_operator import apply, events, get_loop, kwok_loop, phase, write_manifests

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

CRD = Path(__file__).parent / "testdata" / "jobset-crd.yaml"
CRD_NAME = "jobsets.jobset.x-k8s.io"
JOBSETS = "jobsets.jobset.x-k8s.io"
REACT_SECONDS = 20
"""How soon the loop follows a JobSet status change: well under the operator's 30 s resync in these tests, so only
the JobSet watch can make it."""


@pytest.fixture
def jobset_crd(control_plane: ControlPlane) -> Iterator[None]:
    control_plane.kubectl("apply", "--server-side", "-f", str(CRD))
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=30s", "crd", CRD_NAME)
    try:
        yield
    finally:
        control_plane.kubectl("delete", "crd", CRD_NAME, "--wait=true", "--timeout=60s", check=False)


def multi_node_loop(namespace: str, name: str, store: Path) -> dict[str, Any]:
    """One iteration whose optimize trains on 2 nodes with engine jobset; the other stages finish on kwok."""
    document = kwok_loop(
        namespace, name, store, manifests=False, maxIterations=1, optimize={"distributed": {"nodes": 2}}
    )
    document["spec"]["runtime"]["stages"] = {"optimize": {"workload": "jobset"}}
    write_manifests(store, name, range(1, 2), ["acquire", "select", "evaluate"])
    return document


def set_status(plane: ControlPlane, namespace: str, name: str, status: dict[str, Any]) -> None:
    """What the JobSet controller would write."""
    patch = json.dumps({"status": status})
    plane.kubectl("patch", JOBSETS, name, "-n", namespace, "--subresource=status", "--type=merge", "-p", patch)


def running(ready: int) -> list[dict[str, Any]]:
    return [{"name": "node", "ready": ready, "succeeded": 0, "failed": 0, "active": 1, "suspended": 0}]


def condition(kind: str, reason: str, message: str) -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }


def optimize_status(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    iterations = (get_loop(plane, namespace, name).get("status") or {}).get("iterations") or [{}]
    return next((s for s in iterations[-1].get("stages") or [] if s["stage"] == "optimize"), {})


def jobset_exists(plane: ControlPlane, namespace: str, name: str) -> bool:
    return plane.kubectl("get", JOBSETS, name, "-n", namespace, check=False).returncode == 0


def test_a_two_node_optimize_is_a_jobset_the_loop_follows_through_a_restart_to_completion(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, jobset_crd: None
) -> None:
    store = tmp_path / "store"
    with running_operator(control_plane, namespace, tmp_path / "operator.log") as operator:
        apply(control_plane, multi_node_loop(namespace, "gang", store))
        wait_until(
            lambda: jobset_exists(control_plane, namespace, "gang-1-optimize"),
            90,
            "the optimize JobSet\n" + operator.log(),
        )
        jobset = control_plane.get_json(JOBSETS, "gang-1-optimize", "-n", namespace)
        assert jobset["metadata"]["ownerReferences"][0]["kind"] == "SelfImprovementLoop"
        assert jobset["metadata"]["labels"]["selfimprove.dev/stage"] == "optimize"
        spec = jobset["spec"]
        assert spec["network"] == {"enableDNSHostnames": True, "publishNotReadyAddresses": True}
        assert spec["failurePolicy"]["maxRestarts"] == 1, "runtime.backoffLimit 1"
        assert spec["successPolicy"] == {"operator": "All"}
        (node,) = spec["replicatedJobs"]
        job = node["template"]["spec"]
        assert (job["completionMode"], job["parallelism"], job["completions"]) == ("Indexed", 2, 2)
        env = {e["name"]: e.get("value") for e in job["template"]["spec"]["containers"][0]["env"]}
        assert env["SIL_MASTER_ADDR"] == "gang-1-optimize-node-0-0.gang-1-optimize"
        assert env["SIL_MASTER_PORT"] == "29500"
        jobs = {j["metadata"]["name"] for j in control_plane.get_json("jobs", "-n", namespace)["items"]}
        assert jobs == {"gang-1-acquire", "gang-1-select"}, "optimize is the JobSet, not a Job"

        set_status(control_plane, namespace, "gang-1-optimize", {"restarts": 0, "replicatedJobsStatus": running(1)})
        assert phase(control_plane, namespace, "gang") == "Running"
        set_status(control_plane, namespace, "gang-1-optimize", {"restarts": 1, "replicatedJobsStatus": running(0)})
        wait_until(
            lambda: optimize_status(control_plane, namespace, "gang").get("attempts") == 1,
            REACT_SECONDS,
            "the loop to count the restart\n" + operator.log(),
        )
        assert optimize_status(control_plane, namespace, "gang")["phase"] == "Running"
        restarted = [e for e in events(control_plane, namespace, "gang") if e["reason"] == "StageRestarted"]
        assert len(restarted) == 1 and "gang-1-optimize" in restarted[0]["message"]

        outputs = StageOutputs(Store(StorageOptions(uri=store.as_uri())), stage_uri(store.as_uri(), 1, "optimize"))
        outputs.write_text("checkpoint/config.json", "{}")
        outputs.seal(stage="optimize", loop="gang", iteration=1, metrics={"world_size": 2.0})
        set_status(
            control_plane,
            namespace,
            "gang-1-optimize",
            {
                "restarts": 1,
                "terminalState": "Completed",
                "conditions": [condition("Completed", "AllJobsCompleted", "jobset completed successfully")],
            },
        )
        wait_until(
            lambda: optimize_status(control_plane, namespace, "gang").get("phase") == "Succeeded",
            REACT_SECONDS,
            "optimize to succeed\n" + operator.log(),
        )
        wait_until(lambda: phase(control_plane, namespace, "gang") == "Succeeded", 60, "the loop to finish")
    optimize = optimize_status(control_plane, namespace, "gang")
    assert optimize["metrics"]["world_size"] == 2.0, "the manifest rank 0 wrote is read"
    assert optimize["attempts"] == 1
    jobs = {j["metadata"]["name"] for j in control_plane.get_json("jobs", "-n", namespace)["items"]}
    assert jobs == {"gang-1-acquire", "gang-1-select", "gang-1-evaluate"}


def test_a_failed_jobset_fails_the_loop_naming_the_stage_and_the_jobsets_reason(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, jobset_crd: None
) -> None:
    with running_operator(control_plane, namespace, tmp_path / "operator.log") as operator:
        apply(control_plane, multi_node_loop(namespace, "split", tmp_path / "store"))
        wait_until(
            lambda: jobset_exists(control_plane, namespace, "split-1-optimize"),
            90,
            "the optimize JobSet\n" + operator.log(),
        )
        failed = condition("Failed", "ReachedMaxRestarts", "jobset failed due to reaching max number of restarts")
        set_status(
            control_plane,
            namespace,
            "split-1-optimize",
            {"restarts": 1, "terminalState": "Failed", "conditions": [failed]},
        )
        wait_until(
            lambda: phase(control_plane, namespace, "split") == "Failed",
            REACT_SECONDS,
            "the loop to fail\n" + operator.log(),
        )
    status = get_loop(control_plane, namespace, "split")["status"]
    assert "optimize" in status["message"] and "split-1-optimize" in status["message"]
    assert "ReachedMaxRestarts" in status["message"]
    reason = next(c for c in status["conditions"] if c["type"] == "Failed")["reason"]
    assert reason == "StageFailed"
    assert optimize_status(control_plane, namespace, "split")["attempts"] == 2, "both attempts backoffLimit 1 allows"


def test_engine_jobset_without_jobsets_served_shows_an_error_naming_the_engine_field(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    assert control_plane.kubectl("get", "crd", CRD_NAME, check=False).returncode != 0, "no JobSet CRD here"
    with running_operator(control_plane, namespace, tmp_path / "operator.log") as operator:
        apply(control_plane, multi_node_loop(namespace, "nojs", tmp_path / "store"))

        def degraded() -> dict[str, Any] | None:
            conditions = (get_loop(control_plane, namespace, "nojs").get("status") or {}).get("conditions") or []
            return next((c for c in conditions if c["type"] == "Degraded" and c["status"] == "True"), None)

        wait_until(lambda: degraded() is not None, 90, "the loop to show the error\n" + operator.log())
    shown = degraded()
    assert shown is not None and shown["reason"] == "EngineUnavailable"
    assert shown["message"].startswith("runtime.stages.optimize.workload: jobset")
    assert "install JobSet" in shown["message"]
    jobs = {j["metadata"]["name"] for j in control_plane.get_json("jobs", "-n", namespace)["items"]}
    assert jobs == {"nojs-1-acquire", "nojs-1-select"}, "nothing is started in its place"


def test_a_jobset_whose_pod_cannot_start_shows_the_waiting_reason_on_the_loop_as_a_job_would(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, jobset_crd: None
) -> None:
    """The JobSet controller's place again: it made a child Job whose pod waits on an image that cannot be pulled
    (kwok plays the kubelet). The operator finds the pod by the JobSet's label, not the Job name it never saw."""
    with running_operator(control_plane, namespace, tmp_path / "operator.log") as operator:
        apply(control_plane, multi_node_loop(namespace, "nopull", tmp_path / "store"))
        wait_until(
            lambda: jobset_exists(control_plane, namespace, "nopull-1-optimize"),
            90,
            "the optimize JobSet\n" + operator.log(),
        )
        jobset = json.loads(
            control_plane.kubectl("get", JOBSETS, "nopull-1-optimize", "-n", namespace, "-o", "json").stdout
        )
        template = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "nopull-1-optimize-node-0-0-abcde",
                "namespace": namespace,
                "labels": {**(template["metadata"].get("labels") or {}), JOBSET_NAME_LABEL: "nopull-1-optimize"},
                "annotations": {
                    **(template["metadata"].get("annotations") or {}),
                    "kwok.selfimprove.dev/waiting-reason": "ImagePullBackOff",
                },
            },
            "spec": {**template["spec"], "restartPolicy": "Never"},
        }
        control_plane.kubectl("apply", "-f", "-", input=json.dumps(pod))
        set_status(control_plane, namespace, "nopull-1-optimize", {"replicatedJobsStatus": running(0)})

        def shown() -> bool:
            stage = optimize_status(control_plane, namespace, "nopull")
            return stage.get("reason") == "ImagePullBackOff"

        wait_until(shown, 60, "the loop to show ImagePullBackOff\n" + operator.log())
    stage = optimize_status(control_plane, namespace, "nopull")
    assert "nopull-1-optimize-node-0-0-abcde" in stage["message"], stage
    reasons = [e["reason"] for e in events(control_plane, namespace, "nopull")]
    assert reasons.count("StageBlocked") == 1, reasons


def test_jobsets_installed_while_the_operator_runs_are_followed_by_their_watch(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """The operator starts where JobSets are not served; the JobSet CRD is installed afterwards. The loop's JobSet
    is created, and its completion is followed within REACT_SECONDS, well under the 30 s resync: by the watch kopf
    started when the CRD appeared."""
    assert control_plane.kubectl("get", "crd", CRD_NAME, check=False).returncode != 0, "no JobSet CRD yet"
    store = tmp_path / "store"
    with running_operator(control_plane, namespace, tmp_path / "operator.log") as operator:
        wait_until(lambda: "watching jobset.x-k8s.io" in operator.log(), 60, "the operator to start\n" + operator.log())
        control_plane.kubectl("apply", "--server-side", "-f", str(CRD))
        try:
            control_plane.kubectl("wait", "--for=condition=Established", "--timeout=30s", "crd", CRD_NAME)
            apply(control_plane, multi_node_loop(namespace, "late", store))
            wait_until(
                lambda: jobset_exists(control_plane, namespace, "late-1-optimize"),
                90,
                "the optimize JobSet\n" + operator.log(),
            )
            set_status(control_plane, namespace, "late-1-optimize", {"restarts": 0, "replicatedJobsStatus": running(1)})
            outputs = StageOutputs(Store(StorageOptions(uri=store.as_uri())), stage_uri(store.as_uri(), 1, "optimize"))
            outputs.write_text("checkpoint/config.json", "{}")
            outputs.seal(stage="optimize", loop="late", iteration=1, metrics={"world_size": 2.0})
            completed = condition("Completed", "AllJobsCompleted", "jobset completed successfully")
            set_status(
                control_plane,
                namespace,
                "late-1-optimize",
                {"restarts": 0, "terminalState": "Completed", "conditions": [completed]},
            )
            wait_until(
                lambda: optimize_status(control_plane, namespace, "late").get("phase") == "Succeeded",
                REACT_SECONDS,
                "optimize to succeed through the JobSet watch\n" + operator.log(),
            )
        finally:
            control_plane.kubectl("delete", "crd", CRD_NAME, "--wait=true", "--timeout=60s", check=False)
