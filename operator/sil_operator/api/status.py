"""`SelfImprovementLoop` status: what the runners record and the planner reads back.

Shaped as Kubernetes users expect (phase, observedGeneration, metav1.Condition-like conditions, a bounded
history), and stored the same way by both runners: in the object's status subresource on Kubernetes, in
`<storage>/status.json` for `sil run`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from sil_operator.api.spec import ApiModel

HISTORY_LIMIT = 20
"""Iterations kept in status.iterations; older ones are in the store (iterations/<k>/)."""
MEASUREMENT_LIMIT = 10
"""Measurements kept per gate."""


class LoopPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


TERMINAL_PHASES = frozenset({LoopPhase.SUCCEEDED, LoopPhase.FAILED})


class StagePhase(StrEnum):
    """Queued: its Job waits for a queue (Kueue) to admit it. Preempted: the queue suspended it after it had been
    admitted; not a failed attempt, it continues when readmitted. Both are, like Running, a run in progress."""

    PENDING = "Pending"
    QUEUED = "Queued"
    RUNNING = "Running"
    PREEMPTED = "Preempted"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


IN_PROGRESS_STAGE_PHASES = frozenset({StagePhase.QUEUED, StagePhase.RUNNING, StagePhase.PREEMPTED})
"""A run exists and will go on by itself: the planner waits for it and starts nothing."""


class GatePhase(StrEnum):
    """As in Argo Rollouts analysis."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"
    ERROR = "Error"


class Decision(StrEnum):
    PROMOTED = "Promoted"
    REJECTED = "Rejected"


class StageStatus(ApiModel):
    stage: str
    phase: StagePhase = StagePhase.PENDING
    run_name: str | None = Field(default=None, description="Job name (Kubernetes) or run id (local).")
    runs: int = Field(
        default=0,
        description="Runs started: Jobs on Kubernetes, processes locally. A retry by the loop is a new run under "
        "a new name (<loop>-<iteration>-<stage>, then -r2, -r3, ...).",
    )
    attempts: int = 0
    admitted: bool = Field(
        default=False,
        description="The current run was seen running (admitted by its queue, if any): a suspension from now on is "
        "a preemption, not a wait for admission.",
    )
    preemptions: int = Field(
        default=0,
        description="Times a queue (Kueue) suspended the stage's Job after admitting it. Not failed attempts.",
    )
    started_at: datetime | None = None
    finished_at: datetime | None = None
    message: str | None = None
    reason: str | None = Field(
        default=None,
        description="Why the stage failed or cannot run: InputRejected (exit code 2), ManifestMissing, OOMKilled, "
        "BackoffLimitExceeded, DeadlineExceeded, FailedCreate, ImagePullBackOff, ...",
    )
    metrics: dict[str, float] = Field(default_factory=dict)
    findings: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Named items from the stage's manifest, by <dataset>/<guard>: evaluate names the evaluation "
        "items found in the training data (<dataset>/contaminated: '<item number>: <prompt>').",
    )


class Measurement(ApiModel):
    phase: GatePhase
    value: float | None = None
    champion: float | None = None
    query: str = ""
    message: str | None = None
    at: datetime


class GateStatus(ApiModel):
    name: str
    phase: GatePhase = GatePhase.PENDING
    dry_run: bool = False
    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    error: int = 0
    consecutive_error: int = 0
    measurements: list[Measurement] = Field(
        default_factory=list, description=f"The latest {MEASUREMENT_LIMIT} measurements, oldest first."
    )
    message: str | None = None


class IterationStatus(ApiModel):
    index: int
    stages: list[StageStatus] = Field(default_factory=list)
    gates: list[GateStatus] = Field(default_factory=list)
    decision: Decision | None = None
    candidate_score: float | None = None
    champion_score: float | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    def stage(self, name: str) -> StageStatus | None:
        return next((s for s in self.stages if s.stage == name), None)

    def gate(self, name: str) -> GateStatus | None:
        return next((g for g in self.gates if g.name == name), None)


class ChampionStatus(ApiModel):
    iteration: int = Field(description="0 is the base model.")
    uri: str
    score: float | None = None


class Condition(ApiModel):
    """metav1.Condition."""

    type: str
    status: str
    reason: str
    message: str = ""
    last_transition_time: datetime
    observed_generation: int | None = None


class LoopStatus(ApiModel):
    phase: LoopPhase = LoopPhase.PENDING
    iteration: int = Field(default=0, description="The iteration in progress or last finished; 0 before the first.")
    champion: ChampionStatus | None = None
    consecutive_rejections: int = 0
    observed_generation: int | None = None
    spec_hash: str | None = Field(default=None, description="Hash of the spec last acted on (local runs).")
    conditions: list[Condition] = Field(default_factory=list)
    iterations: list[IterationStatus] = Field(default_factory=list)
    message: str | None = None

    def current(self) -> IterationStatus | None:
        return next((it for it in self.iterations if it.index == self.iteration), None)
