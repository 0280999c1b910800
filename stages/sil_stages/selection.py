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


@dataclass(frozen=True)
class Pair:
    prompt: str
    chosen: str
    rejected: str
    margin: float


def pair(prompt_samples: Sequence[Scored], min_margin: float) -> Pair | None:
    """One preference pair of a prompt: its best-scored completion over its worst, or None when their score margin
    is below `min_margin` (or zero: a prompt whose completions all score the same teaches no preference).

    Ties go to sample order (the first best, the first worst), so reruns agree."""
    if len(prompt_samples) < 2:
        return None
    best = max(prompt_samples, key=lambda item: item.score)
    worst = min(prompt_samples, key=lambda item: item.score)
    margin = best.score - worst.score
    if margin <= 0 or margin < min_margin or best.completion == worst.completion:
        return None
    return Pair(prompt=best.prompt, chosen=best.completion, rejected=worst.completion, margin=margin)
