"""Small builders for loop specs and a fake world the planner can be driven through (no I/O, no processes)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sil_operator.api.loader import parse_loop
from sil_operator.api.spec import LoopSpec, SelfImprovementLoop
from sil_operator.api.status import LoopStatus, Measurement, StagePhase
from sil_operator.gates.measure import measure
from sil_operator.gates.providers import QueryError, Sample
from sil_operator.planner import MeasureGates, Observation, Plan, Promote, StageObservation, StartStage, plan
from sil_operator.stageconfig import LoopRef

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def loop_document(**spec_overrides: Any) -> dict[str, Any]:
    """A valid loop as a plain document; keyword arguments replace top-level spec fields (camelCase)."""
    spec: dict[str, Any] = {
        "model": {"uri": "file:///models/base"},
        "storage": {"uri": "file:///runs/demo"},
        "maxIterations": 3,
        "acquire": {"prompts": {"uri": "file:///data/prompts.jsonl"}, "samplesPerPrompt": 4},
        "evaluate": {"datasets": [{"name": "heldout", "uri": "file:///data/heldout.jsonl"}]},
        "promotion": {
            "gates": [
                {
                    "name": "improves",
                    "query": 'selfimprove_eval_score{loop="{{loop}}",iteration="{{iteration}}",model="{{model}}"}',
                    "successCondition": "result >= champion + 0.01",
                }
            ]
        },
    }
    spec.update(spec_overrides)
    return {
        "apiVersion": "selfimprove.dev/v1alpha1",
        "kind": "SelfImprovementLoop",
        "metadata": {"name": "demo", "namespace": "ml"},
        "spec": spec,
    }


def make_loop(**spec_overrides: Any) -> SelfImprovementLoop:
    return parse_loop(loop_document(**spec_overrides))


def make_spec(**spec_overrides: Any) -> LoopSpec:
    return make_loop(**spec_overrides).spec


def with_spec(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `document` with the dotted `path` (e.g. spec.acquire.samplesPerPrompt) set to `value`."""
    result = copy.deepcopy(document)
    *parents, last = path.split(".")
    node = result
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return result


class ScoreProvider:
    """Answers gate queries with the scores the world's evaluate stage 'measured' for the iteration."""

    def __init__(self, world: FakeWorld) -> None:
        self.world = world

    def query(self, promql: str) -> list[Sample]:
        if self.world.prometheus_down:
            raise QueryError("connection refused")
        for iteration, (candidate, champion) in self.world.scores.items():
            if f'iteration="{iteration}"' in promql:
                value = candidate if 'model="candidate"' in promql else champion
                return [] if value is None else [Sample({}, value)]
        return []


@dataclass
class FakeWorld:
    """What a runner would observe: stage runs that the planner started, and the scores evaluation produced.

    Stages do not finish by themselves: `finish_running()` completes the running stage (or fails it), so a test
    can stop between any two steps. `launches` counts StartStage actions per (iteration, stage).
    """

    spec: LoopSpec
    scores: dict[int, tuple[float | None, float | None]] = field(default_factory=dict)
    """iteration → (candidate score, champion score) reported by its evaluate stage."""
    failing: dict[tuple[int, str], int] = field(default_factory=dict)
    """(iteration, stage) → how many attempts fail before one succeeds."""
    prometheus_down: bool = False
    runs: dict[tuple[int, str], StageObservation] = field(default_factory=dict)
    launches: dict[tuple[int, str], int] = field(default_factory=dict)
    champion_writes: list[int] = field(default_factory=list)
    pending: dict[tuple[int, str], list[Measurement]] = field(default_factory=dict)
    now: datetime = T0
    loop: LoopRef = field(default_factory=lambda: LoopRef("demo", "ml", 1))

    def observe(self, status: LoopStatus) -> Observation:
        """Like a runner: the latest iteration that has stage runs (it can be ahead of a status that was lost)."""
        latest = max([status.iteration, *(it for it, _ in self.runs)])
        stages = {stage: seen for (it, stage), seen in self.runs.items() if it == latest}
        return Observation(iteration=latest, stages=stages, measurements=dict(self.pending))

    def plan(self, status: LoopStatus) -> Plan:
        return plan(self.spec, self.loop, status, self.observe(status), self.now)

    def apply(self, result: Plan) -> None:
        """Carries out the actions, as a runner would."""
        self.pending = {}
        for action in result.actions:
            if isinstance(action, StartStage):
                key = (action.iteration, action.stage)
                self.launches[key] = self.launches.get(key, 0) + 1
                self.runs[key] = StageObservation(
                    StagePhase.RUNNING,
                    attempts=action.attempt - 1,
                    run_name=action.run_name,
                    run=action.run,
                    started_at=self.now,
                )
            elif isinstance(action, MeasureGates):
                gates = {g.name: g for g in self.spec.promotion.gates}
                for resolved in action.gates:
                    m = measure(gates[resolved.name], resolved, ScoreProvider(self), self.now)
                    self.pending.setdefault((action.iteration, resolved.name), []).append(m)
            elif isinstance(action, Promote):
                self.champion_writes.append(action.iteration)

    def finish_running(self) -> None:
        for key, seen in list(self.runs.items()):
            if seen.phase is StagePhase.RUNNING:
                attempt = seen.attempts + 1
                if self.failing.get(key, 0) >= attempt:
                    self.runs[key] = StageObservation(
                        StagePhase.FAILED,
                        attempts=attempt,
                        run_name=seen.run_name,
                        run=seen.run,
                        message="exit code 1: boom",
                    )
                    continue
                metrics: dict[str, float] = {}
                if key[1] == "evaluate":
                    candidate, champion = self.scores.get(key[0], (None, None))
                    metrics = {
                        k: v for k, v in (("candidate_score", candidate), ("champion_score", champion)) if v is not None
                    }
                self.runs[key] = StageObservation(
                    StagePhase.SUCCEEDED,
                    attempts=seen.attempts,
                    run_name=seen.run_name,
                    run=seen.run,
                    started_at=seen.started_at,
                    finished_at=self.now,
                    metrics=metrics,
                )

    def step(self, status: LoopStatus) -> tuple[LoopStatus, Plan]:
        """One reconcile: plan, act, let running stages finish, advance the clock."""
        result = self.plan(status)
        self.apply(result)
        self.finish_running()
        self.now += timedelta(seconds=10)
        return result.status, result

    def run_to_end(self, status: LoopStatus | None = None, max_steps: int = 200) -> LoopStatus:
        status = status or LoopStatus()
        for _ in range(max_steps):
            status, _ = self.step(status)
            if status.phase.value in ("Succeeded", "Failed", "Suspended"):
                return status
        raise AssertionError(f"loop did not end within {max_steps} steps: {status.phase}")
