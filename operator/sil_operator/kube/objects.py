"""Pure builders of the Kubernetes objects a loop owns: one ConfigMap and one batch/v1 Job per stage run.

No I/O: each function returns a manifest (a plain dict), so every field is table-tested without a cluster.

The stage config travels in a ConfigMap and reaches the container as the environment variable
`SIL_STAGE_CONFIG` (a configMapKeyRef); the container's args use Kubernetes' `$(VAR)` expansion, so the command is
exactly `python -m sil_stages <stage> --config <json>`, as everywhere else. Storage credentials come from the
Secret named in `spec.storage.credentialsSecret` through `envFrom`: they are never copied into the spec, the
ConfigMap, the status, a log or an event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sil_operator.api.spec import API_GROUP, API_VERSION, DEFAULT_BACKOFF_LIMIT, KIND, LoopSpec, StageRuntime
from sil_operator.planner import StartStage

MANAGED_BY = "selfimprove-operator"
LABEL_LOOP = f"{API_GROUP}/loop"
LABEL_ITERATION = f"{API_GROUP}/iteration"
LABEL_STAGE = f"{API_GROUP}/stage"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
CONFIG_KEY = "config.json"
CONFIG_ENV = "SIL_STAGE_CONFIG"
CONTAINER_NAME = "stage"


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


def stage_configmap(loop: LoopIdentity, action: StartStage) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": action.run_name,
            "namespace": loop.namespace,
            "labels": labels(loop, action.iteration, action.stage),
            "ownerReferences": [owner_reference(loop)],
        },
        "data": {CONFIG_KEY: action.config.model_dump_json()},
    }


def _resources(runtime: StageRuntime) -> dict[str, dict[str, str]]:
    return {
        kind: {name: str(quantity) for name, quantity in amounts.items()}
        for kind, amounts in (runtime.resources or {}).items()
    }


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
    env: list[dict[str, Any]] = [
        {
            "name": CONFIG_ENV,
            "valueFrom": {"configMapKeyRef": {"name": action.run_name, "key": CONFIG_KEY}},
        },
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    env += [{"name": key, "value": value} for key, value in sorted((runtime.env or {}).items())]
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "command": ["python", "-m", "sil_stages", action.stage],
        "args": ["--config", f"$({CONFIG_ENV})"],
        "env": env,
    }
    if spec.storage.credentials_secret:
        container["envFrom"] = [{"secretRef": {"name": spec.storage.credentials_secret}}]
    resources = _resources(runtime)
    if resources:
        container["resources"] = resources
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
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
        "backoffLimit": DEFAULT_BACKOFF_LIMIT if runtime.backoff_limit is None else runtime.backoff_limit,
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
            "annotations": {f"{API_GROUP}/attempt": str(action.attempt)},
            "ownerReferences": [owner_reference(loop)],
        },
        "spec": job_spec,
    }
