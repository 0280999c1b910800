"""Where acquire's prompts come from: a file, a user generator function, and prompts the champion writes itself
(Self-Instruct), with the manifest counting each source.

The generator tests write a small module into a temporary folder on sys.path, as `sil run` puts the loop file's
folder there. The Self-Instruct tests generate with the tiny random model; what they check does not depend on
what it writes: with one new token per prompt every new prompt is one character (or empty), so a pool holding
every character makes every generated prompt a duplicate, and otherwise the counts must add up.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from sil_stages.acquire.self_instruct import DUPLICATE, EMPTY, NOVEL, instruction_prompts, new_prompt, novelty
from sil_stages.acquire.sources import counters
from sil_stages.cli import main
from sil_stages.core.settings import Novelty, SelfInstruct
from tests.unit.stages.conftest import ALPHABET, StageConfig, output_dir, read_jsonl, write_jsonl

pytestmark = pytest.mark.slow

SOURCE_METRICS = (
    "prompts_from_file",
    "prompts_from_generator",
    "self_instruct_generated",
    "self_instruct_novel",
    "self_instruct_duplicates",
    "self_instruct_empty",
)

PREFIX = "sil_stages acquire: "
"""How the stage's log lines start on stderr."""

GENERATOR = """
import random

def additions(iteration, seed, count):
    rng = random.Random(seed)
    for _ in range(count or 5):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        yield {"prompt": f"{a}+{b}=", "answer": str(a + b), "iteration": iteration}

def broken(iteration, seed, count):
    raise RuntimeError("no problems today")

def not_dicts(iteration, seed, count):
    return [{"prompt": "1+1="}, "2+2=", {"prompt": "3+3="}]

def no_prompt(iteration, seed, count):
    return [{"prompt": "1+1="}, {"prompt": 42, "answer": "x" * 500}]
"""


@pytest.fixture
def problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """A generator module on sys.path, under a name of its own per test (imports are cached by name)."""
    name = "problems_" + "".join(c if c.isalnum() else "_" for c in request.node.name)
    folder = tmp_path / "loop"
    folder.mkdir()
    (folder / f"{name}.py").write_text(GENERATOR, encoding="utf-8")
    monkeypatch.syspath_prepend(str(folder))
    return name


def _run(config: dict[str, Any]) -> int:
    return main(["acquire", "--config", json.dumps(config)])


def _metrics(config: dict[str, Any]) -> dict[str, float]:
    manifest = json.loads((output_dir(config) / "_manifest.json").read_text())
    metrics: dict[str, float] = manifest["metrics"]
    return metrics


def _config(stage_config: StageConfig, tiny_model: Path, **fields: Any) -> dict[str, Any]:
    return stage_config(
        "acquire",
        model_uri=tiny_model.as_uri(),
        samples_per_prompt=1,
        sampling={"temperature": 1.0, "max_new_tokens": 2},
        batch_size=16,
        **fields,
    )


# generator


def test_a_generator_gives_the_prompts_and_a_retried_stage_draws_the_same_ones(
    stage_config: StageConfig, tiny_model: Path, problems: str
) -> None:
    first = _config(stage_config, tiny_model, prompts_generator=f"{problems}:additions", per_iteration=6)
    retried = {**first, "output_uri": first["output_uri"] + "-retried"}
    assert _run(first) == 0
    assert _run(retried) == 0
    samples = read_jsonl(output_dir(first) / "samples.jsonl")
    assert len(samples) == 6, "count is perIteration"
    assert all(
        s["answer"] == str(sum(map(int, s["prompt"][:-1].split("+")))) and s["iteration"] == 1 for s in samples
    ), "fields carried"
    assert [s["prompt"] for s in samples] == [s["prompt"] for s in read_jsonl(output_dir(retried) / "samples.jsonl")]
    metrics = _metrics(first)
    assert (metrics["prompts_from_generator"], metrics["prompts_from_file"], metrics["prompts"]) == (6.0, 0.0, 6.0)


def test_a_generator_gets_another_seed_each_iteration(
    stage_config: StageConfig, tiny_model: Path, problems: str
) -> None:
    one = _config(stage_config, tiny_model, prompts_generator=f"{problems}:additions", per_iteration=6)
    two = _config(stage_config, tiny_model, iteration=2, prompts_generator=f"{problems}:additions", per_iteration=6)
    assert _run(one) == 0 and _run(two) == 0
    first, second = (read_jsonl(output_dir(c) / "samples.jsonl") for c in (one, two))
    assert [s["prompt"] for s in first] != [s["prompt"] for s in second]
    assert {s["iteration"] for s in second} == {2}


def test_without_per_iteration_a_generator_gives_its_own_default_count(
    stage_config: StageConfig, tiny_model: Path, problems: str
) -> None:
    config = _config(stage_config, tiny_model, prompts_generator=f"{problems}:additions")
    assert _run(config) == 0
    assert _metrics(config)["prompts_from_generator"] == 5.0


@pytest.mark.parametrize(
    ("function", "says"),
    [
        ("missing_module:additions", r"cannot import module 'missing_module'"),
        ("{module}:nowhere", r"has no function 'nowhere'"),
        ("{module}:broken", r"raised RuntimeError: no problems today"),
        ("{module}:not_dicts", r"record 2 is not a dict with a string `prompt`: '2\+2='"),
        (
            "{module}:no_prompt",
            r"record 2 is not a dict with a string `prompt`: \{'prompt': 42, 'answer': 'xxx.*\.\.\.",
        ),
    ],
)
def test_a_generator_that_cannot_give_prompts_is_a_bad_input_naming_the_field_and_the_record(
    stage_config: StageConfig, problems: str, capsys: pytest.CaptureFixture[str], function: str, says: str
) -> None:
    config = stage_config("acquire", model_uri="file:///no-model", prompts_generator=function.format(module=problems))
    assert _run(config) == 2
    (error,) = [line.removeprefix(PREFIX) for line in capsys.readouterr().err.splitlines() if line.startswith(PREFIX)]
    assert error.startswith("acquire.prompts.generator: ")
    assert re.search(says, error), error
    assert "x" * 200 not in error, "a record is shown truncated"


def test_a_config_with_neither_a_file_nor_a_generator_is_a_bad_input(
    stage_config: StageConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(stage_config("acquire", model_uri="file:///no-model")) == 2
    assert "acquire.prompts: set exactly one of prompts_uri (uri) and prompts_generator" in capsys.readouterr().err


# the manifest


def test_a_file_source_is_counted_in_the_manifest(tmp_path: Path, stage_config: StageConfig, tiny_model: Path) -> None:
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"{i}+1="} for i in range(5)]).as_uri()
    config = _config(stage_config, tiny_model, prompts_uri=prompts, per_iteration=3)
    assert _run(config) == 0
    metrics = _metrics(config)
    assert {name: metrics[name] for name in SOURCE_METRICS} == {
        "prompts_from_file": 3.0,
        "prompts_from_generator": 0.0,
        "self_instruct_generated": 0.0,
        "self_instruct_novel": 0.0,
        "self_instruct_duplicates": 0.0,
        "self_instruct_empty": 0.0,
    }
    assert not (output_dir(config) / "generated.jsonl").exists()


def test_the_acquire_counts_are_pushed_as_series_under_their_own_job(
    tmp_path: Path,
    stage_config: StageConfig,
    tiny_model: Path,
    pushgateway: tuple[str, list[tuple[str, str, str]]],
) -> None:
    """So the dashboard shows prompts by source; its own job, so evaluate's push does not replace it."""
    address, received = pushgateway
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"{i}+1="} for i in range(5)]).as_uri()
    config = _config(stage_config, tiny_model, prompts_uri=prompts, per_iteration=3, pushgateway=address)
    assert _run(config) == 0
    [(method, path, body)] = received
    assert (method, path) == ("PUT", "/metrics/job/selfimprove_acquire/namespace/test-ns/loop/test-loop/iteration/1")
    assert 'selfimprove_acquire_prompts_from_file{iteration="1",loop="test-loop",namespace="test-ns"} 3.0' in body
    assert "selfimprove_acquire_self_instruct_novel{" in body


# self-instruct: the parts


def test_the_registry_counts_every_source_and_grower_in_the_manifest_s_order() -> None:
    assert tuple(counters()) == SOURCE_METRICS
    assert set(counters().values()) == {0.0}


def test_each_instruction_prompt_shows_distinct_pool_prompts_one_per_line_in_the_template() -> None:
    pool = [f"task {i}" for i in range(10)]
    settings = SelfInstruct(count=4, examples=3, template="Tasks:\n{examples}\n")
    built = instruction_prompts(pool, settings, seed=7)
    assert len(built) == 4
    for text, examples in built:
        assert len(set(examples)) == 3 and set(examples) <= set(pool)
        assert text == "Tasks:\n" + "\n".join(examples) + "\n"
    assert built == instruction_prompts(pool, settings, seed=7), "seeded"
    assert built != instruction_prompts(pool, settings, seed=8)


def test_a_pool_smaller_than_examples_shows_the_whole_pool() -> None:
    ((text, examples),) = instruction_prompts(["a", "b"], SelfInstruct(count=1, examples=3), seed=0)
    assert sorted(examples) == ["a", "b"] and text == "\n".join(examples) + "\n"


@pytest.mark.parametrize(
    ("completion", "prompt"),
    [(" 12+30=\n13+14=", "12+30="), ("\nlater", ""), ("", ""), ("  one line  ", "one line")],
)
def test_the_new_prompt_is_the_generated_text_up_to_its_first_newline(completion: str, prompt: str) -> None:
    assert new_prompt(completion) == prompt


def test_empty_pool_duplicates_near_duplicates_and_repeats_are_not_novel() -> None:
    pool = ["what is the capital city of france", "name three prime numbers below twenty"]
    earlier = ["write a haiku about the autumn sea"]
    generated = [
        "what is the capital city of france?",  # near-duplicate of the pool
        "",
        "list the planets of the solar system",
        "list the planets of the solar system",  # repeat of a generated one
        "write a haiku about the autumn sea",  # an earlier iteration's
        "name three prime numbers below twenty",  # exact duplicate of the pool
        "how many legs does a spider have",
    ]
    assert novelty(generated, pool, earlier, Novelty(threshold=0.7, ngram=5)) == [
        DUPLICATE,
        EMPTY,
        NOVEL,
        DUPLICATE,
        DUPLICATE,
        DUPLICATE,
        NOVEL,
    ]


# self-instruct: the stage


def _self_instruct_config(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path, pool: list[str], **fields: Any
) -> dict[str, Any]:
    prompts = write_jsonl(tmp_path / "pool.jsonl", [{"prompt": p, "answer": "x"} for p in pool]).as_uri()
    settings = {"count": 24, "examples": 2, "max_new_tokens": 1, "temperature": 1.0}
    return _config(stage_config, tiny_model, prompts_uri=prompts, self_instruct=settings, **fields)


def test_self_instruct_adds_the_novel_generated_prompts_to_the_drawn_ones_and_counts_them(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path
) -> None:
    pool = ["12+30=", "45+11=", "70+29=", "38+38="]
    config = _self_instruct_config(tmp_path, stage_config, tiny_model, pool, per_iteration=3)
    again = {**config, "output_uri": config["output_uri"] + "-retried"}
    assert _run(config) == 0 and _run(again) == 0
    generated = read_jsonl(output_dir(config) / "generated.jsonl")
    assert generated == read_jsonl(output_dir(again) / "generated.jsonl"), "a retried stage generates the same"
    assert len(generated) == 24 and all(len(row["examples"]) == 2 for row in generated)
    novel = [row["prompt"] for row in generated if row["status"] == NOVEL]
    assert novel and len(set(novel)) == len(novel) and not set(novel) & set(pool)
    assert all(row["prompt"] == "" for row in generated if row["status"] == EMPTY)
    samples = read_jsonl(output_dir(config) / "samples.jsonl")
    assert len(samples) == 3 + len(novel) and all(s["prompt"] in pool for s in samples[:3])
    assert [s["prompt"] for s in samples[3:]] == novel
    assert all(s["source"] == "self-instruct" and "answer" not in s for s in samples[3:])
    metrics = _metrics(config)
    assert metrics["prompts_from_file"] == 3.0
    assert metrics["self_instruct_generated"] == 24.0
    assert metrics["self_instruct_novel"] == float(len(novel))
    assert metrics["self_instruct_duplicates"] == float(sum(row["status"] == DUPLICATE for row in generated))
    assert metrics["self_instruct_empty"] == float(sum(row["status"] == EMPTY for row in generated))
    assert metrics["self_instruct_novel"] + metrics["self_instruct_duplicates"] + metrics["self_instruct_empty"] == 24
    assert metrics["prompts"] == 3.0 + len(novel)


def test_prompts_generated_in_an_earlier_iteration_are_not_novel_again(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path
) -> None:
    pool = ["12+30=", "45+11=", "70+29=", "38+38="]
    first = _self_instruct_config(tmp_path, stage_config, tiny_model, pool)
    assert _run(first) == 0
    earlier = {row["prompt"] for row in read_jsonl(output_dir(first) / "generated.jsonl") if row["status"] == NOVEL}
    second = {**first, "iteration": 2, "output_uri": first["output_uri"].replace("/1/", "/2/")}
    second["earlier_acquire_uris"] = [first["output_uri"]]
    assert _run(second) == 0
    rows = read_jsonl(output_dir(second) / "generated.jsonl")
    assert not {row["prompt"] for row in rows if row["status"] == NOVEL} & earlier
    assert any(row["status"] == DUPLICATE and row["prompt"] in earlier for row in rows), "the same characters recur"


def test_an_earlier_generated_file_changed_after_its_stage_is_not_read(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pool = ["12+30=", "45+11="]
    first = _self_instruct_config(tmp_path, stage_config, tiny_model, pool)
    assert _run(first) == 0
    with (output_dir(first) / "generated.jsonl").open("a", encoding="utf-8") as file:
        file.write(json.dumps({"prompt": "tampered", "status": NOVEL, "examples": []}) + "\n")
    second = {**first, "iteration": 2, "output_uri": first["output_uri"].replace("/1/", "/2/")}
    second["earlier_acquire_uris"] = [first["output_uri"], first["output_uri"] + "-never-ran"]
    assert _run(second) == 0
    warnings = capsys.readouterr().err.splitlines()
    assert any("differs from its manifest" in w for w in warnings), warnings
    assert any("no acquire manifest" in w for w in warnings), warnings


def test_when_every_generated_prompt_repeats_the_pool_the_stage_warns_and_samples_the_pool(
    tmp_path: Path, stage_config: StageConfig, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One new token per prompt: every new prompt is one character or empty, and the pool holds every character."""
    pool = sorted({c for c in ALPHABET if c.strip()})
    config = _self_instruct_config(tmp_path, stage_config, tiny_model, pool)
    assert _run(config) == 0
    metrics = _metrics(config)
    assert metrics["self_instruct_novel"] == 0.0
    assert metrics["self_instruct_duplicates"] + metrics["self_instruct_empty"] == 24.0
    assert metrics["prompts"] == float(len(pool))
    duplicates, empty = int(metrics["self_instruct_duplicates"]), int(metrics["self_instruct_empty"])
    warning = f"self-instruct: no novel prompt among 24 generated ({duplicates} duplicates, {empty} empty)"
    assert f"{PREFIX}{warning}" in capsys.readouterr().err


# the example's generator

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "arithmetic-generated"


def test_the_example_generator_draws_fresh_additions_and_never_a_held_out_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from problems import additions  # type: ignore[import-not-found]

    heldout = read_jsonl(EXAMPLE.parent / "arithmetic" / "data" / "heldout.jsonl")
    forbidden = {r["prompt"] for r in heldout} | {
        "+".join(reversed(r["prompt"][:-1].split("+"))) + "=" for r in heldout
    }
    first = [r["prompt"] for r in additions(1, 11, 4000)]
    assert len(first) == len(set(first)) == 4000
    assert not set(first) & forbidden
    assert first == [r["prompt"] for r in additions(1, 11, 4000)], "the same seed gives the same prompts"
    assert first != [r["prompt"] for r in additions(2, 12, 4000)]
    assert len(list(additions(1, 11, None))) == 4000
