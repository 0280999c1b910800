"""The Kubernetes objects a loop owns, and how its Jobs are read back, without a cluster.

`sil_operator.kube.objects` turns one StartStage into a ConfigMap and a batch/v1 Job; `sil_operator.kube.observe`
turns the Jobs it finds into the planner's Observation. Both are pure, so every field the operator sets on a Job and
every Job state it can meet is a row in a table here; the integration tests only check that the API server accepts
the result and that the loop walks through it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from sil_operator.api.spec import LoopSpec
from sil_operator.api.status import GatePhase, LoopStatus, Measurement, StagePhase
from sil_operator.kube.objects import (
    CONFIG_ENV,
    CONFIG_KEY,
    KUEUE_PRIORITY_LABEL,
    KUEUE_QUEUE_LABEL,
    LoopIdentity,
    labels,
    owner_reference,
    stage_configmap,
    stage_job,
)
from sil_operator.kube.observe import (
    UNREADABLE,
    Finding,
    finding_from_events,
    finding_from_pods,
    needs_diagnosis,
    observe_job,
    observe_jobs,
    oom_killed,
    termination_message,
)
from sil_operator.planner import Observation, StartStage, plan, run_name
from sil_operator.stageconfig import LoopRef, build_stage_config
from sil_stages.core.contract import STAGES, AcquireConfig, parse_stage_config

from .builders import T0, make_spec

LOOP = LoopIdentity(name="demo", namespace="ml", uid="0b7e6c1e-5f43-4d0e-9a51-6f0d2c1f7a10")
BASE_MODEL = "file:///models/base"
DEFAULT_IMAGE = "selfimprove/stage:default"


def start(spec: LoopSpec, stage: str = "acquire", iteration: int = 1, attempt: int = 1, run: int = 1) -> StartStage:
    """The StartStage the planner would emit for `stage` of `iteration` while the base model is champion."""
    config = build_stage_config(spec, LoopRef(LOOP.name, LOOP.namespace), iteration, stage, BASE_MODEL)
    return StartStage(
        iteration=iteration,
        stage=stage,
        run_name=run_name("demo", iteration, stage, run),
        attempt=attempt,
        config=config,
        run=run,
    )


def job_for(stage: str = "acquire", iteration: int = 1, **runtime: Any) -> dict[str, Any]:
    """The Job of one stage for a spec whose `runtime` is given as camelCase keyword arguments."""
    spec = make_spec(runtime=runtime)
    return stage_job(LOOP, spec, start(spec, stage, iteration), DEFAULT_IMAGE)


def container(job: Mapping[str, Any]) -> dict[str, Any]:
    containers = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "one container per stage pod"
    return containers[0]  # type: ignore[no-any-return]


def pod_spec(job: Mapping[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]  # type: ignore[no-any-return]


# -- identity: names, labels, owner -------------------------------------------------------------------------


def test_the_planners_first_action_becomes_a_job_and_configmap_named_after_the_run() -> None:
    """The Job name is the planner's deterministic run name, so a replayed create is a 409 and never a twin."""
    spec = make_spec()
    result = plan(spec, LoopRef("demo", "ml", 1), LoopStatus(), Observation(), T0)
    action = next(a for a in result.actions if isinstance(a, StartStage))
    job = stage_job(LOOP, spec, action, DEFAULT_IMAGE)
    configmap = stage_configmap(LOOP, action)
    assert action.run_name == "demo-1-acquire"
    assert job["metadata"]["name"] == configmap["metadata"]["name"] == "demo-1-acquire"
    assert job["metadata"]["namespace"] == configmap["metadata"]["namespace"] == "ml"
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    assert (configmap["apiVersion"], configmap["kind"]) == ("v1", "ConfigMap")
    assert job["metadata"]["annotations"]["selfimprove.dev/attempt"] == "1"


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("iteration", [1, 7])
def test_every_stage_job_is_named_loop_iteration_stage(stage: str, iteration: int) -> None:
    spec = make_spec()
    action = start(spec, stage, iteration)
    job = stage_job(LOOP, spec, action, DEFAULT_IMAGE)
    assert job["metadata"]["name"] == f"demo-{iteration}-{stage}"
    assert stage_configmap(LOOP, action)["metadata"]["name"] == f"demo-{iteration}-{stage}"


def test_the_attempt_number_is_recorded_on_the_job() -> None:
    spec = make_spec()
    job = stage_job(LOOP, spec, start(spec, "optimize", 2, attempt=3), DEFAULT_IMAGE)
    assert job["metadata"]["annotations"] == {"selfimprove.dev/attempt": "3", "selfimprove.dev/run": "1"}


@pytest.mark.parametrize(
    ("iteration", "stage", "expected"),
    [
        (1, "acquire", {"selfimprove.dev/iteration": "1", "selfimprove.dev/stage": "acquire"}),
        (12, "evaluate", {"selfimprove.dev/iteration": "12", "selfimprove.dev/stage": "evaluate"}),
    ],
)
def test_labels_name_the_loop_iteration_stage_and_the_manager(
    iteration: int, stage: str, expected: dict[str, str]
) -> None:
    """The operator finds a loop's Jobs by these labels and reads the iteration and stage back from them."""
    assert labels(LOOP, iteration, stage) == {
        "app.kubernetes.io/name": "selfimprove",
        "app.kubernetes.io/component": f"stage-{stage}",
        "app.kubernetes.io/managed-by": "selfimprove-operator",
        "selfimprove.dev/loop": "demo",
        **expected,
    }


def test_job_configmap_and_pods_carry_the_same_labels() -> None:
    spec = make_spec()
    action = start(spec, "select", 2)
    job = stage_job(LOOP, spec, action, DEFAULT_IMAGE)
    expected = labels(LOOP, 2, "select")
    assert job["metadata"]["labels"] == expected
    assert job["spec"]["template"]["metadata"]["labels"] == expected
    assert stage_configmap(LOOP, action)["metadata"]["labels"] == expected


def test_the_loop_is_the_controlling_owner_of_its_jobs_and_configmaps() -> None:
    """Deleting the loop garbage-collects its Jobs and ConfigMaps (foreground deletion waits for them)."""
    expected = {
        "apiVersion": "selfimprove.dev/v1alpha1",
        "kind": "SelfImprovementLoop",
        "name": "demo",
        "uid": LOOP.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert owner_reference(LOOP) == expected
    spec = make_spec()
    action = start(spec)
    assert stage_job(LOOP, spec, action, DEFAULT_IMAGE)["metadata"]["ownerReferences"] == [expected]
    assert stage_configmap(LOOP, action)["metadata"]["ownerReferences"] == [expected]


# -- the stage command and its config ------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_the_container_runs_the_stage_contract_command_with_the_config_from_the_configmap(stage: str) -> None:
    """`python -m sil_stages <stage> --config <json>`, the same command as locally; the JSON comes from the
    ConfigMap through an environment variable and Kubernetes' $(VAR) expansion."""
    spec = make_spec()
    action = start(spec, stage, 2)
    job = stage_job(LOOP, spec, action, DEFAULT_IMAGE)
    stage_container = container(job)
    assert stage_container["name"] == "stage"
    assert stage_container["image"] == DEFAULT_IMAGE
    assert stage_container["command"] == ["python", "-m", "sil_stages", stage]
    assert stage_container["args"] == ["--config", f"$({CONFIG_ENV})"]
    config_env = next(e for e in stage_container["env"] if e["name"] == CONFIG_ENV)
    assert config_env == {
        "name": "SIL_STAGE_CONFIG",
        "valueFrom": {"configMapKeyRef": {"name": f"demo-2-{stage}", "key": CONFIG_KEY}},
    }
    assert {"name": "PYTHONUNBUFFERED", "value": "1"} in stage_container["env"]
    assert pod_spec(job)["restartPolicy"] == "Never", "retries are the Job's (backoffLimit), not the kubelet's"


@pytest.mark.parametrize("stage", STAGES)
def test_the_configmap_holds_the_stage_config_as_json_that_the_stage_parses_back(stage: str) -> None:
    spec = make_spec()
    action = start(spec, stage, 3)
    configmap = stage_configmap(LOOP, action)
    assert list(configmap["data"]) == [CONFIG_KEY]
    parsed = parse_stage_config(configmap["data"][CONFIG_KEY])
    assert parsed == action.config
    assert (parsed.stage, parsed.loop, parsed.namespace, parsed.iteration) == (stage, "demo", "ml", 3)


def test_the_acquire_config_samples_from_the_champion_at_the_start_of_the_iteration() -> None:
    spec = make_spec()
    parsed = parse_stage_config(stage_configmap(LOOP, start(spec))["data"][CONFIG_KEY])
    assert isinstance(parsed, AcquireConfig)
    assert parsed.model_uri == BASE_MODEL
    assert parsed.samples_per_prompt == 4


# -- runtime: scheduling, resources, retries -----------------------------------------------------------------

Getter = Callable[[dict[str, Any]], Any]

RUNTIME_FIELDS: list[tuple[str, dict[str, Any], Getter, Any]] = [
    (
        "integer quantities become strings",
        {"resources": {"limits": {"nvidia.com/gpu": 1, "memory": "64Gi"}, "requests": {"cpu": 4}}},
        lambda job: container(job)["resources"],
        {"limits": {"nvidia.com/gpu": "1", "memory": "64Gi"}, "requests": {"cpu": "4"}},
    ),
    (
        "nodeSelector",
        {"nodeSelector": {"nvidia.com/gpu.product": "H100"}},
        lambda job: pod_spec(job)["nodeSelector"],
        {"nvidia.com/gpu.product": "H100"},
    ),
    (
        "tolerations pass through unchanged",
        {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
        lambda job: pod_spec(job)["tolerations"],
        [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    ),
    (
        "serviceAccountName",
        {"serviceAccountName": "trainer"},
        lambda job: pod_spec(job)["serviceAccountName"],
        "trainer",
    ),
    (
        "imagePullSecrets become LocalObjectReferences",
        {"imagePullSecrets": ["regcred", "mirror"]},
        lambda job: pod_spec(job)["imagePullSecrets"],
        [{"name": "regcred"}, {"name": "mirror"}],
    ),
    (
        "podAnnotations go on the pod template",
        {"podAnnotations": {"sidecar.istio.io/inject": "false"}},
        lambda job: job["spec"]["template"]["metadata"]["annotations"],
        {"sidecar.istio.io/inject": "false"},
    ),
    (
        "podLabels are added to the pod labels, which they cannot override",
        {"podLabels": {"team": "research", "selfimprove.dev/stage": "spoofed"}},
        lambda job: {k: job["spec"]["template"]["metadata"]["labels"][k] for k in ("team", "selfimprove.dev/stage")},
        {"team": "research", "selfimprove.dev/stage": "acquire"},
    ),
    (
        "activeDeadlineSeconds",
        {"activeDeadlineSeconds": 3600},
        lambda job: job["spec"]["activeDeadlineSeconds"],
        3600,
    ),
    (
        "the loop's image wins over the operator's default image",
        {"image": "registry.example/stage:v2"},
        lambda job: container(job)["image"],
        "registry.example/stage:v2",
    ),
    (
        "extra env vars follow the config variable and the scratch dirs, sorted by name, and replace those",
        {"env": {"ZED": "z", "HF_HOME": "/cache"}},
        lambda job: [(e["name"], e.get("value")) for e in container(job)["env"]],
        [
            ("SIL_STAGE_CONFIG", None),
            ("PYTHONUNBUFFERED", "1"),
            ("HOME", "/scratch"),
            ("SIL_MODEL_CACHE", "/scratch/.cache/selfimprove/models"),
            ("TMPDIR", "/tmp"),
            ("HF_HOME", "/cache"),
            ("ZED", "z"),
        ],
    ),
]


@pytest.mark.parametrize(
    ("runtime", "get", "expected"),
    [pytest.param(runtime, get, expected, id=name) for name, runtime, get, expected in RUNTIME_FIELDS],
)
def test_runtime_fields_reach_the_job(runtime: dict[str, Any], get: Getter, expected: Any) -> None:
    assert get(job_for(**runtime)) == expected


def test_a_bare_runtime_sets_no_optional_job_fields() -> None:
    """Without runtime settings the Job has no resources, scheduling constraints, deadline or suspension."""
    job = job_for()
    assert "resources" not in container(job)
    assert "envFrom" not in container(job)
    for absent in ("nodeSelector", "tolerations", "serviceAccountName", "imagePullSecrets"):
        assert absent not in pod_spec(job)
    assert "annotations" not in job["spec"]["template"]["metadata"]
    assert "activeDeadlineSeconds" not in job["spec"]
    assert "suspend" not in job["spec"]
    assert KUEUE_QUEUE_LABEL not in job["metadata"]["labels"]


@pytest.mark.parametrize(
    ("runtime", "stage", "expected"),
    [
        pytest.param({}, "acquire", 2, id="default is 2"),
        pytest.param({"backoffLimit": 0}, "acquire", 0, id="0 means no retry, not the default"),
        pytest.param({"backoffLimit": 5}, "evaluate", 5, id="loop-wide"),
        pytest.param({"backoffLimit": 1, "stages": {"optimize": {"backoffLimit": 4}}}, "optimize", 4, id="override"),
        pytest.param({"backoffLimit": 1, "stages": {"optimize": {"backoffLimit": 4}}}, "select", 1, id="other stage"),
        pytest.param({"stages": {"evaluate": {"backoffLimit": 0}}}, "evaluate", 0, id="override to 0"),
    ],
)
def test_backoff_limit_defaults_to_two_and_a_stage_override_wins(
    runtime: dict[str, Any], stage: str, expected: int
) -> None:
    assert job_for(stage, **runtime)["spec"]["backoffLimit"] == expected


@pytest.mark.parametrize(
    ("limit", "attempt", "expected"),
    [
        pytest.param(2, 1, 2, id="first run: the whole limit"),
        pytest.param(5, 4, 2, id="after a failed Job of 3 pods, the limit raised to 5: 2 retries left"),
        pytest.param(2, 2, 1, id="after a run that completed without its manifest"),
        pytest.param(2, 9, 0, id="never negative"),
    ],
)
def test_a_later_runs_job_gets_only_the_retries_the_earlier_runs_left(limit: int, attempt: int, expected: int) -> None:
    spec = make_spec(runtime={"backoffLimit": limit})
    job = stage_job(LOOP, spec, start(spec, "select", attempt=attempt, run=2), DEFAULT_IMAGE)
    assert job["spec"]["backoffLimit"] == expected
    assert job["metadata"]["name"] == "demo-1-select-r2"
    assert job["metadata"]["annotations"]["selfimprove.dev/run"] == "2"


def test_exit_code_2_fails_the_job_at_once_and_disruptions_are_not_failed_attempts() -> None:
    job = job_for()
    assert job["spec"]["podFailurePolicy"] == {
        "rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": "stage", "operator": "In", "values": [2]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]
    }
    assert pod_spec(job)["restartPolicy"] == "Never", "podFailurePolicy needs restartPolicy Never"
    assert container(job)["terminationMessagePolicy"] == "FallbackToLogsOnError", "the last log line says why"


def test_stage_pods_meet_the_restricted_pod_security_standard_by_default() -> None:
    job = job_for()
    assert pod_spec(job)["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    assert container(job)["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def test_stages_write_to_emptydir_volumes_for_tmp_and_scratch_which_home_and_caches_point_to() -> None:
    job = job_for()
    assert pod_spec(job)["volumes"] == [{"name": "tmp", "emptyDir": {}}, {"name": "scratch", "emptyDir": {}}]
    assert container(job)["volumeMounts"] == [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "scratch", "mountPath": "/scratch"},
    ]
    env = {e["name"]: e.get("value") for e in container(job)["env"]}
    assert (env["HOME"], env["HF_HOME"], env["TMPDIR"]) == ("/scratch", "/scratch/.cache/huggingface", "/tmp")
    assert env["SIL_MODEL_CACHE"] == "/scratch/.cache/selfimprove/models", "checkpoints are cached on /scratch"


def volume(job: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    return next((v for v in pod_spec(job)["volumes"] if v["name"] == name), None)


def mount_path(job: Mapping[str, Any], name: str) -> str | None:
    return next((m["mountPath"] for m in container(job)["volumeMounts"] if m["name"] == name), None)


@pytest.mark.parametrize(
    ("runtime", "stage", "expected"),
    [
        pytest.param({"scratch": {"size": "100Gi"}}, "acquire", {"emptyDir": {"sizeLimit": "100Gi"}}, id="a size"),
        pytest.param(
            {"scratch": {"claimName": "model-cache"}},
            "evaluate",
            {"persistentVolumeClaim": {"claimName": "model-cache"}},
            id="a claim",
        ),
        pytest.param(
            {"scratch": {"size": "20Gi"}, "stages": {"optimize": {"scratch": {"claimName": "big-cache"}}}},
            "optimize",
            {"persistentVolumeClaim": {"claimName": "big-cache"}},
            id="a stage override replaces the loop's scratch",
        ),
        pytest.param(
            {"stages": {"optimize": {"scratch": {"size": "500Gi"}}}},
            "select",
            {"emptyDir": {}},
            id="another stage's override leaves the default",
        ),
    ],
)
def test_runtime_scratch_sizes_the_scratch_emptydir_or_mounts_a_claim_there(
    runtime: dict[str, Any], stage: str, expected: dict[str, Any]
) -> None:
    job = job_for(stage, **runtime)
    assert volume(job, "scratch") == {"name": "scratch", **expected}
    assert mount_path(job, "scratch") == "/scratch"
    assert [v["name"] for v in pod_spec(job)["volumes"]].count("scratch") == 1, "extended, not duplicated"


@pytest.mark.parametrize(
    "scratch",
    [pytest.param({}, id="neither"), pytest.param({"size": "1Gi", "claimName": "c"}, id="both")],
)
def test_scratch_needs_exactly_one_of_size_and_claim_name(scratch: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"exactly one of size .* and claimName"):
        make_spec(runtime={"scratch": scratch})


@pytest.mark.parametrize(
    ("runtime", "stage", "size"),
    [
        pytest.param({"resources": {"limits": {"nvidia.com/gpu": 1}}}, "optimize", "16Gi", id="a GPU limit"),
        pytest.param({"resources": {"requests": {"amd.com/gpu": "2"}}}, "acquire", "16Gi", id="any */gpu request"),
        pytest.param(
            {"shmSize": "64Gi", "resources": {"limits": {"nvidia.com/gpu": 8}}}, "optimize", "64Gi", id="shmSize"
        ),
        pytest.param(
            {"resources": {"limits": {"nvidia.com/gpu": 1}}, "stages": {"optimize": {"shmSize": "128Gi"}}},
            "optimize",
            "128Gi",
            id="a stage override of shmSize",
        ),
        pytest.param(
            {"stages": {"optimize": {"resources": {"limits": {"nvidia.com/gpu": 8}}}}},
            "optimize",
            "16Gi",
            id="only the stage that asks for GPUs",
        ),
    ],
)
def test_gpu_stage_pods_get_a_memory_backed_dev_shm(runtime: dict[str, Any], stage: str, size: str) -> None:
    job = job_for(stage, **runtime)
    assert volume(job, "shm") == {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": size}}
    assert mount_path(job, "shm") == "/dev/shm"


@pytest.mark.parametrize(
    ("runtime", "stage"),
    [
        pytest.param({}, "optimize", id="no resources"),
        pytest.param({"resources": {"limits": {"cpu": 4, "memory": "64Gi"}}}, "optimize", id="CPU and memory only"),
        pytest.param({"shmSize": "64Gi"}, "acquire", id="shmSize alone"),
        pytest.param({"stages": {"optimize": {"resources": {"limits": {"nvidia.com/gpu": 8}}}}}, "select", id="other"),
    ],
)
def test_stage_pods_without_gpus_keep_the_runtimes_dev_shm(runtime: dict[str, Any], stage: str) -> None:
    job = job_for(stage, **runtime)
    assert volume(job, "shm") is None
    assert mount_path(job, "shm") is None


@pytest.mark.parametrize(
    ("runtime", "stage", "pod", "stage_container"),
    [
        pytest.param(
            {"podSecurityContext": {"runAsUser": 0}, "securityContext": {"privileged": True}},
            "acquire",
            {"runAsUser": 0},
            {"privileged": True},
            id="loop-wide overrides replace the defaults",
        ),
        pytest.param(
            {"stages": {"optimize": {"securityContext": {"capabilities": {"add": ["IPC_LOCK"]}}}}},
            "optimize",
            {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            {"capabilities": {"add": ["IPC_LOCK"]}},
            id="a stage override replaces the container default for that stage only",
        ),
        pytest.param(
            {"podSecurityContext": {}, "securityContext": {}}, "select", {}, {}, id="empty objects remove them"
        ),
    ],
)
def test_security_contexts_from_the_runtime_replace_the_defaults(
    runtime: dict[str, Any], stage: str, pod: dict[str, Any], stage_container: dict[str, Any]
) -> None:
    job = job_for(stage, **runtime)
    assert pod_spec(job)["securityContext"] == pod
    assert container(job)["securityContext"] == stage_container


def test_a_stage_override_replaces_only_the_fields_it_sets() -> None:
    """`runtime.stages.optimize` asks for 8 GPUs; image, nodeSelector and backoffLimit stay the loop's."""
    runtime: dict[str, Any] = {
        "image": "registry.example/stage:v2",
        "backoffLimit": 1,
        "nodeSelector": {"pool": "gpu"},
        "resources": {"limits": {"nvidia.com/gpu": 1}},
        "stages": {"optimize": {"resources": {"limits": {"nvidia.com/gpu": 8}}, "activeDeadlineSeconds": 7200}},
    }
    optimize = job_for("optimize", **runtime)
    assert container(optimize)["resources"] == {"limits": {"nvidia.com/gpu": "8"}}
    assert optimize["spec"]["activeDeadlineSeconds"] == 7200
    assert container(optimize)["image"] == "registry.example/stage:v2"
    assert pod_spec(optimize)["nodeSelector"] == {"pool": "gpu"}
    assert optimize["spec"]["backoffLimit"] == 1
    acquire = job_for("acquire", **runtime)
    assert container(acquire)["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
    assert "activeDeadlineSeconds" not in acquire["spec"]


# -- Kueue ----------------------------------------------------------------------------------------------------


def test_a_queue_name_labels_the_job_for_kueue_and_creates_it_suspended() -> None:
    """Kueue admits a Job by unsuspending it; the label must be on the Job itself (and is copied to the pods)."""
    job = job_for(queueName="gpu-queue")
    assert job["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "gpu-queue"
    assert job["spec"]["template"]["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "gpu-queue"
    assert job["spec"]["suspend"] is True


def test_a_priority_class_labels_the_job_for_kueue_and_a_stage_override_wins() -> None:
    runtime: dict[str, Any] = {
        "queueName": "gpus",
        "priorityClass": "batch-low",
        "stages": {"evaluate": {"priorityClass": "interactive"}},
    }
    assert job_for("optimize", **runtime)["metadata"]["labels"][KUEUE_PRIORITY_LABEL] == "batch-low"
    assert job_for("evaluate", **runtime)["metadata"]["labels"][KUEUE_PRIORITY_LABEL] == "interactive"
    assert KUEUE_PRIORITY_LABEL not in job_for("evaluate")["metadata"]["labels"]


def test_a_queue_name_for_one_stage_suspends_only_that_stages_job() -> None:
    runtime: dict[str, Any] = {"stages": {"optimize": {"queueName": "big-gpus"}}}
    assert job_for("optimize", **runtime)["spec"]["suspend"] is True
    assert job_for("optimize", **runtime)["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "big-gpus"
    assert "suspend" not in job_for("acquire", **runtime)["spec"]
    assert KUEUE_QUEUE_LABEL not in job_for("acquire", **runtime)["metadata"]["labels"]


# -- credentials and images -----------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_storage_credentials_reach_the_stage_only_as_an_envfrom_secret_reference(stage: str) -> None:
    """The Secret's name appears once, in envFrom; its values are never read, so no object can carry them."""
    spec = make_spec(
        storage={
            "uri": "s3://bucket/runs/demo",
            "endpoint": "http://seaweedfs:8333",
            "region": "eu-west-1",
            "credentialsSecret": "s3-credentials-7f3a",
        }
    )
    action = start(spec, stage)
    job = stage_job(LOOP, spec, action, DEFAULT_IMAGE)
    configmap = stage_configmap(LOOP, action)
    assert container(job)["envFrom"] == [{"secretRef": {"name": "s3-credentials-7f3a"}}]
    assert json.dumps(job).count("s3-credentials-7f3a") == 1
    assert "s3-credentials-7f3a" not in json.dumps(configmap)
    for text in (json.dumps(job), json.dumps(configmap)):
        assert "AWS_ACCESS_KEY_ID" not in text
        assert "AWS_SECRET_ACCESS_KEY" not in text
        assert "secretKeyRef" not in text
    parsed = parse_stage_config(configmap["data"][CONFIG_KEY])
    assert parsed.storage.model_dump() == {
        "uri": "s3://bucket/runs/demo",
        "endpoint": "http://seaweedfs:8333",
        "region": "eu-west-1",
    }


def test_without_any_image_the_job_cannot_be_built_and_the_error_names_the_field() -> None:
    spec = make_spec()
    with pytest.raises(ValueError, match=r"spec\.runtime\.image") as raised:
        stage_job(LOOP, spec, start(spec, "select"), None)
    assert "select" in str(raised.value)


def test_an_image_set_for_one_stage_only_does_not_cover_the_others() -> None:
    spec = make_spec(runtime={"stages": {"optimize": {"image": "registry.example/trainer:v1"}}})
    assert container(stage_job(LOOP, spec, start(spec, "optimize"), None))["image"] == "registry.example/trainer:v1"
    with pytest.raises(ValueError, match=r"spec\.runtime\.image"):
        stage_job(LOOP, spec, start(spec, "acquire"), None)


# -- observing Jobs -------------------------------------------------------------------------------------------


def k8s_job(
    iteration: int = 1,
    stage: str = "acquire",
    *,
    status: dict[str, Any] | None = None,
    backoff_limit: int = 2,
    suspend: bool | None = None,
    loop: str = "demo",
) -> dict[str, Any]:
    """A Job as the API server returns it (after `sanitize_for_serialization`: times are RFC 3339 strings)."""
    spec: dict[str, Any] = {"backoffLimit": backoff_limit}
    if suspend is not None:
        spec["suspend"] = suspend
    return {
        "metadata": {
            "name": f"{loop}-{iteration}-{stage}",
            "namespace": "ml",
            "labels": labels(LoopIdentity(loop, "ml", "uid"), iteration, stage),
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": spec,
        "status": status or {},
    }


def condition(kind: str, reason: str = "", message: str = "", at: str = "2026-01-01T00:05:00Z") -> dict[str, Any]:
    return {"type": kind, "status": "True", "reason": reason, "message": message, "lastTransitionTime": at}


COMPLETE = {
    "startTime": "2026-01-01T00:00:01Z",
    "completionTime": "2026-01-01T00:04:59Z",
    "succeeded": 1,
    "conditions": [condition("SuccessCriteriaMet"), condition("Complete")],
}


def test_a_complete_job_is_a_succeeded_stage_with_its_manifest_metrics() -> None:
    seen = observe_job(k8s_job(status=COMPLETE), {"kept": 128.0, "accuracy": 0.5})
    assert seen.phase is StagePhase.SUCCEEDED
    assert seen.metrics == {"kept": 128.0, "accuracy": 0.5}
    assert seen.run_name == "demo-1-acquire"
    assert seen.started_at == datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert seen.finished_at == datetime(2026, 1, 1, 0, 4, 59, tzinfo=UTC)
    assert seen.attempts == 0


def test_a_complete_job_after_a_failed_pod_counts_that_attempt() -> None:
    seen = observe_job(k8s_job(status={**COMPLETE, "failed": 1}), {})
    assert (seen.phase, seen.attempts, dict(seen.metrics)) == (StagePhase.SUCCEEDED, 1, {})


def test_a_complete_job_without_its_manifest_is_a_failed_attempt_that_names_the_manifest() -> None:
    uri = "file:///runs/demo/iterations/1/acquire/_manifest.json"
    seen = observe_job(k8s_job(status={**COMPLETE, "failed": 1}), None, manifest=uri)
    assert (seen.phase, seen.attempts, seen.reason, seen.permanent) == (StagePhase.FAILED, 2, "ManifestMissing", False)
    assert seen.message == (f"the stage exited 0 without writing {uri}; the contract says the manifest is written last")


def test_a_complete_job_whose_manifest_cannot_be_read_is_not_decided_yet() -> None:
    """A store that is down says nothing about the stage: it stays Running and is looked at again soon."""
    seen = observe_job(k8s_job(status=COMPLETE), UNREADABLE)
    assert (seen.phase, seen.attempts, seen.reason) == (StagePhase.RUNNING, 0, None)
    assert seen.recheck_after is not None and seen.recheck_after <= 60
    assert not seen.blocked


def test_a_job_failed_by_the_pod_failure_policy_is_a_permanent_failure_with_the_stages_last_words() -> None:
    """Exit code 2: the stage rejected its input. One pod failed; the Job's backoffLimit does not matter."""
    status = {
        "failed": 1,
        "conditions": [
            condition("FailureTarget", "PodFailurePolicy"),
            condition(
                "Failed", "PodFailurePolicy", "Container stage for pod ml/demo-1-select-x failed with exit code 2"
            ),
        ],
    }
    said = Finding(message="select.scorer.verifier: cannot import 'nope'; fix spec.select.scorer.verifier")
    seen = observe_job(k8s_job(1, "select", status=status, backoff_limit=3), None, finding=said)
    assert (seen.phase, seen.attempts, seen.reason, seen.permanent) == (StagePhase.FAILED, 1, "InputRejected", True)
    assert seen.message is not None
    assert "exit code 2" in seen.message and "fix spec.select.scorer.verifier" in seen.message


@pytest.mark.parametrize(
    ("backoff_limit", "failed_pods", "reason", "expected_attempts"),
    [
        pytest.param(2, 3, "BackoffLimitExceeded", 3, id="backoff exhausted"),
        pytest.param(0, 1, "BackoffLimitExceeded", 1, id="no retries"),
        pytest.param(4, 1, "DeadlineExceeded", 5, id="deadline: the Job retries no more"),
        pytest.param(2, 0, "DeadlineExceeded", 3, id="deadline before any pod failed"),
    ],
)
def test_a_failed_job_is_a_failed_stage_with_every_attempt_used(
    backoff_limit: int, failed_pods: int, reason: str, expected_attempts: int
) -> None:
    """The Job has retried all it will, so the planner must not start it again: attempts = backoffLimit + 1."""
    status = {
        "startTime": "2026-01-01T00:00:01Z",
        "failed": failed_pods,
        "conditions": [condition("FailureTarget", reason), condition("Failed", reason, "Job has reached the limit")],
    }
    seen = observe_job(k8s_job(2, "optimize", status=status, backoff_limit=backoff_limit), None)
    assert seen.phase is StagePhase.FAILED
    assert seen.attempts == expected_attempts
    assert seen.attempts > backoff_limit
    assert seen.message is not None
    assert "Job demo-2-optimize" in seen.message
    assert reason in seen.message
    assert seen.finished_at == datetime(2026, 1, 1, 0, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("job", "attempts"),
    [
        pytest.param(k8s_job(), 0, id="just created"),
        pytest.param(k8s_job(status={"active": 1, "startTime": "2026-01-01T00:00:01Z"}), 0, id="active"),
        pytest.param(k8s_job(status={"active": 1, "failed": 1}), 1, id="retrying after a failed pod"),
        pytest.param(
            k8s_job(status={"conditions": [{**condition("Complete"), "status": "False"}]}),
            0,
            id="a condition that is not True",
        ),
    ],
)
def test_a_job_neither_complete_nor_failed_is_a_running_stage(job: dict[str, Any], attempts: int) -> None:
    seen = observe_job(job, None)
    assert seen.phase is StagePhase.RUNNING
    assert seen.attempts == attempts
    assert seen.started_at is not None, "startTime, else the creation time"
    assert not seen.blocked


@pytest.mark.parametrize(
    ("job", "attempts"),
    [
        pytest.param(k8s_job(suspend=True), 0, id="created suspended, before the Job controller saw it"),
        pytest.param(
            k8s_job(suspend=True, status={"conditions": [condition("Suspended", "JobSuspended")]}),
            0,
            id="created suspended by Kueue, waiting for admission",
        ),
        pytest.param(
            k8s_job(
                suspend=True,
                status={"startTime": "2026-01-01T00:00:01Z", "conditions": [condition("Suspended", "JobSuspended")]},
            ),
            0,
            id="suspended after it started (Kueue preempted it)",
        ),
        pytest.param(
            k8s_job(suspend=True, status={"failed": 1, "terminating": 1}),
            1,
            id="suspended while its pods go, after one failed pod",
        ),
    ],
)
def test_an_unfinished_suspended_job_is_a_queued_stage_that_is_neither_blocked_nor_rechecked(
    job: dict[str, Any], attempts: int
) -> None:
    """Kueue holds a Job by suspending it: waiting for admission and preempted look the same on the Job (Kueue
    clears startTime when it preempts); the planner, which knows whether the run had been admitted, tells them
    apart. Pods deleted by the suspension are not failed attempts."""
    seen = observe_job(job, None)
    assert seen.phase is StagePhase.QUEUED
    assert seen.attempts == attempts
    assert not seen.blocked
    assert seen.recheck_after is None, "the Job's unsuspension wakes the runner"
    assert seen.message is not None and "demo-1-acquire" in seen.message and "suspended" in seen.message


@pytest.mark.parametrize(
    ("job", "recheck"),
    [
        pytest.param(k8s_job(status={"active": 1, "ready": 1}), False, id="a ready pod: its changes wake the runner"),
        pytest.param(k8s_job(status={"active": 1, "ready": 0}), True, id="a pod, not ready"),
        pytest.param(k8s_job(status={}), True, id="no pod: no Job event comes if none can be created"),
        pytest.param(k8s_job(suspend=True), False, id="suspended: waiting for Kueue is not being stuck"),
    ],
)
def test_a_running_job_without_a_ready_pod_is_looked_at_again_within_a_minute(
    job: dict[str, Any], recheck: bool
) -> None:
    seen = observe_job(job, None)
    assert (seen.recheck_after is not None) is recheck
    if recheck:
        assert seen.recheck_after is not None and seen.recheck_after <= 60


def test_a_running_job_with_a_finding_is_a_blocked_stage() -> None:
    found = Finding("FailedCreate", 'pods "demo-1-acquire-x" is forbidden: exceeded quota: pods, requested: pods=1')
    seen = observe_job(k8s_job(status={}), None, finding=found)
    assert seen.phase is StagePhase.RUNNING
    assert seen.blocked
    assert (seen.reason, seen.message) == (found.reason, found.message)


AT = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)  # 30 s after k8s_job's creationTimestamp


@pytest.mark.parametrize(
    ("job", "now", "expected"),
    [
        pytest.param(k8s_job(status={}), AT, True, id="no pod for 30 s"),
        pytest.param(k8s_job(status={"active": 1}), AT, True, id="a pod, never ready, for 30 s"),
        pytest.param(k8s_job(status={}), datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC), False, id="just created"),
        pytest.param(k8s_job(status={"active": 1, "ready": 1}), AT, False, id="running"),
        pytest.param(k8s_job(suspend=True), AT, False, id="suspended"),
        pytest.param(k8s_job(status=COMPLETE), AT, False, id="complete"),
    ],
)
def test_only_jobs_without_a_ready_pod_for_a_while_are_looked_into(
    job: dict[str, Any], now: datetime, expected: bool
) -> None:
    assert needs_diagnosis(job, now) is expected


def event(reason: str, message: str, at: str, kind: str = "Warning") -> dict[str, Any]:
    return {"type": kind, "reason": reason, "message": message, "lastTimestamp": at}


def test_the_newest_failed_create_event_says_why_a_job_has_no_pod() -> None:
    events = [
        event("FailedCreate", "error looking up service account ml/trainer: not found", "2026-01-01T00:00:10Z"),
        event(
            "FailedCreate", 'pods "x" is forbidden: violates PodSecurity "restricted:latest"', "2026-01-01T00:00:20Z"
        ),
        event("SuccessfulCreate", "Created pod: x", "2026-01-01T00:00:30Z", kind="Normal"),
    ]
    assert finding_from_events(events) == Finding(
        "FailedCreate", 'pods "x" is forbidden: violates PodSecurity "restricted:latest"'
    )
    assert finding_from_events([events[2]]) is None
    assert finding_from_events([]) is None


def pod(name: str, state: dict[str, Any], container_name: str = "stage") -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"containerStatuses": [{"name": container_name, "state": state}]}}


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        pytest.param(
            {"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "private/stage:v1"'}},
            Finding("ImagePullBackOff", 'pod p: ImagePullBackOff: Back-off pulling image "private/stage:v1"'),
            id="image pull",
        ),
        pytest.param(
            {"waiting": {"reason": "CreateContainerConfigError", "message": 'secret "s3" not found'}},
            Finding("CreateContainerConfigError", 'pod p: CreateContainerConfigError: secret "s3" not found'),
            id="missing Secret",
        ),
        pytest.param({"waiting": {"reason": "ContainerCreating"}}, None, id="still starting"),
        pytest.param({"running": {"startedAt": "2026-01-01T00:00:01Z"}}, None, id="running"),
    ],
)
def test_a_pod_waiting_for_a_reason_that_waiting_will_not_fix_blocks_its_stage(
    state: dict[str, Any], expected: Finding | None
) -> None:
    assert finding_from_pods([pod("p", state)]) == expected


def test_the_termination_message_of_the_failed_stage_container_is_its_last_log_line() -> None:
    failed = {"terminated": {"exitCode": 2, "message": "Traceback ...\nselect.keep.minScore: fix it"}}
    assert termination_message([pod("a", {"terminated": {"exitCode": 0}}), pod("b", failed)]) == Finding(
        message="select.keep.minScore: fix it"
    )
    assert termination_message([pod("c", failed, container_name="sidecar")]) is None


def oom_pod(name: str, limit: str | None, where: str = "state") -> dict[str, Any]:
    killed = {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}
    status = {"name": "stage", "state": {"waiting": {"reason": "ContainerCreating"}}, "lastState": {}}
    status[where] = killed
    resources = {"limits": {"memory": limit}} if limit else {}
    return {
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "stage", "resources": resources}]},
        "status": {"containerStatuses": [status]},
    }


def test_a_stage_killed_for_its_memory_is_named_oomkilled_with_its_limit_and_the_field_to_raise() -> None:
    found = oom_killed([pod("a", {"terminated": {"exitCode": 1, "reason": "Error"}}), oom_pod("b", "200Mi")])
    assert found is not None and found.reason == "OOMKilled"
    assert found.message is not None
    assert "pod b: OOMKilled (exit 137), over its memory limit 200Mi" in found.message
    assert "spec.runtime.resources.limits.memory" in found.message
    restarted = oom_killed([oom_pod("c", None, where="lastState")])
    assert restarted is not None and "the node's memory (no limit set)" in str(restarted.message)
    assert oom_killed([pod("d", {"terminated": {"exitCode": 1, "reason": "Error"}})]) is None


def test_a_job_that_failed_after_oom_kills_fails_its_stage_with_reason_oomkilled() -> None:
    status = {"failed": 2, "conditions": [condition("Failed", "BackoffLimitExceeded", "Job has reached the limit")]}
    said = oom_killed([oom_pod("demo-1-optimize-x", "200Mi")])
    seen = observe_job(k8s_job(1, "optimize", status=status, backoff_limit=1), None, finding=said)
    assert (seen.phase, seen.reason, seen.attempts, seen.permanent) == (StagePhase.FAILED, "OOMKilled", 2, False)
    assert seen.message is not None and "over its memory limit 200Mi" in seen.message


class MetricsSpy:
    """A MetricsLookup that records what it was asked for."""

    def __init__(self) -> None:
        self.asked: list[tuple[int, str]] = []

    def __call__(self, iteration: int, stage: str) -> Mapping[str, float] | None:
        self.asked.append((iteration, stage))
        return {"score": float(iteration)}


def test_observe_jobs_reports_the_latest_iteration_with_jobs_and_ignores_older_ones() -> None:
    """Iteration 1's Jobs are kept until the loop is deleted; only iteration 2's stages are observed."""
    jobs = [k8s_job(1, stage, status=COMPLETE) for stage in STAGES]
    jobs.append(k8s_job(2, "acquire", status=COMPLETE))
    jobs.append(k8s_job(2, "select", status={"active": 1}))
    metrics = MetricsSpy()
    observed = observe_jobs(jobs, status_iteration=1, metrics=metrics)
    assert observed.iteration == 2, "ahead of a status whose write was lost"
    assert set(observed.stages) == {"acquire", "select"}
    assert observed.stages["acquire"].phase is StagePhase.SUCCEEDED
    assert observed.stages["acquire"].metrics == {"score": 2.0}
    assert observed.stages["select"].phase is StagePhase.RUNNING
    assert metrics.asked == [(2, "acquire")], "manifests are read only for complete Jobs of the observed iteration"


def test_observe_jobs_is_never_behind_the_status() -> None:
    jobs = [k8s_job(1, stage, status=COMPLETE) for stage in STAGES]
    observed = observe_jobs(jobs, status_iteration=2, metrics=MetricsSpy())
    assert observed.iteration == 2
    assert observed.stages == {}


def test_observe_jobs_skips_jobs_without_iteration_or_stage_labels() -> None:
    unlabelled = k8s_job(3, "acquire")
    del unlabelled["metadata"]["labels"]["selfimprove.dev/iteration"]
    garbled = k8s_job(3, "select")
    garbled["metadata"]["labels"]["selfimprove.dev/iteration"] = "three"
    stageless = k8s_job(1, "optimize")
    del stageless["metadata"]["labels"]["selfimprove.dev/stage"]
    observed = observe_jobs([unlabelled, garbled, stageless, k8s_job(1, "acquire")], 0, MetricsSpy())
    assert observed.iteration == 1
    assert set(observed.stages) == {"acquire"}


def test_observe_jobs_without_jobs_observes_the_status_iteration_and_passes_measurements_through() -> None:
    measured = {(1, "improves"): [Measurement(phase=GatePhase.INCONCLUSIVE, at=T0)]}
    observed = observe_jobs([], status_iteration=1, metrics=MetricsSpy(), measurements=measured)
    assert (observed.iteration, dict(observed.stages)) == (1, {})
    assert observed.measurements_of(1, "improves") == measured[(1, "improves")]


def run_job(run: int, status: dict[str, Any], backoff_limit: int = 2) -> dict[str, Any]:
    job = k8s_job(1, "select", status=status, backoff_limit=backoff_limit)
    if run > 1:
        job["metadata"]["name"] += f"-r{run}"
        job["metadata"]["annotations"] = {"selfimprove.dev/run": str(run)}
    return job


FAILED_3 = {"failed": 3, "conditions": [condition("Failed", "BackoffLimitExceeded")]}


def test_the_newest_run_of_a_stage_is_observed_with_the_failed_attempts_of_all_its_runs() -> None:
    """Run 1 failed 3 pods, run 2 completed without its manifest (1 more), run 3 runs after 1 failed pod."""
    jobs = [run_job(3, {"active": 1, "ready": 1, "failed": 1}), run_job(1, FAILED_3), run_job(2, COMPLETE)]
    observed = observe_jobs(jobs, 1, lambda iteration, stage: None)
    seen = observed.stages["select"]
    assert (seen.phase, seen.run, seen.run_name, seen.attempts) == (StagePhase.RUNNING, 3, "demo-1-select-r3", 5)


def test_a_job_without_a_run_annotation_is_the_first_run() -> None:
    observed = observe_jobs([run_job(1, FAILED_3), run_job(2, COMPLETE)], 1, lambda iteration, stage: {"kept": 1.0})
    seen = observed.stages["select"]
    assert (seen.phase, seen.run, seen.attempts, dict(seen.metrics)) == (StagePhase.SUCCEEDED, 2, 3, {"kept": 1.0})


def test_a_completed_stage_carries_its_manifests_named_items() -> None:
    observed = observe_jobs(
        [run_job(1, COMPLETE)],
        1,
        lambda iteration, stage: {"heldout/contamination": 0.5},
        named=lambda iteration, stage: {"heldout/contaminated": ["2: 3+4="]},
    )
    assert observed.stages["select"].findings == {"heldout/contaminated": ["2: 3+4="]}


def test_observe_jobs_names_the_missing_manifest_by_its_uri_and_attaches_findings_to_their_job() -> None:
    blocked = run_job(1, {})
    found = Finding("FailedCreate", "exceeded quota")
    observed = observe_jobs(
        [blocked, k8s_job(1, "acquire", status=COMPLETE)],
        1,
        lambda iteration, stage: None,
        findings={"demo-1-select": found, "other": Finding("X", "y")},
        storage_uri="s3://bucket/runs/demo",
    )
    assert observed.stages["select"].reason == "FailedCreate"
    acquire = observed.stages["acquire"]
    assert acquire.reason == "ManifestMissing"
    assert (
        acquire.message is not None and "s3://bucket/runs/demo/iterations/1/acquire/_manifest.json" in acquire.message
    )
