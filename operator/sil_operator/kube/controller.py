"""The Kubernetes runner: the same planner as `sil run`, with Jobs instead of processes.

One reconcile: read the loop, list its Jobs, read finished stages' manifests for their metrics, plan, carry out
the actions (ConfigMap + Job per started stage, gate measurements, champion.json on promotion), write the status
once (skipped when unchanged), then post the events. The loop's daemon calls it again as soon as one of its Jobs
or the loop itself changes (event-driven), when the planner asks (gate intervals), or after a resync period.

A loop that is not valid (possible only when the CRD's schema is bypassed or older) becomes Failed with reason
InvalidSpec and the message naming the fields; nothing is started for it.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sil_operator.api.loader import SpecError, parse_loop
from sil_operator.api.spec import SelfImprovementLoop
from sil_operator.api.status import TERMINAL_PHASES, Condition, LoopPhase, LoopStatus, Measurement
from sil_operator.gates.measure import measure
from sil_operator.gates.providers import ManifestProvider, MetricsProvider, QueryError, Sample
from sil_operator.kube.client import KubeApi
from sil_operator.kube.objects import LoopIdentity, stage_configmap, stage_job
from sil_operator.kube.observe import (
    UNREADABLE,
    Finding,
    Unreadable,
    finding_from_events,
    finding_from_pods,
    has_pods,
    needs_diagnosis,
    observe_jobs,
    rejected_input,
    termination_message,
)
from sil_operator.manifests import ManifestCache
from sil_operator.metrics import OperatorMetrics
from sil_operator.planner import Event, MeasureGates, Plan, Promote, StartStage, plan
from sil_operator.promotion import promote
from sil_operator.stageconfig import LoopRef
from sil_stages.contract import StorageOptions, utcnow
from sil_stages.store import Store, StoreError

log = logging.getLogger("selfimprove.operator")

EmitEvent = Callable[[Mapping[str, Any], str, str, str], None]
"""(loop body, type Normal|Warning, reason, message) → post a Kubernetes Event on the loop."""

_STATUS_FIELDS = set(LoopStatus.model_fields) | {f.alias for f in LoopStatus.model_fields.values() if f.alias}


def status_from_body(body: Mapping[str, Any]) -> LoopStatus:
    raw = {k: v for k, v in (body.get("status") or {}).items() if k in _STATUS_FIELDS}
    return LoopStatus.model_validate(raw)


def status_to_patch(status: LoopStatus) -> dict[str, Any]:
    """JSON merge patch of the status subresource: None values delete fields that are no longer set."""
    return status.model_dump(mode="json", by_alias=True)


@dataclass
class ReconcileResult:
    requeue_after: float | None
    status: LoopStatus | None = None


@dataclass
class LoopMemory:
    """What the operator keeps between reconciles of one loop; losing it (a restart) is harmless."""

    options: StorageOptions
    manifests: ManifestCache
    """Also holds the loop's Store (one S3 client per loop, not per reconcile)."""
    measurements: dict[tuple[int, str], list[Measurement]] = field(default_factory=dict)


@dataclass
class Controller:
    api: KubeApi
    emit: EmitEvent
    default_image: str | None = None
    clock: Callable[[], datetime] = utcnow
    metrics: OperatorMetrics | None = None
    memory: dict[tuple[str, str], LoopMemory] = field(default_factory=dict)
    phases: dict[tuple[str, str], str] = field(default_factory=dict)
    ca_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sil-operator-ca-")))

    async def reconcile(self, namespace: str, name: str) -> ReconcileResult:
        body = await self.api.get_loop(namespace, name)
        if body is None:
            self.memory.pop((namespace, name), None)
            self.phases.pop((namespace, name), None)
            self._count_phases()
            return ReconcileResult(None)
        try:
            loop = parse_loop({k: v for k, v in body.items() if k != "status"}, f"{namespace}/{name}")
        except SpecError as error:
            return await self._invalid(body, error)
        memory = self._memory(namespace, name, loop)
        store = memory.manifests.store
        status = status_from_body(body)
        jobs = await self.api.list_jobs(namespace, name)
        findings = await self._findings(namespace, jobs, status)
        observation = observe_jobs(
            jobs,
            status.iteration,
            lambda iteration, stage: self._metrics(memory, iteration, stage),
            memory.measurements,
            findings=findings,
            storage_uri=loop.spec.storage.uri,
        )
        ref = LoopRef(name, namespace, int(body["metadata"].get("generation", 1)))
        result = plan(loop.spec, ref, status, observation, self.clock())
        memory.measurements = {}
        identity = LoopIdentity(name, namespace, body["metadata"]["uid"])
        for action in result.actions:
            await self._execute(action, loop, identity, store, memory)
        await self._save(body, status, result)
        self.phases[(namespace, name)] = result.status.phase.value
        self._count_phases()
        requeue = result.requeue_after
        if memory.measurements:
            requeue = 0.0  # fold the new measurements in right away
        return ReconcileResult(requeue, result.status)

    # -- observing ------------------------------------------------------------------------------------------
    def _memory(self, namespace: str, name: str, loop: SelfImprovementLoop) -> LoopMemory:
        """The loop's memory; started afresh when its storage settings changed."""
        storage = loop.spec.storage
        options = StorageOptions(uri=storage.uri, endpoint=storage.endpoint, region=storage.region)
        memory = self.memory.get((namespace, name))
        if memory is None or memory.options != options:
            memory = LoopMemory(options, ManifestCache(Store(options), storage.uri))
            self.memory[(namespace, name)] = memory
        return memory

    def _metrics(self, memory: LoopMemory, iteration: int, stage: str) -> Mapping[str, float] | Unreadable | None:
        try:
            manifest = memory.manifests.get(iteration, stage)
        except StoreError as error:
            log.warning("cannot read the %s manifest of iteration %d: %s", stage, iteration, error)
            return UNREADABLE
        return manifest.metrics if manifest else None

    async def _findings(self, namespace: str, jobs: list[dict[str, Any]], status: LoopStatus) -> dict[str, Finding]:
        """Reads about Jobs only what their status cannot say, and only for the few that need it: why a Job
        without a ready pod cannot run (its FailedCreate events, or its pods' waiting reasons), and the last log
        line of a stage that rejected its input (while the loop has not failed yet)."""
        findings: dict[str, Finding] = {}
        for job in jobs:
            meta = job["metadata"]
            found: Finding | None = None
            if needs_diagnosis(job, self.clock()):
                if has_pods(job):
                    found = finding_from_pods(await self.api.list_job_pods(namespace, meta["name"]))
                else:
                    found = finding_from_events(await self.api.list_job_events(namespace, meta["name"], meta["uid"]))
            elif rejected_input(job) and status.phase not in TERMINAL_PHASES:
                found = termination_message(await self.api.list_job_pods(namespace, meta["name"]))
            if found is not None:
                findings[meta["name"]] = found
        return findings

    # -- acting ---------------------------------------------------------------------------------------------
    async def _execute(
        self,
        action: StartStage | MeasureGates | Promote,
        loop: SelfImprovementLoop,
        identity: LoopIdentity,
        store: Store,
        memory: LoopMemory,
    ) -> None:
        if isinstance(action, StartStage):
            await self.api.create(stage_configmap(identity, action))
            created = await self.api.create(stage_job(identity, loop.spec, action, self.default_image))
            if created.created:
                log.info("created Job %s/%s", identity.namespace, action.run_name)
                if self.metrics:
                    self.metrics.job_created(action.stage)
                    if action.stage == "acquire" and action.attempt == 1:
                        self.metrics.iteration_started()
        elif isinstance(action, MeasureGates):
            provider = await self._provider(loop, identity, store)
            gates = {g.name: g for g in loop.spec.promotion.gates}
            for resolved in action.gates:
                taken = await asyncio.to_thread(measure, gates[resolved.name], resolved, provider, self.clock())
                memory.measurements.setdefault((action.iteration, resolved.name), []).append(taken)
                if self.metrics:
                    self.metrics.gate_measured(taken.phase.value)
        else:
            await asyncio.to_thread(promote, store, loop.spec.storage.uri, action, self.clock())

    async def _provider(self, loop: SelfImprovementLoop, identity: LoopIdentity, store: Store) -> MetricsProvider:
        """Prometheus (token and CA read from the loop's Secrets) when the spec names it, else the manifests.

        A Secret that cannot be read does not crash the reconcile: every query then fails, so the gate records
        Error measurements whose message names the Secret.
        """
        prometheus = loop.spec.promotion.prometheus
        if prometheus is None:
            return ManifestProvider(store, loop.spec.storage.uri)
        from sil_operator.gates.prometheus import PrometheusProvider

        try:
            token = None
            if prometheus.bearer_token_secret is not None:
                ref = prometheus.bearer_token_secret
                token = (await self.api.read_secret_key(identity.namespace, ref.name, ref.key)).strip()
            ca_file = None
            if prometheus.ca_secret is not None:
                ref = prometheus.ca_secret
                pem = await self.api.read_secret_key(identity.namespace, ref.name, ref.key)
                path = self.ca_dir / f"{identity.uid}.pem"
                path.write_text(pem, encoding="utf-8")
                ca_file = str(path)
        except KeyError as error:
            return _Unanswerable(f"promotion.prometheus: {error.args[0]}")
        return PrometheusProvider(
            prometheus.address,
            bearer_token=token,
            ca_file=ca_file,
            insecure_skip_verify=prometheus.insecure_skip_verify,
            timeout=float(prometheus.timeout_seconds),
        )

    def _count_phases(self) -> None:
        if self.metrics:
            self.metrics.set_loop_phases(Counter(self.phases.values()))

    async def _save(self, body: Mapping[str, Any], before: LoopStatus, result: Plan) -> None:
        meta = body["metadata"]
        if result.status != before:
            await self.api.patch_loop_status(meta["namespace"], meta["name"], status_to_patch(result.status))
        for event in result.events:
            self._emit(body, event)
        if self.metrics:
            _record_metrics(self.metrics, before, result)

    def _emit(self, body: Mapping[str, Any], event: Event) -> None:
        try:
            self.emit(body, event.type, event.reason, event.message)
        except Exception:  # an event that cannot be posted must not stop the loop
            log.exception("cannot post event %s on %s", event.reason, body["metadata"]["name"])

    async def _invalid(self, body: Mapping[str, Any], error: SpecError) -> ReconcileResult:
        status = status_from_body(body)
        message = "; ".join(error.problems)
        if status.phase is LoopPhase.FAILED and status.message == message:
            return ReconcileResult(None, status)
        now = self.clock()
        failed = status.model_copy(
            update={
                "phase": LoopPhase.FAILED,
                "message": message,
                "conditions": [
                    Condition(
                        type="Failed", status="True", reason="InvalidSpec", message=message, last_transition_time=now
                    ),
                ],
            }
        )
        meta = body["metadata"]
        await self.api.patch_loop_status(meta["namespace"], meta["name"], status_to_patch(failed))
        self._emit(body, Event("Warning", "InvalidSpec", message))
        return ReconcileResult(None, failed)


class _Unanswerable:
    """A provider for a Prometheus that cannot be queried at all (its Secret is missing): every query errors."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def query(self, promql: str) -> list[Sample]:
        raise QueryError(self.reason)


def _record_metrics(metrics: OperatorMetrics, before: LoopStatus, result: Plan) -> None:
    """Decisions and finished stages of this reconcile (each counted once: only transitions are recorded)."""
    for event in result.events:
        if event.reason in ("Promoted", "Rejected"):
            metrics.decided(event.reason)
    was = before.current()
    now = result.status.current()
    if now is None:
        return
    for stage in now.stages:
        old = was.stage(stage.stage) if was is not None and was.index == now.index else None
        finished = stage.phase.value in ("Succeeded", "Failed")
        if finished and (old is None or old.phase is not stage.phase) and stage.started_at and stage.finished_at:
            metrics.stage_finished(stage.stage, (stage.finished_at - stage.started_at).total_seconds())
