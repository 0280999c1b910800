"""The operator's own metrics (prometheus-client), for dashboards and alerts on the operator itself.

They live on a registry of their own rather than the process-wide default one: the exposition then holds exactly
these series (no surprises from libraries that register on the default registry), and tests can make as many
independent instances as they like.

Label values come from the operator's enums (loop phases, decisions, gate phases, stage names), so cardinality
stays bounded; loop names are deliberately not labels. The known label values are created at zero up front, so
that `rate()` and `increase()` see the first event, and a phase that empties reads 0 instead of disappearing.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

from sil_operator.api.status import Decision, GatePhase, LoopPhase
from sil_stages.core.contract import STAGES

STAGE_DURATION_BUCKETS: tuple[float, ...] = (
    1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 57600, 86400,
)  # fmt: skip
"""Seconds: a select stage takes seconds, an optimize stage on a large model hours; the top bucket is a day."""

_MEASURED_PHASES = (GatePhase.SUCCESSFUL, GatePhase.FAILED, GatePhase.INCONCLUSIVE, GatePhase.ERROR)
"""The phases a single measurement can have (Pending and Running are phases of a gate, not of a measurement)."""


class OperatorMetrics:
    """The operator's metrics; the controller calls one method per thing that happened."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._loops = Gauge(
            "selfimprove_loops",
            "SelfImprovementLoops watched by this operator, by status phase.",
            ["phase"],
            registry=self.registry,
        )
        self._iterations = Counter(
            "selfimprove_iterations_started_total",
            "Iterations started (the acquire stage of a new iteration was launched).",
            registry=self.registry,
        )
        self._decisions = Counter(
            "selfimprove_promotion_decisions_total",
            "Promotion decisions at the end of an iteration: Promoted (the candidate became champion) or Rejected.",
            ["decision"],
            registry=self.registry,
        )
        self._stage_seconds = Histogram(
            "selfimprove_stage_duration_seconds",
            "Wall-clock time of finished stage runs, from start to completion, by stage.",
            ["stage"],
            buckets=STAGE_DURATION_BUCKETS,
            registry=self.registry,
        )
        self._measurements = Counter(
            "selfimprove_gate_measurements_total",
            "Gate measurements taken, by the measurement's phase (Successful, Failed, Inconclusive, Error).",
            ["phase"],
            registry=self.registry,
        )
        self._leader = Gauge(
            "selfimprove_operator_leader",
            "1 while this replica leads (acts on loops), 0 while it waits for the Lease; 1 without --leader-elect.",
            registry=self.registry,
        )
        self._reconcile_errors = Counter(
            "selfimprove_reconcile_errors_total",
            "Reconciles of a loop that raised an error (they are retried).",
            registry=self.registry,
        )
        self._jobs = Counter(
            "selfimprove_jobs_created_total",
            "Kubernetes Jobs created for stage runs, by stage (an already existing Job is not counted).",
            ["stage"],
            registry=self.registry,
        )
        for phase in LoopPhase:
            self._loops.labels(phase=phase.value).set(0)
        for decision in Decision:
            self._decisions.labels(decision=decision.value)
        for measured in _MEASURED_PHASES:
            self._measurements.labels(phase=measured.value)
        for stage in STAGES:
            self._stage_seconds.labels(stage=stage)
            self._jobs.labels(stage=stage)
        self._phases_seen: set[str] = {phase.value for phase in LoopPhase}

    def set_loop_phases(self, counts: Mapping[str, int]) -> None:
        """The number of loops per phase now; phases missing from `counts` are set to 0."""
        self._phases_seen.update(counts)
        for phase in self._phases_seen:
            self._loops.labels(phase=phase).set(counts.get(phase, 0))

    def iteration_started(self) -> None:
        self._iterations.inc()

    def decided(self, decision: str) -> None:
        """`decision` is a Decision value: Promoted or Rejected."""
        self._decisions.labels(decision=str(decision)).inc()

    def stage_finished(self, stage: str, seconds: float) -> None:
        self._stage_seconds.labels(stage=stage).observe(seconds)

    def gate_measured(self, phase: str) -> None:
        """`phase` is the measurement's GatePhase value."""
        self._measurements.labels(phase=str(phase)).inc()

    def leading(self, leads: bool) -> None:
        self._leader.set(1.0 if leads else 0.0)

    def reconcile_failed(self) -> None:
        self._reconcile_errors.inc()

    def job_created(self, stage: str) -> None:
        self._jobs.labels(stage=stage).inc()

    def exposition(self) -> bytes:
        """The metrics in the Prometheus text format, as a scrape of `serve` returns them."""
        return generate_latest(self.registry)

    def serve(self, port: int, address: str = "127.0.0.1") -> tuple[WSGIServer, threading.Thread]:
        """Serves `/metrics` on address:port from a daemon thread; `server.shutdown()` stops it.

        The default address is loopback: exposing metrics beyond the pod is a decision (e.g. `0.0.0.0` for a
        ServiceMonitor), not an accident.
        """
        return start_http_server(port, addr=address, registry=self.registry)
