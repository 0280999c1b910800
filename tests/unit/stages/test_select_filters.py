"""The select stage's filters end to end on hand-written samples: difficulty band, top-k, near-duplicates,
accumulation across iterations, and the report (manifest metrics and pushed series). No model: fast."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sil_stages.cli import main
from tests.unit.stages.conftest import StageConfig, output_dir, read_jsonl, write_jsonl


def _run(config: dict[str, object]) -> int:
    return main(["select", "--config", json.dumps(config)])


def _samples(tmp_path: Path, records: list[dict[str, object]], name: str = "samples.jsonl") -> str:
    return write_jsonl(tmp_path / name, records).as_uri()


def _metrics(config: dict[str, Any]) -> dict[str, float]:
    metrics: dict[str, float] = json.loads((output_dir(config) / "_manifest.json").read_text())["metrics"]
    return metrics


# pass rates 0, 0.25, 0.5, 1 (answers: 2+2=4)
MIXED = [
    {"prompt": "never", "completions": ["0", "0", "0", "0"], "answer": "4"},
    {"prompt": "hard", "completions": ["4", "0", "1", "2"], "answer": "4"},
    {"prompt": "medium", "completions": ["4", "4", "1", "2"], "answer": "4"},
    {"prompt": "easy", "completions": ["4", "4", "4", "4"], "answer": "4"},
]


def test_the_difficulty_band_drops_prompts_all_right_or_all_wrong(tmp_path: Path, stage_config: StageConfig) -> None:
    """DAPO's dynamic sampling: only prompts with some right and some wrong samples carry learning signal."""
    keep = {"difficulty": {"exclusive": True}, "dedupe": {"method": "none"}}
    config = stage_config("select", samples_uri=_samples(tmp_path, MIXED), keep=keep)
    assert _run(config) == 0
    assert [row["prompt"] for row in read_jsonl(output_dir(config) / "train.jsonl")] == ["hard", "medium", "medium"]
    metrics = _metrics(config)
    assert metrics["prompts_out_of_band"] == 2
    assert metrics["removed_difficulty"] == 8
    histogram = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("prompts_pass_rate/")}
    assert histogram == {"0": 1, "0-0.25": 1, "0.25-0.5": 1, "0.5-0.75": 0, "0.75-1": 0, "1": 1}
    scored = read_jsonl(output_dir(config) / "scored.jsonl")
    assert [row["pass_rate"] for row in scored[:8:4]] == [0.0, 0.25]


def test_a_curriculum_band_keeps_only_hard_prompts(tmp_path: Path, stage_config: StageConfig) -> None:
    keep = {"difficulty": {"minPassRate": 0.1, "maxPassRate": 0.3}}
    config = stage_config("select", samples_uri=_samples(tmp_path, MIXED), keep=keep)
    assert _run(config) == 0
    assert read_jsonl(output_dir(config) / "train.jsonl") == [{"prompt": "hard", "completion": "4"}]


def test_the_difficulty_band_filters_the_prompt_set_of_a_method_that_rolls_out_itself(
    tmp_path: Path, stage_config: StageConfig
) -> None:
    """For GRPO, select writes prompts: the band leaves out prompts the champion always or never solves."""
    keep = {"difficulty": {"exclusive": True}}
    config = stage_config("select", samples_uri=_samples(tmp_path, MIXED), keep=keep, data="prompt-only")
    assert _run(config) == 0
    assert [row["prompt"] for row in read_jsonl(output_dir(config) / "train.jsonl")] == ["hard", "medium"]


def test_top_k_keeps_the_best_scored_completions_of_each_prompt(
    tmp_path: Path, stage_config: StageConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Best-of-n with a graded scorer: the highest scores win, whatever their order in the samples."""
    (tmp_path / "graded.py").write_text("def score(prompt, completion, record):\n    return float(len(completion))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    samples = _samples(tmp_path, [{"prompt": "p", "completions": ["aa", "a", "aaaa", "aaa"]}])
    config = stage_config(
        "select", samples_uri=samples, scorer={"verifier": "graded:score"}, keep={"min_score": 0.0, "top_k": 2}
    )
    assert _run(config) == 0
    assert [r["completion"] for r in read_jsonl(output_dir(config) / "train.jsonl")] == ["aaaa", "aaa"]
    assert _metrics(config)["removed_top_k"] == 2


def test_minhash_dedupe_drops_near_duplicate_examples_across_prompts(
    tmp_path: Path, stage_config: StageConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "anything.py").write_text("def ok(prompt, completion, record):\n    return 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    long = "Paris is the capital of France and its largest city, on the river Seine."
    samples = _samples(
        tmp_path,
        [
            {"prompt": "Capital of France?", "completions": [long, long.replace("largest", "biggest")]},
            {"prompt": "Capital of France? ", "completions": [long + " "]},
            {"prompt": "Boiling point?", "completions": ["Water boils at 100 degrees Celsius at sea level."]},
        ],
    )
    keep = {"min_score": 1.0, "dedupe": {"method": "minhash", "threshold": 0.7}}
    config = stage_config("select", samples_uri=samples, scorer={"verifier": "anything:ok"}, keep=keep)
    assert _run(config) == 0
    kept = read_jsonl(output_dir(config) / "train.jsonl")
    assert [row["prompt"] for row in kept] == ["Capital of France?", "Boiling point?"]
    assert _metrics(config)["removed_dedupe"] == 2


def _iteration(
    tmp_path: Path, stage_config: StageConfig, iteration: int, records: list[dict[str, object]], **fields: Any
) -> dict[str, Any]:
    samples = _samples(tmp_path, records, name=f"samples-{iteration}.jsonl")
    storage = stage_config("select")["storage"]["uri"]
    earlier = [f"{storage}/iterations/{k}/select" for k in range(1, iteration)]
    config = stage_config("select", iteration=iteration, samples_uri=samples, earlier_select_uris=earlier, **fields)
    assert _run(config) == 0
    return config


def test_accumulate_trains_on_every_iterations_kept_data_and_caps_the_oldest_first(
    tmp_path: Path, stage_config: StageConfig
) -> None:
    """Accumulating instead of replacing data avoids model collapse; the cap drops the oldest examples."""
    accumulate = {"enabled": True, "max_examples": 3}
    _iteration(tmp_path, stage_config, 1, [{"prompt": "a", "completions": ["1", "2"], "answer": "1"}])
    _iteration(tmp_path, stage_config, 2, [{"prompt": "b", "completions": ["2"], "answer": "2"}], accumulate=accumulate)
    third = _iteration(
        tmp_path,
        stage_config,
        3,
        [{"prompt": "c", "completions": ["3"], "answer": "3"}, {"prompt": "d", "completions": ["4"], "answer": "4"}],
        accumulate=accumulate,
    )
    out = output_dir(third)
    assert read_jsonl(out / "kept.jsonl") == [{"prompt": "c", "completion": "3"}, {"prompt": "d", "completion": "4"}]
    assert [row["prompt"] for row in read_jsonl(out / "train.jsonl")] == ["b", "c", "d"], "a (oldest) is capped"
    assert _metrics(third)["accumulated_iterations"] == 2
    assert _metrics(third)["train_examples"] == 3


def test_accumulate_skips_an_iteration_whose_kept_data_changed_after_select(
    tmp_path: Path, stage_config: StageConfig
) -> None:
    first = _iteration(tmp_path, stage_config, 1, [{"prompt": "a", "completions": ["1"], "answer": "1"}])
    (output_dir(first) / "kept.jsonl").write_text('{"prompt": "a", "completion": "tampered"}\n')
    second = _iteration(
        tmp_path,
        stage_config,
        2,
        [{"prompt": "b", "completions": ["2"], "answer": "2"}],
        accumulate={"enabled": True},
    )
    assert read_jsonl(output_dir(second) / "train.jsonl") == [{"prompt": "b", "completion": "2"}]


def test_dedupe_across_iterations_drops_examples_kept_before(tmp_path: Path, stage_config: StageConfig) -> None:
    _iteration(tmp_path, stage_config, 1, [{"prompt": "a", "completions": ["1"], "answer": "1"}])
    second = _iteration(
        tmp_path,
        stage_config,
        2,
        [{"prompt": "a", "completions": ["1"], "answer": "1"}, {"prompt": "b", "completions": ["2"], "answer": "2"}],
        keep={"dedupe": {"method": "exact", "across_iterations": True}},
    )
    assert read_jsonl(output_dir(second) / "train.jsonl") == [{"prompt": "b", "completion": "2"}]
    assert _metrics(second)["removed_dedupe"] == 1


def test_the_report_is_pushed_as_select_series_with_the_pass_rate_as_a_label(
    tmp_path: Path, stage_config: StageConfig, pushgateway: tuple[str, list[tuple[str, str, str]]]
) -> None:
    address, received = pushgateway
    config = stage_config("select", samples_uri=_samples(tmp_path, MIXED), pushgateway=address)
    assert _run(config) == 0
    [(method, path, body)] = received
    assert (method, path) == ("PUT", "/metrics/job/selfimprove_select/namespace/test-ns/loop/test-loop/iteration/1")
    assert 'selfimprove_select_kept{iteration="1",loop="test-loop",namespace="test-ns",scorer="verifier"}' in body
    assert 'selfimprove_select_prompts_by_pass_rate{iteration="1",loop="test-loop",namespace="test-ns",' in body
    assert 'pass_rate="0.25-0.5",scorer="verifier"} 1.0' in body
    assert "selfimprove_select_removed_difficulty{" in body
