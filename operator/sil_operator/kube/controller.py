"""The Kubernetes runner: the same planner as `sil run`, with Jobs instead of processes.

One reconcile: read the loop, list its Jobs, read finished stages' manifests for their metrics, plan, carry out
the actions (ConfigMap + Job per started stage, or a Service + Indexed Job for a multi-node one: kube/engines.py;
gate measurements; champion.json on promotion), write the status once (skipped when unchanged), then post the
events. The loop's daemon calls it again as soon as one of its Jobs or the loop itself changes (event-driven), when
the planner asks (gate intervals), or after a resync period.

A loop that is not valid (possible only when the CRD's schema is bypassed or older) becomes Failed with reason
InvalidSpec and the message naming the fields; nothing is started for it.

Every store, Prometheus and file call runs through `Offload` (its own threads, a few per loop), never on kopf's
event loop. A reconcile that raises is recorded by `record_failure` (see `failures`): the loop shows a `Degraded`
condition with the reason and a Warning event when it starts, the daemon retries on the backoff schedule, and the
next successful reconcile sets `Degraded` False; a failure only a spec change can fix ends the loop Failed, and a
new generation of the spec gives it another try.
"""

from __future__ import annotations

import logging
import ssl
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sil_operator.api.loader import SpecError, parse_loop
from sil_operator.api.spec import SelfImprovementLoop
from sil_operator.api.status import TERMINAL_PHASES, Condition, LoopPhase, LoopStatus
from sil_operator.failures import (
    Failure,
    SecretUnavailable,
    StageImageMissing,
    classify,
    degraded,
    failed_for_good,
    is_degraded,
    retry_delay,
    spread_of,
)
from sil_operator.gates.providers import ManifestProvider, MetricsProvider
from sil_operator.kube.client import KubeApi
from sil_operator.kube.discovery import ApiDiscovery
from sil_operator.kube.engines import choose_engine, stage_objects
from sil_operator.kube.jobset import FROM_JOBSET, JOBSET_GROUP, JOBSET_PLURAL, JOBSET_VERSION, as_job
from sil_operator.kube.objects import LoopIdentity, engine_field, stage_configmap, stage_nodes
from sil_operator.kube.observe import (
    DIAGNOSE_AFTER_SECONDS,
    Finding,
    finding_from_events,
    finding_from_pods,
    has_pods,
    job_failed,
    needs_diagnosis,
    observe_jobs,
    oom_killed,
    rejected_input,
    termination_message,
)
from sil_operator.kube.offload import OPERATOR_STORE_TIMEOUTS, Offload
from sil_operator.kube.watched import WatchedJobs, resource_version
from sil_operator.manifests import ManifestCache
from sil_operator.metrics import OperatorMetrics
from sil_operator.planner import Event, MeasureGates, Plan, Promote, StartStage, plan
from sil_operator.promotion import promote
from sil_operator.rounds import GateMeasurements, measure_gates, record
from sil_operator.stageconfig import LoopRef
from sil_stages.core.contract import StorageOptions, utcnow
from sil_stages.core.store import S3Clients, S3Credentials, Store, StoreError, is_remote

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
    """Also holds the loop's Store (its S3 client is shared with the other loops of the same endpoint)."""
    credentials: S3Credentials | None = None
    """The S3 keys of the loop's credentials Secret the Store uses (None: the operator's own environment)."""
    measurements: GateMeasurements = field(default_factory=dict)
    """Gate measurements taken since the last plan (rounds.measure_gates), for the next one."""


@dataclass
class LoopState:
    """Everything the operator keeps about one loop between reconciles, in one place: dropped as a whole when the
    loop goes (`Controller.forget`), and harmless to lose (a restarted operator rebuilds it from the API)."""

    spec: tuple[str, int, SelfImprovementLoop] | None = None
    """The parsed spec with the uid and generation it was parsed at (see `Controller._parse`)."""
    memory: LoopMemory | None = None
    """The loop's store, manifest cache and pending measurements."""
    phase: str | None = None
    """The status phase last written: the selfimprove_loops gauge counts these."""
    failures: int = 0
    """Failed reconciles in a row: the backoff schedule's position (reset by a success)."""
    credentials: tuple[tuple[str, int], S3Credentials] | None = None
    """The credentials Secret's name and the generation it was read for, and its keys."""
    verified_secret: tuple[str, int] | None = None
    """The credentials Secret's name and the generation it was last seen to exist at."""
    written: dict[str, Any] | None = None
    """The loop as the operator's own last status patch returned it (see `Controller._loop_body`)."""


@dataclass
class Controller:
    api: KubeApi
    emit: EmitEvent
    default_image: str | None = None
    clock: Callable[[], datetime] = utcnow
    metrics: OperatorMetrics | None = None
    loops: dict[tuple[str, str], LoopState] = field(default_factory=dict)
    """Per loop (namespace, name): what the operator keeps between its reconciles."""
    ca_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sil-operator-ca-")))
    offload: Offload = field(default_factory=Offload)
    discovery: ApiDiscovery = field(default_factory=ApiDiscovery)
    jobsets_enabled: bool = True
    """False where the operator may not use JobSets (the chart's jobset.enabled false: no RBAC for them)."""
    s3_clients: S3Clients = field(default_factory=S3Clients)
    """One S3 client per endpoint for all loops' Stores (a client per loop cost ~12 MB each: bench/scale.py)."""
    watched: WatchedJobs = field(default_factory=WatchedJobs)
    """The loops' Jobs and JobSets as the watches delivered them (handlers feed it): no LIST per reconcile."""

    def _state(self, key: tuple[str, str]) -> LoopState:
        return self.loops.setdefault(key, LoopState())

    async def reconcile(self, namespace: str, name: str, seen: Mapping[str, Any] | None = None) -> ReconcileResult:
        """One reconcile of the loop. `seen` is the loop as its watch last delivered it (the daemon's live body):
        then nothing is read from the API unless that body may be older than the operator's own last status
        write and the two cannot be ordered (see `_freshest`). Without it the loop is read (GET)."""
        key = (namespace, name)
        body = await self._loop_body(namespace, name, seen)
        if body is None:
            self.forget(namespace, name)
            return ReconcileResult(None)
        try:
            loop = self._parse(namespace, name, body)
        except SpecError as error:
            return await self._invalid(body, error)
        try:
            return await self._reconcile_parsed(namespace, name, body, loop)
        except StoreError:
            # Keys rotated in the Secret (same generation) show up as store errors: read the Secret again next time.
            state = self._state(key)
            state.credentials = state.verified_secret = None
            raise

    def forget(self, namespace: str, name: str) -> None:
        """Drops what the operator keeps about a loop that is gone (or whose daemon stopped: losing it is
        harmless, the next reconcile lists its Jobs again)."""
        key = (namespace, name)
        self.loops.pop(key, None)
        self.watched.forget(key)
        self.offload.forget(key)
        self._count_phases()

    async def _loop_body(self, namespace: str, name: str, seen: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        """The freshest loop the operator knows without a request: the watch's body, or the response of the
        operator's own last status patch when the watch has not delivered that write yet (a reconcile woken by
        the Job it just created must not plan again from the status before its own write: it would post the
        same events twice). A GET only when there is no watched body or the two cannot be ordered."""
        key = (namespace, name)
        if seen is not None:
            known = self.loops.get(key)
            fresher = _freshest(seen, known.written if known else None)
            if fresher is not None:
                return fresher
        return await self.api.get_loop(namespace, name)

    async def _loop_jobs(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """The loop's Jobs and JobSets (as Jobs) from the watches' cache; one LIST of each when the cache is not
        primed for the loop (the first reconcile after a start, after a relist or the resync period)."""
        key = (namespace, name)
        cached = self.watched.jobs(key)
        if cached is not None:
            return cached
        since = self.watched.mark()
        listed = await self.api.list_jobs(namespace, name) + await self._jobsets_as_jobs(namespace, name)
        return self.watched.replace(key, listed, since)

    async def _reconcile_parsed(
        self, namespace: str, name: str, body: Mapping[str, Any], loop: SelfImprovementLoop
    ) -> ReconcileResult:
        key = (namespace, name)
        ref = LoopRef(name, namespace, int(body["metadata"].get("generation", 1)))
        credentials = await self._store_credentials(loop, namespace, ref.generation)
        memory = await self.offload.run(key, self._memory, namespace, name, loop, credentials)
        store = memory.manifests.store
        status = _retry_after_spec_change(status_from_body(body), ref.generation)
        jobs = await self._loop_jobs(namespace, name)
        findings = await self._findings(namespace, jobs, status)
        observation = await self.offload.run(
            key,
            observe_jobs,
            jobs,
            status.iteration,
            lambda iteration, stage: self._metrics(memory, iteration, stage),
            memory.measurements,
            findings=findings,
            storage_uri=loop.spec.storage.uri,
            named=lambda iteration, stage: self._named(memory, iteration, stage),
        )
        result = plan(loop.spec, ref, status, observation, self.clock())
        memory.measurements = {}
        identity = LoopIdentity(name, namespace, body["metadata"]["uid"])
        for action in result.actions:
            await self._execute(action, loop, identity, store, memory)
        result = self._recovered(key, result, ref.generation)
        await self._save(body, status_from_body(body), result)
        self._state(key).phase = result.status.phase.value
        self._count_phases()
        requeue = result.requeue_after
        if any(isinstance(action, StartStage) for action in result.actions):
            # Its Job's creation does not wake the loop (handlers.Wakeups): look at it again if nothing happens.
            requeue = DIAGNOSE_AFTER_SECONDS if requeue is None else min(requeue, DIAGNOSE_AFTER_SECONDS)
        if memory.measurements:
            requeue = 0.0  # fold the new measurements in right away
        return ReconcileResult(requeue, result.status)

    def _parse(self, namespace: str, name: str, body: Mapping[str, Any]) -> SelfImprovementLoop:
        """The loop's spec, parsed once per generation: parsing checks every CEL rule in Python (~70 % of the event
        loop's time with 30 loops, bench/scale.py), and only a new generation (or a recreated loop) changes the
        spec. A SpecError is not remembered: it is raised again each time."""
        key = (namespace, name)
        meta = body["metadata"]
        at = (str(meta.get("uid", "")), int(meta.get("generation", 1)))
        state = self._state(key)
        if state.spec is not None and state.spec[:2] == at:
            return state.spec[2]
        loop = parse_loop({k: v for k, v in body.items() if k != "status"}, f"{namespace}/{name}")
        state.spec = (*at, loop)
        for deprecated in loop.spec.deprecations():  # once per generation (and per operator start)
            self._emit(body, Event("Warning", "DeprecatedField", deprecated))
        return loop

    # -- observing ------------------------------------------------------------------------------------------
    def _memory(
        self, namespace: str, name: str, loop: SelfImprovementLoop, credentials: S3Credentials | None = None
    ) -> LoopMemory:
        """The loop's memory; started afresh when its storage settings or credentials changed."""
        storage = loop.spec.storage
        options = StorageOptions(uri=storage.uri, endpoint=storage.endpoint, region=storage.region)
        state = self._state((namespace, name))
        memory = state.memory
        if memory is None or memory.options != options or memory.credentials != credentials:
            store = Store(options, OPERATOR_STORE_TIMEOUTS, self.s3_clients, credentials)
            memory = state.memory = LoopMemory(options, ManifestCache(store, storage.uri), credentials=credentials)
        return memory

    def _metrics(self, memory: LoopMemory, iteration: int, stage: str) -> Mapping[str, float] | None:
        """Runs in an offload thread; a StoreError fails the reconcile, so the loop shows it (Degraded)."""
        manifest = memory.manifests.get(iteration, stage)
        return manifest.metrics if manifest else None

    def _named(self, memory: LoopMemory, iteration: int, stage: str) -> Mapping[str, list[str]]:
        """The manifest's named items; read after its metrics, so from the cache."""
        manifest = memory.manifests.get(iteration, stage)
        return manifest.findings if manifest else {}

    # -- failures -------------------------------------------------------------------------------------------
    async def record_failure(
        self, namespace: str, name: str, error: BaseException, seen: Mapping[str, Any] | None = None
    ) -> float | None:
        """Shows a failed reconcile on the loop; the seconds to wait before the next try, None when only a spec
        change can help (the loop is then Failed)."""
        key = (namespace, name)
        failure = classify(error)
        state = self._state(key)
        state.failures += 1
        count = state.failures
        if failure.reason == "ReconcileError":
            log.error("reconcile of %s/%s failed: %s", namespace, name, failure.message, exc_info=error)
        else:
            log.warning("reconcile of %s/%s failed (%s): %s", namespace, name, failure.reason, failure.message)
        try:
            body = await self._loop_body(namespace, name, seen)
            if body is not None:
                await self._show_failure(body, failure)
        except Exception:  # the API itself may be what failed: the retry shows it later
            log.exception("cannot record the failure on %s/%s", namespace, name)
        return retry_delay(failure, count, spread_of(f"{namespace}/{name}/{count}"))

    async def _show_failure(self, body: Mapping[str, Any], failure: Failure) -> None:
        meta = body["metadata"]
        before = status_from_body(body)
        generation = int(meta.get("generation", 1))
        now = self.clock()
        after = (
            failed_for_good(before, failure, now, generation)
            if failure.permanent
            else degraded(before, failure, now, generation)
        )
        if after == before:
            return
        await self._patch_status(meta["namespace"], meta["name"], after)
        was = is_degraded(before)
        if was is None or was.reason != failure.reason or failure.permanent:
            self._emit(body, Event("Warning", failure.reason, failure.message))
        self._state((meta["namespace"], meta["name"])).phase = after.phase.value
        self._count_phases()

    def _recovered(self, key: tuple[str, str], result: Plan, generation: int) -> Plan:
        """A successful reconcile: the backoff starts over and a Degraded condition turns False."""
        self._state(key).failures = 0
        healed = degraded(result.status, None, self.clock(), generation)
        if healed == result.status:
            return result
        was = is_degraded(result.status)
        message = f"recovered from {was.reason if was else 'a failure'}"
        return replace(result, status=healed, events=(*result.events, Event("Normal", "Recovered", message)))

    async def _findings(self, namespace: str, jobs: list[dict[str, Any]], status: LoopStatus) -> dict[str, Finding]:
        """Reads about Jobs only what their status cannot say, and only for the few that need it: why a Job
        without a ready pod cannot run (its FailedCreate events, or its pods' waiting reasons), and the last log
        line of a stage that rejected its input (while the loop has not failed yet)."""
        findings: dict[str, Finding] = {}
        for job in jobs:
            meta = job["metadata"]
            jobset = bool(job.get(FROM_JOBSET))  # a JobSet's pods and events are its child Jobs'
            found: Finding | None = None
            if needs_diagnosis(job, self.clock()):
                if has_pods(job):
                    found = finding_from_pods(await self.api.list_job_pods(namespace, meta["name"], jobset))
                elif jobset:
                    found = finding_from_events(await self.api.list_jobset_child_events(namespace, meta["name"]))
                else:
                    found = finding_from_events(await self.api.list_job_events(namespace, meta["name"], meta["uid"]))
            elif rejected_input(job) and status.phase not in TERMINAL_PHASES:
                found = termination_message(await self.api.list_job_pods(namespace, meta["name"], jobset))
            elif job_failed(job) and status.phase not in TERMINAL_PHASES:
                found = oom_killed(await self.api.list_job_pods(namespace, meta["name"], jobset))
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
            await self._start_stage(action, loop, identity)
        elif isinstance(action, MeasureGates):
            provider = await self._provider(loop, identity, store)
            key = (identity.namespace, identity.name)
            taken = await self.offload.run(key, measure_gates, loop.spec, action, provider, self.clock)
            record(memory.measurements, taken)
            for measurements in taken.values():
                for measurement in measurements:
                    if self.metrics:
                        self.metrics.gate_measured(measurement.phase.value)
        else:
            key = (identity.namespace, identity.name)
            await self.offload.run(key, promote, store, loop.spec.storage.uri, action, self.clock())

    async def _start_stage(self, action: StartStage, loop: SelfImprovementLoop, identity: LoopIdentity) -> None:
        """The ConfigMap, then the engine's objects (a Job; or a group's Service and Indexed Job), each created if
        absent: a replayed start creates nothing twice."""
        runtime = loop.spec.runtime.for_stage(action.stage)
        nodes = stage_nodes(loop.spec, action.stage)
        engine = choose_engine(
            runtime.workload, nodes, nodes > 1 and await self.jobset_served(), engine_field(loop.spec, action.stage)
        )
        try:
            *companions, workload = stage_objects(engine, identity, loop.spec, action, self.default_image)
        except ValueError as error:  # no image in the spec nor the operator's default
            raise StageImageMissing(str(error)) from error
        await self._require_credentials(loop, identity)
        await self.api.create(stage_configmap(identity, action, loop.spec))
        for companion in companions:
            await self.api.create(companion)
        created = await self.api.create(workload)
        if created.created:
            log.info("created %s %s/%s (engine %s)", workload["kind"], identity.namespace, action.run_name, engine)
            if self.metrics:
                self.metrics.job_created(action.stage)
                if action.stage == "acquire" and action.attempt == 1:
                    self.metrics.iteration_started()

    # -- engines ------------------------------------------------------------------------------------------------
    async def jobset_served(self) -> bool:
        """Whether the operator may use JobSets and the API server serves them (cached: see kube/discovery.py)."""
        if not self.jobsets_enabled:
            return False
        return await self.discovery.served(self.api.serves, JOBSET_GROUP, JOBSET_VERSION, JOBSET_PLURAL)

    async def _jobsets_as_jobs(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """The loop's JobSets, read as the Jobs observe_jobs reads (none asked for where JobSets are not served)."""
        if not await self.jobset_served():
            return []
        return [as_job(jobset) for jobset in await self.api.list_jobsets(namespace, name)]

    async def _store_credentials(
        self, loop: SelfImprovementLoop, namespace: str, generation: int
    ) -> S3Credentials | None:
        """The S3 keys in the loop's credentials Secret, which the operator reads the store with, as its stage pods
        do: an operator in a cluster has no keys of its own for each team's bucket. Read once per loop generation
        (and again after a failure); without a Secret, or for a file:// store, the operator's own environment
        (e.g. an IAM role) serves. A Secret that is missing or lacks the keys is SecretUnavailable: Degraded, naming
        it, healed once it is fixed."""
        secret = loop.spec.storage.credentials_secret
        if secret is None or not is_remote(loop.spec.storage.uri):
            return None
        key = (namespace, loop.metadata.name)
        state = self._state(key)
        if state.credentials is not None and state.credentials[0] == (secret, generation):
            return state.credentials[1]
        try:
            data = await self.api.read_secret(namespace, secret)
        except KeyError as error:
            raise SecretUnavailable(
                f"spec.storage.credentialsSecret: {error.args[0]}; create it with AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or fix the name"
            ) from None
        missing = [k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not data.get(k)]
        if missing:
            raise SecretUnavailable(
                f"spec.storage.credentialsSecret: Secret {namespace}/{secret} has no {' and no '.join(missing)}; "
                "add the keys the store needs"
            )
        credentials = S3Credentials(
            data["AWS_ACCESS_KEY_ID"], data["AWS_SECRET_ACCESS_KEY"], data.get("AWS_SESSION_TOKEN") or None
        )
        state.credentials = ((secret, generation), credentials)
        state.verified_secret = (secret, generation)  # read just now: it exists
        return credentials

    async def _require_credentials(self, loop: SelfImprovementLoop, identity: LoopIdentity) -> None:
        """The storage Secret exists before a Job refers to it (else its pod would hang in
        CreateContainerConfigError, visible only on the pod). Checked once per loop generation (it was a GET per
        stage start, ~1.3 requests per transition): a Secret deleted later shows on the stage's pod, which the
        runner diagnoses (CreateContainerConfigError) and shows on the loop."""
        secret = loop.spec.storage.credentials_secret
        if secret is None:
            return
        key = (identity.namespace, identity.name)
        at = (secret, loop.metadata.generation)
        state = self._state(key)
        if state.verified_secret == at:
            return
        problem = await self.api.secret_problem(identity.namespace, secret)
        if problem is not None:
            raise SecretUnavailable(
                f"spec.storage.credentialsSecret: {problem}; create it with AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or fix the name"
            )
        state.verified_secret = at

    async def _provider(self, loop: SelfImprovementLoop, identity: LoopIdentity, store: Store) -> MetricsProvider:
        """Prometheus (token and CA read from the loop's Secrets) when the spec names it, else the manifests.

        A Secret that is missing or unusable fails the reconcile with SecretUnavailable (the loop shows it as
        Degraded and heals once the Secret is there); no measurement is taken without it.
        """
        prometheus = loop.spec.promotion.prometheus
        if prometheus is None:
            return ManifestProvider(store, loop.spec.storage.uri)
        from sil_operator.gates.prometheus import PrometheusProvider

        token = None
        if prometheus.bearer_token_secret is not None:
            ref = prometheus.bearer_token_secret
            token = (await self._secret_key(identity, ref.name, ref.key, "bearerTokenSecret")).strip()
            if not token:
                raise SecretUnavailable(
                    f"promotion.prometheus.bearerTokenSecret: Secret {identity.namespace}/{ref.name} key "
                    f"{ref.key!r} is empty; put the token in it"
                )
        ca_file = None
        if prometheus.ca_secret is not None:
            ref = prometheus.ca_secret
            pem = await self._secret_key(identity, ref.name, ref.key, "caSecret")
            ca_file = str(self.ca_dir / f"{identity.uid}.pem")
        key = (identity.namespace, identity.name)

        def build() -> PrometheusProvider:
            if ca_file is not None:
                Path(ca_file).write_text(pem, encoding="utf-8")
            try:
                return PrometheusProvider(
                    prometheus.address,
                    bearer_token=token,
                    ca_file=ca_file,
                    insecure_skip_verify=prometheus.insecure_skip_verify,
                    timeout=float(prometheus.timeout_seconds),
                )
            except ssl.SSLError as error:
                ref = prometheus.ca_secret
                where = f"Secret {identity.namespace}/{ref.name} key {ref.key!r}" if ref else "the CA"
                raise SecretUnavailable(
                    f"promotion.prometheus.caSecret: {where} is not a PEM CA certificate ({error}); fix the Secret"
                ) from error

        return await self.offload.run(key, build)

    async def _secret_key(self, identity: LoopIdentity, name: str, key: str, field_name: str) -> str:
        try:
            return await self.api.read_secret_key(identity.namespace, name, key)
        except KeyError as error:
            raise SecretUnavailable(
                f"promotion.prometheus.{field_name}: {error.args[0]}; create the Secret or fix the reference"
            ) from error

    def _count_phases(self) -> None:
        if self.metrics:
            self.metrics.set_loop_phases(Counter(state.phase for state in self.loops.values() if state.phase))

    async def _save(self, body: Mapping[str, Any], before: LoopStatus, result: Plan) -> None:
        meta = body["metadata"]
        if result.status != before:
            await self._patch_status(meta["namespace"], meta["name"], result.status)
        for event in result.events:
            self._emit(body, event)
        if self.metrics:
            _record_metrics(self.metrics, before, result)

    async def _patch_status(self, namespace: str, name: str, status: LoopStatus) -> None:
        """The one status write of a reconcile; the loop it returns is remembered until the watch catches up."""
        written = await self.api.patch_loop_status(namespace, name, status_to_patch(status))
        self._state((namespace, name)).written = written

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
        await self._patch_status(meta["namespace"], meta["name"], failed)
        self._emit(body, Event("Warning", "InvalidSpec", message))
        return ReconcileResult(None, failed)


RETRIED_AFTER_SPEC_CHANGE = frozenset({StageImageMissing.reason})
"""Reasons a runner ends a loop Failed with, that a new spec generation may have fixed."""


def _retry_after_spec_change(status: LoopStatus, generation: int) -> LoopStatus:
    """A loop the runner failed for good (e.g. no stage image) runs again once its spec changed."""
    failed = next((c for c in status.conditions if c.type == "Failed" and c.status == "True"), None)
    if (
        status.phase is LoopPhase.FAILED
        and failed is not None
        and failed.reason in RETRIED_AFTER_SPEC_CHANGE
        and failed.observed_generation != generation
    ):
        return status.model_copy(update={"phase": LoopPhase.RUNNING, "message": None})
    return status


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


def _freshest(seen: Mapping[str, Any], written: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The newer of the watched loop and the operator's last write of it, by resourceVersion; None when they are of
    the same object but cannot be ordered (then the caller reads the loop)."""
    if written is None:
        return seen
    if (seen.get("metadata") or {}).get("uid") != (written.get("metadata") or {}).get("uid"):
        return seen  # the loop was recreated: the write was to its predecessor
    watched, wrote = resource_version(seen), resource_version(written)
    if watched is None or wrote is None:
        return None
    return written if wrote > watched else seen
