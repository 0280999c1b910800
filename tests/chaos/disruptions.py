"""The disruptions of a chaos run, one at a time (a lock), each counted and timed.

- operator: SIGKILL at seeded counts of completed stage Jobs (plus a seeded delay), started again at once (as a
  Deployment's restart would);
- s3: SeaweedFS SIGKILLed in a loop's promotion window (just after its evaluate Job completed), started again;
  then every champion.json must name a checkpoint whose files all match their manifest;
- prometheus: stopped when a loop's evaluate completed (its gate is about to measure), started after a while;
- apiserver: kube-apiserver SIGKILLed and started again (etcd keeps the data); the same operator process must go
  on creating Jobs without a restart.
"""

from __future__ import annotations

import json
import queue
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sil_stages.core.contract import Manifest, champion_uri, manifest_uri
from sil_stages.core.store import Store, StoreError
from sil_stages.core.verify import entries_under, verify_tree
from tests.chaos.audit import JobAudit
from tests.chaos.settings import KILLS_WITHIN, ChaosSettings
from tests.integration.controlplane import ControlPlane
from tests.integration.operator_process import OperatorProcess
from tests.servers.prometheus import PrometheusServer
from tests.servers.seaweedfs import SeaweedFSProcess

PROMETHEUS_DOWN_SECONDS = 12.0
"""Longer than two gate retries after an Error (sil_operator.gates.analysis.ERROR_RETRY_SECONDS = 5)."""
S3_DOWN_SECONDS = 1.5
APISERVER_RECOVERY_SECONDS = 180.0
"""A bound, not a schedule: a reconcile that failed while the API server was away waits at most 10 s before it
tries again (sil_operator.failures.UNREACHABLE_CAP_SECONDS; before that cap, recoveries measured 1.5 to 57.5 s),
and a restarted API server on a loaded machine takes seconds to serve again."""

_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chaos-spawner")
"""Starts every restarted process. The servers' processes get SIGKILL when the thread that started them ends
(PR_SET_PDEATHSIG, `tests.servers.processes.die_with_parent`), so they are started from this one thread, which
lives as long as the test process, never from a chaos thread that ends before the test does."""


def _spawn(start: Callable[[], None]) -> None:
    _SPAWNER.submit(start).result()


@dataclass
class Window:
    """When a server was away (UTC), and which loop's evaluate triggered it."""

    kind: str
    down: datetime
    up: datetime
    loop: str
    iteration: int


@dataclass
class Counts:
    operator_kills: int = 0
    operator_restarts: int = 0
    s3_kills: int = 0
    prometheus_stops: int = 0
    apiserver_restarts: int = 0
    apiserver_recovery_s: list[float] = field(default_factory=list)
    champion_checks: int = 0
    champion_bad: list[str] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def champion_problems(store: Store, storage_uris: list[str]) -> tuple[int, list[str]]:
    """Reads every loop's champion.json; for each one, checks (sha256 and size, sil_stages.core.verify) that the
    checkpoint it names matches its optimize manifest. Returns (pointers checked, problems)."""
    checked, problems = 0, []
    for storage in storage_uris:
        pointer_uri = champion_uri(storage)
        if not store.exists(pointer_uri):
            continue
        pointer = json.loads(store.read_text(pointer_uri))
        checkpoint = str(pointer["uri"]).rstrip("/")
        optimize_dir = checkpoint.rsplit("/", 1)[0]
        checked += 1
        try:
            manifest = Manifest.model_validate_json(store.read_bytes(manifest_uri(optimize_dir)))
            entries = entries_under(manifest, "checkpoint")
            if not entries:
                problems.append(f"{pointer_uri}: {checkpoint} has no files in its manifest")
            verify_tree(store, checkpoint, entries)
        except StoreError as error:
            problems.append(f"{pointer_uri}: {error}")
    return checked, problems


class Chaos:
    """Runs the disruptions of `settings` in two threads: operator kills at seeded counts of completed stage Jobs,
    and the server disruptions at evaluate completions (both fed by `evaluate_completed`)."""

    def __init__(
        self,
        settings: ChaosSettings,
        plane: ControlPlane,
        operator: OperatorProcess,
        weed: SeaweedFSProcess,
        prometheus: PrometheusServer,
        store: Store,
        storage_uris: list[str],
        audit: Callable[[], JobAudit],
    ) -> None:
        self.settings = settings
        self.counts = Counts()
        self._plane, self._operator, self._weed, self._prometheus = plane, operator, weed, prometheus
        self._store, self._storage_uris, self._audit = store, storage_uris, audit
        self._rng = random.Random(settings.seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._evaluations: queue.Queue[tuple[str, int]] = queue.Queue()
        self._completed = 0
        self._progress = threading.Condition()
        due = range(1, max(settings.operator_kills, int(settings.stage_jobs * KILLS_WITHIN)) + 1)
        self._kills_due = sorted(self._rng.sample(due, settings.operator_kills))
        self._threads = [
            threading.Thread(target=self._guard(self._kill_operator_now_and_then), daemon=True),
            threading.Thread(target=self._guard(self._disrupt_servers), daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def evaluate_completed(self, loop: str, iteration: int, stage: str) -> None:
        """JobAudit's callback: a stage Job completed (the kills count them); after an evaluate, that loop's gate
        and promotion come next."""
        with self._progress:
            self._completed += 1
            self._progress.notify_all()
        if stage == "evaluate":
            self._evaluations.put((loop, iteration))

    def _guard(self, body: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                body()
            except Exception as error:  # recorded: the test fails on it after the loops end
                self.counts.errors.append(f"{body.__name__}: {type(error).__name__}: {error}")

        return run

    # -- the operator -----------------------------------------------------------------------------------------
    def _kill_operator_now_and_then(self) -> None:
        low, high = self.settings.kill_interval
        for due in self._kills_due:
            with self._progress:
                while self._completed < due:
                    if self._stop.is_set():
                        return
                    self._progress.wait(0.5)
            if self._stop.wait(self._rng.uniform(low, high)):
                return
            with self._lock:
                self._operator.kill()
                self.counts.operator_kills += 1
                _spawn(self._operator.start)
                self.counts.operator_restarts += 1

    # -- the servers ------------------------------------------------------------------------------------------
    def _disrupt_servers(self) -> None:
        actions = {"s3": self._s3_outage, "prometheus": self._prometheus_outage, "apiserver": self._apiserver_restart}
        for kind in self.settings.disruptions:
            while True:
                if self._stop.is_set():
                    return
                try:
                    loop, iteration = self._evaluations.get(timeout=0.5)
                    break
                except queue.Empty:
                    continue
            with self._lock:
                actions[kind](loop, iteration)
            while not self._evaluations.empty():  # the next disruption waits for an evaluate that ends after this one
                self._evaluations.get_nowait()

    def _s3_outage(self, loop: str, iteration: int) -> None:
        time.sleep(self._rng.uniform(0.5, 2.5))  # into the gate measurement and the promotion that follows
        down = datetime.now(UTC)
        self._weed.kill()
        self.counts.s3_kills += 1
        time.sleep(S3_DOWN_SECONDS)
        _spawn(self._weed.start)
        self.counts.windows.append(Window("s3", down, datetime.now(UTC), loop, iteration))
        checked, problems = champion_problems(self._store, self._storage_uris)
        self.counts.champion_checks += checked
        self.counts.champion_bad += problems

    def _prometheus_outage(self, loop: str, iteration: int) -> None:
        down = datetime.now(UTC)
        self._prometheus.stop()
        self.counts.prometheus_stops += 1
        time.sleep(PROMETHEUS_DOWN_SECONDS)
        up = datetime.now(UTC)  # before the restart: Prometheus may answer from the moment it is started
        _spawn(self._prometheus.start)
        self.counts.windows.append(Window("prometheus", down, up, loop, iteration))

    def _apiserver_restart(self, loop: str, iteration: int) -> None:
        """Restarts kube-apiserver and waits (still holding the lock: no operator kill meanwhile) until the same
        operator process has created a Job again, or every loop is done."""
        pid = self._operator.process.pid if self._operator.process else None
        down = datetime.now(UTC)
        _spawn(lambda: self._plane.restart_apiserver(down_seconds=1.0))
        self.counts.apiserver_restarts += 1
        restarted = time.monotonic()
        before = self._audit().creations
        while time.monotonic() - restarted < APISERVER_RECOVERY_SECONDS and not self._stop.is_set():
            if self._audit().creations > before:
                break
            time.sleep(0.5)
        else:
            if not self._stop.is_set():
                raise AssertionError(
                    f"the operator created no Job within {APISERVER_RECOVERY_SECONDS:.0f} s after "
                    "kube-apiserver restarted"
                )
        self.counts.apiserver_recovery_s.append(round(time.monotonic() - restarted, 1))
        current = self._operator.process.pid if self._operator.process else None
        assert current == pid and self._operator.process is not None and self._operator.process.poll() is None, (
            "the operator recovered only by a restart"
        )
        self.counts.windows.append(Window("apiserver", down, datetime.now(UTC), loop, iteration))
