"""The keep rules of select: which scored completions become training data.

Pure and ordered: completions are considered per prompt in sample order, and the highest scores win a
prompt's `max_per_prompt` slots (a stable sort, so equal scores keep their sample order and reruns agree).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sil_stages.contract import KeepConfig


@dataclass(frozen=True)
class Scored:
    prompt: str
    completion: str
    score: float


def keep(prompt_samples: Sequence[Scored], rules: KeepConfig) -> list[Scored]:
    """The completions of one prompt that pass `rules`: score >= min_score, deduped, max_per_prompt."""
    passing = [item for item in prompt_samples if item.score >= rules.min_score]
    if rules.dedupe:
        seen: set[tuple[str, str]] = set()
        unique: list[Scored] = []
        for item in passing:
            key = (item.prompt, item.completion)
            if key not in seen:
                seen.add(key)
                unique.append(item)
        passing = unique
    ranked = sorted(passing, key=lambda item: -item.score)
    if rules.max_per_prompt is not None:
        ranked = ranked[: max(0, rules.max_per_prompt)]
    return ranked
