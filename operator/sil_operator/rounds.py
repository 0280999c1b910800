"""What both runners do in a round besides starting stages: say what they saw of a stage, measure gates, promote.

A round is observe → plan → act → save. `sil run` (local/runner.py: a process per stage) and the operator
(kube/observe.py and kube/controller.py: a Job per stage) differ only in how they see a stage run and how they
start one. The rest is written here once, so the two cannot drift apart:

- the stage observations the planner reads (`succeeded`, `running`, `queued`, `manifest_missing`, `exited`): the
  reasons, messages, attempt counts and the permanent flag of a failure (exit code 2: the stage rejected its input,
  a retry will not help);
- carrying out MeasureGates (`measure_gates`, with `record` to keep the measurements for the next plan); Promote
  has its one implementation in `sil_operator.promotion.promote`, which both runners call.

Pure but for `measure_gates`, which asks the metrics provider (blocking I/O: the operator runs it in its offload
pool).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sil_operator.api.spec import LoopSpec
from sil_operator.api.status import Measurement, StagePhase
from sil_operator.gates.measure import measure
from sil_operator.gates.providers import MetricsProvider
from sil_operator.planner import (
    INPUT_REJECTED,
    MANIFEST_MISSING,
    MeasureGates,
    StageObservation,
    StartStage,
)
from sil_stages.core.errors import EXIT_INPUT_REJECTED

GateMeasurements = dict[tuple[int, str], list[Measurement]]
"""Gate measurements by (iteration, gate name): what MeasureGates took, until the next plan reads them
(`Observation.measurements`)."""


# -- what a runner saw of a stage ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StageRun:
    """Which run of a stage was seen and the attempts its stage has used: the part every observation carries.

    Each runner knows these its own way (a process was started by a StartStage; a Job has a name, a run
    annotation and failed pods); the constructors below decide the rest the same way for both.
    """

    run_name: str | None = None
    """None when the run is not known (a manifest found in the store with no process of this runner behind it)."""
    run: int = 1
    """Which run of the stage: 1 for the first, then 2, 3, ... per retry the planner decided."""
    attempts: int = 0
    """Failed attempts seen so far, over every run of the stage in this iteration, this run's included."""
    earlier_attempts: int = 0
    """The failed attempts of the earlier runs alone: a run that failed used at least one attempt beyond them."""

    @classmethod
    def started_by(cls, action: StartStage) -> StageRun:
        """The run `action` started, none of whose attempts has failed yet (a process is one attempt)."""
        return cls(action.run_name, action.run, action.attempt - 1, action.attempt - 1)


def succeeded(
    run: StageRun,
    started: datetime | None,
    finished: datetime | None,
    metrics: Mapping[str, float],
    findings: Mapping[str, Sequence[str]] | None = None,
) -> StageObservation:
    """The stage's manifest is in the store: it finished, and the manifest's metrics and findings are its result."""
    return StageObservation(
        phase=StagePhase.SUCCEEDED,
        attempts=run.attempts,
        run_name=run.run_name,
        run=run.run,
        started_at=started,
        finished_at=finished,
        metrics=dict(metrics),
        findings=dict(findings or {}),
    )


def running(
    run: StageRun,
    started: datetime | None,
    *,
    reason: str | None = None,
    message: str | None = None,
    recheck_after: float | None = None,
) -> StageObservation:
    """In progress. With a `reason` the stage is blocked (it cannot run: FailedCreate, ImagePullBackOff, ...);
    `recheck_after` asks the runner to look again when no event will wake it."""
    return StageObservation(
        phase=StagePhase.RUNNING,
        attempts=run.attempts,
        run_name=run.run_name,
        run=run.run,
        started_at=started,
        reason=reason,
        message=message,
        recheck_after=recheck_after,
    )


def queued(run: StageRun, started: datetime | None, message: str) -> StageObservation:
    """Held by a queue (not admitted yet, or preempted): in progress, neither retried nor a failed attempt."""
    return StageObservation(
        phase=StagePhase.QUEUED,
        attempts=run.attempts,
        run_name=run.run_name,
        run=run.run,
        started_at=started,
        message=message,
    )


def manifest_missing_message(manifest: str | None) -> str:
    """Why a stage that exited 0 without its manifest did not finish. `manifest`: its URI (None: not known)."""
    where = manifest or "its manifest"
    return f"the stage exited 0 without writing {where}; the contract says the manifest is written last"


def manifest_missing(
    run: StageRun, manifest: str | None, started: datetime | None, finished: datetime | None
) -> StageObservation:
    """The stage exited 0 but wrote no manifest, which the contract says it writes last: it did not finish. One
    failed attempt more (the attempt that exited 0 is not among the failed ones yet), to be retried."""
    return StageObservation(
        phase=StagePhase.FAILED,
        attempts=run.attempts + 1,
        run_name=run.run_name,
        run=run.run,
        started_at=started,
        finished_at=finished,
        reason=MANIFEST_MISSING,
        message=manifest_missing_message(manifest),
    )


def exited(
    run: StageRun,
    exit_code: int | None,
    said: str,
    started: datetime | None,
    finished: datetime | None,
    *,
    reason: str = "Error",
) -> StageObservation:
    """A run that failed. Exit code 2 is a stage rejecting its input (sil_stages.core.errors.StageInputError): the
    failure is permanent (reason InputRejected) and the loop fails at once; any other failure is `reason` and is
    retried while the backoffLimit allows. `exit_code` None: not known (a Job's status does not say; the operator
    passes 2 when the Job's podFailurePolicy failed it). `said` becomes the message."""
    permanent = exit_code == EXIT_INPUT_REJECTED
    return StageObservation(
        phase=StagePhase.FAILED,
        attempts=max(run.attempts, run.earlier_attempts + 1),
        run_name=run.run_name,
        run=run.run,
        started_at=started,
        finished_at=finished,
        message=said,
        reason=INPUT_REJECTED if permanent else reason,
        permanent=permanent,
    )


# -- acting: gates and promotion ----------------------------------------------------------------------------


def measure_gates(
    spec: LoopSpec, action: MeasureGates, provider: MetricsProvider, clock: Callable[[], datetime]
) -> GateMeasurements:
    """One measurement of each gate the action names, keyed by (iteration, gate name). Each measurement is stamped
    with `clock()` as its queries start (the gate's interval counts from there). Never raises for a gate that cannot
    be answered: that is an Error measurement (gates.measure)."""
    gates = {gate.name: gate for gate in spec.promotion.gates}
    taken: GateMeasurements = {}
    for resolved in action.gates:
        measurement = measure(gates[resolved.name], resolved, provider, clock())
        taken.setdefault((action.iteration, resolved.name), []).append(measurement)
    return taken


def record(pending: MutableMapping[tuple[int, str], list[Measurement]], taken: GateMeasurements) -> None:
    """Adds a round's measurements to those the next plan has not read yet, after any already there."""
    for key, measurements in taken.items():
        pending.setdefault(key, []).extend(measurements)
