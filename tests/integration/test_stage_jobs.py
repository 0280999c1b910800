"""Stage Jobs on a real control plane: exit codes, retries as new runs, stages that cannot run, Pod Security.

Most loops here run on kwok's fake GPU nodes (annotations choose a pod's exit code, run time or waiting reason,
see testdata/kwok-stages.yaml); one runs a real stage program on the local pod runner.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from sil_operator.api.loader import parse_loop
from sil_operator.kube.objects import LoopIdentity, stage_job
from sil_operator.planner import StartStage
from sil_operator.stageconfig import LoopRef, build_stage_config
from tests.integration import test_operator
from tests.integration.arithmetic_loop import arithmetic_loop
from tests.integration.controlplane import ControlPlane, wait_until
from tests.integration.operator_process import OperatorProcess
from tests.integration.test_operator import JobWatch, apply, events, get_loop, kwok_loop, phase

operator = test_operator.operator  # the fixtures: an operator process for the test's namespace, a Job audit
job_watch = test_operator.job_watch

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def condition(plane: ControlPlane, namespace: str, name: str, kind: str) -> dict[str, Any]:
    status = get_loop(plane, namespace, name).get("status") or {}
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


def pods_of(plane: ControlPlane, namespace: str, job: str) -> list[dict[str, Any]]:
    return plane.get_json("pods", "-n", namespace, "-l", f"job-name={job}")["items"]  # type: ignore[no-any-return]


def job_names(plane: ControlPlane, namespace: str) -> set[str]:
    return {j["metadata"]["name"] for j in plane.get_json("jobs", "-n", namespace)["items"]}


def stage_annotations(exit_code: str, run_ms: str = "100") -> dict[str, Any]:
    return {"kwok.selfimprove.dev/exit-code": exit_code, "kwok.selfimprove.dev/run-ms": run_ms}


# -- exit codes -----------------------------------------------------------------------------------------------


def test_exit_code_2_fails_the_loop_after_one_pod_while_exit_code_3_is_retried(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, operator: OperatorProcess
) -> None:
    rejects = kwok_loop(namespace, "rejects", tmp_path / "rejects", maxIterations=1)
    rejects["spec"]["runtime"]["backoffLimit"] = 3
    rejects["spec"]["runtime"]["stages"] = {"select": {"podAnnotations": stage_annotations("2")}}
    crashes = kwok_loop(namespace, "crashes", tmp_path / "crashes", maxIterations=1)
    crashes["spec"]["runtime"]["stages"] = {"select": {"podAnnotations": stage_annotations("3")}}  # backoffLimit 1
    apply(control_plane, rejects)
    apply(control_plane, crashes)
    wait_until(
        lambda: phase(control_plane, namespace, "rejects") == "Failed" == phase(control_plane, namespace, "crashes"),
        120,
        "both loops to fail\n" + operator.log(),
    )
    assert len(pods_of(control_plane, namespace, "rejects-1-select")) == 1, "exit code 2: no retry (backoffLimit 3)"
    assert len(pods_of(control_plane, namespace, "crashes-1-select")) == 2, "exit code 3: retried (backoffLimit 1)"
    failed = condition(control_plane, namespace, "rejects", "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "StageRejectedInput")
    assert "rejected its input" in failed["message"] and "exit code 2" in failed["message"]
    select = get_loop(control_plane, namespace, "rejects")["status"]["iterations"][0]["stages"][1]
    assert (select["stage"], select["reason"], select["attempts"]) == ("select", "InputRejected", 1)
    assert condition(control_plane, namespace, "crashes", "Failed")["reason"] == "StageFailed"
    assert job_names(control_plane, namespace) == {
        "rejects-1-acquire",
        "rejects-1-select",
        "crashes-1-acquire",
        "crashes-1-select",
    }


# -- retries by the loop are new runs -------------------------------------------------------------------------


def test_raising_backoff_limit_while_a_stage_runs_retries_it_as_a_new_job_and_never_reuses_a_name(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, operator: OperatorProcess, job_watch: JobWatch
) -> None:
    document = kwok_loop(namespace, "raise", tmp_path / "store", maxIterations=1)
    document["spec"]["runtime"]["backoffLimit"] = 0
    document["spec"]["runtime"]["stages"] = {"select": {"podAnnotations": stage_annotations("3", run_ms="3000")}}
    apply(control_plane, document)
    wait_until(lambda: "raise-1-select" in job_watch.created, 60, "select to start\n" + operator.log())
    control_plane.kubectl(
        "patch", "sil", "raise", "-n", namespace, "--type=merge", "-p", '{"spec":{"runtime":{"backoffLimit":1}}}'
    )
    wait_until(lambda: "raise-1-select-r2" in job_watch.created, 60, "a second run of select\n" + operator.log())
    wait_until(lambda: phase(control_plane, namespace, "raise") == "Failed", 60, "the loop to fail\n" + operator.log())
    assert all(len(uids) == 1 for uids in job_watch.created.values()), job_watch.created
    assert job_watch.order == ["raise-1-acquire", "raise-1-select", "raise-1-select-r2"]
    r2 = control_plane.get_json("job", "raise-1-select-r2", "-n", namespace)
    assert r2["spec"]["backoffLimit"] == 0, "one attempt was left of backoffLimit 1"
    status = get_loop(control_plane, namespace, "raise")["status"]
    select = status["iterations"][0]["stages"][1]
    assert (select["runs"], select["attempts"], select["runName"]) == (2, 2, "raise-1-select-r2")
    assert "failed 2 time(s), backoffLimit 1" in status["message"]
    for _ in range(3):  # settled: no flip back to Running
        time.sleep(1)
        assert phase(control_plane, namespace, "raise") == "Failed"


def test_a_stage_that_completes_without_its_manifest_is_retried_as_a_new_run_then_fails_the_loop(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, operator: OperatorProcess, job_watch: JobWatch
) -> None:
    store = tmp_path / "store"
    apply(control_plane, kwok_loop(namespace, "nomanifest", store, manifests=False, maxIterations=1))
    wait_until(lambda: phase(control_plane, namespace, "nomanifest") == "Failed", 90, "the loop to fail")
    assert job_watch.order == ["nomanifest-1-acquire", "nomanifest-1-acquire-r2"], "backoffLimit 1: one more run"
    status = get_loop(control_plane, namespace, "nomanifest")["status"]
    acquire = status["iterations"][0]["stages"][0]
    assert (acquire["reason"], acquire["attempts"]) == ("ManifestMissing", 2)
    expected = f"without writing {store.as_uri()}/iterations/1/acquire/_manifest.json"
    assert expected in status["message"]


# -- stages that cannot run -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cause", "expected"),
    [
        pytest.param("quota", "exceeded quota", id="a ResourceQuota allows no pod"),
        pytest.param("service-account", 'serviceaccount "no-such-sa" not found', id="a missing ServiceAccount"),
    ],
)
def test_a_stage_whose_pods_cannot_be_created_shows_why_on_the_loop_within_a_minute(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, operator: OperatorProcess, cause: str, expected: str
) -> None:
    document = kwok_loop(namespace, "blocked", tmp_path / "store", maxIterations=1)
    if cause == "quota":
        control_plane.kubectl("create", "quota", "no-pods", "-n", namespace, "--hard=pods=0")
    else:
        document["spec"]["runtime"]["serviceAccountName"] = "no-such-sa"
    apply(control_plane, document)

    def shown() -> bool:
        return condition(control_plane, namespace, "blocked", "Progressing").get("reason") == "FailedCreate"

    wait_until(shown, 60, "the loop to show FailedCreate\n" + operator.log())
    progressing = condition(control_plane, namespace, "blocked", "Progressing")
    assert progressing["status"] == "False"
    assert "blocked-1-acquire" in progressing["message"] and expected in progressing["message"]
    status = get_loop(control_plane, namespace, "blocked")["status"]
    assert status["phase"] == "Running"
    assert expected in status["message"]
    acquire = status["iterations"][0]["stages"][0]
    assert (acquire["phase"], acquire["reason"]) == ("Running", "FailedCreate")
    warnings = [e for e in events(control_plane, namespace, "blocked") if e["reason"] == "StageBlocked"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning" and expected in warnings[0]["message"]


def test_a_stage_whose_pod_cannot_start_shows_the_waiting_reason_on_the_loop(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, operator: OperatorProcess
) -> None:
    document = kwok_loop(namespace, "nopull", tmp_path / "store", maxIterations=1)
    document["spec"]["runtime"]["podAnnotations"]["kwok.selfimprove.dev/waiting-reason"] = "ImagePullBackOff"
    apply(control_plane, document)

    def shown() -> bool:
        return condition(control_plane, namespace, "nopull", "Progressing").get("reason") == "ImagePullBackOff"

    wait_until(shown, 60, "the loop to show ImagePullBackOff\n" + operator.log())
    progressing = condition(control_plane, namespace, "nopull", "Progressing")
    assert progressing["status"] == "False" and "nopull-1-acquire" in progressing["message"]
    reasons = [e["reason"] for e in events(control_plane, namespace, "nopull")]
    assert reasons.count("StageBlocked") == 1


# -- Pod Security "restricted" --------------------------------------------------------------------------------


def test_stage_pods_are_admitted_under_the_restricted_pod_security_standard_unless_the_defaults_are_removed(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, operator: OperatorProcess
) -> None:
    control_plane.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    apply(control_plane, kwok_loop(namespace, "secure", tmp_path / "secure", maxIterations=1))
    loose = kwok_loop(namespace, "loose", tmp_path / "loose", maxIterations=1)
    loose["spec"]["runtime"]["podSecurityContext"] = {}
    loose["spec"]["runtime"]["securityContext"] = {}
    apply(control_plane, loose)
    wait_until(
        lambda: phase(control_plane, namespace, "secure") == "Succeeded",
        120,
        "the restricted-compliant loop to finish\n" + operator.log(),
    )
    wait_until(
        lambda: condition(control_plane, namespace, "loose", "Progressing").get("reason") == "FailedCreate",
        60,
        "the loop without security defaults to be refused",
    )
    assert 'violates PodSecurity "restricted' in condition(control_plane, namespace, "loose", "Progressing")["message"]
    pods = pods_of(control_plane, namespace, "secure-1-optimize")
    assert pods and pods[0]["spec"]["securityContext"]["runAsNonRoot"] is True


# -- the stage's own words ------------------------------------------------------------------------------------


def test_a_real_stage_that_rejects_its_input_fails_the_loop_with_its_last_log_line(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, operator: OperatorProcess
) -> None:
    """On the pod runner: prompts without a `prompt` field make acquire exit 2 before it loads any model."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"text": "1+1="}\n')
    (tmp_path / "model").mkdir()
    document = arithmetic_loop(namespace, "badprompts", (tmp_path / "model").as_uri(), {"uri": tmp_path.as_uri()})
    document["spec"]["runtime"]["backoffLimit"] = 2
    document["spec"]["acquire"]["prompts"] = {"uri": prompts.as_uri()}
    apply(control_plane, document)
    wait_until(lambda: phase(control_plane, namespace, "badprompts") == "Failed", 120, "the loop to fail")
    assert len(pods_of(control_plane, namespace, "badprompts-1-acquire")) == 1
    message = get_loop(control_plane, namespace, "badprompts")["status"]["message"]
    assert "rejected its input" in message
    assert "has no `prompt` field" in message, "the stage's last log line, from the termination message"


# -- volumes: /dev/shm and /scratch ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scratch",
    [pytest.param({"size": "100Gi"}, id="a sized emptyDir"), pytest.param({"claimName": "cache"}, id="a PVC")],
)
def test_the_api_server_accepts_a_gpu_stage_job_with_dev_shm_and_either_scratch_volume(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, scratch: dict[str, Any]
) -> None:
    document = kwok_loop(namespace, "volumes", tmp_path / "store", manifests=False, maxIterations=1)
    document["spec"]["runtime"].update({"shmSize": "32Gi", "scratch": scratch, "priorityClass": "low"})
    spec = parse_loop(document).spec
    config = build_stage_config(spec, LoopRef("volumes", namespace), 1, "optimize", "file:///models/base")
    action = StartStage(1, "optimize", "volumes-1-optimize", 1, config)
    job = stage_job(LoopIdentity("volumes", namespace, "uid"), spec, action, "stage:test")
    job["metadata"].pop("ownerReferences")  # no loop object in this test
    answer = control_plane.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=yaml.safe_dump(job))
    created = yaml.safe_load(answer.stdout)
    volumes = {v["name"]: v for v in created["spec"]["template"]["spec"]["volumes"]}
    assert volumes["shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "32Gi"}
    expected = (
        {"emptyDir": {"sizeLimit": "100Gi"}} if "size" in scratch else {"persistentVolumeClaim": {"claimName": "cache"}}
    )
    assert {k: v for k, v in volumes["scratch"].items() if k != "name"} == expected


# -- Kueue: admission and preemption --------------------------------------------------------------------------


def stage_status(plane: ControlPlane, namespace: str, name: str, stage: str) -> dict[str, Any]:
    status = get_loop(plane, namespace, name).get("status") or {}
    stages = (status.get("iterations") or [{}])[0].get("stages") or []
    return next((s for s in stages if s["stage"] == stage), {})


def suspend(plane: ControlPlane, namespace: str, job: str, value: bool) -> None:
    """What Kueue does: unsuspend a Job to admit it; suspend it to preempt it, then clear its startTime."""
    body = '{"spec":{"suspend":%s}}' % ("true" if value else "false")
    plane.kubectl("patch", "job", job, "-n", namespace, "--type=merge", "-p", body)
    if value:
        plane.kubectl(
            "patch",
            "job",
            job,
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            '{"status":{"startTime":null}}',
        )


@pytest.mark.timeout(150)
def test_a_queued_stage_runs_when_admitted_and_a_preempted_one_continues_when_readmitted_without_a_retry(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, operator: OperatorProcess, job_watch: JobWatch
) -> None:
    document = kwok_loop(namespace, "queued", tmp_path / "store", maxIterations=1)
    document["spec"]["runtime"]["backoffLimit"] = 0
    document["spec"]["runtime"]["stages"] = {
        "optimize": {"queueName": "gpus", "podAnnotations": {"kwok.selfimprove.dev/run-ms": "5000"}}
    }
    apply(control_plane, document)
    job = "queued-1-optimize"

    def optimize_is(wanted: str) -> bool:
        return stage_status(control_plane, namespace, "queued", "optimize").get("phase") == wanted

    wait_until(lambda: optimize_is("Queued"), 60, "optimize to wait for its queue\n" + operator.log())
    assert condition(control_plane, namespace, "queued", "Progressing")["reason"] == "StageQueued"
    assert phase(control_plane, namespace, "queued") == "Running"

    suspend(control_plane, namespace, job, False)  # admitted
    wait_until(
        lambda: (
            optimize_is("Running")
            and any(p["status"].get("phase") == "Running" for p in pods_of(control_plane, namespace, job))
        ),
        30,
        "optimize to run once admitted\n" + operator.log(),
    )
    suspend(control_plane, namespace, job, True)  # preempted
    wait_until(lambda: optimize_is("Preempted"), 30, "optimize to show as preempted\n" + operator.log())
    wait_until(lambda: not pods_of(control_plane, namespace, job), 30, "the preempted Job's pods to go")
    time.sleep(2)  # room for a wrong retry to appear
    optimize = stage_status(control_plane, namespace, "queued", "optimize")
    assert (optimize["phase"], optimize["attempts"], optimize["runs"], optimize["preemptions"]) == (
        "Preempted",
        0,
        1,
        1,
    )
    assert condition(control_plane, namespace, "queued", "Progressing")["reason"] == "StagePreempted"
    assert "preempted by its queue" in get_loop(control_plane, namespace, "queued")["status"]["message"]
    assert f"{job}-r2" not in job_watch.created, "a preemption is not a failure: no retry Job"
    reasons = [e["reason"] for e in events(control_plane, namespace, "queued")]
    assert reasons.count("StagePreempted") == 1 and reasons.count("StageQueued") == 1

    suspend(control_plane, namespace, job, False)  # readmitted
    wait_until(
        lambda: phase(control_plane, namespace, "queued") == "Succeeded", 60, "the loop to finish\n" + operator.log()
    )
    assert job_watch.order == ["queued-1-acquire", "queued-1-select", job, "queued-1-evaluate"]
    optimize = stage_status(control_plane, namespace, "queued", "optimize")
    assert (optimize["phase"], optimize["attempts"], optimize["runs"], optimize["preemptions"]) == (
        "Succeeded",
        0,
        1,
        1,
    )
    assert "StageResumed" in [e["reason"] for e in events(control_plane, namespace, "queued")]
