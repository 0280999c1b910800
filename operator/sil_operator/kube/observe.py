"""From the Jobs a loop owns to the planner's Observation. Pure: the Jobs are given as plain dicts.

A Job is the truth about its stage on Kubernetes: Complete → Succeeded, Failed (backoffLimit exhausted, deadline
exceeded) → Failed with every attempt counted, anything else → Running (including a Job Kueue has not admitted
yet). The stage's manifest, when the operator can read it, adds the metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sil_operator.api.status import Measurement, StagePhase
from sil_operator.kube.objects import LABEL_ITERATION, LABEL_STAGE
from sil_operator.planner import Observation, StageObservation

MetricsLookup = Callable[[int, str], Mapping[str, float] | None]


def _condition(job: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return condition  # type: ignore[no-any-return]
    return None


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def job_iteration(job: Mapping[str, Any]) -> int | None:
    value = ((job.get("metadata") or {}).get("labels") or {}).get(LABEL_ITERATION, "")
    return int(value) if str(value).isdigit() else None


def observe_job(job: Mapping[str, Any], metrics: Mapping[str, float] | None) -> StageObservation:
    status = job.get("status") or {}
    name = (job.get("metadata") or {}).get("name")
    started = _time(status.get("startTime")) or _time((job.get("metadata") or {}).get("creationTimestamp"))
    failed_pods = int(status.get("failed") or 0)
    complete = _condition(job, "Complete")
    if complete is not None:
        return StageObservation(
            phase=StagePhase.SUCCEEDED,
            attempts=failed_pods,
            run_name=name,
            started_at=started,
            finished_at=_time(status.get("completionTime")) or _time(complete.get("lastTransitionTime")),
            metrics=dict(metrics or {}),
        )
    failed = _condition(job, "Failed")
    if failed is not None:
        backoff = int((job.get("spec") or {}).get("backoffLimit") or 0)
        return StageObservation(
            phase=StagePhase.FAILED,
            attempts=max(failed_pods, backoff + 1),  # the Job has retried all it will
            run_name=name,
            started_at=started,
            finished_at=_time(failed.get("lastTransitionTime")),
            message=f"Job {name} {failed.get('reason', 'Failed')}: {failed.get('message', '')}".strip(),
        )
    return StageObservation(phase=StagePhase.RUNNING, attempts=failed_pods, run_name=name, started_at=started)


def observe_jobs(
    jobs: Iterable[Mapping[str, Any]],
    status_iteration: int,
    metrics: MetricsLookup,
    measurements: Mapping[tuple[int, str], Sequence[Measurement]] | None = None,
) -> Observation:
    """The latest iteration with Jobs (never behind the status), and its stages."""
    jobs = [job for job in jobs if job_iteration(job) is not None]
    iteration = max([status_iteration, *(job_iteration(job) or 0 for job in jobs)])
    stages: dict[str, StageObservation] = {}
    for job in jobs:
        if job_iteration(job) != iteration:
            continue
        stage = ((job.get("metadata") or {}).get("labels") or {}).get(LABEL_STAGE)
        if not stage:
            continue
        done = _condition(job, "Complete") is not None
        stages[stage] = observe_job(job, metrics(iteration, stage) if done else None)
    return Observation(iteration=iteration, stages=stages, measurements=dict(measurements or {}))
