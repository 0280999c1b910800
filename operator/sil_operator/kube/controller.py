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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sil_operator.api.loader import SpecError, parse_loop
from sil_operator.api.spec import SelfImprovementLoop
from sil_operator.api.status import Condition, LoopPhase, LoopStatus, Measurement
from sil_operator.gates.measure import measure
from sil_operator.gates.providers import ManifestProvider, MetricsProvider
from sil_operator.kube.client import KubeApi
from sil_operator.kube.objects import LoopIdentity, stage_configmap, stage_job
from sil_operator.kube.observe import observe_jobs
from sil_operator.planner import Event, MeasureGates, Plan, Promote, StartStage, plan
from sil_operator.stageconfig import LoopRef
from sil_stages.contract import Manifest, StorageOptions, champion_uri, manifest_uri, stage_uri, utcnow
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

    measurements: dict[tuple[int, str], list[Measurement]] = field(default_factory=dict)
    manifests: dict[tuple[int, str], Manifest] = field(default_factory=dict)


@dataclass
class Controller:
    api: KubeApi
    emit: EmitEvent
    default_image: str | None = None
    clock: Callable[[], datetime] = utcnow
    provider_for: Callable[[SelfImprovementLoop, Store], MetricsProvider] | None = None
    memory: dict[tuple[str, str], LoopMemory] = field(default_factory=dict)
    jobs_created: int = 0

    async def reconcile(self, namespace: str, name: str) -> ReconcileResult:
        body = await self.api.get_loop(namespace, name)
        if body is None:
            self.memory.pop((namespace, name), None)
            return ReconcileResult(None)
        try:
            loop = parse_loop({k: v for k, v in body.items() if k != "status"}, f"{namespace}/{name}")
        except SpecError as error:
            return await self._invalid(body, error)
        memory = self.memory.setdefault((namespace, name), LoopMemory())
        store = Store(StorageOptions(uri=loop.spec.storage.uri, endpoint=loop.spec.storage.endpoint))
        status = status_from_body(body)
        jobs = await self.api.list_jobs(namespace, name)
        observation = observe_jobs(
            jobs,
            status.iteration,
            lambda iteration, stage: self._metrics(store, loop, memory, iteration, stage),
            memory.measurements,
        )
        ref = LoopRef(name, namespace, int(body["metadata"].get("generation", 1)))
        result = plan(loop.spec, ref, status, observation, self.clock())
        memory.measurements = {}
        identity = LoopIdentity(name, namespace, body["metadata"]["uid"])
        for action in result.actions:
            await self._execute(action, loop, identity, store, memory)
        await self._save(body, status, result)
        requeue = result.requeue_after
        if memory.measurements:
            requeue = 0.0  # fold the new measurements in right away
        return ReconcileResult(requeue, result.status)

    # -- observing ------------------------------------------------------------------------------------------
    def _metrics(
        self, store: Store, loop: SelfImprovementLoop, memory: LoopMemory, iteration: int, stage: str
    ) -> Mapping[str, float] | None:
        manifest = self._manifest(store, loop, memory, iteration, stage)
        return manifest.metrics if manifest else None

    def _manifest(
        self, store: Store, loop: SelfImprovementLoop, memory: LoopMemory, iteration: int, stage: str
    ) -> Manifest | None:
        key = (iteration, stage)
        if key not in memory.manifests:
            uri = manifest_uri(stage_uri(loop.spec.storage.uri, iteration, stage))
            try:
                if not store.exists(uri):
                    return None
                memory.manifests[key] = Manifest.model_validate_json(store.read_bytes(uri))
            except StoreError as error:
                log.warning("cannot read %s: %s", uri, error)
                return None
        return memory.manifests[key]

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
                self.jobs_created += 1
                log.info("created Job %s/%s", identity.namespace, action.run_name)
        elif isinstance(action, MeasureGates):
            provider = (self.provider_for or _manifest_provider)(loop, store)
            gates = {g.name: g for g in loop.spec.promotion.gates}
            for resolved in action.gates:
                taken = await asyncio.to_thread(measure, gates[resolved.name], resolved, provider, self.clock())
                memory.measurements.setdefault((action.iteration, resolved.name), []).append(taken)
        else:
            from sil_stages.contract import ChampionPointer

            pointer = ChampionPointer(
                iteration=action.iteration, uri=action.uri, score=action.score, promoted_at=self.clock()
            )
            await asyncio.to_thread(
                store.write_text, champion_uri(loop.spec.storage.uri), pointer.model_dump_json(indent=2)
            )

    async def _save(self, body: Mapping[str, Any], before: LoopStatus, result: Plan) -> None:
        meta = body["metadata"]
        if result.status != before:
            await self.api.patch_loop_status(meta["namespace"], meta["name"], status_to_patch(result.status))
        for event in result.events:
            self._emit(body, event)

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


def _manifest_provider(loop: SelfImprovementLoop, store: Store) -> MetricsProvider:
    return ManifestProvider(store, loop.spec.storage.uri)
