"""The loop's scorer as TRL reward functions: the same verdicts as select, per completion or per group."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sil_stages.core.settings import Scorer
from sil_stages.optimize.methods.rewards import reward_function


def test_the_exact_match_reward_reads_the_answer_from_the_prompt_record() -> None:
    reward = reward_function(Scorer())
    records = [json.dumps({"answer": "4"})] * 3
    assert reward(prompts=["2+2="] * 3, completions=["4", "5", " 4."], record=records) == [1.0, 0.0, 1.0]


def test_a_user_verifier_is_the_reward(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "lengthy.py").write_text("def verify(prompt, completion, record):\n    return len(completion) / 10\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reward = reward_function(Scorer(verifier="lengthy:verify"))
    assert reward(prompts=["p", "p"], completions=["12345", "1"], record=["{}", "{}"]) == [0.5, 0.1]


def test_the_majority_vote_reward_rewards_agreement_within_each_prompt_group() -> None:
    reward = reward_function(Scorer(type="majority-vote"))
    prompts = ["a"] * 4 + ["b"] * 4
    completions = ["1", "2", "1", "3", "9", "8", "8", "9"]
    assert reward(prompts=prompts, completions=completions) == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0]


def test_the_majority_vote_reward_is_zero_below_min_vote_share() -> None:
    reward = reward_function(Scorer(type="majority-vote", min_vote_share=0.6))
    assert reward(prompts=["a"] * 4, completions=["1", "1", "2", "3"]) == [0.0, 0.0, 0.0, 0.0]
    assert reward(prompts=["a"] * 4, completions=["1", "1", "1", "3"]) == [1.0, 1.0, 1.0, 0.0]


def test_the_reward_functions_are_named_for_trl_logs() -> None:
    assert reward_function(Scorer()).__name__ == "verifier"
    assert reward_function(Scorer(type="majority-vote")).__name__ == "majority_vote"
