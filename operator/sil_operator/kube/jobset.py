"""The JobSet engine of a multi-node stage: the JobSet manifest, and a JobSet read back as the Job observe.py reads.

Pure: no I/O. A stage that trains on several nodes (`optimize.distributed.nodes` > 1) runs as one JobSet
(`jobset.x-k8s.io/v1alpha2`, https://jobset.sigs.k8s.io) when its engine is `jobset` (or `auto` and the API server
serves JobSets, and the operator was not started with SIL_JOBSETS=disabled, as the chart does unless
`jobset.enabled`). The JobSet holds one replicated Job (`node`, one replica) whose template is the stage's own Job
(objects.stage_job: same pod, env, volumes, podFailurePolicy) made Indexed with one pod per node, so Kubernetes
sets JOB_COMPLETION_INDEX, which the stage reads as its node rank. JobSet gives each pod a stable hostname,
`<jobset>-node-0-<index>.<jobset>`, through a headless Service it creates (network.enableDNSHostnames), so every
rank reaches rank 0 at SIL_MASTER_ADDR:SIL_MASTER_PORT.

Retries are the JobSet's: the child Job has backoffLimit 0, so the failure of any pod fails it, and the JobSet
restarts the whole group (all pods, since ranks cannot rejoin a torch rendezvous one by one) up to
`failurePolicy.maxRestarts` = the stage's retries left. A pod that exits 2 (the stage rejected its input) fails
its Job by the podFailurePolicy (reason PodFailurePolicy), and the JobSet's FailJobSet rule fails the group at
once instead of restarting it.

Kueue: the JobSet carries the queue and priority labels and is created suspended; Kueue admits the JobSet as one
workload (all nodes or none). The child Job and the pods carry no Kueue label.

Observation: `as_job` turns a JobSet into the Job-shaped dict that kube/observe.py reads, so a JobSet run is
observed by exactly the rules of a Job run (manifest read on completion, attempts over runs, Queued/Preempted):
Completed → Complete; Failed → Failed (reason PodFailurePolicy when the FailJobSet rule fired); status.restarts →
failed attempts; spec.suspend → suspended; ready child Jobs → ready.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from sil_operator.api.spec import LoopSpec
from sil_operator.failures import LoopProblem
from sil_operator.kube.objects import (
    ANNOTATION_ATTEMPT,
    ANNOTATION_RUN,
    KUEUE_PRIORITY_LABEL,
    KUEUE_QUEUE_LABEL,
    LABEL_MANAGED_BY,
    LoopIdentity,
    indexed_group,
    labels,
    owner_reference,
    retries_left,
    stage_job,
    stage_nodes,
)
from sil_operator.planner import StartStage

JOBSET_GROUP: Final = "jobset.x-k8s.io"
JOBSET_VERSION: Final = "v1alpha2"
JOBSET_PLURAL: Final = "jobsets"
JOBSET_KIND: Final = "JobSet"
REPLICATED_JOB: Final = "node"
"""The one replicated Job of a stage's JobSet; its pods are `<jobset>-node-0-<node rank>`."""
INPUT_REJECTED_RULE: Final = "inputRejected"
"""The failurePolicy rule that fails the JobSet at once when a pod exited 2 (its Job failed by PodFailurePolicy)."""
FAIL_JOBSET_REASON: Final = "FailJobSetFailurePolicyAction"
"""The JobSet controller's Failed reason when a FailJobSet rule fired (pkg/constants: FailJobSetActionReason)."""
HOSTNAME_LIMIT: Final = 63
"""A pod hostname (and the JobSet's child Job name) is one DNS label."""


class RunNameTooLong(LoopProblem):
    """A JobSet pod's hostname would exceed one DNS label: only a shorter loop name helps."""

    reason = "RunNameTooLong"
    permanent = True


def master_address(run_name: str) -> str:
    """Node 0's stable hostname: `<jobset>-<replicated job>-<job index>-<pod index>.<subdomain = jobset name>`."""
    return f"{run_name}-{REPLICATED_JOB}-0-0.{run_name}"


def _without_kueue(values: Mapping[str, str]) -> dict[str, str]:
    return {key: value for key, value in values.items() if key not in (KUEUE_QUEUE_LABEL, KUEUE_PRIORITY_LABEL)}


def failure_policy(max_restarts: int) -> dict[str, Any]:
    """Any failed child Job restarts the whole group, up to max_restarts; one failed by PodFailurePolicy (a pod
    exited 2) fails the JobSet at once."""
    return {
        "maxRestarts": max_restarts,
        "rules": [
            {
                "name": INPUT_REJECTED_RULE,
                "action": "FailJobSet",
                "onJobFailureReasons": ["PodFailurePolicy"],
            }
        ],
    }


def stage_jobset(loop: LoopIdentity, spec: LoopSpec, action: StartStage, default_image: str | None) -> dict[str, Any]:
    """The JobSet of one run of a multi-node stage. Its name is the run name, so creating it twice is a 409."""
    nodes = stage_nodes(spec, action.stage)
    longest = f"{action.run_name}-{REPLICATED_JOB}-0-{nodes - 1}"
    if len(longest) > HOSTNAME_LIMIT:
        raise RunNameTooLong(
            f"metadata.name: the pod hostname {longest} of this loop's {action.stage} JobSet is longer than "
            f"{HOSTNAME_LIMIT} characters; shorten the loop's name"
        )
    job = stage_job(loop, spec, action, default_image)
    indexed_group(job, spec, action.stage, nodes, master_address(action.run_name))
    runtime = spec.runtime.for_stage(action.stage)
    job_spec = job["spec"]
    job_spec.pop("suspend", None)  # the JobSet is suspended, and suspends its Jobs
    pod = job_spec["template"]
    pod["metadata"]["labels"] = _without_kueue(pod["metadata"]["labels"])
    stage_labels = labels(loop, action.iteration, action.stage)
    # The child Job gets no loop label: it is not a stage Job (the JobSet is), and the operator lists stage Jobs by
    # that label.
    child_labels = {
        key: value
        for key, value in stage_labels.items()
        if key.startswith("app.kubernetes.io/") and key != LABEL_MANAGED_BY
    }
    jobset_labels = dict(stage_labels)
    jobset_spec: dict[str, Any] = {
        "replicatedJobs": [
            {
                "name": REPLICATED_JOB,
                "replicas": 1,
                "template": {"metadata": {"labels": child_labels}, "spec": job_spec},
            }
        ],
        "network": {"enableDNSHostnames": True, "publishNotReadyAddresses": True},
        "successPolicy": {"operator": "All"},
        "failurePolicy": failure_policy(retries_left(spec, action)),
    }
    if runtime.queue_name:
        jobset_labels[KUEUE_QUEUE_LABEL] = runtime.queue_name
        jobset_spec["suspend"] = True  # Kueue admits it by unsuspending
    if runtime.priority_class:
        jobset_labels[KUEUE_PRIORITY_LABEL] = runtime.priority_class
    return {
        "apiVersion": f"{JOBSET_GROUP}/{JOBSET_VERSION}",
        "kind": JOBSET_KIND,
        "metadata": {
            "name": action.run_name,
            "namespace": loop.namespace,
            "labels": jobset_labels,
            "annotations": {ANNOTATION_ATTEMPT: str(action.attempt), ANNOTATION_RUN: str(action.run)},
            "ownerReferences": [owner_reference(loop)],
        },
        "spec": jobset_spec,
    }


# -- reading a JobSet back ----------------------------------------------------------------------------------------


def _true_condition(jobset: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in (jobset.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return condition  # type: ignore[no-any-return]
    return None


def _max_restarts(jobset: Mapping[str, Any]) -> int:
    return int(((jobset.get("spec") or {}).get("failurePolicy") or {}).get("maxRestarts") or 0)


JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
"""The label the JobSet controller puts on a JobSet's child Jobs and their pods."""
FROM_JOBSET = "fromJobSet"
"""Key of `as_job`'s answer marking it as a JobSet's view: its pods are found by JOBSET_NAME_LABEL, not job-name."""


def as_job(jobset: Mapping[str, Any]) -> dict[str, Any]:
    """The JobSet as the batch/v1 Job kube/observe.py reads: same metadata (labels, run and attempt annotations),
    its terminal condition as the Job's, its restarts as failed pods and maxRestarts as backoffLimit (so a failed
    JobSet has used up every attempt), suspended when the JobSet is, ready when any child Job is."""
    meta = dict(jobset.get("metadata") or {})
    status = jobset.get("status") or {}
    name = meta.get("name", "?")
    conditions: list[dict[str, Any]] = []
    completed = _true_condition(jobset, "Completed")
    failed = _true_condition(jobset, "Failed")
    if completed is not None:
        conditions.append({**completed, "type": "Complete"})
    elif failed is not None:
        rejected = failed.get("reason") == FAIL_JOBSET_REASON
        said = str(failed.get("message") or "").strip()
        conditions.append(
            {
                **failed,
                "type": "Failed",
                "reason": "PodFailurePolicy" if rejected else str(failed.get("reason") or "Failed"),
                "message": f"(JobSet {name}, restarts {int(status.get('restarts') or 0)}) {said}".strip(),
            }
        )
    replicated = status.get("replicatedJobsStatus") or []
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        FROM_JOBSET: True,
        "metadata": meta,
        "spec": {"backoffLimit": _max_restarts(jobset), "suspend": bool((jobset.get("spec") or {}).get("suspend"))},
        "status": {
            "conditions": conditions,
            "failed": int(status.get("restarts") or 0),
            "ready": sum(int(entry.get("ready") or 0) for entry in replicated),
            "active": sum(int(entry.get("active") or 0) for entry in replicated),
        },
    }
