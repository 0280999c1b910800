"""Which engine runs a stage's pods: one pure choice from the engine asked for, the nodes and what is served."""

from __future__ import annotations

import pytest

from sil_operator.failures import classify
from sil_operator.kube.engines import EngineUnavailable, choose_engine
from sil_operator.kube.objects import stage_nodes

from .builders import make_spec


@pytest.mark.parametrize(
    ("requested", "nodes", "jobset_served", "expected"),
    [
        # one node: a plain Job, whatever was asked for and whatever is served
        (None, 1, False, "job"),
        ("auto", 1, True, "job"),
        ("indexed-job", 1, True, "job"),
        ("jobset", 1, False, "job"),
        # several nodes, auto (or unset): a JobSet when the cluster serves it, else an Indexed Job
        (None, 2, False, "indexed-job"),
        (None, 2, True, "jobset"),
        ("auto", 4, False, "indexed-job"),
        ("auto", 4, True, "jobset"),
        # several nodes, asked for by name
        ("indexed-job", 2, True, "indexed-job"),
        ("indexed-job", 2, False, "indexed-job"),
        ("jobset", 2, True, "jobset"),
    ],
)
def test_the_engine_follows_the_nodes_the_request_and_what_the_cluster_serves(
    requested: str | None, nodes: int, jobset_served: bool, expected: str
) -> None:
    assert choose_engine(requested, nodes, jobset_served) == expected


def test_jobset_asked_for_on_a_cluster_without_jobset_is_an_error_that_names_the_field_and_the_ways_out() -> None:
    with pytest.raises(EngineUnavailable) as raised:
        choose_engine("jobset", 2, jobset_served=False)
    message = str(raised.value)
    assert message.startswith("runtime.workload: ")
    assert "jobset.x-k8s.io" in message, "says which API is missing"
    assert "install JobSet" in message and "indexed-job" in message, "says what to do next"
    failure = classify(raised.value)
    assert failure.reason == "EngineUnavailable"
    assert not failure.permanent, "installing JobSet heals the loop without a spec change"


@pytest.mark.parametrize(
    ("stage", "nodes", "expected"),
    [("optimize", 3, 3), ("optimize", 1, 1), ("acquire", 3, 1), ("select", 3, 1), ("evaluate", 3, 1)],
)
def test_only_optimize_spans_nodes(stage: str, nodes: int, expected: int) -> None:
    spec = make_spec(optimize={"distributed": {"nodes": nodes}})
    assert stage_nodes(spec, stage) == expected
