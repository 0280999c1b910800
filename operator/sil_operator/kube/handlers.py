"""All kopf registrations, and nothing else: each handler delegates to the Controller.

Event-driven: every loop has a daemon that reconciles and then sleeps until woken. A change to a Job (or, where
JobSets are served, a JobSet) the operator manages wakes its loop's daemon at once when it changes what the runner
reads from it (`observe.job_fingerprint`: so the next stage starts within a second of the last one finishing), as
does a new generation of the loop's spec; updates that cannot change the plan and the operator's own status patches
do not (with a hundred loops those wakes kept every daemon reconciling back to back, bench/scale.py). The planner's
requeue (gate intervals) and a resync period bound the sleep otherwise.

kopf keeps its own bookkeeping in annotations (`selfimprove.dev/...`), not in `status`, so the CRD's structural
schema never prunes it and the status stays ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from typing import Any, cast

import kopf

from sil_operator.api.spec import API_GROUP, API_VERSION
from sil_operator.crd import PLURAL
from sil_operator.kube.client import KubeApi
from sil_operator.kube.controller import Controller
from sil_operator.kube.jobset import JOBSET_GROUP, JOBSET_PLURAL, JOBSET_VERSION, as_job
from sil_operator.kube.objects import LABEL_LOOP, LABEL_MANAGED_BY, MANAGED_BY
from sil_operator.kube.observe import job_fingerprint
from sil_operator.kube.persistence import NoDiffBase
from sil_operator.metrics import OperatorMetrics

RESYNC_SECONDS = float(os.environ.get("SIL_RESYNC_SECONDS", "300"))
log = logging.getLogger("selfimprove.operator")


UNTOUCHED = job_fingerprint({})
"""The fingerprint of a Job as created: nothing has happened to it yet."""


class Wakeups:
    """One asyncio.Event per loop, set by watch events that matter, awaited by the loop's daemon."""

    def __init__(self) -> None:
        self._events: dict[tuple[str, str], asyncio.Event] = {}
        self._generations: dict[tuple[str, str], int] = {}
        self._jobs: dict[str, tuple[Any, ...]] = {}
        """The fingerprint of each Job (by uid) last seen."""

    def job_event(
        self, namespace: str, loop: str, uid: str, fingerprint: tuple[Any, ...], *, deleted: bool = False
    ) -> bool:
        """Wakes the loop when the Job is deleted, its fingerprint changed, or it is new and something already
        happened to it; True when it woke it. A new Job nothing happened to yet (no pod, no start time, not
        suspended: the one the loop's reconcile has just created) does not: that reconcile planned with it, and
        waking for it only rewrote the stage's start from the operator's clock to the Job's creation time, one
        more status patch per transition (bench/scale.py). The reconcile that creates a Job looks again within
        `DIAGNOSE_AFTER_SECONDS` (controller) in case nothing ever happens to it."""
        if deleted:
            self._jobs.pop(uid, None)
        elif self._jobs.get(uid) == fingerprint:
            return False
        else:
            new = uid not in self._jobs
            self._jobs[uid] = fingerprint
            if new and fingerprint == UNTOUCHED:
                return False
        self.wake(namespace, loop)
        return True

    def loop_event(self, namespace: str, name: str, generation: int | None, *, deleting: bool = False) -> bool:
        """Wakes the loop on its first sight, a new generation of its spec, or its deletion; not on a patch of its
        status or metadata (mostly the operator's own). True when it woke it."""
        key = (namespace, name)
        if key in self._generations and self._generations[key] == generation and not deleting:
            return False
        if generation is not None:
            self._generations[key] = generation
        self.wake(namespace, name)
        return True

    def event(self, namespace: str, name: str) -> asyncio.Event:
        return self._events.setdefault((namespace, name), asyncio.Event())

    def wake(self, namespace: str, name: str) -> None:
        self.event(namespace, name).set()

    def wake_all(self) -> None:
        for event in self._events.values():
            event.set()

    def forget(self, namespace: str, name: str) -> None:
        self._events.pop((namespace, name), None)
        self._generations.pop((namespace, name), None)

    def generation(self, namespace: str, name: str) -> int | None:
        """The loop's spec generation last seen by its watch (status patches do not change it)."""
        return self._generations.get((namespace, name))


def _post_event(body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    # kopf builds the event's object reference from apiVersion, kind and metadata: a plain mapping has them.
    kopf.event(cast(kopf.Body, dict(body)), type=type_, reason=reason, message=message)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = NoDiffBase()  # no change handlers: see kube/persistence.py
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    memo.wakeups = Wakeups()
    metrics = memo.get("metrics")
    if not isinstance(metrics, OperatorMetrics):  # kopf run without `sil operator`: no /metrics served
        metrics = memo.metrics = OperatorMetrics()
    memo.controller = Controller(
        api=KubeApi.from_kubeconfig(os.environ.get("KUBECONFIG")),
        emit=_post_event,
        default_image=os.environ.get("SIL_STAGE_IMAGE"),
        metrics=metrics,
        jobsets_enabled=os.environ.get("SIL_JOBSETS", "enabled") != "disabled",
    )
    await _watch_jobsets_if_enabled(memo.controller)


async def _watch_jobsets_if_enabled(controller: Controller) -> None:
    """Registers the JobSet watch unless JobSets are disabled (the chart's jobset.enabled false: no RBAC for them).

    Registered whether or not the API server serves JobSets yet: kopf's scanning (the chart grants its CRD
    list/watch) starts the watch when the JobSet CRD is installed, so a JobSet installed while the operator runs
    is followed by its watch, not only on the resync period. Until then kopf logs once that the resource is not
    served; where JobSets are disabled the operator never touches their API."""
    if not controller.jobsets_enabled:
        return
    kopf.on.event(JOBSET_GROUP, JOBSET_VERSION, JOBSET_PLURAL, labels={LABEL_MANAGED_BY: MANAGED_BY})(
        stage_jobset_changed
    )
    log.info("watching %s/%s %s once they are served", JOBSET_GROUP, JOBSET_VERSION, JOBSET_PLURAL)


@kopf.daemon(API_GROUP, API_VERSION, PLURAL, cancellation_timeout=2.0)
async def run_loop(
    name: str, namespace: str | None, body: kopf.Body, stopped: kopf.DaemonStopped, memo: kopf.Memo, **_: Any
) -> None:
    """The loop's reconciles. `body` is kopf's live view of the loop, replaced by each watch event: each reconcile
    takes a snapshot of it instead of a GET (its top-level values are the event's own parsed JSON, which the next
    event replaces rather than changes, so a shallow copy is stable)."""
    if namespace is None:  # the CRD is namespaced; kopf types allow cluster-scoped resources too
        return
    controller: Controller = memo.controller
    wakeups: Wakeups = memo.wakeups
    wake = wakeups.event(namespace, name)
    clock = asyncio.get_running_loop().time
    listed_at = clock()
    try:
        while not stopped:
            wake.clear()
            if clock() - listed_at >= RESYNC_SECONDS:
                # The resync period, counted from the loop's last LIST whatever woke it since: a loop that is
                # requeued often (a stage being diagnosed every 20 s) would otherwise never list again, and a watch
                # event lost across an API server restart would leave it waiting on a stale cache.
                controller.watched.unprime((namespace, name))
                listed_at = clock()
            try:
                result = await controller.reconcile(namespace, name, dict(body))
            except Exception as error:  # shown on the loop (Degraded, or Failed), retried with backoff
                memo.metrics.reconcile_failed()
                delay = await controller.record_failure(namespace, name, error, dict(body))
                await _back_off(wakeups, namespace, name, RESYNC_SECONDS if delay is None else delay, stopped)
                continue
            wait = RESYNC_SECONDS if result.requeue_after is None else result.requeue_after
            wait = min(wait, max(0.0, listed_at + RESYNC_SECONDS - clock()))
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=wait)
    finally:
        wakeups.forget(namespace, name)
        controller.forget(namespace, name)


async def _back_off(wakeups: Wakeups, namespace: str, name: str, seconds: float, stopped: kopf.DaemonStopped) -> None:
    """Waits out a failure's backoff. Job changes and our own status patches do not cut it short (they would
    turn the backoff into a retry storm); a new generation of the loop's spec does, since it may be the fix."""
    wake = wakeups.event(namespace, name)
    generation = wakeups.generation(namespace, name)
    deadline = asyncio.get_running_loop().time() + seconds
    while not stopped:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            return
        wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=left)
        if wakeups.generation(namespace, name) != generation:
            return


def _wake_owner(
    type: str | None,
    job: Mapping[str, Any],
    labels: Mapping[str, str],
    namespace: str | None,
    uid: str | None,
    memo: kopf.Memo,
) -> None:
    loop = labels.get(LABEL_LOOP)
    if loop and namespace and uid:
        if memo.controller.watched.seen(type, (namespace, loop), uid, job):
            log.info("the Job watch relisted (its resourceVersion expired): every loop lists its Jobs once again")
            memo.wakeups.wake_all()
        fingerprint = job_fingerprint(job)
        memo.wakeups.job_event(namespace, loop, uid, fingerprint, deleted=type == "DELETED")


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY})
async def job_changed(
    type: str | None,  # kopf's name for the watch event type
    body: kopf.Body,
    labels: Mapping[str, str],
    namespace: str | None,
    uid: str | None,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    _wake_owner(type, dict(body), labels, namespace, uid, memo)


async def stage_jobset_changed(
    type: str | None,
    body: kopf.Body,
    labels: Mapping[str, str],
    namespace: str | None,
    uid: str | None,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """A change to a JobSet of a multi-node stage wakes its loop, as a Job change does (registered at startup)."""
    _wake_owner(type, as_job(cast(Mapping[str, Any], body)), labels, namespace, uid, memo)


@kopf.on.event(API_GROUP, API_VERSION, PLURAL)
async def loop_changed(name: str, namespace: str | None, meta: Mapping[str, Any], memo: kopf.Memo, **_: Any) -> None:
    if namespace:
        generation = meta.get("generation")
        deleting = meta.get("deletionTimestamp") is not None
        memo.wakeups.loop_event(namespace, name, generation if isinstance(generation, int) else None, deleting=deleting)
