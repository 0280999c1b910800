"""What both runners do in a round besides starting stages (sil_operator.rounds): how a stage run they saw becomes
the planner's StageObservation, and how a MeasureGates action is carried out.

`sil run` sees processes and the operator sees Jobs; the reasons, attempt counts and the permanent flag of what
they report come from here, so a stage that rejected its input, or finished without its manifest, reads the same
on a laptop and on a cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sil_operator.api.status import GatePhase, Measurement, StagePhase
from sil_operator.gates.analysis import QueryContext, resolve_gate
from sil_operator.gates.providers import QueryError, Sample
from sil_operator.kube.observe import observe_job
from sil_operator.local.executor import StageProcess
from sil_operator.local.runner import failed_stage
from sil_operator.planner import MeasureGates, StageObservation, StartStage
from sil_operator.rounds import (
    GateMeasurements,
    StageRun,
    exited,
    manifest_missing,
    manifest_missing_message,
    measure_gates,
    queued,
    record,
    running,
    succeeded,
)
from sil_operator.stageconfig import LoopRef, build_stage_config

from .builders import T0, make_spec

T1 = T0 + timedelta(minutes=5)
MANIFEST = "file:///runs/demo/iterations/1/select/_manifest.json"
RETRY = StageRun("demo-1-select-r2", run=2, attempts=3, earlier_attempts=3)
"""The second run of a stage whose first run used up 3 attempts; none of this run's attempts failed yet."""


def start(attempt: int, run: int = 1) -> StartStage:
    config = build_stage_config(make_spec(), LoopRef("demo", "ml"), 1, "select", "file:///models/base")
    name = "demo-1-select" if run == 1 else f"demo-1-select-r{run}"
    return StartStage(1, "select", name, attempt, config, run)


# -- the run a runner saw -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "run", "expected"),
    [
        pytest.param(1, 1, StageRun("demo-1-select", 1, 0, 0), id="a first start: nothing failed yet"),
        pytest.param(3, 2, StageRun("demo-1-select-r2", 2, 2, 2), id="a retry after 2 failed attempts"),
    ],
)
def test_a_started_run_has_the_attempts_before_it_as_its_failed_ones(
    attempt: int, run: int, expected: StageRun
) -> None:
    assert StageRun.started_by(start(attempt, run)) == expected


# -- what each outcome reads as -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seen", "phase", "attempts", "reason", "permanent", "blocked"),
    [
        pytest.param(succeeded(RETRY, T0, T1, {"kept": 1.0}), StagePhase.SUCCEEDED, 3, None, False, False, id="done"),
        pytest.param(running(RETRY, T0), StagePhase.RUNNING, 3, None, False, False, id="running"),
        pytest.param(
            running(RETRY, T0, reason="ImagePullBackOff", message="pod x: ImagePullBackOff"),
            StagePhase.RUNNING,
            3,
            "ImagePullBackOff",
            False,
            True,
            id="running with a reason is blocked",
        ),
        pytest.param(queued(RETRY, T0, "held"), StagePhase.QUEUED, 3, None, False, False, id="queued: not an attempt"),
        pytest.param(
            manifest_missing(RETRY, MANIFEST, T0, T1),
            StagePhase.FAILED,
            4,
            "ManifestMissing",
            False,
            False,
            id="exit 0 without the manifest: one failed attempt more, retried",
        ),
        pytest.param(
            exited(RETRY, 1, "boom", T0, T1),
            StagePhase.FAILED,
            4,
            "Error",
            False,
            False,
            id="a crash: one failed attempt more, retried",
        ),
        pytest.param(
            exited(RETRY, 2, "select.keep.minScore: must be <= 1", T0, T1),
            StagePhase.FAILED,
            4,
            "InputRejected",
            True,
            False,
            id="exit 2: the input was rejected, for good",
        ),
    ],
)
def test_each_outcome_of_a_run_reads_as_the_planner_expects(
    seen: StageObservation, phase: StagePhase, attempts: int, reason: str | None, permanent: bool, blocked: bool
) -> None:
    assert (seen.phase, seen.attempts, seen.reason, seen.permanent, seen.blocked) == (
        phase,
        attempts,
        reason,
        permanent,
        blocked,
    )
    assert (seen.run_name, seen.run, seen.started_at) == ("demo-1-select-r2", 2, T0)


@pytest.mark.parametrize(
    ("exit_code", "reason", "expected_reason", "permanent"),
    [
        pytest.param(2, "Error", "InputRejected", True, id="exit 2"),
        pytest.param(2, "PodFailurePolicy", "InputRejected", True, id="exit 2 whatever the runner called it"),
        pytest.param(1, "Error", "Error", False, id="exit 1"),
        pytest.param(137, "Error", "Error", False, id="killed"),
        pytest.param(None, "BackoffLimitExceeded", "BackoffLimitExceeded", False, id="no exit code: its reason"),
        pytest.param(None, "OOMKilled", "OOMKilled", False, id="out of memory"),
    ],
)
def test_only_exit_code_2_is_a_permanent_failure(
    exit_code: int | None, reason: str, expected_reason: str, permanent: bool
) -> None:
    seen = exited(RETRY, exit_code, "what the stage said", T0, T1, reason=reason)
    assert (seen.reason, seen.permanent, seen.message, seen.finished_at) == (
        expected_reason,
        permanent,
        "what the stage said",
        T1,
    )


@pytest.mark.parametrize(
    ("attempts", "earlier_attempts", "expected"),
    [
        pytest.param(0, 0, 1, id="a process: its one attempt failed"),
        pytest.param(2, 2, 3, id="a retry that failed: one more than before it"),
        pytest.param(7, 2, 7, id="a Job that counted 5 failed pods of its own: those"),
    ],
)
def test_a_failed_run_used_at_least_one_attempt(attempts: int, earlier_attempts: int, expected: int) -> None:
    run = StageRun("demo-1-select", 1, attempts, earlier_attempts)
    assert exited(run, 1, "boom", T0, T1).attempts == expected


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        pytest.param(
            MANIFEST,
            f"the stage exited 0 without writing {MANIFEST}; the contract says the manifest is written last",
            id="known URI",
        ),
        pytest.param(
            None,
            "the stage exited 0 without writing its manifest; the contract says the manifest is written last",
            id="unknown URI",
        ),
    ],
)
def test_a_missing_manifest_is_named_and_the_contract_quoted(manifest: str | None, message: str) -> None:
    assert manifest_missing_message(manifest) == message
    assert manifest_missing(RETRY, manifest, T0, T1).message == message


def test_a_succeeded_run_keeps_a_copy_of_its_manifests_metrics_and_findings() -> None:
    metrics = {"kept": 128.0}
    findings = {"heldout/contaminated": ["3"]}
    seen = succeeded(RETRY, T0, T1, metrics, findings)
    metrics["kept"] = 0.0
    findings.clear()
    assert (seen.metrics, seen.findings, seen.finished_at) == ({"kept": 128.0}, {"heldout/contaminated": ["3"]}, T1)
    assert succeeded(RETRY, T0, T1, {}).findings == {}


# -- both runners report the same stage the same way --------------------------------------------------------


class Ended:
    """A stage process handle that has exited (failed_stage reads only its exit code, given separately)."""

    def poll(self) -> int | None:
        return 0

    def wait(self, timeout: float | None = None) -> int:
        return 0

    def send_signal(self, sig: int) -> None:
        pass

    def kill(self) -> None:
        pass


def job(status: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "demo-1-select", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"backoffLimit": 2},
        "status": status,
    }


def done(kind: str, reason: str = "") -> dict[str, Any]:
    return {"type": kind, "status": "True", "reason": reason, "lastTransitionTime": "2026-01-01T00:05:00Z"}


@pytest.mark.parametrize(
    ("exit_code", "job_status", "reason", "permanent"),
    [
        pytest.param(
            2,
            {"failed": 1, "conditions": [done("Failed", "PodFailurePolicy")]},
            "InputRejected",
            True,
            id="the stage rejected its input",
        ),
        pytest.param(0, {"succeeded": 1, "conditions": [done("Complete")]}, "ManifestMissing", False, id="no manifest"),
    ],
)
def test_a_process_and_a_job_that_ended_alike_are_reported_alike(
    tmp_path: Path, exit_code: int, job_status: dict[str, Any], reason: str, permanent: bool
) -> None:
    log = tmp_path / "demo-1-select.log"
    log.write_text("select.keep.minScore: must be <= 1\n")
    local = failed_stage(StageProcess(start(1), Ended(), log, T0), exit_code, MANIFEST, T1)
    kube = observe_job(job(job_status), None, manifest=MANIFEST)
    assert (local.phase, local.reason, local.permanent, local.attempts, local.run_name) == (
        kube.phase,
        kube.reason,
        kube.permanent,
        kube.attempts,
        kube.run_name,
    )
    assert (kube.reason, kube.permanent, kube.attempts) == (reason, permanent, 1)
    if exit_code == 0:
        assert local.message == f"exit code 0: {kube.message} (log: {log})"


# -- gates --------------------------------------------------------------------------------------------------

GATES = [
    {
        "name": "improves",
        "query": 'selfimprove_eval_score{iteration="{{iteration}}",model="{{model}}"}',
        "successCondition": "result >= champion + 0.01",
    },
    {
        "name": "floor",
        "query": 'selfimprove_eval_score{iteration="{{iteration}}",model="candidate"}',
        "successCondition": "result >= 0.5",
    },
]


class Scores:
    """Answers a gate query with the candidate's or the champion's score (None: no data), or cannot be reached."""

    def __init__(self, candidate: float | None, champion: float | None, down: bool = False) -> None:
        self.scores = {"candidate": candidate, "champion": champion}
        self.down = down

    def query(self, promql: str) -> list[Sample]:
        if self.down:
            raise QueryError("connection refused")
        value = self.scores["champion" if 'model="champion"' in promql else "candidate"]
        return [] if value is None else [Sample({}, value)]


def ticking() -> Callable[[], datetime]:
    times: Iterator[datetime] = (T0 + timedelta(seconds=s) for s in range(100))
    return lambda: next(times)


def measure_gates_action(iteration: int = 2) -> MeasureGates:
    spec = make_spec(promotion={"gates": GATES})
    context = QueryContext("demo", "ml", iteration, "heldout")
    return MeasureGates(iteration, tuple(resolve_gate(gate, context) for gate in spec.promotion.gates))


@pytest.mark.parametrize(
    ("provider", "improves", "floor"),
    [
        pytest.param(Scores(0.7, 0.6), GatePhase.SUCCESSFUL, GatePhase.SUCCESSFUL, id="both hold"),
        pytest.param(Scores(0.6, 0.6), GatePhase.FAILED, GatePhase.SUCCESSFUL, id="no improvement"),
        pytest.param(Scores(0.4, 0.2), GatePhase.SUCCESSFUL, GatePhase.FAILED, id="below the floor"),
        pytest.param(Scores(None, 0.6), GatePhase.INCONCLUSIVE, GatePhase.INCONCLUSIVE, id="no data"),
        pytest.param(Scores(0.7, 0.6, down=True), GatePhase.ERROR, GatePhase.ERROR, id="provider down"),
    ],
)
def test_each_gate_the_action_names_is_measured_once_under_its_iteration_and_name(
    provider: Scores, improves: GatePhase, floor: GatePhase
) -> None:
    taken = measure_gates(make_spec(promotion={"gates": GATES}), measure_gates_action(2), provider, ticking())
    assert {key: [m.phase for m in ms] for key, ms in taken.items()} == {
        (2, "improves"): [improves],
        (2, "floor"): [floor],
    }


def test_each_measurement_is_stamped_when_its_queries_start() -> None:
    taken = measure_gates(make_spec(promotion={"gates": GATES}), measure_gates_action(), Scores(0.7, 0.6), ticking())
    assert [ms[0].at for ms in taken.values()] == [T0, T0 + timedelta(seconds=1)]


def test_a_gate_the_action_does_not_name_is_not_measured() -> None:
    action = measure_gates_action()
    only_floor = MeasureGates(action.iteration, action.gates[1:])
    taken = measure_gates(make_spec(promotion={"gates": GATES}), only_floor, Scores(0.7, 0.6), ticking())
    assert list(taken) == [(2, "floor")]


def measurement(phase: GatePhase, second: int) -> Measurement:
    return Measurement(phase=phase, at=T0 + timedelta(seconds=second))


@pytest.mark.parametrize(
    ("pending", "taken", "expected"),
    [
        pytest.param({}, {}, {}, id="nothing taken"),
        pytest.param(
            {},
            {(1, "g"): [measurement(GatePhase.SUCCESSFUL, 1)]},
            {(1, "g"): [measurement(GatePhase.SUCCESSFUL, 1)]},
            id="first measurement",
        ),
        pytest.param(
            {(1, "g"): [measurement(GatePhase.ERROR, 0)]},
            {(1, "g"): [measurement(GatePhase.SUCCESSFUL, 1)], (1, "h"): [measurement(GatePhase.FAILED, 1)]},
            {
                (1, "g"): [measurement(GatePhase.ERROR, 0), measurement(GatePhase.SUCCESSFUL, 1)],
                (1, "h"): [measurement(GatePhase.FAILED, 1)],
            },
            id="after the ones not planned with yet, in order",
        ),
    ],
)
def test_measurements_are_kept_for_the_next_plan_in_the_order_taken(
    pending: GateMeasurements, taken: GateMeasurements, expected: GateMeasurements
) -> None:
    record(pending, taken)
    assert pending == expected
