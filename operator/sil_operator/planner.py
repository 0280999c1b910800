"""The planner: from (spec, status, what was observed) to the next status and the actions that get there.

Pure: no I/O, no clock (the time is an input), no randomness. Both runners (kopf on Kubernetes, `sil run`
locally) call it on every reconcile and only carry out what it returns, so the loop logic exists once.

Level-triggered and restart-safe: every call recomputes the next step from the status and the observation.
A stage is started only when the observation shows no run of it (or a failed one with retries left), under a
deterministic name; so a runner that crashed after starting a stage and before writing status sees the stage
running (or finished) on its next call and starts nothing twice.

A run a queue holds (Kueue: Queued before admission, Preempted once suspended after it ran) is in progress like a
running one: waited for, never retried, not a failed attempt.

One iteration: acquire → select → optimize → evaluate → gates → Promote or Reject → stop or next iteration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sil_operator.api.spec import DEFAULT_BACKOFF_LIMIT, LoopSpec
from sil_operator.api.status import (
    HISTORY_LIMIT,
    IN_PROGRESS_STAGE_PHASES,
    TERMINAL_PHASES,
    ChampionStatus,
    Condition,
    Decision,
    GatePhase,
    GateStatus,
    IterationStatus,
    LoopPhase,
    LoopStatus,
    Measurement,
    StagePhase,
    StageStatus,
)
from sil_operator.diagnosis import champion_greedy, low_yield, why_not_improved
from sil_operator.gates.analysis import (
    QueryContext,
    ResolvedGate,
    assess,
    next_measurement_at,
    record,
    resolve_gate,
)
from sil_operator.stageconfig import AnyStageConfig, LoopRef, build_stage_config, checkpoint_uri
from sil_stages.core.contract import STAGES

INPUT_REJECTED = "InputRejected"
"""Stage reason: it exited EXIT_INPUT_REJECTED (2, a StageInputError: sil_stages.core.errors); the input is wrong,
a retry will not help, its failure is permanent."""
MANIFEST_MISSING = "ManifestMissing"
"""Stage reason: it exited 0 without writing its manifest, so it did not finish; a failed attempt."""

# -- inputs ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageObservation:
    """What a runner sees of one stage of the current iteration (a Job, or a process plus the manifest)."""

    phase: StagePhase
    attempts: int = 0
    """Attempts that failed, over every run of the stage in this iteration (a failed Job counts all of its)."""
    run_name: str | None = None
    run: int = 1
    """Which run of the stage this is (the newest one observed): 1 for the first, then 2, 3, ... per retry."""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    message: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    reason: str | None = None
    """Why it failed (InputRejected, ManifestMissing, ...) or, while running, why it cannot run (FailedCreate,
    ImagePullBackOff, ...): a running stage with a reason is blocked."""
    permanent: bool = False
    """A failure a retry cannot fix (the stage rejected its input: exit code 2); the loop fails at once."""
    recheck_after: float | None = None
    """Seconds after which the runner should look again although no event will say so (a stage waiting for
    pods, a manifest that could not be read)."""
    findings: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """The manifest's named items (evaluate: `<dataset>/contaminated` -> the evaluation items in the training data)."""

    @property
    def blocked(self) -> bool:
        return self.phase is StagePhase.RUNNING and self.reason is not None


@dataclass(frozen=True)
class Observation:
    iteration: int = 0
    """The iteration observed: status.iteration when the runner looked."""
    stages: Mapping[str, StageObservation] = field(default_factory=dict)
    """Stages of `iteration` that exist; absent means never started."""
    measurements: Mapping[tuple[int, str], Sequence[Measurement]] = field(default_factory=dict)
    """Gate measurements taken since the last plan, by (iteration, gate name): the results of MeasureGates."""

    def stages_of(self, iteration: int) -> Mapping[str, StageObservation]:
        return self.stages if iteration == self.iteration else {}

    def measurements_of(self, iteration: int, gate: str) -> Sequence[Measurement]:
        return self.measurements.get((iteration, gate), ())


# -- outputs --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartStage:
    iteration: int
    stage: str
    run_name: str
    attempt: int
    """The first attempt this run makes: failed attempts so far + 1 (a Job may make several)."""
    config: AnyStageConfig
    run: int = 1
    """The run number in `run_name`; a retry by the planner is a new run, never the old name again."""


@dataclass(frozen=True)
class MeasureGates:
    iteration: int
    gates: tuple[ResolvedGate, ...]


@dataclass(frozen=True)
class Promote:
    """Write champion.json: the candidate of `iteration` becomes champion."""

    iteration: int
    uri: str
    score: float | None


Action = StartStage | MeasureGates | Promote


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    status: LoopStatus
    actions: tuple[Action, ...] = ()
    events: tuple[Event, ...] = ()
    requeue_after: float | None = None
    """Seconds until the planner wants to be called again even if nothing is observed to change."""


# -- the planner ----------------------------------------------------------------------------------------------


def run_name(loop: str, iteration: int, stage: str, run: int = 1) -> str:
    """Deterministic: the same run of a stage always has the same name (a Job name on Kubernetes).

    The first run is `<loop>-<iteration>-<stage>`; a retry the planner decides (a raised backoffLimit, a stage
    that exited without its manifest) is a new run, `-r2`, `-r3`, ..., so it never collides with the failed
    Job, which still exists. Loop names are at most 40 characters, so a Job name stays within 63.
    """
    base = f"{loop}-{iteration}-{stage}"
    return base if run <= 1 else f"{base}-r{run}"


def backoff_limit(spec: LoopSpec, stage: str) -> int:
    limit = spec.runtime.for_stage(stage).backoff_limit
    return DEFAULT_BACKOFF_LIMIT if limit is None else limit


def plan(spec: LoopSpec, loop: LoopRef, status: LoopStatus, observed: Observation, now: datetime) -> Plan:
    return _Planner(spec, loop, observed, now).run(status)


class _Planner:
    """Holds the inputs of one plan() call; every method returns a new status (models are frozen)."""

    def __init__(self, spec: LoopSpec, loop: LoopRef, observed: Observation, now: datetime) -> None:
        self.spec = spec
        self.loop = loop
        self.observed = observed
        self.now = now
        self.actions: list[Action] = []
        self.events: list[Event] = []
        self.requeue_after: float | None = None

    def done(self, status: LoopStatus) -> Plan:
        return Plan(status, tuple(self.actions), tuple(self.events), self.requeue_after)

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.events.append(Event("Warning" if warning else "Normal", reason, message))

    # -- entry ----------------------------------------------------------------------------------------------
    def run(self, status: LoopStatus) -> Plan:
        status = self.observe_generation(status)
        if status.phase in TERMINAL_PHASES:
            if not self.reopened(status):
                return self.done(status)
            status = status.model_copy(update={"phase": LoopPhase.RUNNING})
            self.event("Resumed", f"maxIterations raised to {self.spec.max_iterations}: continuing")
        if status.iteration == 0:
            if self.spec.suspend:
                return self.done(self.suspended(status, "suspended before the first iteration"))
            return self.done(self.start_iteration(status, 1))
        return self.done(self.advance(status))

    def observe_generation(self, status: LoopStatus) -> LoopStatus:
        if status.observed_generation is not None and status.observed_generation != self.loop.generation:
            self.event(
                "SpecChanged",
                f"generation {self.loop.generation} observed: stages started from now on use the new spec",
            )
        return status.model_copy(update={"observed_generation": self.loop.generation})

    def reopened(self, status: LoopStatus) -> bool:
        """A loop that stopped at maxIterations continues when the user raises maxIterations."""
        complete = _condition(status, "Complete")
        return (
            status.phase is LoopPhase.SUCCEEDED
            and complete is not None
            and complete.reason == "MaxIterationsReached"
            and self.spec.max_iterations > status.iteration
        )

    # -- iterations -----------------------------------------------------------------------------------------
    def champion(self, status: LoopStatus) -> ChampionStatus:
        return status.champion or ChampionStatus(iteration=0, uri=self.spec.model.uri)

    def start_iteration(self, status: LoopStatus, index: int) -> LoopStatus:
        iteration = IterationStatus(index=index, started_at=self.now)
        history = [*status.iterations, iteration][-HISTORY_LIMIT:]
        status = status.model_copy(
            update={
                "phase": LoopPhase.RUNNING,
                "iteration": index,
                "champion": self.champion(status),
                "iterations": history,
                "message": None,
            }
        )
        self.event("IterationStarted", f"iteration {index} of at most {self.spec.max_iterations}")
        status = self.set_conditions(status, progressing=("IterationStarted", f"iteration {index}"))
        return self.advance(status)

    def advance(self, status: LoopStatus) -> LoopStatus:
        current = status.current()
        if current is None:  # history lost (e.g. status edited by hand): restart the recorded iteration
            return self.start_iteration(status, max(status.iteration, 1))
        if current.decision is not None:
            return self.after_decision(status)
        current = self.merge_stage_observations(current, greedy=champion_greedy(status))
        status = _replace_current(status, current)
        for stage in STAGES:
            stage_status = current.stage(stage)
            if stage_status is None or stage_status.phase is not StagePhase.SUCCEEDED:
                return self.drive_stage(status, current, stage, stage_status)
        return self.drive_gates(status, current)

    def merge_stage_observations(self, current: IterationStatus, greedy: float | None = None) -> IterationStatus:
        """The observed stage runs folded into the iteration; `greedy` (the champion's held-out score, when known)
        lets a LowYield warning name its likeliest lever."""
        stages = {s.stage: s for s in current.stages}
        for name, seen in self.observed.stages_of(current.index).items():
            before = stages.get(name, StageStatus(stage=name))
            phase, admitted = _queue_phase(before, seen)
            preempted = phase is StagePhase.PREEMPTED and before.phase is not StagePhase.PREEMPTED
            after = before.model_copy(
                update={
                    "phase": phase,
                    "admitted": admitted,
                    "preemptions": before.preemptions + int(preempted),
                    "attempts": max(before.attempts, seen.attempts),
                    "runs": max(before.runs, seen.run),
                    "run_name": seen.run_name or before.run_name,
                    "started_at": seen.started_at or before.started_at,
                    "finished_at": seen.finished_at,
                    "message": seen.message,
                    "reason": seen.reason,
                    "metrics": dict(seen.metrics) or before.metrics,
                    "findings": {key: list(items) for key, items in seen.findings.items()} or before.findings,
                }
            )
            if after.phase is not before.phase and after.phase in (StagePhase.SUCCEEDED, StagePhase.FAILED):
                acquire = stages.get("acquire")
                self.stage_finished_event(current.index, after, greedy, acquire.metrics if acquire else {})
            elif after.phase is not before.phase:
                self.queue_event(current.index, before, after)
            if after.phase in IN_PROGRESS_STAGE_PHASES and after.attempts > before.attempts:
                self.restart_event(current.index, after)
            stages[name] = after
        ordered = [stages[name] for name in STAGES if name in stages]
        update: dict[str, object] = {"stages": ordered}
        evaluate = stages.get("evaluate")
        if evaluate is not None and evaluate.phase is StagePhase.SUCCEEDED:
            update["candidate_score"] = evaluate.metrics.get("candidate_score")
            update["champion_score"] = evaluate.metrics.get("champion_score")
        return current.model_copy(update=update)

    def stage_finished_event(
        self,
        iteration: int,
        stage: StageStatus,
        greedy: float | None = None,
        acquire: Mapping[str, float] | None = None,
    ) -> None:
        if stage.phase is StagePhase.SUCCEEDED:
            self.event("StageSucceeded", f"iteration {iteration} {stage.stage} ({stage.run_name}) succeeded")
            warning = low_yield(stage.metrics, greedy, acquire) if stage.stage == "select" else None
            if warning:
                self.event("LowYield", f"iteration {iteration}: {warning}", warning=True)
        else:
            self.event(
                "StageFailed",
                f"iteration {iteration} {stage.stage} ({stage.run_name}) failed: {stage.message or 'no message'}",
                warning=True,
            )

    def restart_event(self, iteration: int, stage: StageStatus) -> None:
        """One Warning per failed attempt of a run that goes on (a Job retrying a pod, a JobSet restarting its
        group); the attempts count over every run of the stage in the iteration."""
        limit = backoff_limit(self.spec, stage.stage)
        self.event(
            "StageRestarted",
            f"iteration {iteration} {stage.stage} ({stage.run_name}) restarted after a failed attempt: attempt "
            f"{stage.attempts + 1} of at most {limit + 1}",
            warning=True,
        )

    def queue_event(self, iteration: int, before: StageStatus, stage: StageStatus) -> None:
        """One event when a queue holds, preempts or readmits a stage."""
        where = f"iteration {iteration} {stage.stage} ({stage.run_name})"
        if stage.phase is StagePhase.QUEUED:
            self.event("StageQueued", f"{where} waits for its queue to admit it")
        elif stage.phase is StagePhase.PREEMPTED:
            self.event(
                "StagePreempted",
                f"{where} was preempted by its queue (preemption {stage.preemptions}); not a failed attempt, it "
                "continues when readmitted",
            )
        elif stage.phase is StagePhase.RUNNING and before.phase is StagePhase.PREEMPTED:
            self.event("StageResumed", f"{where} was readmitted by its queue and runs again")

    # -- stages ---------------------------------------------------------------------------------------------
    def drive_stage(
        self, status: LoopStatus, current: IterationStatus, stage: str, stage_status: StageStatus | None
    ) -> LoopStatus:
        stage_status = stage_status or StageStatus(stage=stage)
        seen = self.observed.stages_of(current.index).get(stage)
        if stage_status.phase in IN_PROGRESS_STAGE_PHASES and seen is not None:
            return self.running_stage(status, current.index, stage_status, seen)
        if stage_status.phase is StagePhase.FAILED:
            name = stage_status.run_name or run_name(self.loop.name, current.index, stage)
            if seen is not None and seen.permanent:
                return self.fail(
                    status,
                    "StageRejectedInput",
                    f"stage {stage} of iteration {current.index} ({name}) rejected its input; a retry will not "
                    f"help, fix the input or the spec: {stage_status.message or 'see its logs'}",
                )
            limit = backoff_limit(self.spec, stage)
            if stage_status.attempts > limit:
                return self.fail(
                    status,
                    "StageFailed",
                    f"stage {stage} of iteration {current.index} ({name}) failed {stage_status.attempts} "
                    f"time(s), backoffLimit {limit}: {stage_status.message or 'see its logs'}",
                )
            attempt = stage_status.attempts + 1
            run = stage_status.runs + 1  # a new run under a new name: the failed one still exists
        else:
            # Pending, or recorded in progress but no longer observed (the runner died with it): (re)start.
            attempt = max(stage_status.attempts + 1, 1)
            run = max(stage_status.runs, 1)
        name = run_name(self.loop.name, current.index, stage, run)
        if self.spec.suspend:
            return self.suspended(status, f"suspended before {stage} of iteration {current.index}")
        config = build_stage_config(self.spec, self.loop, current.index, stage, self.champion(status).uri)
        self.actions.append(StartStage(current.index, stage, name, attempt, config, run))
        self.event("StageStarted", f"iteration {current.index} {stage} started ({name}, attempt {attempt})")
        started = stage_status.model_copy(
            update={
                "phase": StagePhase.RUNNING,
                "admitted": False,
                "run_name": name,
                "runs": run,
                "started_at": self.now,
                "finished_at": None,
                "message": None,
                "reason": None,
            }
        )
        stages = [s for s in current.stages if s.stage != stage] + [started]
        current = current.model_copy(update={"stages": sorted(stages, key=lambda s: STAGES.index(s.stage))})
        status = _replace_current(status, current)
        return self.set_conditions(
            status.model_copy(update={"phase": LoopPhase.RUNNING}),
            progressing=("StageStarted", f"iteration {current.index}: {stage} running ({name})"),
        )

    def running_stage(
        self, status: LoopStatus, iteration: int, stage: StageStatus, seen: StageObservation
    ) -> LoopStatus:
        """A stage that runs, or that cannot run (no pod can be created, its image cannot be pulled, ...).

        A blocked stage keeps the loop Running (the cause may go away: a quota raised, a Secret created) but turns
        Progressing False with the cause as reason, and posts one Warning when it becomes blocked.
        """
        if seen.recheck_after is not None:
            wanted = [t for t in (self.requeue_after, seen.recheck_after) if t is not None]
            self.requeue_after = min(wanted)
        name = stage.run_name or seen.run_name
        if stage.phase in (StagePhase.QUEUED, StagePhase.PREEMPTED) and not self.spec.suspend:
            held = (
                f"iteration {iteration}: {stage.stage} ({name}) waits for its queue to admit it"
                if stage.phase is StagePhase.QUEUED
                else f"iteration {iteration}: {stage.stage} ({name}) was preempted by its queue; it continues when "
                "readmitted"
            )
            return self.set_conditions(
                status.model_copy(update={"phase": LoopPhase.RUNNING, "message": held}),
                progressing=(f"Stage{stage.phase.value}", held),
            )
        if not seen.blocked or self.spec.suspend:
            return self.running_or_suspended(status, f"iteration {iteration}: {stage.stage} running ({name})")
        reason = seen.reason or "StageBlocked"
        message = f"iteration {iteration}: {stage.stage} ({name}) cannot run: {seen.message or reason}"
        previous = _condition(status, "Progressing")
        if previous is None or (previous.status, previous.reason) != ("False", reason):  # on the transition only
            self.event("StageBlocked", message, warning=True)
        return self.set_conditions(
            status.model_copy(update={"phase": LoopPhase.RUNNING, "message": message}), blocked=(reason, message)
        )

    def running_or_suspended(self, status: LoopStatus, message: str) -> LoopStatus:
        if self.spec.suspend:
            return self.suspended(status, f"suspended; {message} and will finish")
        return self.set_conditions(
            status.model_copy(update={"phase": LoopPhase.RUNNING, "message": None}),
            progressing=("StageRunning", message),
        )

    # -- gates ----------------------------------------------------------------------------------------------
    def drive_gates(self, status: LoopStatus, current: IterationStatus) -> LoopStatus:
        evaluate = current.stage("evaluate")
        ready_at = (evaluate.finished_at if evaluate else None) or self.now
        context = QueryContext(self.loop.name, self.loop.namespace, current.index, self.spec.evaluate.datasets[0].name)
        gates: list[GateStatus] = []
        due: list[ResolvedGate] = []
        wait: list[float] = []
        for gate in self.spec.promotion.gates:
            gate_status = current.gate(gate.name) or GateStatus(name=gate.name, dry_run=gate.dry_run)
            if gate_status.phase in (GatePhase.PENDING, GatePhase.RUNNING):
                for measurement in self.observed.measurements_of(current.index, gate.name):
                    gate_status = record(gate_status, measurement)
                gate_status = gate_status.model_copy(update={"phase": assess(gate, gate_status)})
                if gate_status.phase in (GatePhase.PENDING, GatePhase.RUNNING):
                    at = next_measurement_at(gate, gate_status, ready_at)
                    seconds = (at - self.now).total_seconds()
                    if seconds <= 0:
                        due.append(resolve_gate(gate, context))
                    else:
                        wait.append(seconds)
            gates.append(gate_status)
        current = current.model_copy(update={"gates": gates})
        status = _replace_current(status, current)
        if due:
            self.actions.append(MeasureGates(current.index, tuple(due)))
        if due or wait:
            if wait:
                self.requeue_after = min(wait)
            return self.set_conditions(
                status.model_copy(update={"phase": LoopPhase.RUNNING}),
                progressing=("GatesRunning", f"iteration {current.index}: measuring promotion gates"),
            )
        return self.decide(status, current)

    def decide(self, status: LoopStatus, current: IterationStatus) -> LoopStatus:
        deciding = [g for g in current.gates if not g.dry_run]
        blocking = [g for g in deciding if g.phase is not GatePhase.SUCCESSFUL]
        champion = self.champion(status)
        if champion.score is None and current.champion_score is not None:
            champion = champion.model_copy(update={"score": current.champion_score})
        scores = f"candidate {_fmt(current.candidate_score)} vs champion {_fmt(current.champion_score)}"
        if not blocking:
            uri = checkpoint_uri(self.spec.storage.uri, current.index)
            self.actions.append(Promote(current.index, uri, current.candidate_score))
            champion = ChampionStatus(iteration=current.index, uri=uri, score=current.candidate_score)
            self.event("Promoted", f"iteration {current.index} promoted: {scores}")
            rejections = 0
            decision = Decision.PROMOTED
        else:
            reasons = ", ".join(f"{g.name} {g.phase.value}" for g in blocking)
            why = why_not_improved(current)
            self.event("Rejected", f"iteration {current.index} rejected ({reasons}): {scores}; why: {why}")
            rejections = status.consecutive_rejections + 1
            decision = Decision.REJECTED
        current = current.model_copy(update={"decision": decision, "finished_at": self.now})
        status = _replace_current(status, current).model_copy(
            update={"champion": champion, "consecutive_rejections": rejections}
        )
        return self.after_decision(status)

    # -- after an iteration ---------------------------------------------------------------------------------
    def after_decision(self, status: LoopStatus) -> LoopStatus:
        stopping = self.spec.stopping
        champion = status.champion
        if (
            stopping.target_score is not None
            and champion is not None
            and champion.score is not None
            and champion.score >= stopping.target_score
        ):
            return self.succeed(
                status,
                "TargetScoreReached",
                f"champion (iteration {champion.iteration}) scores {_fmt(champion.score)} >= target "
                f"{stopping.target_score}",
            )
        if stopping.patience is not None and status.consecutive_rejections >= stopping.patience:
            return self.succeed(
                status,
                "PatienceExhausted",
                f"{status.consecutive_rejections} consecutive iterations rejected (patience {stopping.patience})",
            )
        if status.iteration >= self.spec.max_iterations:
            return self.succeed(
                status,
                "MaxIterationsReached",
                f"{status.iteration} of {self.spec.max_iterations} iterations done",
            )
        if self.spec.suspend:
            return self.suspended(status, f"suspended after iteration {status.iteration}")
        return self.start_iteration(status, status.iteration + 1)

    # -- phases and conditions ------------------------------------------------------------------------------
    def suspended(self, status: LoopStatus, message: str) -> LoopStatus:
        if status.phase is not LoopPhase.SUSPENDED:
            self.event("Suspended", message)
        return self.set_conditions(
            status.model_copy(update={"phase": LoopPhase.SUSPENDED, "message": message}),
            suspended=("Suspended", message),
        )

    def succeed(self, status: LoopStatus, reason: str, message: str) -> LoopStatus:
        self.event("Completed", message)
        return self.set_conditions(
            status.model_copy(update={"phase": LoopPhase.SUCCEEDED, "message": message}),
            complete=(reason, message),
        )

    def fail(self, status: LoopStatus, reason: str, message: str) -> LoopStatus:
        self.event(reason, message, warning=True)
        return self.set_conditions(
            status.model_copy(update={"phase": LoopPhase.FAILED, "message": message}),
            failed=(reason, message),
        )

    def set_conditions(
        self,
        status: LoopStatus,
        *,
        progressing: tuple[str, str] | None = None,
        suspended: tuple[str, str] | None = None,
        complete: tuple[str, str] | None = None,
        failed: tuple[str, str] | None = None,
        blocked: tuple[str, str] | None = None,
    ) -> LoopStatus:
        return set_conditions(
            status,
            self.now,
            self.loop.generation,
            progressing=progressing,
            suspended=suspended,
            complete=complete,
            failed=failed,
            blocked=blocked,
        )


OWNED_CONDITIONS = ("Progressing", "Suspended", "Complete", "Failed")
"""The conditions the planner rewrites every plan; any other (a runner's `Degraded`) is kept as it is."""


def set_conditions(
    status: LoopStatus,
    now: datetime,
    generation: int,
    *,
    progressing: tuple[str, str] | None = None,
    suspended: tuple[str, str] | None = None,
    complete: tuple[str, str] | None = None,
    failed: tuple[str, str] | None = None,
    blocked: tuple[str, str] | None = None,
) -> LoopStatus:
    """Exactly one of Progressing / Suspended / Complete / Failed is True; the others are False.

    `blocked` is the exception: a stage that cannot run leaves all four False, Progressing with its cause.

    Conditions of other types are kept, after the owned ones and in their order, so a runner's condition survives
    every plan.
    """
    idle = ("Idle", "")
    wanted = {
        "Progressing": (progressing is not None, progressing or blocked or idle),
        "Suspended": (suspended is not None, suspended or ("NotSuspended", "")),
        "Complete": (complete is not None, complete or ("NotComplete", "")),
        "Failed": (failed is not None, failed or ("NotFailed", "")),
    }
    conditions = []
    for kind, (is_true, (reason, message)) in wanted.items():
        previous = _condition(status, kind)
        value = "True" if is_true else "False"
        changed = previous is None or previous.status != value
        conditions.append(
            Condition(
                type=kind,
                status=value,
                reason=reason,
                message=message,
                last_transition_time=now if changed or previous is None else previous.last_transition_time,
                observed_generation=generation,
            )
        )
    foreign = [c for c in status.conditions if c.type not in OWNED_CONDITIONS]
    return status.model_copy(update={"conditions": [*conditions, *foreign]})


def _queue_phase(before: StageStatus, seen: StageObservation) -> tuple[StagePhase, bool]:
    """The stage's phase and whether its current run was admitted. A run seen running was admitted; a suspended
    run (observed Queued) that had been admitted was preempted, else it still waits for admission."""
    same_run = before.run_name is None or before.run_name == seen.run_name
    admitted = before.admitted and same_run
    if seen.phase is StagePhase.QUEUED and (admitted or (same_run and before.phase is StagePhase.PREEMPTED)):
        return StagePhase.PREEMPTED, True
    return seen.phase, admitted or seen.phase is StagePhase.RUNNING


def _condition(status: LoopStatus, kind: str) -> Condition | None:
    return next((c for c in status.conditions if c.type == kind), None)


def _replace_current(status: LoopStatus, current: IterationStatus) -> LoopStatus:
    return status.model_copy(
        update={"iterations": [current if it.index == current.index else it for it in status.iterations]}
    )


def _fmt(score: float | None) -> str:
    return "n/a" if score is None else f"{score:.3f}"
