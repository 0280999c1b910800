"""The loop's scorer as a TRL reward function: GRPO is rewarded by exactly what select scores.

TRL calls a reward function with the batch's `prompts` and `completions` (strings for a plain-text dataset) and
every other dataset column as a keyword list; it logs each function under its `__name__`
(`rewards/<name>/mean`, the name being the scorer type with `-` and `:` as `_`). Select's prompt-only rows carry the
prompt's record as JSON in `record`, so a scorer sees the same `(prompt, completion, record)` as in select.

The batch is cut into prompt groups (TRL generates a prompt's `numGenerations` completions in one generation batch,
so a call sees whole groups) and handed to the registered scorer (`sil_stages.select.scorers`): a verifier per
completion, a majority vote within each group (label-free, TTRL), a reward model or a judge in batches. A
completion the scorer could not score gets None, which TRL leaves out of the reward.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from sil_stages.core.chat import Prompt, content_text, text_of
from sil_stages.core.settings import Scorer
from sil_stages.select.scorers import PromptSamples, ScorerContext, make_scorer

RewardFunction = Callable[..., list[float | None]]
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9_]")


def reward_function(settings: Scorer, context: ScorerContext | None = None) -> RewardFunction:
    """The reward function of `select.scorer` (built once: a model scorer loads its model here)."""
    scorer = make_scorer(context or ScorerContext(settings=settings))

    def reward(
        prompts: list[Prompt], completions: list[Any], record: list[str] | None = None, **_: Any
    ) -> list[float | None]:
        # A conversational dataset's prompts are message lists and its completions one assistant message each
        # (TRL's format): the scorer sees the question and the assistant turn's content as text, as in select.
        texts = [content_text(c) if isinstance(c, list) else str(c) for c in completions]
        indices: dict[str, list[int]] = {}
        for index, prompt in enumerate(prompts):
            indices.setdefault(prompt if isinstance(prompt, str) else json.dumps(prompt), []).append(index)
        groups = [
            PromptSamples(
                text_of(prompts[members[0]]),
                tuple(texts[i] for i in members),
                json.loads(record[members[0]]) if record is not None else {"prompt": text_of(prompts[members[0]])},
            )
            for members in indices.values()
        ]
        rewards: list[float | None] = [None] * len(prompts)
        for members, scores in zip(indices.values(), scorer.score(groups), strict=True):
            for index, score in zip(members, scores, strict=True):
                rewards[index] = score.value
        return rewards

    reward.__name__ = _NOT_ALLOWED.sub("_", settings.type)
    return reward
