"""The loop spec: explicit defaults, and every mistake rejected with the field path and what was expected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sil_operator.api.loader import SpecError, load_loop, parse_loop
from sil_operator.api.spec import CONTAMINATION_GATE, DEFAULT_GATE, LoopSpec
from tests.invalid_specs import INVALID, Invalid, patched, valid_loop

from .builders import loop_document, with_spec


def test_a_minimal_loop_gets_documented_defaults() -> None:
    spec = parse_loop(loop_document()).spec
    assert spec.suspend is False
    assert spec.acquire.engine == "transformers"
    assert spec.acquire.sampling.temperature == 1.0
    assert spec.select.scorer.type == "verifier"
    assert spec.select.scorer.verifier == "exact-match"
    assert spec.select.keep.min_score == 1.0
    assert spec.select.keep.dedupe.method == "exact"
    assert spec.optimize.method == "sft"
    assert spec.optimize.init_from == "champion"
    assert spec.evaluate.refinement.method == "self-consistency"
    assert spec.stopping.target_score is None


def test_every_field_is_documented() -> None:
    """The descriptions become `kubectl explain` and `sil explain` text: none may be missing."""
    missing: list[str] = []

    def walk(model: type, path: str) -> None:
        for name, info in model.model_fields.items():  # type: ignore[attr-defined]
            field_path = f"{path}.{info.alias or name}"
            if not info.description:
                missing.append(field_path)
            for arg in _nested_models(info.annotation):
                walk(arg, field_path)

    walk(LoopSpec, "spec")
    assert missing == []


def _nested_models(annotation: Any) -> list[type]:
    from typing import get_args

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in get_args(annotation) for m in _nested_models(a)]


def test_without_gates_the_default_gate_requires_the_interval_of_the_difference_to_be_above_zero() -> None:
    document = loop_document()
    del document["spec"]["promotion"]
    (gate,) = parse_loop(document).spec.promotion.gates
    assert gate.query.startswith("selfimprove_eval_delta_ci_low{")
    assert gate.success_condition == "result > 0"
    assert "{{model}}" not in gate.query, "the difference is one series per dataset, not one per model"
    assert 'dataset="{{dataset}}"' in gate.query, "with two datasets an unpinned query matches two series"


def test_contamination_max_overlap_adds_a_contamination_gate_to_the_user_gates() -> None:
    document = loop_document()
    document["spec"]["evaluate"]["contamination"] = {"maxOverlap": 0.02}
    gates = parse_loop(document).spec.promotion.gates
    assert [g.name for g in gates] == [*(g["name"] for g in document["spec"]["promotion"]["gates"]), CONTAMINATION_GATE]
    assert gates[-1].query.startswith("selfimprove_eval_contamination_max{")
    assert gates[-1].success_condition == "result <= 0.020000"


def test_contamination_gate_is_added_once_and_to_the_default_gate() -> None:
    document = loop_document()
    del document["spec"]["promotion"]
    document["spec"]["evaluate"]["contamination"] = {"maxOverlap": 0}
    spec = parse_loop(document).spec
    assert [g.name for g in spec.promotion.gates] == [DEFAULT_GATE, CONTAMINATION_GATE]
    again = LoopSpec.model_validate(spec.model_dump(mode="json", by_alias=True, exclude_none=True))
    assert [g.name for g in again.promotion.gates] == [DEFAULT_GATE, CONTAMINATION_GATE]


def test_without_max_overlap_contamination_is_measured_but_never_gates() -> None:
    document = loop_document()
    document["spec"]["evaluate"]["contamination"] = {"ngram": 4}
    assert CONTAMINATION_GATE not in [g.name for g in parse_loop(document).spec.promotion.gates]


@pytest.mark.parametrize("row", INVALID, ids=[row.id for row in INVALID])
def test_sil_validate_rejects_every_invalid_loop_of_the_shared_table_naming_the_field(row: Invalid) -> None:
    """The same table runs against the API server (tests/integration/test_crd_validation.py)."""
    with pytest.raises(SpecError) as raised:
        parse_loop(patched(valid_loop(), row.changes))
    named = [problem for problem in raised.value.problems if problem.startswith(row.field + ":")]
    assert named, f"no problem names {row.field}: {raised.value.problems}"
    assert any(row.says in problem for problem in named), raised.value.problems


def test_the_base_loop_of_the_shared_table_is_valid() -> None:
    """Otherwise the rows would prove nothing: each must be rejected for its own change alone."""
    parse_loop(valid_loop())


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("spec.maxIterations", 0, "spec.maxIterations: Input should be greater than or equal to 1"),
        (
            "spec.optimize.hyperparameters.deepspeed",
            "zero3",
            "spec.optimize.hyperparameters: hyperparameters.deepspeed moved to optimize.distributed.deepspeed",
        ),
        ("spec.acquire.engine", "tgi", "spec.acquire.engine: Input should be 'transformers' or 'vllm'"),
        ("spec.acquire.samplesPerPrompts", 4, "spec.acquire.samplesPerPrompts: unknown field"),
        ("spec.select.scorer.verifier", "fuzzy", "spec.select.scorer.verifier: expected exact-match, math, or a"),
        ("spec.evaluate.verifier", "fuzzy", "spec.evaluate.verifier: expected exact-match, math, or a Python function"),
        ("spec.select.scorer.answerPattern", "([0-9]+", "spec.select.scorer.answerPattern: not a valid regular expr"),
        ("spec.evaluate.datasets.0.name", "Held_Out", "spec.evaluate.datasets.0.name: expected a DNS label"),
        (
            "spec.promotion.gates.0.successCondition",
            "result >=",
            "spec.promotion.gates.0.successCondition: 'result >='",
        ),
        ("spec.promotion.gates.0.successCondition", "result > best", "undeclared reference to 'best'"),
        ("spec.promotion.gates.0.query", 'x{l="{{loops}}"}', "placeholders are among {{loop}}, {{namespace}}"),
        ("spec.model.uri", "ftp://host/base", "spec.model.uri: expected s3://bucket/prefix, file:///path, hf://"),
        ("spec.storage.uri", "ftp://host/runs", "spec.storage.uri: expected s3://bucket/key, file:///path or a path"),
        ("metadata.name", "My_Loop", "metadata.name: expected a DNS label of at most 40 characters"),
    ],
)
def test_a_mistake_is_reported_with_what_was_expected(path: str, value: Any, message: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse_loop(with_spec(loop_document(), path, value))
    assert any(message in problem for problem in raised.value.problems), raised.value.problems


@pytest.mark.parametrize(
    "uri",
    ["file:///models/base", "s3://bucket/base", "hf://org/name", "./base", "/abs/base", "base", "a/b:c", "_x:y"],
)
def test_model_uris_with_a_known_scheme_or_none_are_accepted(uri: str) -> None:
    assert parse_loop(with_spec(loop_document(), "spec.model.uri", uri)).spec.model.uri == uri


def test_a_missing_required_field_is_named() -> None:
    document = loop_document()
    del document["spec"]["acquire"]
    with pytest.raises(SpecError) as raised:
        parse_loop(document)
    assert raised.value.problems == ["spec.acquire: required field is missing"]


def test_majority_vote_needs_more_than_one_sample() -> None:
    document = with_spec(loop_document(), "spec.select", {"scorer": {"type": "majority-vote"}})
    document = with_spec(document, "spec.acquire.samplesPerPrompt", 1)
    with pytest.raises(SpecError) as raised:
        parse_loop(document)
    assert "acquire.samplesPerPrompt >= 2" in str(raised.value)


def test_all_mistakes_are_reported_at_once() -> None:
    document = with_spec(loop_document(), "spec.maxIterations", -1)
    document = with_spec(document, "spec.acquire.samplesPerPrompt", "four")
    with pytest.raises(SpecError) as raised:
        parse_loop(document)
    assert len(raised.value.problems) == 2


def test_a_stage_override_replaces_only_the_fields_it_sets() -> None:
    runtime = parse_loop(
        loop_document(
            runtime={
                "image": "stage:1",
                "backoffLimit": 3,
                "resources": {"limits": {"cpu": "4"}},
                "stages": {"optimize": {"resources": {"limits": {"nvidia.com/gpu": 8}}, "backoffLimit": 0}},
            }
        )
    ).spec.runtime
    optimize = runtime.for_stage("optimize")
    assert (optimize.image, optimize.backoff_limit, optimize.resources) == (
        "stage:1",
        0,
        {"limits": {"nvidia.com/gpu": 8}},
    )
    acquire = runtime.for_stage("acquire")
    assert (acquire.image, acquire.backoff_limit, acquire.resources) == ("stage:1", 3, {"limits": {"cpu": "4"}})


def test_relative_paths_resolve_against_the_loop_file(tmp_path: Path) -> None:
    document = loop_document(model={"uri": "./base"}, storage={"uri": "../runs/x"})
    document["spec"]["acquire"]["prompts"]["uri"] = "data/p.jsonl"
    (tmp_path / "loops").mkdir()
    path = tmp_path / "loops" / "loop.yaml"
    path.write_text(yaml.safe_dump(document))
    spec = load_loop(path).spec
    assert spec.model.uri == (tmp_path / "loops" / "base").as_uri()
    assert spec.storage.uri == (tmp_path / "runs" / "x").as_uri()
    assert spec.acquire.prompts.uri == (tmp_path / "loops" / "data" / "p.jsonl").as_uri()
    assert spec.evaluate.datasets[0].uri == "file:///data/heldout.jsonl", "absolute URIs are kept"


def test_a_relative_reward_model_path_resolves_against_the_loop_file(tmp_path: Path) -> None:
    document = loop_document(select={"scorer": {"type": "reward-model", "model": "./.reward-model"}})
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump(document))
    spec = load_loop(path).spec
    assert spec.select.scorer.model == (tmp_path / ".reward-model").as_uri()


def test_a_file_that_is_not_yaml_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text("spec: [unclosed")
    with pytest.raises(SpecError, match=r"\(yaml\): not valid YAML"):
        load_loop(path)


def test_several_nodes_and_deepspeed_are_valid_specs_for_the_multi_node_engine() -> None:
    """sil validate accepts what the operator's multi-node engine will run; the stage honours the env contract."""
    document = patched(
        valid_loop(),
        {"spec.optimize": {"distributed": {"nodes": 4, "processesPerNode": 8, "deepspeed": "zero3-offload"}}},
    )
    distributed = parse_loop(document).spec.optimize.distributed
    assert (distributed.nodes, distributed.processes_per_node, distributed.deepspeed) == (4, 8, "zero3-offload")


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"spec.select.keep.maxPerPrompt": 2}, "spec.select.keep.maxPerPrompt: renamed: write `topK`"),
        ({"spec.select.keep.dedupe": True}, "spec.select.keep.dedupe: `dedupe: true` became `dedupe: {method: exact}`"),
    ],
)
def test_an_old_loop_file_is_told_what_a_renamed_field_became_not_only_that_it_is_unknown(
    changes: dict[str, Any], expected: str
) -> None:
    document = patched(valid_loop(), changes)
    with pytest.raises(SpecError) as raised:
        parse_loop(document)
    assert any(problem.startswith(expected) for problem in raised.value.problems), raised.value.problems
