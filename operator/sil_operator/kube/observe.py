"""From the Jobs a loop owns to the planner's Observation. Pure: the Jobs, their events and pods are plain dicts.

A Job is the truth about one run of its stage; the newest run of each stage (annotation `selfimprove.dev/run`)
is what the planner sees, with the failed attempts of every run added up:

- Complete, and the stage's manifest is in the store → Succeeded (the manifest adds the metrics).
- Complete without a manifest → a failed attempt (ManifestMissing): the contract says the manifest is written
  last, so the stage did not finish. A manifest that cannot be read (the store is down) decides nothing yet:
  the stage stays Running and is looked at again.
- Failed by the podFailurePolicy (the stage exited 2: it rejected its input) → Failed for good; any other
  Failed (backoffLimit exhausted, deadline exceeded) → Failed with every attempt counted. The Indexed Job of a
  multi-node group is one attempt however many of its pods failed (it never retries in place).
- Suspended (Kueue holds it: not admitted yet, or preempted: Kueue suspends an admitted Job to preempt it and
  clears its startTime, so the Job alone cannot tell the two apart) → Queued; the planner, which remembers
  whether the run had been admitted, calls it Preempted. Pods deleted by a suspension are not failed attempts.
- Anything else → Running. A Job without a ready pod for a while
  is looked into (`needs_diagnosis`): its FailedCreate events when it has no pod (Pod Security admission, a
  quota, a missing ServiceAccount), its pods' waiting reasons otherwise (an image that cannot be pulled, a
  missing Secret). What the runner finds makes the stage blocked; nothing is read for Jobs that run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sil_operator.api.status import Measurement
from sil_operator.kube.objects import ANNOTATION_RUN, CONTAINER_NAME, LABEL_ITERATION, LABEL_STAGE
from sil_operator.planner import Observation, StageObservation
from sil_operator.rounds import StageRun, exited, manifest_missing, queued, running, succeeded
from sil_stages.core.contract import manifest_uri, stage_uri
from sil_stages.core.errors import EXIT_INPUT_REJECTED


class Unreadable:
    def __repr__(self) -> str:
        return "UNREADABLE"


UNREADABLE: Final = Unreadable()
"""What a metrics lookup returns when the store could not be read: not the same as a missing manifest."""

MetricsLookup = Callable[[int, str], Mapping[str, float] | Unreadable | None]
"""(iteration, stage) → the manifest's metrics, None when there is no manifest, UNREADABLE on a store error."""
FindingsLookup = Callable[[int, str], Mapping[str, Sequence[str]]]
"""(iteration, stage) → the manifest's named items (called only once its metrics were read)."""

DIAGNOSE_AFTER_SECONDS = 10.0
"""A Job without a ready pod this long after its creation is looked into (events or pods)."""
RECHECK_SECONDS = 20.0
"""How soon a Job without a ready pod, or a finished one whose manifest could not be read, is looked at again:
nothing else wakes the runner (no Job status change comes when pods cannot be created)."""
BLOCKING_WAIT_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)
"""Container waiting reasons that do not go away by waiting: the pod is created but the stage cannot start."""


@dataclass(frozen=True)
class Finding:
    """What the runner learned about one Job beyond its status: why it cannot run (reason and message), or the
    termination message of the pod that failed it (message only)."""

    reason: str | None = None
    message: str | None = None


def _condition(job: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return condition  # type: ignore[no-any-return]
    return None


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _meta(job: Mapping[str, Any]) -> Mapping[str, Any]:
    return job.get("metadata") or {}


def job_iteration(job: Mapping[str, Any]) -> int | None:
    value = (_meta(job).get("labels") or {}).get(LABEL_ITERATION, "")
    return int(value) if str(value).isdigit() else None


def job_run(job: Mapping[str, Any]) -> int:
    """The run number of a Job (1 for Jobs created before runs were numbered)."""
    value = str((_meta(job).get("annotations") or {}).get(ANNOTATION_RUN, "1"))
    return int(value) if value.isdigit() else 1


def is_finished(job: Mapping[str, Any]) -> bool:
    return _condition(job, "Complete") is not None or _condition(job, "Failed") is not None


def rejected_input(job: Mapping[str, Any]) -> bool:
    """Failed by the podFailurePolicy's FailJob rule: the stage exited 2."""
    failed = _condition(job, "Failed")
    return failed is not None and failed.get("reason") == "PodFailurePolicy"


def needs_diagnosis(job: Mapping[str, Any], now: datetime) -> bool:
    """An unfinished, admitted Job with no ready pod for DIAGNOSE_AFTER_SECONDS: worth one read of its events
    (no pod) or its pods (none ready). Running Jobs cost nothing."""
    if is_finished(job) or (job.get("spec") or {}).get("suspend"):
        return False
    status = job.get("status") or {}
    if int(status.get("ready") or 0) > 0:
        return False
    created = _time(_meta(job).get("creationTimestamp"))
    return created is not None and (now - created).total_seconds() >= DIAGNOSE_AFTER_SECONDS


_LEADING_CONDITIONS = frozenset({"SuccessCriteriaMet", "FailureTarget"})
"""Job conditions that only announce Complete or Failed (set by the Job controller just before them)."""


def job_fingerprint(job: Mapping[str, Any]) -> tuple[Any, ...]:
    """What the runner reads from a Job (`observe_job`, `needs_diagnosis`): its finishing conditions, whether it
    has pods and ready pods, failed pods, suspension, start time and deletion. An update that leaves it unchanged
    (pod counters moving, `uncountedTerminatedPods`, the conditions that only announce Complete or Failed) cannot
    change the plan, so it need not wake the loop (see handlers.Wakeups)."""
    status = job.get("status") or {}
    conditions = sorted(
        str(c.get("type"))
        for c in status.get("conditions") or []
        if c.get("status") == "True" and c.get("type") not in _LEADING_CONDITIONS
    )
    return (
        tuple(conditions),
        int(status.get("active") or 0) > 0,
        int(status.get("ready") or 0) > 0,
        int(status.get("failed") or 0),
        bool((job.get("spec") or {}).get("suspend")),
        status.get("startTime"),
        _meta(job).get("deletionTimestamp"),
    )


def has_pods(job: Mapping[str, Any]) -> bool:
    return int((job.get("status") or {}).get("active") or 0) > 0


def finding_from_events(events: Iterable[Mapping[str, Any]]) -> Finding | None:
    """The newest FailedCreate Warning of a Job: the Job controller's own words on why no pod exists."""
    failed = [e for e in events if e.get("reason") == "FailedCreate" and e.get("type", "Warning") == "Warning"]
    if not failed:
        return None
    newest = max(failed, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
    return Finding("FailedCreate", str(newest.get("message") or "").strip() or "no pod can be created")


def finding_from_pods(pods: Iterable[Mapping[str, Any]]) -> Finding | None:
    """A stage container waiting for a reason that waiting will not fix (image pull, config error)."""
    for pod in pods:
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in BLOCKING_WAIT_REASONS:
                name = _meta(pod).get("name", "?")
                detail = str(waiting.get("message") or "").strip()
                return Finding(
                    waiting["reason"], f"pod {name}: {waiting['reason']}" + (f": {detail}" if detail else "")
                )
    return None


def termination_message(pods: Iterable[Mapping[str, Any]]) -> Finding | None:
    """The stage container's termination message of a failed pod: its last log line (FallbackToLogsOnError)."""
    for pod in pods:
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated") or {}
            if container.get("name") == CONTAINER_NAME and terminated.get("exitCode"):
                message = str(terminated.get("message") or "").strip()
                if message:
                    return Finding(message=message.splitlines()[-1])
    return None


OOM_KILLED = "OOMKilled"


def job_failed(job: Mapping[str, Any]) -> bool:
    """The Job controller gave up on this Job (its retries spent, or a FailJob rule)."""
    return _condition(job, "Failed") is not None


def oom_killed(pods: Iterable[Mapping[str, Any]]) -> Finding | None:
    """A stage container the kernel killed for going over its memory limit, with that limit: the Job's own status
    says only BackoffLimitExceeded, and the fix (a larger limit) is in the spec."""
    for pod in pods:
        containers = (pod.get("spec") or {}).get("containers") or []
        limit = next(
            (
                ((c.get("resources") or {}).get("limits") or {}).get("memory")
                for c in containers
                if c.get("name") == CONTAINER_NAME
            ),
            None,
        )
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            state = container.get("state") or {}
            terminated = state.get("terminated") or (container.get("lastState") or {}).get("terminated") or {}
            if container.get("name") == CONTAINER_NAME and terminated.get("reason") == OOM_KILLED:
                over = f"its memory limit {limit}" if limit else "the node's memory (no limit set)"
                return Finding(
                    OOM_KILLED,
                    f"pod {_meta(pod).get('name', '?')}: OOMKilled (exit {terminated.get('exitCode', 137)}), over "
                    f"{over}; raise spec.runtime.resources.limits.memory (one stage: "
                    "spec.runtime.stages.<stage>.resources)",
                )
    return None


def is_group(job: Mapping[str, Any]) -> bool:
    """An Indexed Job: the pods of one multi-node stage run (kube/objects.group_job), which fail together."""
    return (job.get("spec") or {}).get("completionMode") == "Indexed"


def _failed_attempts(job: Mapping[str, Any]) -> int:
    """Attempts a Job has used up: all of them once it failed (the Job has retried all it will), else its failed
    pods (pods of a disruption are not counted by the Job controller either). A group's Job is one attempt: it
    never retries in place, and the ranks it terminated when one failed are not attempts of their own."""
    if is_group(job):
        return 1 if _condition(job, "Failed") is not None else 0
    failed_pods = int((job.get("status") or {}).get("failed") or 0)
    if _condition(job, "Failed") is not None and not rejected_input(job):
        return max(failed_pods, int((job.get("spec") or {}).get("backoffLimit") or 0) + 1)
    return failed_pods


def observe_job(
    job: Mapping[str, Any],
    metrics: Mapping[str, float] | Unreadable | None,
    *,
    earlier_attempts: int = 0,
    finding: Finding | None = None,
    manifest: str | None = None,
    named: Mapping[str, Sequence[str]] | None = None,
) -> StageObservation:
    """One run of a stage. `earlier_attempts`: failed attempts of the stage's earlier runs; `manifest`: its URI,
    for the message when it is missing. What a Job says is read here; the observation is built by
    sil_operator.rounds, as `sil run` builds its own, so both runners report a stage the same way."""
    status = job.get("status") or {}
    name = _meta(job).get("name")
    started = _time(status.get("startTime")) or _time(_meta(job).get("creationTimestamp"))
    run = StageRun(name, job_run(job), earlier_attempts + _failed_attempts(job), earlier_attempts)
    complete = _condition(job, "Complete")
    if complete is not None:
        finished = _time(status.get("completionTime")) or _time(complete.get("lastTransitionTime"))
        if isinstance(metrics, Unreadable):
            said = f"Job {name} completed; its manifest cannot be read yet (store error), looking again"
            return running(run, started, message=said, recheck_after=RECHECK_SECONDS)
        if metrics is None:
            return manifest_missing(run, manifest, started, finished)
        return succeeded(run, started, finished, metrics, named)
    failed = _condition(job, "Failed")
    if failed is not None:
        said = f"Job {name} {failed.get('reason', 'Failed')}: {failed.get('message', '')}".strip()
        if finding is not None and finding.message:
            said = f"{said}; the stage said: {finding.message}"
        reason = str(failed.get("reason") or "Failed")
        if finding is not None and finding.reason == OOM_KILLED:
            reason = OOM_KILLED
        code = EXIT_INPUT_REJECTED if rejected_input(job) else None  # the podFailurePolicy's FailJob rule
        return exited(run, code, said, started, _time(failed.get("lastTransitionTime")), reason=reason)
    if (job.get("spec") or {}).get("suspend"):
        return queued(run, started, f"Job {name} is suspended: its queue (Kueue) has not admitted it, or preempted it")
    waiting = int(status.get("ready") or 0) == 0
    return running(
        run,
        started,
        reason=finding.reason if finding else None,
        message=finding.message if finding and finding.reason else None,
        recheck_after=RECHECK_SECONDS if waiting else None,
    )


def observe_jobs(
    jobs: Iterable[Mapping[str, Any]],
    status_iteration: int,
    metrics: MetricsLookup,
    measurements: Mapping[tuple[int, str], Sequence[Measurement]] | None = None,
    *,
    findings: Mapping[str, Finding] | None = None,
    storage_uri: str | None = None,
    named: FindingsLookup | None = None,
) -> Observation:
    """The latest iteration with Jobs (never behind the status), and the newest run of each of its stages."""
    jobs = [job for job in jobs if job_iteration(job) is not None]
    iteration = max([status_iteration, *(job_iteration(job) or 0 for job in jobs)])
    runs: dict[str, list[Mapping[str, Any]]] = {}
    for job in jobs:
        stage = (_meta(job).get("labels") or {}).get(LABEL_STAGE)
        if job_iteration(job) == iteration and stage:
            runs.setdefault(stage, []).append(job)
    stages: dict[str, StageObservation] = {}
    for stage, stage_jobs in runs.items():
        ordered = sorted(stage_jobs, key=job_run)
        newest = ordered[-1]
        earlier = sum(_failed_attempts(job) + _missing_manifest(job) for job in ordered[:-1])
        done = _condition(newest, "Complete") is not None
        read = metrics(iteration, stage) if done else None
        stages[stage] = observe_job(
            newest,
            read,
            earlier_attempts=earlier,
            finding=(findings or {}).get(str(_meta(newest).get("name"))),
            manifest=manifest_uri(stage_uri(storage_uri, iteration, stage)) if storage_uri else None,
            named=named(iteration, stage) if named is not None and isinstance(read, Mapping) else None,
        )
    return Observation(iteration=iteration, stages=stages, measurements=dict(measurements or {}))


def _missing_manifest(job: Mapping[str, Any]) -> int:
    """An earlier run that completed was followed by another run only because its manifest was missing."""
    return 1 if _condition(job, "Complete") is not None else 0
