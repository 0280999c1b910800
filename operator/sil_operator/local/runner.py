"""`sil run`: the loop on one machine. Stages are subprocesses; the status lives in `<storage>/status.json`.

The runner is a thin executor around the planner: observe (manifests in the store, the stage process), plan,
carry out the actions, write the status once, print what happened, wait for the next change. Interrupted at any
moment (Ctrl-C or kill -9), the same command continues from what it observes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from sil_operator.api.spec import SelfImprovementLoop
from sil_operator.api.status import TERMINAL_PHASES, LoopPhase, LoopStatus
from sil_operator.gates.providers import ManifestProvider, MetricsProvider
from sil_operator.local.containers import StageContainers
from sil_operator.local.executor import LocalExecutor, StageProcess
from sil_operator.manifests import ManifestCache
from sil_operator.planner import (
    Event,
    MeasureGates,
    Observation,
    Plan,
    Promote,
    StageObservation,
    StartStage,
    plan,
)
from sil_operator.promotion import promote
from sil_operator.rounds import (
    GateMeasurements,
    StageRun,
    exited,
    manifest_missing,
    measure_gates,
    record,
    running,
    succeeded,
)
from sil_operator.stageconfig import LoopRef
from sil_stages.core.contract import (
    STAGES,
    Manifest,
    manifest_uri,
    stage_uri,
    utcnow,
)
from sil_stages.core.store import Store, StoreError, is_remote, local_path

STATUS_NAME = "status.json"
POLL_SECONDS = 1.0


class RunnerBusy(RuntimeError):
    """Another `sil run` holds this loop's lock."""


def spec_hash(loop: SelfImprovementLoop) -> str:
    return hashlib.sha256(loop.spec.model_dump_json().encode()).hexdigest()[:16]


def run_dir_for(storage_uri: str) -> Path:
    """Where local-only files go (stage configs, logs, the launch journal): inside a file:// store, else a cache."""
    if not is_remote(storage_uri):
        return local_path(storage_uri) / "local"
    digest = hashlib.sha256(storage_uri.encode()).hexdigest()[:16]
    return Path.home() / ".cache" / "selfimprove" / "runs" / digest


def status_uri(storage_uri: str) -> str:
    return f"{storage_uri.rstrip('/')}/{STATUS_NAME}"


def load_status(store: Store, storage_uri: str) -> LoopStatus:
    uri = status_uri(storage_uri)
    if not store.exists(uri):
        return LoopStatus()
    try:
        return LoopStatus.model_validate_json(store.read_bytes(uri))
    except ValidationError as error:
        raise StoreError(
            f"{uri}: not a loop status ({error.errors()[0]['msg']}); delete it and run again: finished stages are "
            "kept in the store and not redone"
        ) from error


@contextmanager
def exclusive(run_dir: Path) -> Iterator[None]:
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / ".lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunnerBusy(f"another `sil run` is running this loop (lock {run_dir / '.lock'})") from None
        yield


@dataclass
class LocalRunner:
    loop: SelfImprovementLoop
    store: Store
    loop_dir: Path
    """The loop file's directory: put on PYTHONPATH so `module:function` verifiers next to it import."""
    on_event: Callable[[Event, LoopStatus], None] = lambda event, status: None
    on_status: Callable[[LoopStatus], None] = lambda status: None
    clock: Callable[[], datetime] = utcnow
    provider: MetricsProvider | None = None
    stage_image: str | None = None
    """Run each stage in a container of this image (`sil run --stage-image`, sil_operator.local.containers)."""
    container_engine: str = "podman"
    _pending: GateMeasurements = field(default_factory=dict)

    def __post_init__(self) -> None:
        spec = self.loop.spec
        self.storage = spec.storage.uri
        self.run_dir = run_dir_for(self.storage)
        self._manifests = ManifestCache(self.store, self.storage)
        env = dict(spec.runtime.env or {})
        containers = None
        if self.stage_image:
            store_dir = self.run_dir if is_remote(self.storage) else local_path(self.storage)
            containers = StageContainers(
                image=self.stage_image,
                store_dir=store_dir,
                python_path=[self.loop_dir],
                env=env,
                engine=self.container_engine,
            )
        self.executor = LocalExecutor(self.run_dir, env, [self.loop_dir], containers=containers)
        self._provider: MetricsProvider = self.provider or local_provider(self.loop, self.store)

    # -- the loop -------------------------------------------------------------------------------------------
    def run(self) -> LoopStatus:
        with exclusive(self.run_dir):
            try:
                return self._run()
            finally:
                self.executor.stop_all()

    def _run(self) -> LoopStatus:
        status = load_status(self.store, self.storage)
        digest = spec_hash(self.loop)
        generation = status.observed_generation or 1
        if status.spec_hash is not None and status.spec_hash != digest:
            generation += 1
        ref = LoopRef(self.loop.metadata.name, self.loop.metadata.namespace, generation)
        status = status.model_copy(update={"spec_hash": digest})
        while True:
            result = plan(self.loop.spec, ref, status, self.observe(status), self.clock())
            self._pending = {}
            for action in result.actions:
                self.execute(action)
            status = self.save(status, result)
            if status.phase in TERMINAL_PHASES:
                return status
            if status.phase is LoopPhase.SUSPENDED and not self.executor.running():
                return status
            if not result.actions:
                self.executor.wait(min(result.requeue_after or POLL_SECONDS, POLL_SECONDS))

    def save(self, before: LoopStatus, result: Plan) -> LoopStatus:
        """Writes the status once per round (skipped when unchanged), then reports the round's events."""
        if result.status != before:
            self.store.write_text(status_uri(self.storage), result.status.model_dump_json(by_alias=True, indent=2))
        for event in result.events:
            self.on_event(event, result.status)
        self.on_status(result.status)
        return result.status

    # -- observing ------------------------------------------------------------------------------------------
    def observe(self, status: LoopStatus) -> Observation:
        """Stages of the latest iteration that has any: the status may lag one iteration behind the store when
        the runner died between starting an iteration and writing its status."""
        iteration = status.iteration
        if self.manifest(iteration + 1, STAGES[0]) is not None:
            iteration += 1
        stages: dict[str, StageObservation] = {}
        if iteration > 0:
            for stage in STAGES:
                seen = self.observe_stage(iteration, stage)
                if seen is not None:
                    stages[stage] = seen
        return Observation(iteration=iteration, stages=stages, measurements=dict(self._pending))

    def observe_stage(self, iteration: int, stage: str) -> StageObservation | None:
        """The stage's manifest (finished), else its process: running, or ended without the manifest (failed)."""
        manifest = self.manifest(iteration, stage)
        process = self.executor.processes.get((iteration, stage))
        if manifest is not None:  # without a process of this runner: finished under an earlier `sil run`
            run = StageRun.started_by(process.action) if process else StageRun()
            started = process.started_at if process else manifest.started_at
            return succeeded(run, started, manifest.finished_at, manifest.metrics, manifest.findings)
        if process is None:
            return None
        code = process.process.poll()
        if code is None:
            return running(StageRun.started_by(process.action), process.started_at)
        return failed_stage(process, code, manifest_uri(stage_uri(self.storage, iteration, stage)), self.clock())

    def manifest(self, iteration: int, stage: str) -> Manifest | None:
        return self._manifests.get(iteration, stage)

    # -- acting ---------------------------------------------------------------------------------------------
    def execute(self, action: StartStage | MeasureGates | Promote) -> None:
        if isinstance(action, StartStage):
            self.executor.processes.pop((action.iteration, action.stage), None)
            self.executor.start(action, self.clock())
        elif isinstance(action, MeasureGates):
            record(self._pending, measure_gates(self.loop.spec, action, self._provider, self.clock))
        else:
            promote(self.store, self.storage, action, self.clock())


def failed_stage(running: StageProcess, code: int, manifest: str, now: datetime) -> StageObservation:
    """A stage process that ended without its manifest (rounds.exited: exit code 2 is permanent;
    rounds.manifest_missing: exit code 0). What differs from a Job is only the message: it leads with the exit code
    and ends with the log's path, where the whole output is."""
    run = StageRun.started_by(running.action)
    if code == 0:
        seen = manifest_missing(run, manifest, running.started_at, now)
    else:
        seen = exited(run, code, running.last_error_line(), running.started_at, now)
    return replace(seen, message=f"exit code {code}: {seen.message} (log: {running.log_path})")


def local_provider(loop: SelfImprovementLoop, store: Store) -> MetricsProvider:
    """Prometheus when the spec names one (no Secrets locally: no token), else the evaluate manifests."""
    prometheus = loop.spec.promotion.prometheus
    if prometheus is None:
        return ManifestProvider(store, loop.spec.storage.uri)
    from sil_operator.gates.prometheus import PrometheusProvider

    return PrometheusProvider(
        prometheus.address,
        insecure_skip_verify=prometheus.insecure_skip_verify,
        timeout=float(prometheus.timeout_seconds),
    )


def read_launches(storage_uri: str) -> list[dict[str, object]]:
    """The launch journal: one entry per stage process started, across every `sil run` of this loop."""
    path = run_dir_for(storage_uri) / "launches.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
