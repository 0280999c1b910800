"""The keep rules of select, pure: pass rates and the difficulty band, best-of-n (top-k), preference pairs.

Completions are considered per prompt in sample order; sorts are stable, so equal scores keep their sample order
and reruns agree. A score of None (the scorer could not score the completion) never passes and is never kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sil_stages.core.settings import Difficulty

T = TypeVar("T")


@dataclass(frozen=True)
class Scored:
    prompt: str
    completion: str
    score: float | None


def passes(item: Scored, min_score: float) -> bool:
    return item.score is not None and item.score >= min_score


def pass_rate(prompt_samples: Sequence[Scored], min_score: float) -> float:
    """The share of a prompt's samples scoring at least `min_score` (unscored ones count as failures)."""
    if not prompt_samples:
        return 0.0
    return sum(passes(item, min_score) for item in prompt_samples) / len(prompt_samples)


def in_band(rate: float, band: Difficulty) -> bool:
    """Whether a prompt with pass rate `rate` is kept by the difficulty band (bounds inclusive unless exclusive)."""
    if band.exclusive:
        return band.min_pass_rate < rate < band.max_pass_rate
    return band.min_pass_rate <= rate <= band.max_pass_rate


PASS_RATE_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("0", 0.0, 0.0),
    ("0-0.25", 0.0, 0.25),
    ("0.25-0.5", 0.25, 0.5),
    ("0.5-0.75", 0.5, 0.75),
    ("0.75-1", 0.75, 1.0),
    ("1", 1.0, 1.0),
)
"""Pass-rate histogram buckets: exactly 0 and exactly 1 apart (they carry no learning signal), the rest as
(low, high], the last one open at 1."""


def pass_rate_bucket(rate: float) -> str:
    if rate <= 0.0:
        return "0"
    if rate >= 1.0:
        return "1"
    for name, low, high in PASS_RATE_BUCKETS[1:-1]:
        if low < rate <= high:
            return name
    return "0.75-1"


def top_k(items: Sequence[T], k: int | None, *, score: Callable[[T], float | None]) -> list[T]:
    """The `k` highest-scored items (all when k is None), best first; ties keep their order, unscored go last."""
    ranked = sorted(items, key=lambda item: -_orderable(score(item)))
    return ranked if k is None else ranked[: max(0, k)]


def _orderable(value: float | None) -> float:
    return float("-inf") if value is None else value


@dataclass(frozen=True)
class Pair:
    prompt: str
    chosen: str
    rejected: str
    margin: float


def pair(prompt_samples: Sequence[Scored], min_margin: float) -> Pair | None:
    """One preference pair of a prompt: its best-scored completion over its worst, or None when their score margin
    is below `min_margin` (or zero: a prompt whose completions all score the same teaches no preference).

    Unscored completions take no part. Ties go to sample order (the first best, the first worst), so reruns agree."""
    scored = [item for item in prompt_samples if item.score is not None]
    if len(scored) < 2:
        return None
    best = max(scored, key=lambda item: item.score or 0.0)
    worst = min(scored, key=lambda item: item.score or 0.0)
    assert best.score is not None and worst.score is not None
    margin = best.score - worst.score
    if margin <= 0 or margin < min_margin or best.completion == worst.completion:
        return None
    return Pair(prompt=best.prompt, chosen=best.completion, rejected=worst.completion, margin=margin)
