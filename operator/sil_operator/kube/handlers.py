"""All kopf registrations, and nothing else: each handler delegates to the Controller.

Event-driven: every loop has a daemon that reconciles and then sleeps until woken. A change to any Job (or, where
JobSets are served, JobSet) the operator manages wakes its loop's daemon at once (so the next stage starts within a
second of the last one finishing), as does a change to the loop itself; the planner's requeue (gate intervals) and
a resync period bound the sleep otherwise.

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
from sil_operator.kube.jobset import JOBSET_GROUP, JOBSET_PLURAL, JOBSET_VERSION
from sil_operator.kube.objects import LABEL_LOOP, LABEL_MANAGED_BY, MANAGED_BY
from sil_operator.metrics import OperatorMetrics

RESYNC_SECONDS = float(os.environ.get("SIL_RESYNC_SECONDS", "300"))
log = logging.getLogger("selfimprove.operator")


class Wakeups:
    """One asyncio.Event per loop, set by watch events, awaited by the loop's daemon."""

    def __init__(self) -> None:
        self._events: dict[tuple[str, str], asyncio.Event] = {}
        self._generations: dict[tuple[str, str], int] = {}

    def event(self, namespace: str, name: str) -> asyncio.Event:
        return self._events.setdefault((namespace, name), asyncio.Event())

    def wake(self, namespace: str, name: str) -> None:
        self.event(namespace, name).set()

    def forget(self, namespace: str, name: str) -> None:
        self._events.pop((namespace, name), None)
        self._generations.pop((namespace, name), None)

    def saw_generation(self, namespace: str, name: str, generation: int) -> None:
        self._generations[(namespace, name)] = generation

    def generation(self, namespace: str, name: str) -> int | None:
        """The loop's spec generation last seen by its watch (status patches do not change it)."""
        return self._generations.get((namespace, name))


def _post_event(body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    # kopf builds the event's object reference from apiVersion, kind and metadata: a plain mapping has them.
    kopf.event(cast(kopf.Body, dict(body)), type=type_, reason=reason, message=message)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    memo.wakeups = Wakeups()
    metrics = OperatorMetrics()
    port = os.environ.get("SIL_METRICS_PORT")
    if port:
        metrics.serve(int(port), os.environ.get("SIL_METRICS_ADDRESS", "127.0.0.1"))
    memo.metrics = metrics
    memo.controller = Controller(
        api=KubeApi.from_kubeconfig(os.environ.get("KUBECONFIG")),
        emit=_post_event,
        default_image=os.environ.get("SIL_STAGE_IMAGE"),
        metrics=metrics,
        jobsets_enabled=os.environ.get("SIL_JOBSETS", "enabled") != "disabled",
    )
    await _watch_jobsets_if_served(memo.controller)


async def _watch_jobsets_if_served(controller: Controller) -> None:
    """Registers the JobSet watch only where the API server serves JobSets (asked once, at startup: kopf starts
    its watches after the startup handlers). Elsewhere the operator never touches the JobSet API, and needs no
    RBAC for it; a JobSet installed later is used (discovery is asked again each minute) but its changes are
    noticed only on the resync period until the operator restarts."""
    if await controller.jobset_served():
        kopf.on.event(JOBSET_GROUP, JOBSET_VERSION, JOBSET_PLURAL, labels={LABEL_MANAGED_BY: MANAGED_BY})(
            stage_jobset_changed
        )
        log.info("JobSets are served: watching %s/%s %s", JOBSET_GROUP, JOBSET_VERSION, JOBSET_PLURAL)


@kopf.daemon(API_GROUP, API_VERSION, PLURAL, cancellation_timeout=2.0)
async def run_loop(name: str, namespace: str | None, stopped: kopf.DaemonStopped, memo: kopf.Memo, **_: Any) -> None:
    if namespace is None:  # the CRD is namespaced; kopf types allow cluster-scoped resources too
        return
    controller: Controller = memo.controller
    wakeups: Wakeups = memo.wakeups
    wake = wakeups.event(namespace, name)
    try:
        while not stopped:
            wake.clear()
            try:
                result = await controller.reconcile(namespace, name)
            except Exception as error:  # shown on the loop (Degraded, or Failed), retried with backoff
                memo.metrics.reconcile_failed()
                delay = await controller.record_failure(namespace, name, error)
                await _back_off(wakeups, namespace, name, RESYNC_SECONDS if delay is None else delay, stopped)
                continue
            wait = RESYNC_SECONDS if result.requeue_after is None else result.requeue_after
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=wait)
    finally:
        wakeups.forget(namespace, name)


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


def _wake_owner(labels: Mapping[str, str], namespace: str | None, memo: kopf.Memo) -> None:
    loop = labels.get(LABEL_LOOP)
    if loop and namespace:
        memo.wakeups.wake(namespace, loop)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY})
async def job_changed(labels: Mapping[str, str], namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    _wake_owner(labels, namespace, memo)


async def stage_jobset_changed(labels: Mapping[str, str], namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    """A change to a JobSet of a multi-node stage wakes its loop, as a Job change does (registered at startup)."""
    _wake_owner(labels, namespace, memo)


@kopf.on.event(API_GROUP, API_VERSION, PLURAL)
async def loop_changed(name: str, namespace: str | None, meta: Mapping[str, Any], memo: kopf.Memo, **_: Any) -> None:
    if namespace:
        generation = meta.get("generation")
        if isinstance(generation, int):
            memo.wakeups.saw_generation(namespace, name, generation)
        memo.wakeups.wake(namespace, name)
