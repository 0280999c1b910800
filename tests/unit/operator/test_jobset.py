"""The JobSet engine without a cluster: the manifest field by field, and a JobSet's status read back as a stage.

`sil_operator.kube.jobset` builds the JobSet of a multi-node stage run from the stage's own Job and turns a JobSet
into the Job that kube/observe.py reads; the integration test (tests/integration/test_jobset.py) checks that the
API server accepts the manifest and that the loop follows a JobSet whose status the test writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, cast

import pytest

from sil_operator.api.spec import LoopSpec
from sil_operator.api.status import StagePhase
from sil_operator.kube.client import KubeApi
from sil_operator.kube.controller import Controller
from sil_operator.kube.discovery import ApiDiscovery
from sil_operator.kube.engines import EngineUnavailable, choose_engine
from sil_operator.kube.jobset import (
    FAIL_JOBSET_REASON,
    RunNameTooLong,
    as_job,
    master_address,
    stage_jobset,
)
from sil_operator.kube.objects import LoopIdentity, engine_field, stage_job
from sil_operator.kube.observe import UNREADABLE, observe_jobs
from sil_operator.planner import INPUT_REJECTED, MANIFEST_MISSING, StartStage, run_name
from sil_operator.stageconfig import LoopRef, build_stage_config

from .builders import make_spec

LOOP = LoopIdentity(name="demo", namespace="ml", uid="0b7e6c1e-5f43-4d0e-9a51-6f0d2c1f7a10")
IMAGE = "selfimprove/stage:default"
CREATED = "2026-01-01T00:00:00Z"


def multi_node_spec(nodes: int = 2, engine: str | None = "jobset", **runtime: Any) -> LoopSpec:
    optimize_runtime: dict[str, Any] = {"workload": engine} if engine else {}
    return make_spec(
        optimize={"distributed": {"nodes": nodes}},
        runtime={"backoffLimit": 2, "stages": {"optimize": optimize_runtime}, **runtime},
    )


def start(spec: LoopSpec, attempt: int = 1, run: int = 1, stage: str = "optimize") -> StartStage:
    config = build_stage_config(spec, LoopRef(LOOP.name, LOOP.namespace), 1, stage, "file:///models/base")
    return StartStage(1, stage, run_name("demo", 1, stage, run), attempt, config, run)


def replicated(jobset: Mapping[str, Any]) -> dict[str, Any]:
    (only,) = jobset["spec"]["replicatedJobs"]
    return only  # type: ignore[no-any-return]


def container(jobset: Mapping[str, Any]) -> dict[str, Any]:
    (stage,) = replicated(jobset)["template"]["spec"]["template"]["spec"]["containers"]
    return stage  # type: ignore[no-any-return]


def env(jobset: Mapping[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container(jobset)["env"]}


# -- the manifest ----------------------------------------------------------------------------------------------


def test_the_jobset_is_named_after_the_run_owned_by_the_loop_and_labelled_like_a_stage_job() -> None:
    spec = multi_node_spec()
    jobset = stage_jobset(LOOP, spec, start(spec, attempt=2, run=2), IMAGE)
    job = stage_job(LOOP, spec, start(spec, attempt=2, run=2), IMAGE)
    assert (jobset["apiVersion"], jobset["kind"]) == ("jobset.x-k8s.io/v1alpha2", "JobSet")
    assert jobset["metadata"]["name"] == "demo-1-optimize-r2"
    assert jobset["metadata"]["namespace"] == "ml"
    assert jobset["metadata"]["labels"] == job["metadata"]["labels"]
    assert jobset["metadata"]["annotations"] == job["metadata"]["annotations"]
    assert jobset["metadata"]["ownerReferences"] == job["metadata"]["ownerReferences"]


def test_one_replicated_job_is_the_stage_job_made_indexed_with_one_pod_per_node() -> None:
    spec = multi_node_spec(nodes=4)
    jobset = stage_jobset(LOOP, spec, start(spec), IMAGE)
    job = stage_job(LOOP, spec, start(spec), IMAGE)
    node = replicated(jobset)
    assert (node["name"], node["replicas"]) == ("node", 1)
    job_spec = node["template"]["spec"]
    assert (job_spec["completionMode"], job_spec["completions"], job_spec["parallelism"]) == ("Indexed", 4, 4)
    assert job_spec["backoffLimit"] == 0, "a failed pod fails the Job, and the JobSet restarts the whole group"
    assert job_spec["podFailurePolicy"] == job["spec"]["podFailurePolicy"]
    pod, stage_pod = job_spec["template"], job["spec"]["template"]
    assert pod["spec"]["volumes"] == stage_pod["spec"]["volumes"]
    assert pod["spec"]["securityContext"] == stage_pod["spec"]["securityContext"]
    stage_container = stage_pod["spec"]["containers"][0]
    assert container(jobset)["command"] == stage_container["command"] == ["python", "-m", "sil_stages", "optimize"]
    assert container(jobset)["volumeMounts"] == stage_container["volumeMounts"]
    assert "selfimprove.dev/loop" not in node["template"]["metadata"]["labels"], (
        "the child Job is not listed as a stage Job"
    )
    assert pod["metadata"]["labels"]["selfimprove.dev/loop"] == "demo", "the pods still say whose they are"


def test_every_node_finds_rank_zero_by_its_stable_hostname_and_reads_its_rank_from_the_completion_index() -> None:
    spec = multi_node_spec()
    jobset = stage_jobset(LOOP, spec, start(spec), IMAGE)
    assert jobset["spec"]["network"] == {"enableDNSHostnames": True, "publishNotReadyAddresses": True}
    variables = env(jobset)
    assert (
        variables["SIL_MASTER_ADDR"] == master_address("demo-1-optimize") == "demo-1-optimize-node-0-0.demo-1-optimize"
    )
    assert variables["SIL_MASTER_PORT"] == "29500"
    assert "SIL_NODE_RANK" not in variables, "the stage falls back to JOB_COMPLETION_INDEX, set by Kubernetes"
    assert variables["SIL_STAGE_CONFIG"] == {"configMapKeyRef": {"name": "demo-1-optimize", "key": "config.json"}}


def test_the_users_runtime_env_wins_over_the_rendezvous_variables() -> None:
    spec = multi_node_spec(env={"SIL_MASTER_PORT": "30000"})
    jobset = stage_jobset(LOOP, spec, start(spec), IMAGE)
    names = [item["name"] for item in container(jobset)["env"]]
    assert names.count("SIL_MASTER_PORT") == 1
    assert env(jobset)["SIL_MASTER_PORT"] == "30000"


@pytest.mark.parametrize(("attempt", "max_restarts"), [(1, 2), (2, 1), (3, 0), (5, 0)])
def test_the_group_restarts_at_most_the_retries_the_stage_has_left(attempt: int, max_restarts: int) -> None:
    spec = multi_node_spec()
    policy = stage_jobset(LOOP, spec, start(spec, attempt=attempt), IMAGE)["spec"]["failurePolicy"]
    assert policy["maxRestarts"] == max_restarts
    assert policy["rules"] == [
        {"name": "inputRejected", "action": "FailJobSet", "onJobFailureReasons": ["PodFailurePolicy"]}
    ], "a stage that exited 2 is not restarted"


def test_the_jobset_succeeds_when_all_its_jobs_do() -> None:
    spec = multi_node_spec()
    assert stage_jobset(LOOP, spec, start(spec), IMAGE)["spec"]["successPolicy"] == {"operator": "All"}


def test_kueue_admits_the_jobset_as_one_workload_and_nothing_below_it_carries_a_queue_label() -> None:
    spec = multi_node_spec(queueName="gpu", priorityClass="high")
    jobset = stage_jobset(LOOP, spec, start(spec), IMAGE)
    assert jobset["spec"]["suspend"] is True
    labels = jobset["metadata"]["labels"]
    assert (labels["kueue.x-k8s.io/queue-name"], labels["kueue.x-k8s.io/priority-class"]) == ("gpu", "high")
    job_template = replicated(jobset)["template"]
    assert "suspend" not in job_template["spec"], "the JobSet suspends and resumes its Jobs"
    for below in (job_template["metadata"]["labels"], job_template["spec"]["template"]["metadata"]["labels"]):
        assert not any(key.startswith("kueue.x-k8s.io/") for key in below)


def test_without_a_queue_the_jobset_starts_at_once() -> None:
    spec = multi_node_spec()
    jobset = stage_jobset(LOOP, spec, start(spec), IMAGE)
    assert "suspend" not in jobset["spec"]
    assert not any(key.startswith("kueue.x-k8s.io/") for key in jobset["metadata"]["labels"])


def test_a_run_name_too_long_for_a_pod_hostname_is_refused_naming_the_field() -> None:
    spec = multi_node_spec()
    action = start(spec)
    long_run = StartStage(1, "optimize", "x" * 50 + "-1-optimize", 1, action.config)
    with pytest.raises(RunNameTooLong, match=r"metadata\.name: .* longer than 63"):
        stage_jobset(LOOP, spec, long_run, IMAGE)


# -- the engine switch -----------------------------------------------------------------------------------------


def test_engine_jobset_where_jobsets_are_not_usable_says_which_field_and_what_to_do() -> None:
    spec = multi_node_spec(2, "jobset")
    field = engine_field(spec, "optimize")
    with pytest.raises(EngineUnavailable, match=r"^runtime\.stages\.optimize\.workload: jobset.*install JobSet"):
        choose_engine(spec.runtime.for_stage("optimize").workload, 2, False, field)
    spec = make_spec(optimize={"distributed": {"nodes": 2}}, runtime={"workload": "jobset"})
    with pytest.raises(EngineUnavailable, match=r"^runtime\.workload: jobset.*SIL_JOBSETS=disabled"):
        choose_engine(spec.runtime.for_stage("optimize").workload, 2, False, engine_field(spec, "optimize"))
    assert EngineUnavailable.permanent is False, "installing JobSet heals the loop"
    assert choose_engine("auto", 2, True, field) == "jobset"


def test_an_operator_with_jobsets_disabled_never_asks_the_api_server_for_them() -> None:
    class NoDiscovery:
        async def serves(self, group: str, version: str, plural: str) -> bool:
            raise AssertionError("discovery asked although SIL_JOBSETS=disabled")

    controller = Controller(api=cast(KubeApi, NoDiscovery()), emit=lambda *_: None, jobsets_enabled=False)
    assert asyncio.run(controller.jobset_served()) is False


def test_discovery_is_asked_once_per_ttl() -> None:
    asked: list[tuple[str, str, str]] = []
    now = [0.0]
    answers = iter([False, True])

    async def probe(group: str, version: str, plural: str) -> bool:
        asked.append((group, version, plural))
        return next(answers)

    discovery = ApiDiscovery(ttl=60.0, clock=lambda: now[0])
    key = ("jobset.x-k8s.io", "v1alpha2", "jobsets")
    assert asyncio.run(discovery.served(probe, *key)) is False
    now[0] = 59.0
    assert asyncio.run(discovery.served(probe, *key)) is False
    now[0] = 61.0
    assert asyncio.run(discovery.served(probe, *key)) is True, "a JobSet installed later is noticed"
    assert asked == [key, key]


# -- reading a JobSet back -------------------------------------------------------------------------------------


def jobset_with(
    status: dict[str, Any] | None = None, *, suspend: bool = False, run: int = 1, max_restarts: int = 2
) -> dict[str, Any]:
    spec = multi_node_spec()
    made = stage_jobset(LOOP, spec, start(spec, run=run), IMAGE)
    made["metadata"]["creationTimestamp"] = CREATED
    made["spec"]["failurePolicy"]["maxRestarts"] = max_restarts
    if suspend:
        made["spec"]["suspend"] = True
    made["status"] = status or {}
    return made


def condition(kind: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-01-01T00:10:00Z",
    }


def ready(count: int) -> list[dict[str, Any]]:
    return [{"name": "node", "ready": count, "succeeded": 0, "failed": 0, "active": 1, "suspended": 0}]


METRICS = {"world_size": 2.0}


@pytest.mark.parametrize(
    ("status", "suspend", "metrics", "phase", "attempts", "reason"),
    [
        ({}, False, None, StagePhase.RUNNING, 0, None),
        ({"replicatedJobsStatus": ready(1)}, False, None, StagePhase.RUNNING, 0, None),
        ({"restarts": 1, "replicatedJobsStatus": ready(1)}, False, None, StagePhase.RUNNING, 1, None),
        ({}, True, None, StagePhase.QUEUED, 0, None),
        ({"conditions": [condition("Completed", "AllJobsCompleted")]}, False, METRICS, StagePhase.SUCCEEDED, 0, None),
        (
            {"restarts": 1, "conditions": [condition("Completed", "AllJobsCompleted")]},
            False,
            METRICS,
            StagePhase.SUCCEEDED,
            1,
            None,
        ),
        (
            {"conditions": [condition("Completed", "AllJobsCompleted")]},
            False,
            None,
            StagePhase.FAILED,
            1,
            MANIFEST_MISSING,
        ),
        (
            {"conditions": [condition("Completed", "AllJobsCompleted")]},
            False,
            UNREADABLE,
            StagePhase.RUNNING,
            0,
            None,
        ),
        (
            {"restarts": 2, "conditions": [condition("Failed", "ReachedMaxRestarts", "jobset failed")]},
            False,
            None,
            StagePhase.FAILED,
            3,
            "ReachedMaxRestarts",
        ),
        (
            {"restarts": 0, "conditions": [condition("Failed", FAIL_JOBSET_REASON, "applying FailJobSet")]},
            False,
            None,
            StagePhase.FAILED,
            1,
            INPUT_REJECTED,
        ),
    ],
)
def test_a_jobset_is_observed_by_the_rules_of_a_job(
    status: dict[str, Any],
    suspend: bool,
    metrics: Any,
    phase: StagePhase,
    attempts: int,
    reason: str | None,
) -> None:
    jobs = [as_job(jobset_with(status, suspend=suspend))]
    seen = observe_jobs(jobs, 1, lambda iteration, stage: metrics).stages["optimize"]
    assert (seen.phase, seen.attempts, seen.reason) == (phase, attempts, reason)
    assert seen.run_name == "demo-1-optimize"
    assert seen.permanent is (reason == INPUT_REJECTED)
    if phase is StagePhase.SUCCEEDED:
        assert seen.metrics == METRICS


def test_a_failed_jobset_says_why_and_how_often_it_restarted() -> None:
    failed = jobset_with({"restarts": 2, "conditions": [condition("Failed", "ReachedMaxRestarts", "jobset failed")]})
    seen = observe_jobs([as_job(failed)], 1, lambda iteration, stage: None).stages["optimize"]
    assert seen.message is not None
    assert "ReachedMaxRestarts" in seen.message and "restarts 2" in seen.message and "jobset failed" in seen.message


def test_a_running_jobset_with_a_ready_node_asks_for_no_recheck() -> None:
    seen = observe_jobs([as_job(jobset_with({"replicatedJobsStatus": ready(1)}))], 1, lambda i, s: None)
    assert seen.stages["optimize"].recheck_after is None


def test_the_failed_attempts_of_an_earlier_jobset_run_add_up() -> None:
    first = jobset_with({"restarts": 2, "conditions": [condition("Failed", "ReachedMaxRestarts")]}, run=1)
    second = jobset_with({"restarts": 1, "replicatedJobsStatus": ready(1)}, run=2, max_restarts=0)
    seen = observe_jobs([as_job(first), as_job(second)], 1, lambda i, s: None).stages["optimize"]
    assert (seen.phase, seen.run, seen.attempts) == (StagePhase.RUNNING, 2, 3 + 1)
