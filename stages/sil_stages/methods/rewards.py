"""The loop's scorer as TRL reward functions: GRPO is rewarded by exactly what select scores.

TRL calls a reward function with the batch's `prompts` and `completions` (strings for a plain-text dataset) and
every other dataset column as a keyword list; it logs each function under its `__name__`
(`rewards/<name>/mean`). Select's prompt-only rows carry the prompt's record as JSON in `record`, so a verifier
sees the same `(prompt, completion, record)` as in select.

- verifier: the built-in exact-match or the user's `module:function`, per completion;
- majority-vote (label-free, TTRL): within each prompt's group of completions, those whose answer is the
  majority answer score 1.0. TRL generates a prompt's `numGenerations` completions in one generation batch, so a
  call sees whole groups.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sil_stages.scoring import Vote, compile_pattern, extract_answer, majority_vote, make_verifier
from sil_stages.settings import Scorer

RewardFunction = Callable[..., list[float | None]]


def verifier_reward(scorer: Scorer) -> RewardFunction:
    verify = make_verifier(
        scorer.verifier, scorer.answer_pattern, field="scorer.verifier", pattern_field="scorer.answer_pattern"
    )

    def verifier(prompts: list[str], completions: list[str], record: list[str], **_: Any) -> list[float | None]:
        return [
            float(verify(prompt, completion, json.loads(context)))
            for prompt, completion, context in zip(prompts, completions, record, strict=True)
        ]

    return verifier


def majority_vote_reward(scorer: Scorer) -> RewardFunction:
    pattern = compile_pattern(scorer.answer_pattern, field="scorer.answer_pattern")

    def majority_vote_agreement(prompts: list[str], completions: list[str], **_: Any) -> list[float | None]:
        answers = [extract_answer(completion, pattern) for completion in completions]
        groups: dict[str, list[str]] = {}
        for prompt, answer in zip(prompts, answers, strict=True):
            groups.setdefault(prompt, []).append(answer)
        votes: dict[str, Vote] = {}
        for prompt, group in groups.items():
            vote = majority_vote(group)
            votes[prompt] = vote if vote.share >= scorer.min_vote_share else Vote(None, vote.share, vote.distinct)
        return [
            1.0 if votes[prompt].answer is not None and answer == votes[prompt].answer else 0.0
            for prompt, answer in zip(prompts, answers, strict=True)
        ]

    return majority_vote_agreement


def reward_function(scorer: Scorer) -> RewardFunction:
    """The reward function of `select.scorer`."""
    if scorer.type == "majority-vote":
        return majority_vote_reward(scorer)
    return verifier_reward(scorer)
