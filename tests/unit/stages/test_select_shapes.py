"""select writes the training data in the shape of the optimize method: completions, preference pairs or prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sil_stages.cli import main
from sil_stages.select.selection import Pair, Scored, pair
from tests.unit.stages.conftest import StageConfig, output_dir, read_jsonl, write_jsonl


def _scored(*items: tuple[str, float]) -> list[Scored]:
    return [Scored("1+1=", completion, score) for completion, score in items]


@pytest.mark.parametrize(
    ("samples", "min_margin", "expected"),
    [
        (_scored(("2", 1.0), ("3", 0.0), ("4", 0.0)), 0.5, Pair("1+1=", "2", "3", 1.0)),
        (_scored(("3", 0.0), ("2", 1.0), ("2", 1.0), ("5", 0.0)), 0.5, Pair("1+1=", "2", "3", 1.0)),
        (_scored(("2", 1.0), ("2", 1.0)), 0.0, None),
        (_scored(("3", 0.0), ("4", 0.0)), 0.0, None),
        (_scored(("2", 0.75), ("3", 0.5)), 0.5, None),
        (_scored(("2", 0.75), ("3", 0.5)), 0.25, Pair("1+1=", "2", "3", 0.25)),
        (_scored(("2", 1.0)), 0.0, None),
        ([], 0.0, None),
    ],
    ids=[
        "best over the first worst",
        "first best and first worst in sample order",
        "all the same score: no pair",
        "all wrong: no pair",
        "margin below minMargin: no pair",
        "margin at minMargin: a pair",
        "one sample: no pair",
        "no samples: no pair",
    ],
)
def test_a_prompt_pairs_its_best_completion_over_its_worst_when_the_margin_allows(
    samples: list[Scored], min_margin: float, expected: Pair | None
) -> None:
    assert pair(samples, min_margin) == expected


def _run(config: dict[str, object]) -> int:
    return main(["select", "--config", json.dumps(config)])


SAMPLES = [
    {"prompt": "2+2=", "completions": ["4", "5", "4", "6"], "answer": "4", "source": "a"},
    {"prompt": "3+3=", "completions": ["7", "8"], "answer": "6", "source": "b"},
    {"prompt": "1+1=", "completions": ["2", "2"], "answer": "2", "source": "c"},
]


def test_for_preference_methods_select_writes_one_trl_pair_per_prompt_that_has_one(
    tmp_path: Path, stage_config: StageConfig
) -> None:
    samples = write_jsonl(tmp_path / "samples.jsonl", SAMPLES).as_uri()
    config = stage_config("select", samples_uri=samples, data="preference", pairs={"min_margin": 1.0})
    assert _run(config) == 0
    out = output_dir(config)
    assert read_jsonl(out / "train.jsonl") == [{"prompt": "2+2=", "chosen": "4", "rejected": "5"}]
    scored = read_jsonl(out / "scored.jsonl")
    assert [row["kept"] for row in scored[:4]] == [True, True, False, False], "the pair's two rows are marked"
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["metrics"]["kept"] == 1
    assert manifest["metrics"]["prompts_with_kept"] == 1


def test_for_methods_that_roll_out_themselves_select_writes_each_prompt_once_with_its_record(
    tmp_path: Path, stage_config: StageConfig
) -> None:
    samples = write_jsonl(tmp_path / "samples.jsonl", [*SAMPLES, SAMPLES[0]]).as_uri()
    config = stage_config("select", samples_uri=samples, data="prompt-only")
    assert _run(config) == 0
    rows = read_jsonl(output_dir(config) / "train.jsonl")
    assert [row["prompt"] for row in rows] == ["2+2=", "3+3=", "1+1="]
    assert json.loads(rows[0]["record"]) == {"prompt": "2+2=", "answer": "4", "source": "a"}, (
        "the record (without the completions) reaches the reward function"
    )


def test_select_defaults_to_prompt_completion_data(tmp_path: Path, stage_config: StageConfig) -> None:
    samples = write_jsonl(tmp_path / "samples.jsonl", SAMPLES).as_uri()
    config = stage_config("select", samples_uri=samples)
    assert _run(config) == 0
    assert read_jsonl(output_dir(config) / "train.jsonl")[0] == {"prompt": "2+2=", "completion": "4"}
