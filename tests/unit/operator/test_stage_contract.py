"""The stage config JSON: the runners write it with snake_case names, and the stages keep parsing it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from sil_operator.api.loader import parse_loop
from sil_operator.stageconfig import LoopRef, build_stage_config
from sil_stages.core.contract import STAGES, AcquireConfig, EvaluateConfig, Manifest, SelectConfig, parse_stage_config
from tests.invalid_specs import valid_loop

SELECT: dict[str, Any] = {
    "stage": "select",
    "loop": "demo",
    "iteration": 1,
    "storage": {"uri": "file:///runs/demo", "endpoint": None, "region": None},
    "output_uri": "file:///runs/demo/iterations/1/select",
    "samples_uri": "file:///runs/demo/iterations/1/acquire/samples.jsonl",
    "scorer": {"type": "majority-vote", "verifier": "exact-match", "answer_pattern": "(\\d+)", "min_vote_share": 0.5},
    "keep": {"min_score": 0.5, "top_k": 2, "dedupe": {"method": "none"}},
}


def test_a_config_written_with_snake_case_names_parses() -> None:
    config = parse_stage_config(json.dumps(SELECT))
    assert isinstance(config, SelectConfig)
    assert (config.scorer.min_vote_share, config.scorer.answer_pattern) == (0.5, "(\\d+)")
    assert (config.keep.min_score, config.keep.top_k, config.keep.dedupe.method) == (0.5, 2, "none")


@pytest.mark.parametrize("stage", ["acquire", "select", "optimize", "evaluate"])
def test_what_the_runners_write_is_what_the_stages_read(stage: str) -> None:
    """build_stage_config → model_dump_json (the ConfigMap, the local config file) → parse_stage_config."""
    spec = parse_loop(valid_loop()).spec
    config = build_stage_config(spec, LoopRef("demo", "ml"), 1, stage, "file:///models/base")
    written = config.model_dump_json()
    assert "minVoteShare" not in written and "maxNewTokens" not in written, "snake_case on the stage side"
    assert parse_stage_config(written) == config


def test_the_stage_applies_the_defaults_the_spec_documents() -> None:
    """One set of models: a setting left out of the spec and out of the config gets the same default."""
    spec = parse_loop(valid_loop()).spec
    config = parse_stage_config({k: v for k, v in SELECT.items() if k not in ("scorer", "keep")})
    assert isinstance(config, SelectConfig)
    assert config.scorer == spec.select.scorer
    assert config.keep == spec.select.keep


def test_the_stage_rejects_a_verifier_the_spec_would_reject() -> None:
    evaluate = build_stage_config(parse_loop(valid_loop()).spec, LoopRef("demo"), 1, "evaluate", "file:///m")
    assert isinstance(evaluate, EvaluateConfig)
    raw = json.loads(evaluate.model_dump_json()) | {"verifier": "verify.py"}
    with pytest.raises(ValidationError, match="expected exact-match, math, or a Python function"):
        parse_stage_config(raw)


def test_a_manifest_written_before_findings_existed_still_parses_with_none_named() -> None:
    old = (
        '{"stage": "evaluate", "iteration": 1, "loop": "l", "metrics": {"heldout/contaminated/2": 1.0}, '
        '"started_at": "2026-12-01T00:00:00Z", "finished_at": "2026-12-01T00:00:01Z", "duration_seconds": 1.0}'
    )
    assert Manifest.model_validate_json(old).findings == {}


def test_select_is_given_the_earlier_iterations_select_folders_the_champion_and_the_engine() -> None:
    """What accumulate, cross-iteration dedupe and a self-rewarding judge need, decided by the runner, not the stage."""
    document = valid_loop()
    document["spec"]["pushgateway"] = {"address": "http://pushgateway:9091"}
    spec = parse_loop(document).spec
    config = build_stage_config(spec, LoopRef("demo", "ml"), 3, "select", "s3://runs/demo/iterations/2/optimize/model")
    assert isinstance(config, SelectConfig)
    storage = spec.storage.uri.rstrip("/")
    assert config.earlier_select_uris == (f"{storage}/iterations/1/select", f"{storage}/iterations/2/select")
    assert config.champion_uri == "s3://runs/demo/iterations/2/optimize/model"
    assert (config.engine, config.pushgateway) == ("transformers", "http://pushgateway:9091")
    first = build_stage_config(spec, LoopRef("demo", "ml"), 1, "select", "file:///m")
    assert isinstance(first, SelectConfig) and first.earlier_select_uris == ()


def test_acquire_is_given_the_prompt_source_self_instruct_and_the_earlier_iterations_acquire_folders() -> None:
    """Self-Instruct's novelty check reads earlier iterations' generated prompts from the folders the runner names."""
    document = valid_loop()
    document["spec"]["acquire"]["prompts"]["selfInstruct"] = {"count": 16, "novelty": {"threshold": 0.5}}
    spec = parse_loop(document).spec
    config = build_stage_config(spec, LoopRef("demo", "ml"), 3, "acquire", "file:///m")
    assert isinstance(config, AcquireConfig)
    storage = spec.storage.uri.rstrip("/")
    assert config.earlier_acquire_uris == (f"{storage}/iterations/1/acquire", f"{storage}/iterations/2/acquire")
    assert (config.prompts_uri, config.prompts_generator) == ("file:///data/prompts.jsonl", None)
    assert config.self_instruct is not None
    assert (config.self_instruct.count, config.self_instruct.examples) == (16, 3)
    assert config.self_instruct.novelty.threshold == 0.5
    assert parse_stage_config(config.model_dump_json()) == config


def test_acquire_is_given_the_generator_instead_of_a_file() -> None:
    document = valid_loop()
    document["spec"]["acquire"]["prompts"] = {"generator": "problems:additions", "perIteration": 50}
    spec = parse_loop(document).spec
    config = build_stage_config(spec, LoopRef("demo"), 1, "acquire", "file:///m")
    assert isinstance(config, AcquireConfig)
    assert (config.prompts_uri, config.prompts_generator, config.per_iteration) == (None, "problems:additions", 50)
    assert config.earlier_acquire_uris == ()


def test_the_optimize_config_carries_the_distributed_settings_and_the_checkpoint_interval() -> None:
    document = valid_loop()
    document["spec"]["optimize"] = {"distributed": {"processesPerNode": 2}, "checkpointEverySteps": 50}
    config = build_stage_config(parse_loop(document).spec, LoopRef("demo"), 1, "optimize", "file:///m")
    again = parse_stage_config(config.model_dump_json())
    assert again.distributed.processes_per_node == 2  # type: ignore[union-attr]
    assert again.checkpoint_every_steps == 50  # type: ignore[union-attr]


def test_a_stage_config_rejects_the_cross_field_rules_the_spec_rejects() -> None:
    """The difficulty band's rule lives on the settings model, so a select config cannot carry what the spec
    forbids (the API server checks the same rule as CEL, tests/invalid_specs.py)."""
    raw = SELECT | {"keep": SELECT["keep"] | {"difficulty": {"min_pass_rate": 0.8, "max_pass_rate": 0.2}}}
    with pytest.raises(ValidationError, match="minPassRate must not be above maxPassRate"):
        parse_stage_config(raw)


def test_evaluate_s_answer_length_has_the_spec_s_bounds() -> None:
    evaluate = build_stage_config(parse_loop(valid_loop()).spec, LoopRef("demo"), 1, "evaluate", "file:///m")
    raw = json.loads(evaluate.model_dump_json()) | {"max_new_tokens": 100_000}
    with pytest.raises(ValidationError, match="less than or equal to 32768"):
        parse_stage_config(raw)


@pytest.mark.parametrize(
    ("spec_seed", "deprecated_seed", "seed"),
    [(None, None, 0), (7, None, 7), (None, 5, 5), (7, 5, 7)],
)
def test_every_stage_gets_the_loop_s_seed_and_the_old_field_still_works(
    spec_seed: int | None, deprecated_seed: int | None, seed: int
) -> None:
    document = valid_loop()
    if spec_seed is not None:
        document["spec"]["seed"] = spec_seed
    if deprecated_seed is not None:
        document["spec"]["optimize"] = {"hyperparameters": {"seed": deprecated_seed}}
    spec = parse_loop(document).spec
    configs = [build_stage_config(spec, LoopRef("demo"), 1, stage, "file:///m") for stage in STAGES]
    assert [config.seed for config in configs] == [seed] * 4
    warned = spec.deprecations()
    assert bool(warned) == (deprecated_seed is not None)
    assert all("set spec.seed instead" in line for line in warned)


@pytest.mark.parametrize(
    ("new", "deprecated", "address"),
    [
        (None, None, None),
        ("http://new:9091", None, "http://new:9091"),
        (None, "http://old:9091", "http://old:9091"),
        ("http://new:9091", "http://old:9091", "http://new:9091"),
    ],
)
def test_every_stage_pushes_to_spec_pushgateway_and_the_old_evaluate_field_still_works(
    new: str | None, deprecated: str | None, address: str | None
) -> None:
    document = valid_loop()
    if new is not None:
        document["spec"]["pushgateway"] = {"address": new}
    if deprecated is not None:
        document["spec"]["evaluate"]["pushgateway"] = {"address": deprecated}
    spec = parse_loop(document).spec
    configs = [build_stage_config(spec, LoopRef("demo"), 1, stage, "file:///m") for stage in STAGES]
    assert [config.pushgateway for config in configs] == [address] * 4
    assert any("set spec.pushgateway instead" in line for line in spec.deprecations()) == (deprecated is not None)


@pytest.mark.parametrize(
    ("runtime", "optimize_workload", "warned"),
    [
        ({}, None, []),
        ({"workload": "jobset"}, "jobset", []),
        ({"engine": "jobset"}, "jobset", ["spec.runtime.engine"]),
        ({"workload": "indexed-job", "engine": "jobset"}, "indexed-job", ["spec.runtime.engine"]),
        (
            {"workload": "jobset", "stages": {"optimize": {"engine": "indexed-job"}}},
            "indexed-job",
            ["spec.runtime.stages.optimize.engine"],
        ),
    ],
)
def test_runtime_workload_replaces_engine_which_still_works_and_a_stage_s_old_engine_still_overrides(
    runtime: dict[str, Any], optimize_workload: str | None, warned: list[str]
) -> None:
    document = valid_loop()
    document["spec"]["runtime"] |= runtime
    spec = parse_loop(document).spec
    assert spec.runtime.for_stage("optimize").workload == optimize_workload
    assert [line.split(" is deprecated")[0] for line in spec.deprecations()] == warned
