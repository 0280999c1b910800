"""The CRD alone keeps invalid loops out of the cluster, and documents the valid ones.

The CRD (crds/selfimprove.dev_selfimprovementloops.yaml, generated from the API models) carries a structural schema
with bounds, enums, patterns, list-map keys and CEL rules. A user who applies a bad loop must be told by the API
server, naming the field, before any operator sees it; a good loop is stored with the schema's defaults, listed with
the printer columns and explained by `kubectl explain`. No operator runs in these tests.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.controlplane import ControlPlane
from tests.integration.test_operator import kwok_loop

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DELETE = object()
"""A value that removes the field instead of setting it."""

GATE = {"name": "improves", "query": "selfimprove_eval_score", "successCondition": "result > champion"}


@pytest.fixture(scope="module")
def loops_namespace(control_plane: ControlPlane) -> Iterator[str]:
    """One namespace for the whole table: rejected loops are never stored, so the rows cannot disturb each other."""
    name = control_plane.create_namespace("crd-validation")
    yield name
    control_plane.delete_namespace(name)


def valid_loop(namespace: str, name: str) -> dict[str, Any]:
    """The loop of the operator tests: valid, with no optional sections."""
    return kwok_loop(namespace, name, Path("/var/lib/selfimprove/runs") / name, manifests=False)


def changed(document: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A copy of `document` with each dotted path of `changes` set to its value (or removed, for DELETE)."""
    result = copy.deepcopy(document)
    for path, value in changes.items():
        *parents, last = path.split(".")
        node = result
        for part in parents:
            node = node.setdefault(part, {})
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return result


def apply(plane: ControlPlane, document: dict[str, Any]) -> tuple[int, str]:
    result = plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(document), check=False)
    return result.returncode, result.stdout + result.stderr


INVALID: list[tuple[str, dict[str, Any], list[str]]] = [
    # (row id, {dotted field: new value}, fragments the API server's answer must contain)
    ("maxIterations 0", {"spec.maxIterations": 0}, ["spec.maxIterations", "greater than or equal to 1"]),
    ("maxIterations above 1000", {"spec.maxIterations": 1001}, ["spec.maxIterations", "less than or equal to 1000"]),
    ("a string for an integer", {"spec.maxIterations": "three"}, ["spec.maxIterations", "must be of type integer"]),
    (
        "an unknown field (strict decoding)",
        {"spec.maxIteration": 3},
        ["strict decoding", 'unknown field "spec.maxIteration"'],
    ),
    (
        "an unknown nested field (strict decoding)",
        {"spec.runtime.backoffLimits": 1},
        ["strict decoding", 'unknown field "spec.runtime.backoffLimits"'],
    ),
    (
        "negative samplesPerPrompt",
        {"spec.acquire.samplesPerPrompt": -1},
        ["spec.acquire.samplesPerPrompt", "greater than or equal to 1"],
    ),
    (
        "topP above 1",
        {"spec.acquire.sampling": {"topP": 1.5}},
        ["spec.acquire.sampling.topP", "less than or equal to 1"],
    ),
    ("unknown engine", {"spec.acquire.engine": "llama.cpp"}, ["spec.acquire.engine", "Unsupported value", "vllm"]),
    (
        "unknown scorer type",
        {"spec.select": {"scorer": {"type": "reward-model"}}},
        ["spec.select.scorer.type", "Unsupported value", "majority-vote"],
    ),
    (
        "a verifier that is neither built in nor module:function (pattern)",
        {"spec.select": {"scorer": {"verifier": "verify.py"}}},
        ["spec.select.scorer.verifier", "should match"],
    ),
    (
        "majority-vote with one sample per prompt (CEL rule)",
        {"spec.acquire.samplesPerPrompt": 1, "spec.select": {"scorer": {"type": "majority-vote"}}},
        ["spec.acquire.samplesPerPrompt", "majority-vote needs acquire.samplesPerPrompt >= 2"],
    ),
    (
        "a gate without any condition (CEL rule)",
        {"spec.promotion": {"gates": [{"name": "improves", "query": "selfimprove_eval_score"}]}},
        ["spec.promotion.gates[0]", "a gate needs successCondition, failureCondition or both"],
    ),
    (
        "two gates with the same name (list-map key)",
        {"spec.promotion": {"gates": [GATE, {**GATE, "successCondition": "result > 0.5"}]}},
        ["spec.promotion.gates[1]", "Duplicate value", '"name":"improves"'],
    ),
    ("no gates at all", {"spec.promotion": {"gates": []}}, ["spec.promotion.gates", "at least 1 items"]),
    (
        "a dataset name that is not a DNS label (pattern)",
        {"spec.evaluate.datasets": [{"name": "Held_Out", "uri": "file:///data/heldout.jsonl"}]},
        ["spec.evaluate.datasets[0].name", "should match"],
    ),
    (
        "two datasets with the same name (list-map key)",
        {"spec.evaluate.datasets": [{"name": "heldout", "uri": "file:///a.jsonl"}, {"name": "heldout", "uri": "b"}]},
        ["spec.evaluate.datasets[1]", "Duplicate value"],
    ),
    (
        "backoffLimit above 20",
        {"spec.runtime.backoffLimit": 21},
        ["spec.runtime.backoffLimit", "less than or equal to 20"],
    ),
    ("missing acquire (required)", {"spec.acquire": DELETE}, ["spec.acquire", "Required value"]),
    ("missing model uri (required)", {"spec.model": {}}, ["spec.model.uri", "Required value"]),
    ("a name longer than 40 (CEL rule)", {"metadata.name": "x" * 41}, ["metadata.name: at most 40 characters"]),
]


@pytest.mark.parametrize(
    ("changes", "expected"), [pytest.param(changes, expected, id=row) for row, changes, expected in INVALID]
)
def test_the_api_server_rejects_an_invalid_loop_naming_the_field(
    control_plane: ControlPlane, loops_namespace: str, changes: dict[str, Any], expected: list[str]
) -> None:
    """Every row breaks one rule of a valid loop; `kubectl apply` fails, says why, and nothing is stored."""
    document = changed(valid_loop(loops_namespace, "rejected"), changes)
    code, answer = apply(control_plane, document)
    assert code != 0, f"accepted:\n{answer}"
    for fragment in expected:
        assert fragment in answer, f"{fragment!r} not in the API server's answer:\n{answer}"
    stored = control_plane.kubectl("get", "sil", "-n", loops_namespace, "-o", "name", check=False)
    assert stored.stdout.strip() == "", "a rejected loop must not be stored"


def test_the_base_document_of_the_table_is_itself_valid(control_plane: ControlPlane, loops_namespace: str) -> None:
    """Otherwise the rows above would prove nothing: each must be rejected for its own change alone."""
    result = control_plane.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(valid_loop(loops_namespace, "rejected"))
    )
    assert "created (server dry run)" in result.stdout


def test_a_valid_loop_is_stored_with_the_schema_defaults_filled_in(control_plane: ControlPlane, namespace: str) -> None:
    """Omitted fields come back with their documented defaults, so `kubectl get -o yaml` shows what will run.

    The API server fills the defaults of fields whose parent object is present: `select: {scorer: {}, keep: {}}`
    gets its scorer and keep defaults.
    """
    document = valid_loop(namespace, "defaults")
    document["spec"]["select"] = {"scorer": {}, "keep": {}}
    document["spec"]["promotion"] = {"gates": [GATE]}
    code, answer = apply(control_plane, document)
    assert code == 0, answer
    spec = control_plane.get_json("sil", "defaults", "-n", namespace)["spec"]
    assert spec["suspend"] is False
    assert spec["acquire"]["samplesPerPrompt"] == 4
    assert spec["acquire"]["engine"] == "transformers"
    assert spec["acquire"]["batchSize"] == 64
    assert spec["select"] == {
        "scorer": {"type": "verifier", "verifier": "exact-match", "minVoteShare": 0},
        "keep": {"minScore": 1, "dedupe": True},
    }
    assert spec["evaluate"]["verifier"] == "exact-match"
    assert spec["evaluate"]["batchSize"] == 64
    gate = spec["promotion"]["gates"][0]
    assert {k: gate[k] for k in ("count", "intervalSeconds", "failureLimit", "consecutiveErrorLimit", "dryRun")} == {
        "count": 1,
        "intervalSeconds": 0,
        "failureLimit": 0,
        "consecutiveErrorLimit": 4,
        "dryRun": False,
    }
    assert spec["runtime"]["resources"] == {"limits": {"nvidia.com/gpu": 1}}, "given values are kept as written"


def test_objects_left_out_entirely_are_stored_with_their_defaults(control_plane: ControlPlane, namespace: str) -> None:
    """An omitted optional object (select, optimize, sampling, ...) defaults to {} and then to its fields' defaults."""
    document = valid_loop(namespace, "bare")
    document["spec"].pop("select", None)
    document["spec"].pop("optimize", None)
    code, answer = apply(control_plane, document)
    assert code == 0, answer
    spec = control_plane.get_json("sil", "bare", "-n", namespace)["spec"]
    assert spec["select"]["scorer"] == {"type": "verifier", "verifier": "exact-match", "minVoteShare": 0}
    assert spec["optimize"]["method"] == "sft"
    assert spec["optimize"]["initFrom"] == "champion"
    assert spec["optimize"]["hyperparameters"]["learningRate"] == pytest.approx(1e-4)
    assert spec["acquire"]["sampling"]["temperature"] == 1
    assert spec["evaluate"]["refinement"] == {"method": "self-consistency", "samples": 8, "temperature": 0.7}


def test_a_loop_at_the_limits_is_accepted(control_plane: ControlPlane, namespace: str) -> None:
    """The bounds are inclusive: a 40-character name, topP 1, one iteration, majority-vote with two samples."""
    document = valid_loop(namespace, "x" * 40)
    document["spec"].update(
        maxIterations=1,
        acquire={"prompts": {"uri": "file:///p.jsonl"}, "samplesPerPrompt": 2, "sampling": {"topP": 1.0}},
        select={"scorer": {"type": "majority-vote"}},
        promotion={"gates": [{"name": "floor", "query": "up", "failureCondition": "result < 0.5"}]},
    )
    code, answer = apply(control_plane, document)
    assert code == 0, answer


def test_kubectl_get_shows_the_printer_columns_filled_from_the_status(
    control_plane: ControlPlane, namespace: str
) -> None:
    """PHASE, ITERATION, CHAMPION, SCORE and AGE by default; MAX and MESSAGE with -o wide."""
    code, answer = apply(control_plane, valid_loop(namespace, "columns"))
    assert code == 0, answer
    status = {
        "phase": "Running",
        "iteration": 3,
        "champion": {"iteration": 2, "uri": "file:///runs/columns/iterations/2/optimize/checkpoint", "score": 0.75},
        "message": "gates-running",
    }
    control_plane.kubectl(
        "patch",
        "sil",
        "columns",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        yaml.safe_dump({"status": status}),
    )
    header, row = control_plane.kubectl("get", "sil", "-n", namespace).stdout.splitlines()
    assert header.split() == ["NAME", "PHASE", "ITERATION", "CHAMPION", "SCORE", "AGE"]
    assert row.split()[:5] == ["columns", "Running", "3", "2", "0.75"]
    header, row = control_plane.kubectl("get", "sil", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert header.split() == ["NAME", "PHASE", "ITERATION", "MAX", "CHAMPION", "SCORE", "MESSAGE", "AGE"]
    assert row.split()[:7] == ["columns", "Running", "3", "2", "2", "0.75", "gates-running"]


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("sil.spec.select.keep", ["Which scored completions become training data.", "minScore", "Default: 1.0."]),
        (
            "sil.spec.promotion.gates.successCondition",
            ["CEL expression over `result` and `champion`", "result >= champion + 0.01"],
        ),
        ("selfimprovementloop.spec.acquire.samplesPerPrompt", ["Completions per prompt. Default: 4."]),
    ],
)
def test_kubectl_explain_shows_the_field_documentation(
    control_plane: ControlPlane, field: str, expected: list[str]
) -> None:
    """The descriptions of the API models reach `kubectl explain` (long lines are wrapped, so compare words)."""
    text = " ".join(control_plane.kubectl("explain", field).stdout.split())
    for fragment in expected:
        assert fragment in text, f"{fragment!r} not in kubectl explain {field}:\n{text}"
