"""The Indexed Job engine without a cluster: a multi-node optimize is one Indexed Job plus a headless Service.

Every field the operator sets on the group's Job, Service and environment is a row here, and so is how a group's
Job is read back (one Job is one attempt, however many of its pods failed). The integration tests check that the
API server, the Job controller and real training agree (tests/integration/test_group_jobs.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from sil_operator.api.spec import LoopSpec
from sil_operator.api.status import StagePhase
from sil_operator.kube.engines import stage_objects
from sil_operator.kube.objects import (
    DEFAULT_MASTER_PORT,
    LoopIdentity,
    group_job,
    group_service,
    group_service_name,
    labels,
    owner_reference,
    pod_failure_policy,
    stage_configmap,
    stage_job,
)
from sil_operator.kube.observe import observe_job, observe_jobs
from sil_operator.planner import StartStage, run_name
from sil_operator.stageconfig import LoopRef, build_stage_config
from sil_stages.core.contract import OptimizeConfig, parse_stage_config

from .builders import make_spec

LOOP = LoopIdentity(name="demo", namespace="ml", uid="0b7e6c1e-5f43-4d0e-9a51-6f0d2c1f7a10")
IMAGE = "selfimprove/stage:test"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


def group_spec(nodes: int = 2, *, distributed: Mapping[str, Any] | None = None, **runtime: Any) -> LoopSpec:
    optimize = {"distributed": {"nodes": nodes, **(distributed or {})}}
    return make_spec(optimize=optimize, runtime=runtime) if runtime else make_spec(optimize=optimize)


def start(spec: LoopSpec, stage: str = "optimize", attempt: int = 1, run: int = 1) -> StartStage:
    config = build_stage_config(spec, LoopRef(LOOP.name, LOOP.namespace), 1, stage, "file:///models/base")
    return StartStage(1, stage, run_name(LOOP.name, 1, stage, run), attempt, config, run)


def env_of(job: Mapping[str, Any]) -> dict[str, Any]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


# -- the Job ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("nodes", [2, 3, 8])
def test_a_group_is_an_indexed_job_with_one_completion_per_node_all_running_at_once(nodes: int) -> None:
    spec = group_spec(nodes)
    job = group_job(LOOP, spec, start(spec), IMAGE, nodes)
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == nodes


def test_the_group_job_is_the_stage_job_with_only_the_group_fields_added() -> None:
    spec = group_spec(2)
    action = start(spec)
    plain = stage_job(LOOP, spec, action, IMAGE)
    group = group_job(LOOP, spec, action, IMAGE, 2)
    assert group["metadata"] == plain["metadata"], "same name (the run), labels, attempt annotations, owner"
    added = {"completionMode", "completions", "parallelism"}
    assert set(group["spec"]) - set(plain["spec"]) == added
    assert group["spec"]["podFailurePolicy"] == plain["spec"]["podFailurePolicy"] == pod_failure_policy()
    plain_pod, group_pod = plain["spec"]["template"]["spec"], group["spec"]["template"]["spec"]
    assert set(group_pod) - set(plain_pod) == {"subdomain"}
    assert group["spec"]["template"]["metadata"] == plain["spec"]["template"]["metadata"]


@pytest.mark.parametrize(("backoff_limit", "attempt"), [(None, 1), (2, 1), (2, 3), (5, 2), (0, 1)])
def test_one_failed_pod_fails_the_whole_group_and_the_planner_retries_it_as_a_new_job(
    backoff_limit: int | None, attempt: int
) -> None:
    """backoffLimit 0 whatever runtime.backoffLimit says: the first failed rank fails the Job, the Job controller
    terminates the other ranks (none is left waiting in a collective), and the next attempt is a new run."""
    spec = group_spec(2) if backoff_limit is None else group_spec(2, backoffLimit=backoff_limit)
    job = group_job(LOOP, spec, start(spec, attempt=attempt), IMAGE, 2)
    assert job["spec"]["backoffLimit"] == 0


def test_the_pods_hostnames_live_in_the_groups_headless_service() -> None:
    spec = group_spec(2)
    job = group_job(LOOP, spec, start(spec), IMAGE, 2)
    assert job["spec"]["template"]["spec"]["subdomain"] == "demo-1-optimize"


def test_rank_0_is_reached_at_the_first_pods_dns_name_on_the_default_port() -> None:
    spec = group_spec(2)
    env = env_of(group_job(LOOP, spec, start(spec), IMAGE, 2))
    # An Indexed Job's pod `i` has hostname <job>-<i>; with the subdomain it is <job>-<i>.<service>.<namespace>.svc
    assert env["SIL_MASTER_ADDR"] == "demo-1-optimize-0.demo-1-optimize.ml.svc"
    assert env["SIL_MASTER_PORT"] == str(DEFAULT_MASTER_PORT) == "29500"
    assert "SIL_NODE_RANK" not in env, "the node rank is JOB_COMPLETION_INDEX, which Kubernetes sets"


def test_a_retry_run_reaches_its_own_rank_0() -> None:
    spec = group_spec(2)
    env = env_of(group_job(LOOP, spec, start(spec, attempt=2, run=2), IMAGE, 2))
    assert env["SIL_MASTER_ADDR"] == "demo-1-optimize-r2-0.demo-1-optimize-r2.ml.svc"


def test_the_users_runtime_env_wins_over_the_group_defaults() -> None:
    spec = group_spec(2, env={"SIL_MASTER_PORT": "31000", "SIL_MASTER_ADDR": "rank0.example"})
    job = group_job(LOOP, spec, start(spec), IMAGE, 2)
    env = env_of(job)
    assert (env["SIL_MASTER_PORT"], env["SIL_MASTER_ADDR"]) == ("31000", "rank0.example")
    names = [item["name"] for item in job["spec"]["template"]["spec"]["containers"][0]["env"]]
    assert len(names) == len(set(names)), "each variable once"


def test_a_group_under_a_kueue_queue_is_created_suspended_and_admitted_as_one_workload() -> None:
    spec = group_spec(2, queueName="gpu")
    job = group_job(LOOP, spec, start(spec), IMAGE, 2)
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu"


# -- the Service ------------------------------------------------------------------------------------------------


def test_the_headless_service_selects_the_groups_pods_and_publishes_them_before_they_are_ready() -> None:
    spec = group_spec(2)
    service = group_service(LOOP, spec, start(spec))
    assert (service["apiVersion"], service["kind"]) == ("v1", "Service")
    assert service["metadata"]["name"] == "demo-1-optimize"
    assert service["metadata"]["namespace"] == "ml"
    assert service["metadata"]["labels"] == labels(LOOP, 1, "optimize")
    assert service["metadata"]["ownerReferences"] == [owner_reference(LOOP)], "garbage-collected with the loop"
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {JOB_NAME_LABEL: "demo-1-optimize"}
    assert service["spec"]["ports"] == [{"name": "rendezvous", "port": 29500, "targetPort": 29500, "protocol": "TCP"}]


def test_the_services_port_follows_the_users_master_port() -> None:
    spec = group_spec(2, env={"SIL_MASTER_PORT": "31000"})
    assert group_service(LOOP, spec, start(spec))["spec"]["ports"][0]["port"] == 31000
    spec = group_spec(2, env={"SIL_MASTER_PORT": "not-a-port"})
    assert "ports" not in group_service(LOOP, spec, start(spec))["spec"], "the stage names the bad value itself"


@pytest.mark.parametrize(
    ("run", "service"),
    [
        ("demo-1-optimize", "demo-1-optimize"),
        ("7up-1-optimize", "sil-7up-1-optimize"),
        ("a-2-optimize-r3", "a-2-optimize-r3"),
    ],
)
def test_the_service_is_named_after_the_run_and_starts_with_a_letter_as_service_names_must(
    run: str, service: str
) -> None:
    assert group_service_name(run) == service


def test_the_indexed_job_engine_creates_the_service_before_the_job() -> None:
    spec = group_spec(3)
    action = start(spec)
    service, job = stage_objects("indexed-job", LOOP, spec, action, IMAGE)
    assert service["kind"] == "Service" and job["kind"] == "Job"
    assert job["spec"]["completions"] == 3
    assert job["spec"]["template"]["spec"]["subdomain"] == service["metadata"]["name"]
    (plain,) = stage_objects("job", LOOP, spec, start(spec, "acquire"), IMAGE)
    assert plain == stage_job(LOOP, spec, start(spec, "acquire"), IMAGE)


# -- processesPerNode from the GPU limit ------------------------------------------------------------------------


def optimize_config(spec: LoopSpec) -> OptimizeConfig:
    configmap = stage_configmap(LOOP, start(spec), spec)
    config = parse_stage_config(configmap["data"]["config.json"])
    assert isinstance(config, OptimizeConfig)
    return config


@pytest.mark.parametrize(
    ("runtime", "distributed", "expected"),
    [
        ({}, {}, None),  # no GPU: the stage decides (its CUDA devices, else 1)
        ({"resources": {"limits": {"nvidia.com/gpu": 8}}}, {}, 8),
        ({"resources": {"limits": {"amd.com/gpu": "4", "memory": "64Gi"}}}, {}, 4),
        ({"resources": {"requests": {"nvidia.com/gpu": 2}}}, {}, 2),
        ({"resources": {"limits": {"nvidia.com/gpu": 0}}}, {}, None),
        ({"resources": {"limits": {"cpu": "8"}}}, {}, None),
        ({"resources": {"limits": {"nvidia.com/gpu": 8}}}, {"processesPerNode": 2}, 2),  # the user's value wins
        ({"stages": {"optimize": {"resources": {"limits": {"nvidia.com/gpu": 4}}}}}, {}, 4),
        ({"resources": {"limits": {"nvidia.com/gpu": 4}}, "stages": {"optimize": {"resources": {}}}}, {}, None),
    ],
)
def test_processes_per_node_defaults_to_the_optimize_stages_gpu_limit_on_kubernetes(
    runtime: dict[str, Any], distributed: dict[str, Any], expected: int | None
) -> None:
    spec = group_spec(2, distributed=distributed, **runtime)
    assert optimize_config(spec).distributed.processes_per_node == expected


def test_the_planners_config_is_left_as_it_is_for_sil_run() -> None:
    spec = group_spec(2, resources={"limits": {"nvidia.com/gpu": 8}})
    action = start(spec)
    assert isinstance(action.config, OptimizeConfig)
    assert action.config.distributed.processes_per_node is None, "sil run: the stage counts its own GPUs"
    assert optimize_config(spec).distributed.processes_per_node == 8


def test_other_stages_configs_are_not_touched_by_the_gpu_default() -> None:
    spec = group_spec(2, resources={"limits": {"nvidia.com/gpu": 8}})
    action = start(spec, "acquire")
    assert stage_configmap(LOOP, action, spec)["data"]["config.json"] == action.config.model_dump_json()


# -- reading a group's Job back ----------------------------------------------------------------------------------


def indexed_job(status: dict[str, Any], run: int = 1) -> dict[str, Any]:
    name = run_name(LOOP.name, 1, "optimize", run)
    return {
        "metadata": {
            "name": name,
            "labels": labels(LOOP, 1, "optimize"),
            "annotations": {"selfimprove.dev/run": str(run)},
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {"completionMode": "Indexed", "completions": 2, "parallelism": 2, "backoffLimit": 0},
        "status": status,
    }


def failed(reason: str = "BackoffLimitExceeded") -> dict[str, Any]:
    return {"type": "Failed", "status": "True", "reason": reason, "lastTransitionTime": "2026-01-01T00:05:00Z"}


@pytest.mark.parametrize(
    ("status", "phase", "attempts"),
    [
        # one rank failed, the Job controller terminated the other: both pods count as failed, one attempt
        ({"failed": 2, "conditions": [failed()]}, StagePhase.FAILED, 1),
        ({"failed": 1, "conditions": [failed()]}, StagePhase.FAILED, 1),
        ({"failed": 0, "conditions": [failed("DeadlineExceeded")]}, StagePhase.FAILED, 1),
        ({"active": 2, "ready": 2}, StagePhase.RUNNING, 0),
        ({"active": 1, "failed": 1}, StagePhase.RUNNING, 0),  # failing: the Job's own condition decides
    ],
)
def test_a_groups_job_is_one_attempt_however_many_of_its_pods_failed(
    status: dict[str, Any], phase: StagePhase, attempts: int
) -> None:
    seen = observe_job(indexed_job(status), None)
    assert (seen.phase, seen.attempts) == (phase, attempts)


def test_the_attempts_of_a_groups_runs_add_up_one_per_failed_job() -> None:
    jobs = [
        indexed_job({"failed": 2, "conditions": [failed()]}, run=1),
        indexed_job({"failed": 2, "conditions": [failed()]}, run=2),
        indexed_job({"active": 2, "ready": 2}, run=3),
    ]
    seen = observe_jobs(jobs, 1, lambda iteration, stage: None).stages["optimize"]
    assert (seen.run, seen.attempts, seen.phase) == (3, 2, StagePhase.RUNNING)
