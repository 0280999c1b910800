"""The operator reads a loop's Jobs from its watches (kube/watched.py), not from a LIST per reconcile. A Job that
disappears must be seen as gone whether its watch delivered the deletion (kubectl delete) or could not (the Job
went while the API server was down: the watch resumes from an expired resourceVersion, 410 Gone, and kopf
relists), and the run is started again under its own name, as when it was read with a LIST."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration import test_operator
from tests.integration.controlplane import ControlPlane, wait_until
from tests.integration.operator_process import OperatorProcess
from tests.integration.test_operator import STAGES, apply, get_loop, kwok_loop, phase

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

operator = test_operator.operator  # the fixture: an operator process for the test's namespace


def job_uid(plane: ControlPlane, namespace: str, name: str) -> str | None:
    jobs = plane.get_json("jobs", "-n", namespace, "--field-selector", f"metadata.name={name}")["items"]
    return jobs[0]["metadata"]["uid"] if jobs else None


def stage_phase(plane: ControlPlane, namespace: str, loop: str, stage: str) -> str | None:
    iterations = (get_loop(plane, namespace, loop).get("status") or {}).get("iterations") or [{}]
    found = [s for s in iterations[-1].get("stages") or [] if s["stage"] == stage]
    return found[0]["phase"] if found else None


def slow_optimize_loop(namespace: str, name: str, store: Path) -> dict[str, object]:
    """One iteration whose optimize pod "runs" 6 s: long enough to delete its Job while it runs."""
    document = kwok_loop(namespace, name, store, maxIterations=1)
    document["spec"]["runtime"]["stages"] = {"optimize": {"podAnnotations": {"kwok.selfimprove.dev/run-ms": "6000"}}}
    return document


def test_a_job_deleted_behind_the_operators_back_is_seen_as_gone_and_started_again(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, operator: OperatorProcess
) -> None:
    apply(control_plane, slow_optimize_loop(namespace, "deleted", tmp_path / "store"))
    job = "deleted-1-optimize"
    wait_until(lambda: job_uid(control_plane, namespace, job) is not None, 120, "optimize to start\n" + operator.log())
    first = job_uid(control_plane, namespace, job)
    control_plane.kubectl("delete", "job", job, "-n", namespace, "--wait=false")
    wait_until(
        lambda: job_uid(control_plane, namespace, job) not in (None, first),
        60,
        "the deleted optimize Job to be created again\n" + operator.log(),
    )
    wait_until(lambda: phase(control_plane, namespace, "deleted") == "Succeeded", 120, "the loop to finish")
    optimize = get_loop(control_plane, namespace, "deleted")["status"]["iterations"][0]["stages"][2]
    assert (optimize["stage"], optimize["phase"], optimize["runName"]) == ("optimize", "Succeeded", job)


def test_a_job_gone_while_no_watch_was_open_is_seen_after_the_relist(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, operator: OperatorProcess
) -> None:
    """The Job is deleted from etcd while kube-apiserver is down: no watch can deliver a DELETED for it. The
    restarted API server answers the operator's watch (from a resourceVersion older than its fresh watch cache)
    with 410 Gone, kopf relists, the cache sees the relist and the loop lists its Jobs again."""
    apply(control_plane, slow_optimize_loop(namespace, "relist", tmp_path / "store"))
    job = "relist-1-optimize"
    wait_until(lambda: stage_phase(control_plane, namespace, "relist", "optimize") == "Running", 120, "optimize")
    first = job_uid(control_plane, namespace, job)
    assert first is not None
    key = f"/registry/jobs/{namespace}/{job}"
    deleted: list[int] = []
    control_plane.restart_apiserver(
        down_seconds=1, while_down=lambda: deleted.append(control_plane.delete_from_etcd(key))
    )
    assert deleted == [1]
    wait_until(
        lambda: job_uid(control_plane, namespace, job) not in (None, first),
        25,  # before the resync period the tests run with (30 s) would list the loop's Jobs anyway
        "the optimize Job deleted while the API server was down to be created again\n" + operator.log(),
    )
    assert "the Job watch relisted" in operator.log(), "seen through the relist, not the resync period"
    wait_until(lambda: phase(control_plane, namespace, "relist") == "Succeeded", 120, "the loop to finish")
    names = {j["metadata"]["name"] for j in control_plane.get_json("jobs", "-n", namespace)["items"]}
    assert names == {f"relist-1-{stage}" for stage in STAGES}
