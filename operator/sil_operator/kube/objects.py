"""Pure builders of the Kubernetes objects a loop owns: one ConfigMap and one batch/v1 Job per stage run.

No I/O: each function returns a manifest (a plain dict), so every field is table-tested without a cluster.

The stage config travels in a ConfigMap and reaches the container as the environment variable
`SIL_STAGE_CONFIG` (a configMapKeyRef); the container's args use Kubernetes' `$(VAR)` expansion, so the command is
exactly `python -m sil_stages <stage> --config <json>`, as everywhere else. Storage credentials come from the
Secret named in `spec.storage.credentialsSecret` through `envFrom`: they are never copied into the spec, the
ConfigMap, the status, a log or an event.

Stage exit codes mean something (sil_stages.core.errors): 2 is "bad input, a retry will not help", so the Job's
podFailurePolicy fails it at once on exit code 2, and does not count pods that were evicted or preempted
(condition DisruptionTarget) against backoffLimit. The container's termination message is the last log line on
failure: stages end a failure with one line that says what to do.

Pods meet the `restricted` Pod Security Standard by default (non-root, RuntimeDefault seccomp, no capabilities,
no privilege escalation); `spec.runtime.podSecurityContext` / `securityContext` replace these defaults. Stages
write only to /tmp (TMPDIR, an emptyDir) and /scratch (HOME, HF_HOME and the model cache SIL_MODEL_CACHE: an emptyDir,
sized by `runtime.scratch.size`, or the PersistentVolumeClaim `runtime.scratch.claimName`). Pods that request or
limit a GPU also get a memory-backed /dev/shm (`runtime.shmSize`): NCCL and data loaders outgrow the container
runtime's 64 MiB.

Kueue: `runtime.queueName` and `runtime.priorityClass` become the Job labels Kueue reads; Kueue admits a Job by
unsuspending it and preempts it by suspending it again (kube/observe.py turns that into Queued / Preempted).

A multi-node optimize (`optimize.distributed.nodes` N > 1, engine indexed-job: kube/engines.py) is a group: the
same Job with `completionMode: Indexed` and N completions all running at once (`group_job`), plus a headless
Service (`group_service`) that gives pod i the DNS name `<run>-<i>.<service>.<namespace>.svc`. Rank 0's address
and port reach every pod as SIL_MASTER_ADDR / SIL_MASTER_PORT (29500 unless runtime.env sets it), its node rank as
JOB_COMPLETION_INDEX (set by Kubernetes). One rank failing leaves the others waiting in a collective, so a group
never retries in place: its backoffLimit is 0 (the first failed pod fails the Job and the Job controller
terminates the other pods), and the planner's retry is a new Job (`-r2`, ...), one attempt per Job, against the
stage's backoffLimit; the retry resumes from the last trainer checkpoint (`optimize.checkpointEverySteps`). Kueue
admits and suspends the Job as one workload of N pods: a preempted group stops all its pods (the ranks save a
trainer checkpoint on SIGTERM) and, readmitted, starts them all again, not a failed attempt. A pod evicted with
a DisruptionTarget is not counted by the Job controller, but the ranks it leaves behind stop with it and fail the
Job: for a group a disruption costs one attempt, and the retry resumes.

On Kubernetes the optimize config's `distributed.processesPerNode`, when unset, is the stage's GPU count (its
`*/gpu` limit, else request), so each pod starts one rank per GPU it was given (`stage_configmap`); `sil run`
leaves it to the stage (its CUDA devices, else 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sil_operator.api.spec import API_GROUP, API_VERSION, DEFAULT_SHM_SIZE, KIND, LoopSpec, StageRuntime
from sil_operator.planner import StartStage, backoff_limit
from sil_operator.stageconfig import AnyStageConfig
from sil_stages.core.contract import OptimizeConfig
from sil_stages.core.errors import EXIT_INPUT_REJECTED

MANAGED_BY = "selfimprove-operator"
LABEL_LOOP = f"{API_GROUP}/loop"
LABEL_ITERATION = f"{API_GROUP}/iteration"
LABEL_STAGE = f"{API_GROUP}/stage"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
CONFIG_KEY = "config.json"
CONFIG_ENV = "SIL_STAGE_CONFIG"
CONTAINER_NAME = "stage"
ANNOTATION_ATTEMPT = f"{API_GROUP}/attempt"
ANNOTATION_RUN = f"{API_GROUP}/run"
TMP_DIR = "/tmp"
SCRATCH_DIR = "/scratch"
SHM_DIR = "/dev/shm"
GPU_RESOURCE_SUFFIX = "/gpu"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
"""The label the Job controller puts on a Job's pods: the group's Service selects them with it."""
MASTER_ADDR_ENV = "SIL_MASTER_ADDR"
MASTER_PORT_ENV = "SIL_MASTER_PORT"
DEFAULT_MASTER_PORT = 29500
"""torchrun's default rendezvous port, where rank 0 of a group listens unless runtime.env sets SIL_MASTER_PORT."""

DEFAULT_POD_SECURITY_CONTEXT: dict[str, Any] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
DEFAULT_SECURITY_CONTEXT: dict[str, Any] = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
SCRATCH_ENV: dict[str, str] = {
    "HOME": SCRATCH_DIR,
    "HF_HOME": f"{SCRATCH_DIR}/.cache/huggingface",
    "SIL_MODEL_CACHE": f"{SCRATCH_DIR}/.cache/selfimprove/models",
    "TMPDIR": TMP_DIR,
}
"""Where stages write besides the store: caches on /scratch (HOME; Hugging Face; sil_stages.core.models' checkpoint
cache), temporary files in TMPDIR (optimize's work dir). spec.runtime.env wins over these."""


@dataclass(frozen=True)
class LoopIdentity:
    """What the owned objects need to know about their loop."""

    name: str
    namespace: str
    uid: str


def labels(loop: LoopIdentity, iteration: int, stage: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "selfimprove",
        "app.kubernetes.io/component": f"stage-{stage}",
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_LOOP: loop.name,
        LABEL_ITERATION: str(iteration),
        LABEL_STAGE: stage,
    }


def owner_reference(loop: LoopIdentity) -> dict[str, Any]:
    """The loop owns (and garbage-collects) its Jobs and ConfigMaps; the store's artifacts stay."""
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "name": loop.name,
        "uid": loop.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def stage_configmap(loop: LoopIdentity, action: StartStage, spec: LoopSpec | None = None) -> dict[str, Any]:
    """The stage config as the run's pods read it; with `spec`, optimize's processesPerNode defaults to its GPUs."""
    config = action.config if spec is None else kube_stage_config(spec, action)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": action.run_name,
            "namespace": loop.namespace,
            "labels": labels(loop, action.iteration, action.stage),
            "ownerReferences": [owner_reference(loop)],
        },
        "data": {CONFIG_KEY: config.model_dump_json()},
    }


def gpu_count(runtime: StageRuntime) -> int | None:
    """The GPUs one pod of the stage gets: its largest `*/gpu` limit (else request); None without any."""
    resources = runtime.resources or {}
    for kind in ("limits", "requests"):
        counts = [
            int(str(quantity))
            for name, quantity in (resources.get(kind) or {}).items()
            if name.endswith(GPU_RESOURCE_SUFFIX) and str(quantity).isdigit() and int(str(quantity)) > 0
        ]
        if counts:
            return max(counts)
    return None


def kube_stage_config(spec: LoopSpec, action: StartStage) -> AnyStageConfig:
    """The planner's stage config as a pod on Kubernetes gets it: an optimize whose `distributed.processesPerNode`
    is unset starts one rank per GPU its pod was given. The stage alone would count the GPUs it sees: the same
    number where the device plugin isolates a pod's GPUs, all of the node's where it does not. Other stages and
    a processesPerNode the user set are left as they are."""
    config = action.config
    if not isinstance(config, OptimizeConfig) or config.distributed.processes_per_node is not None:
        return config
    gpus = gpu_count(spec.runtime.for_stage(action.stage))
    if gpus is None:
        return config
    distributed = config.distributed.model_copy(update={"processes_per_node": gpus})
    return config.model_copy(update={"distributed": distributed})


def _resources(runtime: StageRuntime) -> dict[str, dict[str, str]]:
    return {
        kind: {name: str(quantity) for name, quantity in amounts.items()}
        for kind, amounts in (runtime.resources or {}).items()
    }


def uses_gpu(runtime: StageRuntime) -> bool:
    """The stage requests or limits a GPU: nvidia.com/gpu, amd.com/gpu, or any other `*/gpu` resource."""
    return any(
        name.endswith(GPU_RESOURCE_SUFFIX) and str(quantity) not in ("0", "")
        for amounts in (runtime.resources or {}).values()
        for name, quantity in amounts.items()
    )


def volumes(runtime: StageRuntime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The pod's volumes and the stage container's mounts: /tmp, /scratch, and /dev/shm for GPU stages."""
    scratch: dict[str, Any] = {"name": "scratch", "emptyDir": {}}
    if runtime.scratch is not None and runtime.scratch.claim_name:
        scratch = {"name": "scratch", "persistentVolumeClaim": {"claimName": runtime.scratch.claim_name}}
    elif runtime.scratch is not None and runtime.scratch.size:
        scratch["emptyDir"] = {"sizeLimit": runtime.scratch.size}
    pod_volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}, scratch]
    mounts: list[dict[str, Any]] = [
        {"name": "tmp", "mountPath": TMP_DIR},
        {"name": "scratch", "mountPath": SCRATCH_DIR},
    ]
    if uses_gpu(runtime):
        size = runtime.shm_size or DEFAULT_SHM_SIZE
        pod_volumes.append({"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": size}})
        mounts.append({"name": "shm", "mountPath": SHM_DIR})
    return pod_volumes, mounts


def pod_failure_policy() -> dict[str, Any]:
    """Exit code 2 fails the Job at once; a disruption (eviction, preemption) is not a failed attempt."""
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": CONTAINER_NAME,
                    "operator": "In",
                    "values": [EXIT_INPUT_REJECTED],
                },
            },
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]
    }


def retries_left(spec: LoopSpec, action: StartStage) -> int:
    """backoffLimit of this run's Job: what the stage's limit leaves after the attempts earlier runs made."""
    return max(0, backoff_limit(spec, action.stage) - (action.attempt - 1))


def stage_job(loop: LoopIdentity, spec: LoopSpec, action: StartStage, default_image: str | None) -> dict[str, Any]:
    """The batch/v1 Job of one stage run. Its name is the run name, so creating it twice is a 409, not a twin."""
    runtime = spec.runtime.for_stage(action.stage)
    image = runtime.image or default_image
    if not image:
        raise ValueError(
            f"spec.runtime.image: no stage image for {action.stage}; set spec.runtime.image "
            "(or the operator's default stage image)"
        )
    job_labels = labels(loop, action.iteration, action.stage)
    if runtime.queue_name:
        job_labels[KUEUE_QUEUE_LABEL] = runtime.queue_name
    if runtime.priority_class:
        job_labels[KUEUE_PRIORITY_LABEL] = runtime.priority_class
    env: list[dict[str, Any]] = [
        {
            "name": CONFIG_ENV,
            "valueFrom": {"configMapKeyRef": {"name": action.run_name, "key": CONFIG_KEY}},
        },
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    user_env = runtime.env or {}
    env += [{"name": key, "value": value} for key, value in SCRATCH_ENV.items() if key not in user_env]
    env += [{"name": key, "value": value} for key, value in sorted(user_env.items())]
    pod_volumes, mounts = volumes(runtime)
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "command": ["python", "-m", "sil_stages", action.stage],
        "args": ["--config", f"$({CONFIG_ENV})"],
        "env": env,
        "securityContext": dict(
            DEFAULT_SECURITY_CONTEXT if runtime.security_context is None else runtime.security_context
        ),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }
    if spec.storage.credentials_secret:
        container["envFrom"] = [{"secretRef": {"name": spec.storage.credentials_secret}}]
    resources = _resources(runtime)
    if resources:
        container["resources"] = resources
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "securityContext": dict(
            DEFAULT_POD_SECURITY_CONTEXT if runtime.pod_security_context is None else runtime.pod_security_context
        ),
        "volumes": pod_volumes,
    }
    if runtime.service_account_name:
        pod_spec["serviceAccountName"] = runtime.service_account_name
    if runtime.node_selector:
        pod_spec["nodeSelector"] = dict(runtime.node_selector)
    if runtime.tolerations:
        pod_spec["tolerations"] = list(runtime.tolerations)
    if runtime.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in runtime.image_pull_secrets]
    pod_metadata: dict[str, Any] = {"labels": {**(runtime.pod_labels or {}), **job_labels}}
    if runtime.pod_annotations:
        pod_metadata["annotations"] = dict(runtime.pod_annotations)
    job_spec: dict[str, Any] = {
        "backoffLimit": retries_left(spec, action),
        "podFailurePolicy": pod_failure_policy(),
        "template": {"metadata": pod_metadata, "spec": pod_spec},
    }
    if runtime.active_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = runtime.active_deadline_seconds
    if runtime.queue_name:
        job_spec["suspend"] = True  # Kueue admits it by unsuspending
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": action.run_name,
            "namespace": loop.namespace,
            "labels": job_labels,
            "annotations": {ANNOTATION_ATTEMPT: str(action.attempt), ANNOTATION_RUN: str(action.run)},
            "ownerReferences": [owner_reference(loop)],
        },
        "spec": job_spec,
    }


# -- a group of pods: the Indexed Job engine ------------------------------------------------------------------------


def group_service_name(run_name: str) -> str:
    """The headless Service of a group: the run's name; `sil-<run>` when that starts with a digit (loop names may,
    Service names must start with a letter)."""
    return run_name if run_name[:1].isalpha() else f"sil-{run_name}"


def master_port(runtime: StageRuntime) -> int | None:
    """Rank 0's port: runtime.env's SIL_MASTER_PORT, else 29500; None when that is not a port (the stage says so)."""
    value = (runtime.env or {}).get(MASTER_PORT_ENV, str(DEFAULT_MASTER_PORT))
    return int(value) if value.isdigit() and 0 < int(value) < 65536 else None


def group_service(loop: LoopIdentity, spec: LoopSpec, action: StartStage) -> dict[str, Any]:
    """The headless Service of a group's Indexed Job: DNS names for its pods, published before they are ready (rank
    0 must be reachable while the other ranks start). Named after the run, owned by the loop."""
    port = master_port(spec.runtime.for_stage(action.stage))
    service_spec: dict[str, Any] = {
        "clusterIP": "None",
        "publishNotReadyAddresses": True,
        "selector": {JOB_NAME_LABEL: action.run_name},
    }
    if port is not None:
        service_spec["ports"] = [{"name": "rendezvous", "port": port, "targetPort": port, "protocol": "TCP"}]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": group_service_name(action.run_name),
            "namespace": loop.namespace,
            "labels": labels(loop, action.iteration, action.stage),
            "ownerReferences": [owner_reference(loop)],
        },
        "spec": service_spec,
    }


def indexed_group(job: dict[str, Any], spec: LoopSpec, stage: str, nodes: int, master_addr: str) -> dict[str, Any]:
    """`job` (a stage Job) made the Job of a group of `nodes` pods, in place: Indexed (each pod's
    JOB_COMPLETION_INDEX is its node rank), all pods at once, no retry in place (one failed pod fails the group,
    see the module docstring), and rank 0's address in the pods' environment unless runtime.env sets it. Both
    multi-node engines build their group from this: the Indexed Job engine and each JobSet's replicated Job."""
    job["spec"].update(completionMode="Indexed", completions=nodes, parallelism=nodes, backoffLimit=0)
    user_env = spec.runtime.for_stage(stage).env or {}
    group_env = {MASTER_ADDR_ENV: master_addr, MASTER_PORT_ENV: str(DEFAULT_MASTER_PORT)}
    (container,) = job["spec"]["template"]["spec"]["containers"]
    container["env"] += [{"name": key, "value": value} for key, value in group_env.items() if key not in user_env]
    return job


def group_job(
    loop: LoopIdentity, spec: LoopSpec, action: StartStage, default_image: str | None, nodes: int
) -> dict[str, Any]:
    """The stage Job of a run that spans `nodes` pods (`indexed_group`), its pods named in the group's Service."""
    service = group_service_name(action.run_name)
    # An Indexed Job's pod i has hostname <job>-<i>; in the Service's subdomain: <job>-<i>.<service>.<ns>.svc
    master_addr = f"{action.run_name}-0.{service}.{loop.namespace}.svc"
    job = indexed_group(stage_job(loop, spec, action, default_image), spec, action.stage, nodes, master_addr)
    job["spec"]["template"]["spec"]["subdomain"] = service
    return job


def stage_nodes(spec: LoopSpec, stage: str) -> int:
    """The pods a run of `stage` spans: `optimize.distributed.nodes` for optimize, 1 for every other stage."""
    return spec.optimize.distributed.nodes if stage == "optimize" else 1


def engine_field(spec: LoopSpec, stage: str) -> str:
    """The spec path that decides the stage's workload kind, for messages: the stage's override when it sets one."""
    override = getattr(spec.runtime.stages, stage, None)
    if override is not None and override.workload is not None:
        return f"runtime.stages.{stage}.workload"
    return "runtime.workload"
