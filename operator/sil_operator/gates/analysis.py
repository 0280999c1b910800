"""Gate analysis without I/O: a measurement's phase from its value, a gate's phase from its measurements.

Semantics follow Argo Rollouts analysis, which our users already know:
- a measurement is Successful / Failed by its conditions; an empty result is Inconclusive; a query that could not
  run (Prometheus unreachable, bad query, condition error) is Error;
- a gate is Failed once failures exceed `failureLimit`, Inconclusive once inconclusive results exceed
  `inconclusiveLimit`, Error once consecutive errors exceed `consecutiveErrorLimit` (Error over Inconclusive over
  Failed when several are exceeded at once, see `assess`), and Successful when `count` conclusive (Successful or
  Failed) measurements were taken within those limits; an Inconclusive one is measured again (Argo counts it, and
  a gate would then complete on an empty answer). Only Successful ever promotes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sil_operator.api.spec import GateSpec
from sil_operator.api.status import MEASUREMENT_LIMIT, GatePhase, GateStatus, Measurement
from sil_operator.gates.cel import ConditionError, evaluate_condition

ERROR_RETRY_SECONDS = 5
"""An errored measurement is retried after max(interval, this), so a down Prometheus is not hammered."""

_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@dataclass(frozen=True)
class QueryContext:
    """The values of a gate query's placeholders (spec.QUERY_PLACEHOLDERS), but {{model}}, which is per query."""

    loop: str
    namespace: str
    iteration: int
    dataset: str | None = None
    """The primary (first) evaluation dataset's name; a query with {{dataset}} needs it."""


@dataclass(frozen=True)
class ResolvedGate:
    """A gate's queries with placeholders filled in: `candidate` gives `result`, `champion` gives `champion`."""

    name: str
    candidate: str
    champion: str | None


def render_query(template: str, context: QueryContext, model: str) -> str:
    values = {
        "loop": context.loop,
        "namespace": context.namespace,
        "iteration": str(context.iteration),
        "model": model,
    }
    if context.dataset is not None:
        values["dataset"] = context.dataset

    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise ConditionError(
                f"placeholder {{{{{key}}}}} has no value here: expected one of " + ", ".join(sorted(values))
            )
        return values[key]

    return _PLACEHOLDER.sub(substitute, template)


def resolve_gate(gate: GateSpec, context: QueryContext) -> ResolvedGate:
    has_model = any(m.group(1) == "model" for m in _PLACEHOLDER.finditer(gate.query))
    return ResolvedGate(
        name=gate.name,
        candidate=render_query(gate.query, context, "candidate"),
        champion=render_query(gate.query, context, "champion") if has_model else None,
    )


def measurement_phase(gate: GateSpec, result: float, champion: float | None) -> GatePhase:
    """Argo's rule: both conditions → the one that holds, Inconclusive if neither; one → that one decides."""
    success = evaluate_condition(gate.success_condition, result, champion) if gate.success_condition else None
    failure = evaluate_condition(gate.failure_condition, result, champion) if gate.failure_condition else None
    if success is not None and failure is not None:
        if success and not failure:
            return GatePhase.SUCCESSFUL
        if failure:
            return GatePhase.FAILED
        return GatePhase.INCONCLUSIVE
    if success is not None:
        return GatePhase.SUCCESSFUL if success else GatePhase.FAILED
    return GatePhase.FAILED if failure else GatePhase.SUCCESSFUL


def record(status: GateStatus, measurement: Measurement) -> GateStatus:
    """Adds a measurement to the gate's counters and its bounded history (Argo's MetricResult counters)."""
    phase = measurement.phase
    return status.model_copy(
        update={
            "successful": status.successful + (phase is GatePhase.SUCCESSFUL),
            "failed": status.failed + (phase is GatePhase.FAILED),
            "inconclusive": status.inconclusive + (phase is GatePhase.INCONCLUSIVE),
            "error": status.error + (phase is GatePhase.ERROR),
            "consecutive_error": status.consecutive_error + 1 if phase is GatePhase.ERROR else 0,
            "measurements": [*status.measurements, measurement][-MEASUREMENT_LIMIT:],
        }
    )


def assess(gate: GateSpec, status: GateStatus) -> GatePhase:
    """The gate's phase from its counters.

    When several limits are exceeded at once, Error wins over Inconclusive, which wins over Failed: Argo Rollouts'
    `assessMetricFailureInconclusiveOrError` (analysis/analysis.go, since v0.8.0) checks failureLimit, then
    inconclusiveLimit, then consecutiveErrorLimit, each later check overwriting the phase of an earlier one.
    (Argo's `IsWorse` order, where Failed is the worst, ranks whole metrics against each other; here every
    non-Successful gate already blocks the promotion on its own.)
    """
    if status.consecutive_error > gate.consecutive_error_limit:
        return GatePhase.ERROR
    if status.inconclusive > gate.inconclusive_limit:
        return GatePhase.INCONCLUSIVE
    if status.failed > gate.failure_limit:
        return GatePhase.FAILED
    if status.successful + status.failed >= gate.count:
        # Conclusive measurements only: an empty result (Inconclusive) within inconclusiveLimit is measured again,
        # it never completes a gate (Argo counts it, so a count-1 gate with one empty answer would promote).
        return GatePhase.SUCCESSFUL
    return GatePhase.RUNNING if status.measurements else GatePhase.PENDING


def next_measurement_at(gate: GateSpec, status: GateStatus, ready_at: datetime) -> datetime:
    """When the next measurement is due: after initialDelay, then every interval; errors back off a little."""
    if not status.measurements:
        return ready_at + timedelta(seconds=gate.initial_delay_seconds)
    last = status.measurements[-1]
    delay = gate.interval_seconds
    if last.phase is GatePhase.ERROR:
        delay = max(delay, ERROR_RETRY_SECONDS)
    return last.at + timedelta(seconds=delay)
