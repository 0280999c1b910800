"""Is the candidate really better? A paired comparison of two models' per-prompt scores.

Candidate and champion answer the same prompts, so their scores are paired: the difference of each prompt's two
scores carries the comparison, and the prompt-to-prompt spread that both models share cancels out. That is why a
paired interval is narrower than two independent intervals, and why it is the right test for promotion.

- `paired_bootstrap`: percentile interval of the mean difference (Efron & Tibshirani, ch. 13), resampling prompts
  with replacement. Seeded, so a rerun of the same evaluation gives the same interval.
- `mcnemar_exact`: the exact (binomial) McNemar test for binary scores: under "no difference" each discordant
  prompt (one model right, the other wrong) is a fair coin.

Pure: numpy and arithmetic only, so the numbers can be checked against a textbook computation in unit tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

ROUND_DIGITS = 12
RESAMPLE_CHUNK = 256
"""Resamples drawn per numpy call: bounds memory (chunk x prompts indices) on large datasets."""


@dataclass(frozen=True)
class PairedComparison:
    """Candidate minus champion on one dataset."""

    delta: float
    """Mean per-prompt difference (for accuracies: the difference of the two accuracies)."""
    ci_low: float
    ci_high: float
    p_value: float
    """Exact McNemar for binary scores, else the two-sided paired-bootstrap p-value."""
    prompts: int
    candidate_only: int
    """Binary scores: prompts only the candidate got right (McNemar's b)."""
    champion_only: int
    """Binary scores: prompts only the champion got right (McNemar's c)."""


def _check_pairs(candidate: Sequence[float], champion: Sequence[float]) -> None:
    if len(candidate) != len(champion):
        raise ValueError(f"paired scores: {len(candidate)} candidate vs {len(champion)} champion scores")
    if not candidate:
        raise ValueError("paired scores: no prompts to compare")


def bootstrap_means(differences: Sequence[float], *, seed: int, resamples: int) -> list[float]:
    """The mean of `resamples` resamples (with replacement) of the differences, from a seeded generator."""
    import numpy as np

    values = np.asarray(differences, dtype=np.float64)
    generator = np.random.default_rng(seed)
    means: list[float] = []
    remaining = resamples
    while remaining > 0:
        chunk = min(remaining, RESAMPLE_CHUNK)
        indices = generator.integers(0, len(values), size=(chunk, len(values)))
        means.extend(float(m) for m in values[indices].mean(axis=1))
        remaining -= chunk
    return means


def paired_bootstrap(
    candidate: Sequence[float],
    champion: Sequence[float],
    *,
    seed: int,
    resamples: int = 2000,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """The percentile interval of mean(candidate - champion) at `confidence`."""
    import numpy as np

    _check_pairs(candidate, champion)
    differences = [c - h for c, h in zip(candidate, champion, strict=True)]
    means = bootstrap_means(differences, seed=seed, resamples=resamples)
    alpha = 1.0 - confidence
    low, high = np.quantile(np.asarray(means), [alpha / 2, 1 - alpha / 2])
    # Means of a few hundred 0/1 differences are multiples of 1/n; rounding drops float noise such as -1e-17, which
    # would print as -0.000 and make "0 is in the interval" depend on summation order.
    return round(float(low), ROUND_DIGITS), round(float(high), ROUND_DIGITS)


def mcnemar_exact(candidate_only: int, champion_only: int) -> float:
    """Two-sided exact McNemar p-value: 2 * P(X <= min(b, c)) for X ~ Binomial(b + c, 1/2), capped at 1."""
    discordant = candidate_only + champion_only
    if discordant == 0:
        return 1.0
    smaller = min(candidate_only, champion_only)
    tail = sum(math.comb(discordant, k) for k in range(smaller + 1)) / float(2**discordant)
    return min(1.0, 2.0 * tail)


def _is_binary(values: Sequence[float]) -> bool:
    return all(v in (0.0, 1.0) for v in values)


def compare(
    candidate: Sequence[float],
    champion: Sequence[float],
    *,
    seed: int,
    resamples: int = 2000,
    confidence: float = 0.95,
) -> PairedComparison:
    """Difference, interval and p-value of candidate vs champion on the same prompts (same order)."""
    _check_pairs(candidate, champion)
    differences = [c - h for c, h in zip(candidate, champion, strict=True)]
    delta = sum(differences) / len(differences)
    low, high = paired_bootstrap(candidate, champion, seed=seed, resamples=resamples, confidence=confidence)
    candidate_only = sum(1 for c, h in zip(candidate, champion, strict=True) if c > h)
    champion_only = sum(1 for c, h in zip(candidate, champion, strict=True) if c < h)
    if _is_binary(candidate) and _is_binary(champion):
        p_value = mcnemar_exact(candidate_only, champion_only)
    else:
        means = bootstrap_means([d - delta for d in differences], seed=seed, resamples=resamples)
        # Two-sided: how often a world with no difference gives a mean at least as far from 0 as the one observed.
        extreme = sum(1 for m in means if abs(m) >= abs(delta) - 1e-12)
        p_value = (extreme + 1) / (len(means) + 1)
    return PairedComparison(
        delta=delta,
        ci_low=low,
        ci_high=high,
        p_value=p_value,
        prompts=len(differences),
        candidate_only=candidate_only,
        champion_only=champion_only,
    )
