"""The planner decides every step of a loop from (spec, status, observation, time), with no I/O.

These tests drive it through a fake world (tests/unit/operator/builders.py) that only records what the planner
asked for, so each rule of the loop is a row in a table: stage order, gates, promotion and rejection, every
stopping rule, failures, suspend and resume, spec changes, and restarts at every point.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sil_operator.api.loader import parse_loop
from sil_operator.api.status import Decision, GatePhase, IterationStatus, LoopPhase, LoopStatus, StagePhase
from sil_operator.gates.measure import measure
from sil_operator.gates.providers import ManifestProvider
from sil_operator.planner import MeasureGates, Promote, StageObservation, StartStage
from sil_stages.core.contract import STAGES, AcquireConfig, Manifest, MetricSample, OptimizeConfig
from sil_stages.core.store import Store

from .builders import T0, FakeWorld, loop_document, make_spec


def started(plan_actions: tuple[object, ...]) -> list[tuple[int, str]]:
    return [(a.iteration, a.stage) for a in plan_actions if isinstance(a, StartStage)]


def condition(status: LoopStatus, kind: str) -> tuple[str, str]:
    found = next(c for c in status.conditions if c.type == kind)
    return found.status, found.reason


# -- the order of one iteration ---------------------------------------------------------------------------


def test_a_new_loop_starts_iteration_one_with_acquire_from_the_base_model() -> None:
    world = FakeWorld(make_spec())
    result = world.plan(LoopStatus())
    assert started(result.actions) == [(1, "acquire")]
    action = result.actions[0]
    assert isinstance(action, StartStage)
    assert action.run_name == "demo-1-acquire"
    assert isinstance(action.config, AcquireConfig)
    assert action.config.model_uri == "file:///models/base"
    assert action.config.output_uri == "file:///runs/demo/iterations/1/acquire"
    assert result.status.phase is LoopPhase.RUNNING
    assert result.status.iteration == 1
    assert condition(result.status, "Progressing") == ("True", "StageStarted")


def test_stages_run_in_order_then_gates_are_measured() -> None:
    world = FakeWorld(make_spec(), scores={1: (0.6, 0.4)})
    status = LoopStatus()
    sequence: list[object] = []
    for _ in range(5):
        status, result = world.step(status)
        sequence += [a.stage if isinstance(a, StartStage) else type(a).__name__ for a in result.actions]
    assert sequence[:5] == [*STAGES, "MeasureGates"]


def test_a_running_stage_is_waited_for_not_started_again() -> None:
    world = FakeWorld(make_spec())
    result = world.plan(LoopStatus())
    world.apply(result)
    again = world.plan(result.status)
    assert started(again.actions) == []
    assert again.status.current() is not None
    assert again.status.iteration == 1


def test_the_same_inputs_give_the_same_plan() -> None:
    world = FakeWorld(make_spec(), scores={1: (0.6, 0.4)})
    status = LoopStatus()
    for _ in range(6):
        first, second = world.plan(status), world.plan(status)
        assert first == second
        status, _ = world.step(status)


# -- gates and decisions ----------------------------------------------------------------------------------


def test_a_better_candidate_is_promoted_and_the_next_iteration_starts_from_it() -> None:
    world = FakeWorld(make_spec(), scores={1: (0.6, 0.4), 2: (0.7, 0.6)})
    status = LoopStatus()
    promote = None
    for _ in range(6):
        status, result = world.step(status)
        promote = promote or next((a for a in result.actions if isinstance(a, Promote)), None)
    assert promote == Promote(1, "file:///runs/demo/iterations/1/optimize/checkpoint", 0.6)
    assert status.iterations[0].decision is Decision.PROMOTED
    assert status.champion is not None and status.champion.iteration == 1 and status.champion.score == 0.6
    assert status.iteration == 2
    acquire_2 = world.runs[(2, "acquire")]
    assert acquire_2.phase is StagePhase.SUCCEEDED
    assert world.champion_writes == [1]


def test_the_next_iterations_stages_read_the_promoted_checkpoint() -> None:
    world = FakeWorld(make_spec(), scores={1: (0.6, 0.4)})
    status = LoopStatus()
    configs = []
    for _ in range(9):
        result = world.plan(status)
        configs += [a.config for a in result.actions if isinstance(a, StartStage)]
        world.apply(result)
        world.finish_running()
        status = result.status
    acquire_2 = next(c for c in configs if isinstance(c, AcquireConfig) and c.iteration == 2)
    optimize_2 = next(c for c in configs if isinstance(c, OptimizeConfig) and c.iteration == 2)
    assert acquire_2.model_uri == "file:///runs/demo/iterations/1/optimize/checkpoint"
    assert optimize_2.init_model_uri == "file:///runs/demo/iterations/1/optimize/checkpoint"


def _evaluate_manifest(
    store: Store, storage: str, ci_low: dict[str, float], contamination_max: float | None = None
) -> None:
    """The evaluate manifest of iteration 1, with one selfimprove_eval_delta_ci_low series per dataset."""
    loop_labels = {"namespace": "ml", "loop": "demo", "iteration": "1"}
    extra = (
        ()
        if contamination_max is None
        else (MetricSample(name="selfimprove_eval_contamination_max", labels=loop_labels, value=contamination_max),)
    )
    series = extra + tuple(
        MetricSample(
            name="selfimprove_eval_delta_ci_low",
            labels={"namespace": "ml", "loop": "demo", "iteration": "1", "dataset": dataset},
            value=value,
        )
        for dataset, value in ci_low.items()
    )
    manifest = Manifest(
        stage="evaluate", iteration=1, loop="demo", series=series, started_at=T0, finished_at=T0, duration_seconds=0
    )
    store.write_text(f"{storage}/iterations/1/evaluate/_manifest.json", manifest.model_dump_json())


@pytest.mark.parametrize(
    ("scores", "decision"),
    [
        # dataset -> lower bound of the interval of candidate - champion; heldout is the primary (first) dataset
        ({"heldout": 0.05}, Decision.PROMOTED),
        ({"heldout": 0.05, "hard": -0.2}, Decision.PROMOTED),
        ({"heldout": -0.01, "hard": 0.3}, Decision.REJECTED),
        ({"heldout": 0.0}, Decision.REJECTED),
    ],
)
def test_the_default_gate_compares_the_primary_dataset_when_there_are_several(
    tmp_path: Path, scores: dict[str, float], decision: Decision
) -> None:
    """The default gate promotes when the interval of the primary dataset's difference lies above 0. Its query pins
    dataset to the first dataset; without it, two datasets meant two series and every measurement was an Error (no
    promotion, ever). Local path: the gate reads the evaluate manifest."""
    datasets = [{"name": "heldout", "uri": "file:///d/heldout.jsonl"}, {"name": "hard", "uri": "file:///d/hard.jsonl"}]
    document = loop_document(storage={"uri": tmp_path.as_uri()}, evaluate={"datasets": datasets})
    del document["spec"]["promotion"]
    iteration = _decide_from_manifest(tmp_path, document, ci_low=scores)
    assert iteration.decision is decision, iteration.gates


def _decide_from_manifest(tmp_path: Path, document: dict[str, Any], **manifest: Any) -> IterationStatus:
    """Runs iteration 1 of `document` with faked stages and gates measured on an evaluate manifest (local path)."""
    storage = document["spec"]["storage"]["uri"]
    world = FakeWorld(parse_loop(document).spec, scores={1: (None, None)})
    store = Store()
    _evaluate_manifest(store, storage, **manifest)
    provider = ManifestProvider(store, storage)
    status = LoopStatus()
    for _ in range(6):  # the four stages, then the first gate measurement
        result = world.plan(status)
        measuring = [a for a in result.actions if isinstance(a, MeasureGates)]
        world.apply(result)
        world.finish_running()
        status = result.status
        if measuring:
            break
    assert measuring, "the gates were never measured"
    gates = {g.name: g for g in world.spec.promotion.gates}
    world.pending = {
        (1, resolved.name): [measure(gates[resolved.name], resolved, provider, world.now)]
        for resolved in measuring[0].gates
    }
    return world.plan(status).status.iterations[0]


@pytest.mark.parametrize(
    ("contamination_max", "decision"), [(0.0, Decision.PROMOTED), (0.01, Decision.REJECTED), (None, Decision.REJECTED)]
)
def test_training_data_overlapping_the_evaluation_data_fails_the_contamination_gate(
    tmp_path: Path, contamination_max: float | None, decision: Decision
) -> None:
    """evaluate.contamination.maxOverlap 0: one contaminated item rejects a candidate the default gate would promote;
    a missing contamination measurement never promotes either."""
    document = loop_document(storage={"uri": tmp_path.as_uri()})
    del document["spec"]["promotion"]
    document["spec"]["evaluate"]["contamination"] = {"maxOverlap": 0}
    iteration = _decide_from_manifest(tmp_path, document, ci_low={"heldout": 0.05}, contamination_max=contamination_max)
    assert iteration.decision is decision, iteration.gates
    gate = iteration.gate("evaluate-contamination")
    assert gate is not None
    expected = {0.0: GatePhase.SUCCESSFUL, 0.01: GatePhase.FAILED, None: GatePhase.INCONCLUSIVE}[contamination_max]
    assert gate.phase is expected


def test_a_candidate_that_is_not_better_is_rejected_and_the_champion_stays() -> None:
    world = FakeWorld(make_spec(), scores={1: (0.405, 0.4)})
    status = LoopStatus()
    for _ in range(6):
        status, _ = world.step(status)
    first = status.iterations[0]
    assert first.decision is Decision.REJECTED
    assert first.gates[0].phase is GatePhase.FAILED
    assert status.champion is not None and status.champion.iteration == 0
    assert status.champion.uri == "file:///models/base"
    assert status.champion.score == 0.4
    assert world.champion_writes == []
    assert status.consecutive_rejections == 1


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ((None, 0.4), GatePhase.INCONCLUSIVE),  # no data for the candidate: never promote
        ((0.9, None), GatePhase.INCONCLUSIVE),  # no data for the champion either
    ],
)
def test_missing_data_is_inconclusive_and_never_promotes(
    scores: tuple[float | None, float | None], expected: GatePhase
) -> None:
    world = FakeWorld(make_spec(maxIterations=1), scores={1: scores})
    status = world.run_to_end()
    assert status.iterations[0].gates[0].phase is expected
    assert status.iterations[0].decision is Decision.REJECTED
    assert world.champion_writes == []


def test_query_errors_are_retried_within_the_limit_then_the_gate_completes() -> None:
    gate = {
        "name": "improves",
        "query": 'score{iteration="{{iteration}}",model="{{model}}"}',
        "successCondition": "result > champion",
        "consecutiveErrorLimit": 2,
    }
    world = FakeWorld(make_spec(maxIterations=1, promotion={"gates": [gate]}), scores={1: (0.6, 0.4)})
    world.prometheus_down = True
    status = LoopStatus()
    for _ in range(5):  # four stages, then the first (errored) measurement
        status, _ = world.step(status)
    world.now -= timedelta(seconds=10)  # back to the moment of the measurement
    result = world.plan(status)
    assert not [a for a in result.actions if isinstance(a, MeasureGates)]
    assert result.requeue_after == pytest.approx(5), "an error backs off before retrying"
    world.prometheus_down = False
    world.now += timedelta(seconds=30)
    status = world.run_to_end(status)
    gate_status = status.iterations[0].gates[0]
    assert gate_status.error == 1
    assert gate_status.phase is GatePhase.SUCCESSFUL
    assert status.iterations[0].decision is Decision.PROMOTED


def test_errors_beyond_the_limit_reject_the_candidate() -> None:
    gate = {
        "name": "improves",
        "query": 'score{iteration="{{iteration}}",model="{{model}}"}',
        "successCondition": "result > champion",
        "consecutiveErrorLimit": 1,
    }
    world = FakeWorld(make_spec(maxIterations=1, promotion={"gates": [gate]}), scores={1: (0.9, 0.1)})
    world.prometheus_down = True
    status = world.run_to_end()
    assert status.iterations[0].gates[0].phase is GatePhase.ERROR
    assert status.iterations[0].gates[0].error == 2
    assert status.iterations[0].decision is Decision.REJECTED
    assert world.champion_writes == []


def test_a_dry_run_gate_is_recorded_but_does_not_decide() -> None:
    gates = [
        {"name": "improves", "query": 's{iteration="{{iteration}}",model="{{model}}"}', "successCondition": "true"},
        {
            "name": "strict",
            "query": 's{iteration="{{iteration}}",model="{{model}}"}',
            "successCondition": "result > 0.99",
            "dryRun": True,
        },
    ]
    world = FakeWorld(make_spec(maxIterations=1, promotion={"gates": gates}), scores={1: (0.5, 0.4)})
    status = world.run_to_end()
    phases = {g.name: g.phase for g in status.iterations[0].gates}
    assert phases == {"improves": GatePhase.SUCCESSFUL, "strict": GatePhase.FAILED}
    assert status.iterations[0].decision is Decision.PROMOTED


def test_a_gate_with_count_measures_at_its_interval() -> None:
    gate = {
        "name": "stable",
        "query": 's{iteration="{{iteration}}",model="{{model}}"}',
        "successCondition": "result > champion",
        "count": 3,
        "intervalSeconds": 60,
    }
    world = FakeWorld(make_spec(maxIterations=1, promotion={"gates": [gate]}), scores={1: (0.5, 0.4)})
    status = LoopStatus()
    for _ in range(5):
        status, _ = world.step(status)
    waiting = world.plan(status)
    assert not [a for a in waiting.actions if isinstance(a, MeasureGates)]
    assert waiting.requeue_after == pytest.approx(50)
    world.now += timedelta(seconds=50)
    assert [a for a in world.plan(status).actions if isinstance(a, MeasureGates)]
    for _ in range(20):
        world.now += timedelta(seconds=60)
        status, _ = world.step(status)
        if status.phase is LoopPhase.SUCCEEDED:
            break
    assert status.iterations[0].gates[0].successful == 3
    assert status.iterations[0].decision is Decision.PROMOTED


# -- stopping ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec_overrides", "scores", "reason", "iterations"),
    [
        ({"maxIterations": 2}, {1: (0.5, 0.4), 2: (0.6, 0.5)}, "MaxIterationsReached", 2),
        (
            {"maxIterations": 9, "stopping": {"targetScore": 0.8}},
            {1: (0.5, 0.4), 2: (0.85, 0.5)},
            "TargetScoreReached",
            2,
        ),
        (
            {"maxIterations": 9, "stopping": {"patience": 2}},
            {1: (0.5, 0.4), 2: (0.5, 0.5), 3: (0.4, 0.5)},
            "PatienceExhausted",
            3,
        ),
    ],
)
def test_the_loop_stops_for_each_stopping_rule(
    spec_overrides: dict[str, object], scores: dict[int, tuple[float, float]], reason: str, iterations: int
) -> None:
    world = FakeWorld(make_spec(**spec_overrides), scores=scores)  # type: ignore[arg-type]
    status = world.run_to_end()
    assert status.phase is LoopPhase.SUCCEEDED
    assert condition(status, "Complete") == ("True", reason)
    assert condition(status, "Progressing")[0] == "False"
    assert status.iteration == iterations
    assert len(status.iterations) == iterations


def test_a_rejection_after_a_promotion_resets_nothing_but_patience_counts_consecutive_ones() -> None:
    scores = {1: (0.3, 0.4), 2: (0.5, 0.4), 3: (0.4, 0.5), 4: (0.4, 0.5)}
    world = FakeWorld(make_spec(maxIterations=9, stopping={"patience": 2}), scores=scores)
    status = world.run_to_end()
    decisions = [it.decision for it in status.iterations]
    assert decisions == [Decision.REJECTED, Decision.PROMOTED, Decision.REJECTED, Decision.REJECTED]
    assert status.champion is not None and status.champion.iteration == 2


def test_a_finished_loop_does_nothing_more() -> None:
    world = FakeWorld(make_spec(maxIterations=1), scores={1: (0.5, 0.4)})
    status = world.run_to_end()
    assert world.plan(status).actions == ()


def test_raising_max_iterations_continues_a_loop_that_stopped_there() -> None:
    world = FakeWorld(make_spec(maxIterations=1), scores={1: (0.5, 0.4), 2: (0.6, 0.5)})
    status = world.run_to_end()
    world.spec = make_spec(maxIterations=2)
    world.loop = replace(world.loop, generation=2)
    status = world.run_to_end(status)
    assert status.iteration == 2
    assert condition(status, "Complete") == ("True", "MaxIterationsReached")


def test_lowering_max_iterations_mid_run_finishes_the_current_iteration_then_stops() -> None:
    world = FakeWorld(make_spec(maxIterations=5), scores={1: (0.5, 0.4), 2: (0.6, 0.5), 3: (0.7, 0.6)})
    status = LoopStatus()
    while status.iteration < 2:
        status, _ = world.step(status)
    world.spec = make_spec(maxIterations=1)
    world.loop = replace(world.loop, generation=2)
    status = world.run_to_end(status)
    assert status.iteration == 2
    assert status.iterations[-1].decision is not None
    assert condition(status, "Complete") == ("True", "MaxIterationsReached")


# -- failures ---------------------------------------------------------------------------------------------


def test_a_failed_stage_is_retried_up_to_its_backoff_limit() -> None:
    world = FakeWorld(make_spec(maxIterations=1, runtime={"backoffLimit": 2}), scores={1: (0.5, 0.4)})
    world.failing[(1, "select")] = 2
    status = world.run_to_end()
    assert status.phase is LoopPhase.SUCCEEDED
    assert world.launches[(1, "select")] == 3
    assert status.iterations[0].stage("select").attempts == 2  # type: ignore[union-attr]


def test_a_stage_that_fails_for_good_fails_the_loop_naming_the_stage_and_run() -> None:
    world = FakeWorld(make_spec(runtime={"backoffLimit": 1, "stages": {"optimize": {"backoffLimit": 0}}}))
    world.failing[(1, "optimize")] = 5
    status = world.run_to_end()
    assert status.phase is LoopPhase.FAILED
    assert world.launches[(1, "optimize")] == 1, "the per-stage override (0 retries) wins over the default"
    assert condition(status, "Failed") == ("True", "StageFailed")
    assert status.message is not None
    assert "optimize" in status.message and "demo-1-optimize" in status.message and "boom" in status.message
    assert world.plan(status).actions == ()


def test_each_retry_by_the_planner_is_a_new_run_under_a_new_name() -> None:
    """The failed run's Job still exists: reusing its name would be a 409 and a Running/Failed flip forever."""
    world = FakeWorld(make_spec(maxIterations=1, runtime={"backoffLimit": 2}), scores={1: (0.5, 0.4)})
    world.failing[(1, "select")] = 2
    names: list[str] = []
    status = LoopStatus()
    for _ in range(12):
        result = world.plan(status)
        names += [a.run_name for a in result.actions if isinstance(a, StartStage) and a.stage == "select"]
        world.apply(result)
        world.finish_running()
        status = result.status
    assert names == ["demo-1-select", "demo-1-select-r2", "demo-1-select-r3"]
    select = status.iterations[0].stage("select")
    assert select is not None and (select.runs, select.phase) == (3, StagePhase.SUCCEEDED)


def test_raising_backoff_limit_while_a_stage_runs_retries_its_failed_job_as_a_new_run() -> None:
    """The Job was created with backoffLimit 2 and fails after 3 pods; the spec now allows 5: one more run."""
    world = FakeWorld(make_spec(maxIterations=1, runtime={"backoffLimit": 2}))
    status, _ = world.step(LoopStatus())  # acquire done
    result = world.plan(status)
    world.apply(result)  # select running
    world.spec = make_spec(maxIterations=1, runtime={"backoffLimit": 5})
    world.loop = replace(world.loop, generation=2)
    world.runs[(1, "select")] = StageObservation(
        StagePhase.FAILED, attempts=3, run_name="demo-1-select", message="BackoffLimitExceeded"
    )
    retried = world.plan(result.status)
    assert retried.status.phase is LoopPhase.RUNNING
    action = next(a for a in retried.actions if isinstance(a, StartStage))
    assert (action.run_name, action.run, action.attempt) == ("demo-1-select-r2", 2, 4)
    world.apply(retried)
    assert started(world.plan(retried.status).actions) == [], "the new run is observed running"


@pytest.mark.parametrize("backoff", [0, 3])
def test_a_stage_that_rejects_its_input_fails_the_loop_at_once_whatever_the_backoff_limit(backoff: int) -> None:
    world = FakeWorld(make_spec(maxIterations=1, runtime={"backoffLimit": backoff}))
    status, _ = world.step(LoopStatus())
    result = world.plan(status)
    world.apply(result)
    world.runs[(1, "select")] = StageObservation(
        StagePhase.FAILED,
        attempts=1,
        run_name="demo-1-select",
        reason="InputRejected",
        permanent=True,
        message="exit code 2: select.scorer.verifier: no module 'nope'; fix the spec",
    )
    failed = world.plan(result.status)
    assert started(failed.actions) == []
    assert failed.status.phase is LoopPhase.FAILED
    assert condition(failed.status, "Failed") == ("True", "StageRejectedInput")
    assert failed.status.message is not None
    assert "rejected its input" in failed.status.message and "no module 'nope'" in failed.status.message
    select = failed.status.iterations[0].stage("select")
    assert select is not None and select.reason == "InputRejected"


def test_a_stage_that_cannot_run_shows_its_cause_once_and_is_rechecked() -> None:
    world = FakeWorld(make_spec(maxIterations=1))
    result = world.plan(LoopStatus())
    world.apply(result)
    blocked = StageObservation(
        StagePhase.RUNNING,
        run_name="demo-1-acquire",
        reason="FailedCreate",
        message='pods "demo-1-acquire-x" is forbidden: exceeded quota: none',
        recheck_after=30.0,
    )
    world.runs[(1, "acquire")] = blocked
    first = world.plan(result.status)
    assert first.status.phase is LoopPhase.RUNNING
    assert condition(first.status, "Progressing") == ("False", "FailedCreate")
    assert all(condition(first.status, kind)[0] == "False" for kind in ("Failed", "Complete", "Suspended"))
    assert first.status.message is not None and "exceeded quota" in first.status.message
    assert [(e.type, e.reason) for e in first.events] == [("Warning", "StageBlocked")]
    assert first.requeue_after == 30.0
    assert first.actions == ()
    world.runs[(1, "acquire")] = replace(blocked, message='pods "demo-1-acquire-y" is forbidden: exceeded quota')
    second = world.plan(first.status)
    assert second.events == (), "the Warning is posted when the stage becomes blocked, not on every look"
    assert second.requeue_after == 30.0
    world.runs[(1, "acquire")] = replace(blocked, reason=None, message=None, recheck_after=None)
    unblocked = world.plan(second.status)
    assert condition(unblocked.status, "Progressing") == ("True", "StageRunning")
    assert unblocked.status.message is None
    assert unblocked.requeue_after is None


# -- queues: Kueue admission and preemption ---------------------------------------------------------------


def queued(run_name: str = "demo-1-optimize", run: int = 1, attempts: int = 0) -> StageObservation:
    """A Job suspended by its queue, as kube/observe.py reports it: it cannot tell waiting from preempted."""
    return StageObservation(StagePhase.QUEUED, attempts=attempts, run_name=run_name, run=run, message="suspended")


def at_optimize(world: FakeWorld) -> LoopStatus:
    """Acquire and select done; optimize started (its Job exists)."""
    status = LoopStatus()
    for _ in range(2):
        status, _ = world.step(status)
    result = world.plan(status)
    world.apply(result)
    assert started(result.actions) == [(1, "optimize")]
    return result.status


def test_a_run_that_restarts_after_a_failed_attempt_counts_it_and_posts_one_warning_per_attempt() -> None:
    world = FakeWorld(make_spec(maxIterations=1, runtime={"backoffLimit": 2}))
    status = at_optimize(world)
    world.runs[(1, "optimize")] = replace(world.runs[(1, "optimize")], attempts=1)  # e.g. a JobSet restarted
    restarted = world.plan(status)
    optimize = restarted.status.iterations[0].stage("optimize")
    assert optimize is not None and (optimize.phase, optimize.attempts) == (StagePhase.RUNNING, 1)
    assert restarted.actions == (), "the run goes on by itself: nothing is started"
    (event,) = restarted.events
    assert (event.type, event.reason) == ("Warning", "StageRestarted")
    assert "demo-1-optimize" in event.message and "attempt 2 of at most 3" in event.message
    assert world.plan(restarted.status).events == (), "one event per failed attempt, not per look"


def test_a_stage_whose_job_waits_for_admission_is_queued_not_running() -> None:
    world = FakeWorld(make_spec(maxIterations=1))
    status = at_optimize(world)
    world.runs[(1, "optimize")] = queued()
    result = world.plan(status)
    optimize = result.status.iterations[0].stage("optimize")
    assert optimize is not None and optimize.phase is StagePhase.QUEUED
    assert (optimize.preemptions, optimize.attempts) == (0, 0)
    assert result.status.phase is LoopPhase.RUNNING
    assert condition(result.status, "Progressing") == ("True", "StageQueued")
    assert result.actions == ()
    assert [e.reason for e in result.events] == ["StageQueued"]
    assert world.plan(result.status).events == (), "one event when it becomes queued"
    world.runs[(1, "optimize")] = replace(world.runs[(1, "optimize")], phase=StagePhase.RUNNING, message=None)
    admitted = world.plan(result.status)
    assert admitted.status.iterations[0].stage("optimize").phase is StagePhase.RUNNING  # type: ignore[union-attr]
    assert condition(admitted.status, "Progressing") == ("True", "StageRunning")


def test_a_running_stage_suspended_by_its_queue_is_preempted_never_retried_and_continues_when_readmitted() -> None:
    world = FakeWorld(make_spec(maxIterations=1, runtime={"backoffLimit": 0}), scores={1: (0.6, 0.4)})
    status = at_optimize(world)
    status = world.plan(status).status  # observed running: admitted
    world.runs[(1, "optimize")] = queued()
    preempted = world.plan(status)
    optimize = preempted.status.iterations[0].stage("optimize")
    assert optimize is not None and optimize.phase is StagePhase.PREEMPTED
    assert (optimize.preemptions, optimize.attempts, optimize.runs) == (1, 0, 1), "not a failed attempt"
    assert preempted.actions == (), "no new Job: the suspended one continues"
    assert preempted.status.phase is LoopPhase.RUNNING
    assert condition(preempted.status, "Progressing") == ("True", "StagePreempted")
    assert preempted.status.message is not None and "demo-1-optimize" in preempted.status.message
    assert [e.reason for e in preempted.events] == ["StagePreempted"]
    still = world.plan(preempted.status)
    assert (still.actions, still.events) == ((), ()), "waiting for readmission does nothing more"
    assert still.status.iterations[0].stage("optimize").phase is StagePhase.PREEMPTED  # type: ignore[union-attr]
    world.runs[(1, "optimize")] = replace(world.runs[(1, "optimize")], phase=StagePhase.RUNNING, message=None)
    resumed = world.plan(still.status)
    assert [e.reason for e in resumed.events] == ["StageResumed"]
    assert resumed.status.message is None
    world.finish_running()
    status = world.run_to_end(resumed.status)
    assert status.phase is LoopPhase.SUCCEEDED
    assert world.launches[(1, "optimize")] == 1
    optimize = status.iterations[0].stage("optimize")
    assert optimize is not None and (optimize.preemptions, optimize.attempts) == (1, 0)


def test_a_new_run_waiting_for_admission_is_queued_although_the_failed_run_had_been_admitted() -> None:
    world = FakeWorld(make_spec(maxIterations=1, runtime={"backoffLimit": 2}))
    status = at_optimize(world)
    status = world.plan(status).status  # running, admitted
    world.runs[(1, "optimize")] = StageObservation(StagePhase.FAILED, attempts=1, run_name="demo-1-optimize")
    retried = world.plan(status)
    assert [a.run_name for a in retried.actions if isinstance(a, StartStage)] == ["demo-1-optimize-r2"]
    world.apply(retried)
    world.runs[(1, "optimize")] = queued("demo-1-optimize-r2", run=2, attempts=1)
    waiting = world.plan(retried.status)
    assert waiting.status.iterations[0].stage("optimize").phase is StagePhase.QUEUED  # type: ignore[union-attr]


def test_a_preempted_stage_whose_job_is_gone_is_started_again_under_the_same_name() -> None:
    world = FakeWorld(make_spec(maxIterations=1))
    status = at_optimize(world)
    status = world.plan(status).status
    world.runs[(1, "optimize")] = queued()
    status = world.plan(status).status
    del world.runs[(1, "optimize")]
    again = world.plan(status)
    assert [a.run_name for a in again.actions if isinstance(a, StartStage)] == ["demo-1-optimize"]


# -- suspend and resume -----------------------------------------------------------------------------------


def test_a_suspended_loop_starts_nothing() -> None:
    world = FakeWorld(make_spec(suspend=True))
    result = world.plan(LoopStatus())
    assert result.actions == ()
    assert result.status.phase is LoopPhase.SUSPENDED
    assert condition(result.status, "Suspended") == ("True", "Suspended")


def test_suspending_lets_the_running_stage_finish_and_starts_no_next_one_until_resumed() -> None:
    world = FakeWorld(make_spec(maxIterations=1), scores={1: (0.5, 0.4)})
    status, _ = world.step(LoopStatus())  # acquire started and finished
    result = world.plan(status)
    world.apply(result)  # select running
    world.spec = make_spec(maxIterations=1, suspend=True)
    suspended = world.plan(result.status)
    assert suspended.actions == ()
    assert suspended.status.phase is LoopPhase.SUSPENDED
    world.finish_running()
    still = world.plan(suspended.status)
    assert still.actions == (), "select finished; optimize must wait for resume"
    world.spec = make_spec(maxIterations=1, suspend=False)
    resumed = world.plan(still.status)
    assert started(resumed.actions) == [(1, "optimize")]
    assert resumed.status.phase is LoopPhase.RUNNING
    assert condition(resumed.status, "Suspended")[0] == "False"


def test_a_spec_change_is_noticed_and_applies_to_stages_started_afterwards() -> None:
    world = FakeWorld(make_spec(maxIterations=1))
    status, _ = world.step(LoopStatus())
    status, _ = world.step(status)  # acquire, select done
    hyper = {"hyperparameters": {"learningRate": 0.5}}
    world.spec = make_spec(maxIterations=1, optimize=hyper)
    world.loop = replace(world.loop, generation=2)
    result = world.plan(status)
    assert any(e.reason == "SpecChanged" for e in result.events)
    optimize = next(a for a in result.actions if isinstance(a, StartStage))
    assert isinstance(optimize.config, OptimizeConfig)
    assert optimize.config.hyperparameters.learning_rate == 0.5
    assert result.status.observed_generation == 2


# -- restarts ---------------------------------------------------------------------------------------------


def test_a_runner_that_died_with_its_stage_restarts_that_stage_only() -> None:
    world = FakeWorld(make_spec(maxIterations=1))
    status, _ = world.step(LoopStatus())  # acquire done
    result = world.plan(status)
    world.apply(result)  # select running, then the runner and its stage die: the run disappears
    del world.runs[(1, "select")]
    after = world.plan(result.status)
    assert started(after.actions) == [(1, "select")]
    assert after.status.current().stage("acquire").phase is StagePhase.SUCCEEDED  # type: ignore[union-attr]


@pytest.mark.parametrize("crash_at", range(0, 19))
def test_a_crash_before_the_status_is_written_never_launches_anything_twice(crash_at: int) -> None:
    """At step `crash_at` the runner acts but dies before saving the status; it restarts from the old status."""
    scores = {1: (0.5, 0.4), 2: (0.6, 0.5), 3: (0.55, 0.6)}
    reference = FakeWorld(make_spec(maxIterations=3), scores=scores)
    expected = reference.run_to_end()

    world = FakeWorld(make_spec(maxIterations=3), scores=scores)
    status = LoopStatus()
    for step in range(200):
        result = world.plan(status)
        world.apply(result)
        world.finish_running()
        world.now += timedelta(seconds=10)
        if step != crash_at:
            status = result.status
        if status.phase in (LoopPhase.SUCCEEDED, LoopPhase.FAILED):
            break
    assert all(count == 1 for count in world.launches.values()), world.launches
    assert sorted(world.launches) == sorted(reference.launches)
    assert [it.decision for it in status.iterations] == [it.decision for it in expected.iterations]
    assert status.champion == expected.champion
    assert set(world.champion_writes) == set(reference.champion_writes)


def test_history_is_bounded() -> None:
    world = FakeWorld(make_spec(maxIterations=25), scores={i: (0.5, 0.5) for i in range(1, 26)})
    status = world.run_to_end(max_steps=400)
    assert status.iteration == 25
    assert len(status.iterations) == 20
    assert status.iterations[0].index == 6


def test_observation_of_a_succeeded_stage_records_its_metrics() -> None:
    world = FakeWorld(make_spec())
    result = world.plan(LoopStatus())
    world.runs[(1, "acquire")] = StageObservation(StagePhase.SUCCEEDED, metrics={"samples": 40.0})
    after = world.plan(result.status)
    assert after.status.current().stage("acquire").metrics == {"samples": 40.0}  # type: ignore[union-attr]
    assert any(e.reason == "StageSucceeded" for e in after.events)


def test_a_rejected_event_says_why_in_numbers() -> None:
    world = FakeWorld(make_spec(maxIterations=1), scores={1: (0.4, 0.5)})
    status = LoopStatus()
    events = []
    for _ in range(20):
        result = world.plan(status)
        world.apply(result)
        if (1, "select") in world.runs and world.runs[(1, "select")].phase is StagePhase.RUNNING:
            world.runs[(1, "select")] = replace(
                world.runs[(1, "select")],
                phase=StagePhase.SUCCEEDED,
                metrics={"scored": 400.0, "kept": 4.0, "prompts": 100.0, "prompts_with_kept": 3.0, "mean_score": 0.01},
            )
        world.finish_running()
        status = result.status
        events += result.events
        if status.phase is LoopPhase.SUCCEEDED:
            break
    (rejected,) = [e for e in events if e.reason == "Rejected"]
    assert "1.0% of samples scored; 97 of 100 prompts had no passing sample; kept 4 examples" in rejected.message
    (warning,) = [e for e in events if e.reason == "LowYield"]
    assert warning.type == "Warning"
    assert warning.message.startswith("iteration 1: select kept 4 of 400 samples (1.0%)")


def test_a_rejected_event_names_the_contaminated_items_of_the_evaluate_manifest() -> None:
    world = FakeWorld(make_spec(maxIterations=1), scores={1: (0.4, 0.5)})
    status = LoopStatus()
    events = []
    for _ in range(20):
        result = world.plan(status)
        world.apply(result)
        evaluate = world.runs.get((1, "evaluate"))
        if evaluate is not None and evaluate.phase is StagePhase.RUNNING:
            world.runs[(1, "evaluate")] = replace(
                evaluate,
                phase=StagePhase.SUCCEEDED,
                metrics={"candidate_score": 0.4, "champion_score": 0.5, "heldout/contamination": 0.01},
                findings={"heldout/contaminated": ["17: 12+30=", "88: 7+7="]},
            )
        world.finish_running()
        status = result.status
        events += result.events
        if status.phase is LoopPhase.SUCCEEDED:
            break
    (rejected,) = [e for e in events if e.reason == "Rejected"]
    assert "heldout contamination 1.0% (items 17: 12+30=; 88: 7+7=)" in rejected.message
    evaluate_status = status.iterations[0].stage("evaluate")
    assert evaluate_status is not None and evaluate_status.findings == {
        "heldout/contaminated": ["17: 12+30=", "88: 7+7="]
    }


def test_a_runner_condition_survives_every_plan() -> None:
    from sil_operator.api.status import Condition

    world = FakeWorld(make_spec())
    degraded = Condition(
        type="Degraded", status="True", reason="StoreError", message="no answer", last_transition_time=T0
    )
    status = world.plan(LoopStatus()).status
    status = status.model_copy(update={"conditions": [*status.conditions, degraded]})
    for _ in range(3):
        status, _result = world.step(status)
        assert degraded in status.conditions
