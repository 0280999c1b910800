"""Which watch events wake a loop's daemon. Every wake costs a reconcile (a GET of the loop, a LIST of its Jobs,
a status patch when anything moved); with a hundred loops the daemons reconciled back to back on Job updates
that cannot change the plan and on the operator's own status patches, and each handoff waited behind them
(bench/scale.py). A Job wakes its loop when what the runner reads from it changed; the loop wakes itself when its
spec (generation) changed."""

from __future__ import annotations

from typing import Any

import pytest

from sil_operator.kube.handlers import Wakeups
from sil_operator.kube.observe import job_fingerprint


def job(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "demo-1-acquire", "uid": "u1"}, "spec": {}, "status": status}


def condition(kind: str) -> dict[str, str]:
    return {"type": kind, "status": "True"}


CREATED = job()
STARTED = job(active=1, startTime="2026-01-01T00:00:00Z")
READY = job(active=1, ready=1, startTime="2026-01-01T00:00:00Z")
TERMINATING = job(active=0, ready=0, startTime="2026-01-01T00:00:00Z", uncountedTerminatedPods={"succeeded": ["p"]})
CRITERIA_MET = job(startTime="2026-01-01T00:00:00Z", conditions=[condition("SuccessCriteriaMet")])
SUCCEEDED = job(startTime="2026-01-01T00:00:00Z", succeeded=1, conditions=[condition("SuccessCriteriaMet")])
COMPLETE = job(
    startTime="2026-01-01T00:00:00Z", succeeded=1, conditions=[condition("SuccessCriteriaMet"), condition("Complete")]
)


@pytest.mark.parametrize(
    ("before", "after", "wakes"),
    [
        (CREATED, STARTED, True),  # a pod exists, the stage started
        (STARTED, READY, True),  # a ready pod: no diagnosis needed any more
        (READY, TERMINATING, True),  # no ready pod again
        (TERMINATING, CRITERIA_MET, False),  # Complete follows: nothing to plan yet
        (CRITERIA_MET, SUCCEEDED, False),  # the pod counted
        (SUCCEEDED, COMPLETE, True),  # the stage finished
        (READY, job(active=1, ready=1, startTime="2026-01-01T00:00:00Z", failed=1), True),  # a failed attempt
        (READY, job(active=1, ready=1, startTime="2026-01-01T00:00:00Z", conditions=[condition("Failed")]), True),
        (CREATED, {**CREATED, "spec": {"suspend": True}}, True),  # Kueue holds it
    ],
)
def test_a_job_update_wakes_its_loop_only_when_what_the_runner_reads_changed(
    before: dict[str, Any], after: dict[str, Any], wakes: bool
) -> None:
    assert (job_fingerprint(before) != job_fingerprint(after)) is wakes


def test_wakeups_pass_a_jobs_first_sight_and_its_changes_and_drop_repeats() -> None:
    wakeups = Wakeups()
    event = wakeups.event("ml", "demo")
    seen = [
        wakeups.job_event("ml", "demo", "u1", job_fingerprint(state))
        for state in (CREATED, STARTED, READY, TERMINATING, CRITERIA_MET, SUCCEEDED, COMPLETE, COMPLETE)
    ]
    assert seen == [False, True, True, True, False, False, True, False], "the Job just created does not wake"
    assert event.is_set()


def test_a_new_job_something_already_happened_to_wakes() -> None:
    """After a restart, or a Job created suspended (Kueue): its first sight is news."""
    wakeups = Wakeups()
    assert wakeups.job_event("ml", "demo", "u1", job_fingerprint(STARTED))
    assert wakeups.job_event("ml", "demo", "u2", job_fingerprint({**CREATED, "spec": {"suspend": True}}))


def test_a_deleted_job_always_wakes_and_is_forgotten() -> None:
    wakeups = Wakeups()
    wakeups.job_event("ml", "demo", "u1", job_fingerprint(COMPLETE))
    assert wakeups.job_event("ml", "demo", "u1", job_fingerprint(COMPLETE), deleted=True)
    assert wakeups.job_event("ml", "demo", "u1", job_fingerprint(COMPLETE)), "a Job of the same uid is news again"


def test_the_loop_wakes_on_a_new_generation_not_on_its_own_status_patches() -> None:
    wakeups = Wakeups()
    event = wakeups.event("ml", "demo")
    assert wakeups.loop_event("ml", "demo", 1), "the first sight of a loop wakes it"
    event.clear()
    assert not wakeups.loop_event("ml", "demo", 1), "a status patch keeps the generation"
    assert not event.is_set()
    assert wakeups.loop_event("ml", "demo", 2), "a spec change wakes it"
    assert event.is_set()
    assert wakeups.generation("ml", "demo") == 2


def test_a_loop_being_deleted_wakes_its_daemon() -> None:
    wakeups = Wakeups()
    wakeups.loop_event("ml", "demo", 1)
    assert wakeups.loop_event("ml", "demo", 1, deleting=True)
