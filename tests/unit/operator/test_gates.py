"""Promotion gates: CEL conditions, Argo-style measurement and gate phases, and local (manifest) queries."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sil_operator.api.spec import GateSpec
from sil_operator.api.status import GatePhase, GateStatus, Measurement
from sil_operator.gates.analysis import (
    QueryContext,
    assess,
    measurement_phase,
    next_measurement_at,
    record,
    resolve_gate,
)
from sil_operator.gates.cel import ConditionError, evaluate_condition
from sil_operator.gates.measure import measure
from sil_operator.gates.providers import ManifestProvider, QueryError, Sample, parse_selector
from sil_stages.core.contract import Manifest, MetricSample
from sil_stages.core.store import Store

from .builders import T0


def gate(**fields: Any) -> GateSpec:
    base: dict[str, Any] = {"name": "g", "query": 's{iteration="{{iteration}}",model="{{model}}"}'}
    base.update(fields)
    return GateSpec.model_validate(base)


@pytest.mark.parametrize(
    ("expression", "result", "champion", "expected"),
    [
        ("result >= champion + 0.01", 0.52, 0.5, True),
        ("result >= champion + 0.01", 0.505, 0.5, False),
        ("result > 0.9 || result > champion", 0.5, 0.4, True),
        ("result < 0.5", 0.7, None, False),
    ],
)
def test_conditions_are_cel_over_result_and_champion(
    expression: str, result: float, champion: float | None, expected: bool
) -> None:
    assert evaluate_condition(expression, result, champion) is expected


def test_a_condition_is_never_python() -> None:
    with pytest.raises(ConditionError):
        evaluate_condition("__import__('os').system('true')", 1.0, 1.0)


def test_a_condition_that_needs_the_champion_errors_without_one() -> None:
    with pytest.raises(ConditionError, match="champion"):
        evaluate_condition("result > champion", 1.0, None)


@pytest.mark.parametrize(
    ("conditions", "result", "expected"),
    [
        ({"successCondition": "result > 0.5"}, 0.6, GatePhase.SUCCESSFUL),
        ({"successCondition": "result > 0.5"}, 0.4, GatePhase.FAILED),
        ({"failureCondition": "result < 0.3"}, 0.2, GatePhase.FAILED),
        ({"failureCondition": "result < 0.3"}, 0.4, GatePhase.SUCCESSFUL),
        ({"successCondition": "result > 0.5", "failureCondition": "result < 0.3"}, 0.4, GatePhase.INCONCLUSIVE),
        ({"successCondition": "result > 0.5", "failureCondition": "result < 0.3"}, 0.2, GatePhase.FAILED),
    ],
)
def test_measurement_phase_follows_argo(conditions: dict[str, str], result: float, expected: GatePhase) -> None:
    assert measurement_phase(gate(**conditions), result, None) is expected


def m(phase: GatePhase, seconds: int = 0) -> Measurement:
    return Measurement(phase=phase, at=T0 + timedelta(seconds=seconds))


def gate_status(*phases: GatePhase) -> GateStatus:
    status = GateStatus(name="g")
    for index, phase in enumerate(phases):
        status = record(status, m(phase, index))
    return status


S, F, N, E = GatePhase.SUCCESSFUL, GatePhase.FAILED, GatePhase.INCONCLUSIVE, GatePhase.ERROR


@pytest.mark.parametrize(
    ("limits", "phases", "expected"),
    [
        ({}, [], GatePhase.PENDING),
        ({}, [S], GatePhase.SUCCESSFUL),
        ({}, [F], GatePhase.FAILED),
        ({}, [N], GatePhase.INCONCLUSIVE),
        ({"count": 3}, [S, S], GatePhase.RUNNING),
        ({"count": 3, "failureLimit": 1}, [S, F, S], GatePhase.SUCCESSFUL),
        ({"count": 3, "failureLimit": 1}, [F, F], GatePhase.FAILED),
        ({"count": 2, "inconclusiveLimit": 1}, [N, S, S], GatePhase.SUCCESSFUL),
        ({"consecutiveErrorLimit": 2}, [E, E], GatePhase.RUNNING),
        ({"consecutiveErrorLimit": 2}, [E, E, E], GatePhase.ERROR),
        ({"consecutiveErrorLimit": 1}, [E, S], GatePhase.SUCCESSFUL),
        ({"consecutiveErrorLimit": 1, "count": 3}, [E, S, E, S, E, S], GatePhase.SUCCESSFUL),
    ],
)
def test_gate_phase_from_its_measurements(limits: dict[str, int], phases: list[GatePhase], expected: GatePhase) -> None:
    assert assess(gate(successCondition="true", **limits), gate_status(*phases)) is expected


@pytest.mark.parametrize(
    ("limits", "phases"),
    [
        ({"inconclusiveLimit": 5}, [N]),
        ({"inconclusiveLimit": 5, "consecutiveErrorLimit": 5}, [E, E, N]),
        ({"count": 2, "inconclusiveLimit": 1}, [N, S]),
        ({"count": 2, "inconclusiveLimit": 3}, [N, N, N]),
    ],
)
def test_an_empty_result_is_not_a_conclusive_measurement_so_it_never_completes_a_gate(
    limits: dict[str, int], phases: list[GatePhase]
) -> None:
    """`count` conclusive measurements make a gate Successful; an Inconclusive one (no data, e.g. Prometheus just
    restarted and has not scraped yet) is measured again, within inconclusiveLimit, and never promotes."""
    assert assess(gate(successCondition="true", **limits), gate_status(*phases)) is GatePhase.RUNNING


@pytest.mark.parametrize(
    ("failed_over", "inconclusive_over", "errors_over", "expected"),
    [
        (False, False, False, GatePhase.RUNNING),
        (True, False, False, GatePhase.FAILED),
        (False, True, False, GatePhase.INCONCLUSIVE),
        (False, False, True, GatePhase.ERROR),
        (True, True, False, GatePhase.INCONCLUSIVE),
        (True, False, True, GatePhase.ERROR),
        (False, True, True, GatePhase.ERROR),
        (True, True, True, GatePhase.ERROR),
    ],
)
def test_when_several_limits_are_exceeded_error_wins_over_inconclusive_which_wins_over_failed(
    failed_over: bool, inconclusive_over: bool, errors_over: bool, expected: GatePhase
) -> None:
    """Argo Rollouts' assessMetricFailureInconclusiveOrError: each later check overwrites the phase."""
    phases = [S] + [F] * failed_over + [N] * inconclusive_over + [E] * errors_over
    limits = {"count": 10, "failureLimit": 0, "inconclusiveLimit": 0, "consecutiveErrorLimit": 0}
    assert assess(gate(successCondition="true", **limits), gate_status(*phases)) is expected


def test_history_is_bounded_but_counts_are_kept() -> None:
    status = gate_status(*([E, S] * 20))
    assert len(status.measurements) == 10
    assert (status.successful, status.error, status.consecutive_error) == (20, 20, 0)


def test_measurements_wait_for_initial_delay_then_interval_and_errors_back_off() -> None:
    spec = gate(successCondition="true", initialDelaySeconds=30, intervalSeconds=2, count=3)
    assert next_measurement_at(spec, GateStatus(name="g"), T0) == T0 + timedelta(seconds=30)
    assert next_measurement_at(spec, gate_status(S), T0) == T0 + timedelta(seconds=2)
    assert next_measurement_at(spec, gate_status(E), T0) == T0 + timedelta(seconds=5)


def test_placeholders_render_for_candidate_and_champion() -> None:
    resolved = resolve_gate(gate(successCondition="true"), QueryContext("arith", "ml", 3))
    assert resolved.candidate == 's{iteration="3",model="candidate"}'
    assert resolved.champion == 's{iteration="3",model="champion"}'
    plain = resolve_gate(gate(query='s{loop="{{loop}}"}', successCondition="true"), QueryContext("a", "ml", 1))
    assert plain.champion is None


@pytest.mark.parametrize(
    ("query", "context", "candidate"),
    [
        ('s{loop="{{loop}}",namespace="{{namespace}}"}', QueryContext("a", "ml", 1), 's{loop="a",namespace="ml"}'),
        ('s{iteration="{{ iteration }}"}', QueryContext("a", "ml", 7), 's{iteration="7"}'),
        ('s{dataset="{{dataset}}"}', QueryContext("a", "ml", 1, "heldout"), 's{dataset="heldout"}'),
        ('s{model="{{model}}"}', QueryContext("a", "ml", 1), 's{model="candidate"}'),
    ],
)
def test_every_placeholder_renders(query: str, context: QueryContext, candidate: str) -> None:
    assert resolve_gate(gate(query=query, successCondition="true"), context).candidate == candidate


def test_a_dataset_placeholder_without_a_dataset_is_an_error_naming_the_known_ones() -> None:
    with pytest.raises(ConditionError, match=r"\{\{dataset\}\} has no value here: expected one of iteration"):
        resolve_gate(gate(query='s{dataset="{{dataset}}"}', successCondition="true"), QueryContext("a", "ml", 1))


class Fixed:
    def __init__(self, answers: dict[str, list[Sample]] | Exception) -> None:
        self.answers = answers

    def query(self, promql: str) -> list[Sample]:
        if isinstance(self.answers, Exception):
            raise self.answers
        return self.answers.get(promql, [])


def test_measure_turns_every_outcome_into_a_measurement() -> None:
    spec = gate(successCondition="result > champion")
    resolved = resolve_gate(spec, QueryContext("a", "ns", 1))
    both = {resolved.candidate: [Sample({}, 0.7)], resolved.champion or "": [Sample({}, 0.5)]}
    ok = measure(spec, resolved, Fixed(both), T0)
    assert (ok.phase, ok.value, ok.champion) == (GatePhase.SUCCESSFUL, 0.7, 0.5)
    assert measure(spec, resolved, Fixed({}), T0).phase is GatePhase.INCONCLUSIVE
    assert measure(spec, resolved, Fixed(QueryError("refused")), T0).phase is GatePhase.ERROR
    many = {resolved.candidate: [Sample({}, 0.7), Sample({}, 0.8)]}
    error = measure(spec, resolved, Fixed(many), T0)
    assert error.phase is GatePhase.ERROR
    assert error.message is not None and "2 series" in error.message


def test_selectors_parse_label_matchers() -> None:
    selector = parse_selector('selfimprove_eval_score{loop="a", model=~"cand.*",dataset!="x"}')
    assert selector.name == "selfimprove_eval_score"
    assert selector.matches("selfimprove_eval_score", {"loop": "a", "model": "candidate", "dataset": "y"})
    assert not selector.matches("selfimprove_eval_score", {"loop": "a", "model": "champion", "dataset": "y"})
    with pytest.raises(QueryError, match=r"set promotion\.prometheus"):
        parse_selector("avg(selfimprove_eval_score)")


def test_local_gates_read_the_evaluate_manifest(tmp_path: Path) -> None:
    storage = tmp_path.as_uri()
    store = Store()
    series = [
        MetricSample(
            name="selfimprove_eval_score",
            labels={"loop": "a", "iteration": "2", "dataset": "heldout", "model": model},
            value=value,
        )
        for model, value in (("candidate", 0.8), ("champion", 0.6))
    ]
    manifest = Manifest(
        stage="evaluate", iteration=2, loop="a", series=tuple(series), started_at=T0, finished_at=T0, duration_seconds=0
    )
    store.write_text(f"{storage}/iterations/2/evaluate/_manifest.json", manifest.model_dump_json())
    provider = ManifestProvider(store, storage)
    found = provider.query('selfimprove_eval_score{iteration="2",model="candidate"}')
    assert [s.value for s in found] == [0.8]
    assert provider.query('selfimprove_eval_score{iteration="3",model="candidate"}') == []
    with pytest.raises(QueryError, match="must select one iteration"):
        provider.query('selfimprove_eval_score{model="candidate"}')
