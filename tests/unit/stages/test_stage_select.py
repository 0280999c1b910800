"""The select stage on hand-written samples: what it keeps, what it writes, and how it fails.

No model involved: select reads `samples.jsonl` and writes `train.jsonl`, so these tests are fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sil_stages.cli import main
from tests.unit.stages.conftest import StageConfig, output_dir, read_jsonl, write_jsonl


def _run(config: dict[str, object]) -> int:
    return main(["select", "--config", json.dumps(config)])


def _samples(tmp_path: Path, records: list[dict[str, object]]) -> str:
    return write_jsonl(tmp_path / "samples.jsonl", records).as_uri()


def test_verifier_keeps_only_verified_completions_in_prompt_completion_format(
    tmp_path: Path, stage_config: StageConfig
) -> None:
    """train.jsonl is TRL's prompt-completion format, so SFT puts the loss on the completion only."""
    samples = _samples(
        tmp_path,
        [
            {"prompt": "2+2=", "completions": ["4", "5", "4", " 4."], "answer": "4"},
            {"prompt": "3+3=", "completions": ["7", "8"], "answer": "6"},
        ],
    )
    config = stage_config("select", samples_uri=samples, keep={"min_score": 1.0, "top_k": None})
    assert _run(config) == 0
    out = output_dir(config)
    assert read_jsonl(out / "train.jsonl") == [
        {"prompt": "2+2=", "completion": "4"},
        {"prompt": "2+2=", "completion": " 4."},
    ]
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["metrics"]["scored"] == 6
    assert manifest["metrics"]["kept"] == 2
    assert manifest["metrics"]["prompts_with_kept"] == 1
    assert manifest["metrics"]["mean_score"] == pytest.approx(3 / 6)
    assert {entry["path"] for entry in manifest["files"]} == {"kept.jsonl", "train.jsonl", "scored.jsonl"}


def test_majority_vote_needs_no_labels_and_keeps_the_agreeing_completions(
    tmp_path: Path, stage_config: StageConfig
) -> None:
    samples = _samples(tmp_path, [{"prompt": "q", "completions": ["a", "b", "a", "c"]}])
    config = stage_config("select", samples_uri=samples, scorer={"type": "majority-vote"}, keep={"top_k": 4})
    assert _run(config) == 0
    out = output_dir(config)
    assert read_jsonl(out / "train.jsonl") == [{"prompt": "q", "completion": "a"}]
    scored = read_jsonl(out / "scored.jsonl")
    assert [row["score"] for row in scored] == [1.0, 0.0, 1.0, 0.0]
    assert scored[0]["pseudo_label"] == "a"
    assert scored[0]["vote_share"] == 0.5


def test_user_function_verifier_is_called_with_prompt_completion_and_record(
    tmp_path: Path, stage_config: StageConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sumcheck.py").write_text(
        "def verify(prompt, completion, record):\n"
        "    a, b = prompt.rstrip('=').split('+')\n"
        "    return float(completion.strip() == str(int(a) + int(b)) and record['tag'] == 'x')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    samples = _samples(tmp_path, [{"prompt": "1+2=", "completions": ["3", "4"], "tag": "x"}])
    config = stage_config("select", samples_uri=samples, scorer={"verifier": "sumcheck:verify"})
    assert _run(config) == 0
    assert read_jsonl(output_dir(config) / "train.jsonl") == [{"prompt": "1+2=", "completion": "3"}]


def test_exact_match_on_unlabelled_samples_exits_2_naming_the_answer_field(
    tmp_path: Path, stage_config: StageConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    samples = _samples(tmp_path, [{"prompt": "1+2=", "completions": ["3"]}])
    config = stage_config("select", samples_uri=samples)
    assert _run(config) == 2
    assert "`answer`" in capsys.readouterr().err
    assert not (output_dir(config) / "_manifest.json").exists()


def test_nothing_kept_still_finishes_with_an_empty_dataset(tmp_path: Path, stage_config: StageConfig) -> None:
    """An iteration where the model got nothing right is data, not a failure: optimize handles empty data."""
    samples = _samples(tmp_path, [{"prompt": "1+2=", "completions": ["9"], "answer": "3"}])
    config = stage_config("select", samples_uri=samples)
    assert _run(config) == 0
    assert (output_dir(config) / "train.jsonl").read_text() == ""


def test_majority_vote_below_min_vote_share_gives_no_pseudo_label(tmp_path: Path, stage_config: StageConfig) -> None:
    """A 2-of-4 majority is too weak to train on when min_vote_share asks for more than half."""
    samples = _samples(
        tmp_path,
        [{"prompt": "weak", "completions": ["a", "b", "a", "c"]}, {"prompt": "strong", "completions": ["x"] * 3}],
    )
    scorer = {"type": "majority-vote", "min_vote_share": 0.6}
    config = stage_config("select", samples_uri=samples, scorer=scorer)
    assert _run(config) == 0
    assert read_jsonl(output_dir(config) / "train.jsonl") == [{"prompt": "strong", "completion": "x"}]


def test_code_tests_keeps_the_programs_that_pass_every_test(tmp_path: Path, stage_config: StageConfig) -> None:
    tests = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]
    right = "```python\ndef add(a, b):\n    return a + b\n```"
    samples = _samples(
        tmp_path,
        [
            {
                "prompt": "Write add.",
                "completions": [right, "def add(a, b):\n    return 0", "while True: pass"],
                "tests": tests,
            }
        ],
    )
    scorer = {"type": "code-tests", "code_tests": {"timeout_s": 2.0, "concurrency": 2}}
    config = stage_config("select", samples_uri=samples, scorer=scorer, keep={"min_score": 1.0, "top_k": None})
    assert _run(config) == 0
    out = output_dir(config)
    assert read_jsonl(out / "train.jsonl") == [{"prompt": "Write add.", "completion": right}]
    scored = read_jsonl(out / "scored.jsonl")
    assert [(row["score"], row["run"]) for row in scored] == [(1.0, "ok"), (0.5, "ok"), (0.0, "timeout")]
    assert json.loads((out / "_manifest.json").read_text())["metrics"]["code_tests_pass_rate"] == pytest.approx(3 / 6)


def test_code_tests_with_a_non_assert_statement_exits_2_naming_the_record(
    tmp_path: Path, stage_config: StageConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    samples = _samples(
        tmp_path, [{"prompt": "Write add.", "completions": ["x"], "tests": "want = 3\nassert add(1, 2) == want"}]
    )
    config = stage_config(
        "select", samples_uri=samples, scorer={"type": "code-tests", "code_tests": {"concurrency": 1}}
    )
    assert _run(config) == 2
    assert "only assert and import statements" in capsys.readouterr().err
    assert not (output_dir(config) / "_manifest.json").exists()


def test_the_math_verifier_keeps_equivalent_answers(tmp_path: Path, stage_config: StageConfig) -> None:
    completions = ["So it is \\boxed{\\frac{1}{2}}", "The answer is 0.5", "The answer is 0.25"]
    samples = _samples(tmp_path, [{"prompt": "Half of 1?", "completions": completions, "answer": "1/2"}])
    config = stage_config("select", samples_uri=samples, scorer={"verifier": "math"}, keep={"top_k": None})
    assert _run(config) == 0
    kept = [row["completion"] for row in read_jsonl(output_dir(config) / "train.jsonl")]
    assert kept == completions[:2]
