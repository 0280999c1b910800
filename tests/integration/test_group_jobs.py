"""A multi-node optimize on a real control plane: one Indexed Job + a headless Service per run, failing as a group.

On kwok's nodes: the API server accepts the group's objects, the Job controller gives the pods their index and
host names, a group suspended by its queue (Kueue's preemption) is not a failed attempt, and a group whose pods
fail is retried as a new Job, one attempt per Job. On the pod runner: two pods
really train together (torch.distributed, gloo on the CPU, through the stage's launcher), one rank is killed once a
trainer checkpoint is in the store, the whole group fails with no rank left running, the next attempt resumes
from the saved step, and the loop goes on to evaluate the checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sil_stages.optimize.launcher import free_port
from tests.integration.arithmetic_loop import EXAMPLE, REPO, arithmetic_loop
from tests.integration.controlplane import ControlPlane, wait_until
from tests.integration.operator_process import running_operator
from tests.integration.test_operator import apply, get_loop, kwok_loop, phase
from tests.integration.test_stage_jobs import suspend
from tests.podrunner.runner import pod_processes

pytestmark = [pytest.mark.integration]

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


def job(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    return plane.get_json("job", name, "-n", namespace)  # type: ignore[no-any-return]


def pods_of(plane: ControlPlane, namespace: str, job_name: str) -> list[dict[str, Any]]:
    listed = plane.get_json("pods", "-n", namespace, "-l", f"{JOB_NAME_LABEL}={job_name}")
    return sorted(listed["items"], key=lambda pod: pod["spec"].get("hostname", ""))


def has_condition(obj: dict[str, Any], kind: str) -> bool:
    return any(c["type"] == kind and c["status"] == "True" for c in (obj.get("status") or {}).get("conditions") or [])


def assert_group_objects(plane: ControlPlane, namespace: str, run: str, loop_uid: str) -> dict[str, Any]:
    """The run's Indexed Job and headless Service as the API server keeps them; returns the Job."""
    group = job(plane, namespace, run)
    assert group["spec"]["completionMode"] == "Indexed"
    assert group["spec"]["completions"] == group["spec"]["parallelism"] == 2
    assert group["spec"]["backoffLimit"] == 0
    assert group["spec"]["template"]["spec"]["subdomain"] == run
    service = plane.get_json("service", run, "-n", namespace)
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {JOB_NAME_LABEL: run}
    for owned in (group, service):
        (owner,) = owned["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"]) == ("SelfImprovementLoop", loop_uid)
    return group


def optimize_status(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    status = get_loop(plane, namespace, name).get("status") or {}
    stages = (status.get("iterations") or [{}])[0].get("stages") or []
    return next((s for s in stages if s["stage"] == "optimize"), {})


@pytest.mark.timeout(180)
def test_a_group_is_preempted_as_a_whole_without_an_attempt_and_fails_as_one_attempt_per_job(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """A queued group (Kueue holds it suspended) is admitted, preempted (suspended: all its pods go, not a failed
    attempt though its backoffLimit is 0), readmitted; then its pods fail: the Job fails once (however many pods
    failed), the planner's retry is a new Job, and the second failure ends the loop (backoffLimit 1)."""
    failing = {"kwok.selfimprove.dev/run-ms": "4000", "kwok.selfimprove.dev/exit-code": "3"}
    document = kwok_loop(
        namespace,
        "group",
        tmp_path / "store",
        maxIterations=1,
        optimize={"distributed": {"nodes": 2}},
        runtime={
            "backoffLimit": 1,
            "resources": {"limits": {"nvidia.com/gpu": 1}},
            "podAnnotations": {"kwok.selfimprove.dev/run-ms": "200"},
            "stages": {"optimize": {"podAnnotations": failing, "queueName": "gpus"}},
        },
    )
    first, retry = "group-1-optimize", "group-1-optimize-r2"
    with running_operator(control_plane, namespace, tmp_path / "operator.log") as operator:
        apply(control_plane, document)

        def optimize_is(wanted: str) -> bool:
            return optimize_status(control_plane, namespace, "group").get("phase") == wanted

        wait_until(lambda: optimize_is("Queued"), 60, "the group to wait for its queue\n" + operator.log())
        suspend(control_plane, namespace, first, False)  # admitted
        running = ("Running", "Running")
        wait_until(lambda: pod_phases(control_plane, namespace, first) == running, 30, "both pods to run")
        suspend(control_plane, namespace, first, True)  # preempted
        wait_until(lambda: optimize_is("Preempted"), 30, "the group to show as preempted\n" + operator.log())
        wait_until(lambda: not pods_of(control_plane, namespace, first), 30, "the preempted group's pods to go")
        assert not has_condition(job(control_plane, namespace, first), "Failed"), "a suspension fails no group"
        suspend(control_plane, namespace, first, False)  # readmitted; now its pods fail
        wait_until(lambda: job_exists(control_plane, namespace, retry), 60, "the retry\n" + operator.log())
        suspend(control_plane, namespace, retry, False)
        wait_until(lambda: phase(control_plane, namespace, "group") == "Failed", 60, "the loop to fail")
        operator_log = operator.log()
    loop = get_loop(control_plane, namespace, "group")
    for run in (first, retry):
        group = assert_group_objects(control_plane, namespace, run, loop["metadata"]["uid"])
        assert has_condition(group, "Failed"), group["status"]
        pods = pods_of(control_plane, namespace, run)
        assert [pod["spec"]["hostname"] for pod in pods] == [f"{run}-0", f"{run}-1"]
        for pod in pods:
            env = {item["name"]: item for item in pod["spec"]["containers"][0]["env"]}
            assert "fieldRef" in env["JOB_COMPLETION_INDEX"]["valueFrom"], "the node rank, set by the Job controller"
            assert env["SIL_MASTER_ADDR"]["value"] == f"{run}-0.{run}.{namespace}.svc"
    optimize = optimize_status(control_plane, namespace, "group")
    assert (optimize["attempts"], optimize["runs"], optimize["preemptions"]) == (2, 2, 1), optimize
    message = loop["status"]["message"]
    assert "failed 2 time(s), backoffLimit 1" in message, message + operator_log[-2000:]
    assert len(control_plane.get_json("jobs", "-n", namespace, "-l", "selfimprove.dev/stage=optimize")["items"]) == 2


def pod_phases(plane: ControlPlane, namespace: str, job_name: str) -> tuple[str, ...]:
    return tuple(pod["status"].get("phase", "") for pod in pods_of(plane, namespace, job_name))


def job_exists(plane: ControlPlane, namespace: str, name: str) -> bool:
    return bool(plane.get_json("jobs", "-n", namespace, "--field-selector", f"metadata.name={name}")["items"])


# -- real training on the pod runner -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_model() -> Path:
    subprocess.run([sys.executable, str(EXAMPLE / "make_base_model.py")], check=True, cwd=REPO)
    return EXAMPLE / ".base-model"


HELDOUT_ROWS = 40


def two_node_loop(namespace: str, name: str, store: Path, base_model: Path, folder: Path) -> dict[str, Any]:
    """One iteration of the arithmetic loop, shrunk to what the test is about: its optimize trains on 2 pods with 1
    rank each for many tiny steps (a few dozen, about 0.1 s each), saving a trainer checkpoint every 4, so a rank
    can be killed after the first save and well before the end; acquire and evaluate do little."""
    document = arithmetic_loop(namespace, name, base_model.as_uri(), {"uri": store.as_uri()})
    spec = document["spec"]
    spec["maxIterations"] = 1
    spec["runtime"]["backoffLimit"] = 1
    # All pods share this machine's ports: the group gets a port of its own (runtime.env wins over 29500).
    spec["runtime"]["env"]["SIL_MASTER_PORT"] = str(free_port())
    spec["acquire"]["prompts"]["perIteration"] = 128
    spec["acquire"]["samplesPerPrompt"] = 2
    spec["optimize"]["distributed"] = {"nodes": 2, "processesPerNode": 1}
    spec["optimize"]["checkpointEverySteps"] = 4
    spec["optimize"]["hyperparameters"].update(epochs=6, batchSize=2)
    heldout = folder / "heldout.jsonl"
    rows = (EXAMPLE / "data" / "heldout.jsonl").read_text().splitlines()[:HELDOUT_ROWS]
    heldout.write_text("\n".join(rows) + "\n")
    spec["evaluate"]["datasets"] = [{"name": "heldout", "uri": heldout.as_uri()}]
    spec["evaluate"]["refinement"] = {"method": "self-consistency", "samples": 2}
    return document


def kill_rank(plane: ControlPlane, namespace: str, run: str, index: int) -> list[int]:
    """SIGKILL the training process (a launched rank: LOCAL_RANK in its environment) of pod `index` of the group."""
    (pod,) = [p for p in pods_of(plane, namespace, run) if p["spec"]["hostname"] == f"{run}-{index}"]
    ranks = [pid for pid in pod_processes(pod["metadata"]["uid"]) if b"\0LOCAL_RANK=" in environ(pid)]
    for pid in ranks:
        os.kill(pid, signal.SIGKILL)
    return ranks


def environ(pid: int) -> bytes:
    try:
        return b"\0" + Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_two_node_optimize_trains_as_an_indexed_job_survives_a_killed_rank_and_the_loop_evaluates(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, base_model: Path
) -> None:
    store = tmp_path / "store"
    optimize_out = store / "iterations" / "1" / "optimize"
    with running_operator(control_plane, namespace, tmp_path / "operator.log") as operator:
        apply(control_plane, two_node_loop(namespace, "mnode", store, base_model, tmp_path))

        def loop_failed() -> None:
            status = get_loop(control_plane, namespace, "mnode").get("status") or {}
            assert status.get("phase") != "Failed", json.dumps(status, indent=1) + operator.log()[-3000:]

        def first_checkpoint_saved() -> bool:
            loop_failed()
            assert not (optimize_out / "_manifest.json").exists(), "training ended before a rank could be killed"
            return (optimize_out / "trainer-checkpoints" / "latest.json").exists()

        wait_until(first_checkpoint_saved, 400, "the first trainer checkpoint of the 2-node optimize", interval=0.1)
        killed = kill_rank(control_plane, namespace, "mnode-1-optimize", 1)
        assert killed, "rank 1 was training"
        saved_step = json.loads((optimize_out / "trainer-checkpoints" / "latest.json").read_text())["step"]

        # the whole group fails at once: the Job is Failed and no process of either pod is left
        first_pods = pods_of(control_plane, namespace, "mnode-1-optimize")
        uids = [pod["metadata"]["uid"] for pod in first_pods]
        assert len(uids) == 2
        wait_until(lambda: has_condition(job(control_plane, namespace, "mnode-1-optimize"), "Failed"), 60, "Failed")
        wait_until(lambda: not any(pod_processes(uid) for uid in uids), 30, "no rank of the failed group left")

        def finished() -> bool:
            loop_failed()
            status = get_loop(control_plane, namespace, "mnode").get("status") or {}
            return status.get("phase") == "Succeeded"

        wait_until(finished, 400, "the loop to succeed after the retried optimize", interval=1)

    loop = get_loop(control_plane, namespace, "mnode")
    uid = loop["metadata"]["uid"]
    assert_group_objects(control_plane, namespace, "mnode-1-optimize", uid)
    retry = assert_group_objects(control_plane, namespace, "mnode-1-optimize-r2", uid)
    assert has_condition(retry, "Complete")
    retry_pods = pods_of(control_plane, namespace, "mnode-1-optimize-r2")
    assert [pod["status"]["phase"] for pod in retry_pods] == ["Succeeded", "Succeeded"]

    manifest = json.loads((optimize_out / "_manifest.json").read_text())
    metrics = manifest["metrics"]
    assert metrics["world_size"] == 2, "two nodes, one rank each"
    assert metrics["resumed_from_step"] >= saved_step > 0, (metrics, saved_step)
    assert metrics["steps"] > metrics["resumed_from_step"], "the retry trained on from the saved step"
    status = loop["status"]
    (iteration,) = status["iterations"]
    optimize = next(s for s in iteration["stages"] if s["stage"] == "optimize")
    assert (optimize["attempts"], optimize["runs"], optimize["phase"]) == (1, 2, "Succeeded")
    assert (store / "iterations" / "1" / "evaluate" / "_manifest.json").is_file()
    assert iteration["decision"] in ("Promoted", "Rejected")
    assert iteration.get("candidateScore") is not None
