"""The fake stages' scores: deterministic per (seed, loop, iteration), so every run of a loop decides alike.

A candidate's held-out score is a slow upward trend plus seeded noise, rounded to 4 decimals: some iterations beat
the champion, some do not. The champion's score is the score of the iteration it came from (0: the base model).
`expected_decisions` replays the gate `result > champion` (GATE_CONDITION) on these numbers, which is what an
undisturbed operator decides with a Prometheus gate of that condition on `selfimprove_eval_score`.
"""

from __future__ import annotations

import hashlib

BASE_SCORE = 0.5
"""The base model's score (iteration 0)."""
TREND = 0.02
"""Expected gain per iteration."""
NOISE = 0.16
"""Width of the uniform noise around the trend."""
GATE_CONDITION = "result > champion"
"""The successCondition whose decisions `expected_decisions` predicts: two scores computed alike compare exactly."""


def score(loop: str, iteration: int, seed: int = 0) -> float:
    """The held-out score of the candidate of `iteration` (0: the base model), in [0, 1]."""
    if iteration == 0:
        return BASE_SCORE
    digest = hashlib.sha256(f"{seed}:{loop}:{iteration}".encode()).digest()
    noise = (int.from_bytes(digest[:8], "big") / 2**64 - 0.5) * NOISE
    return round(min(1.0, max(0.0, BASE_SCORE + TREND * iteration + noise)), 4)


def expected_decisions(loop: str, iterations: int, seed: int = 0) -> list[bool]:
    """Promoted (True) or rejected per iteration 1..`iterations`, with the gate GATE_CONDITION."""
    champion = 0
    decisions: list[bool] = []
    for iteration in range(1, iterations + 1):
        promoted = score(loop, iteration, seed) > score(loop, champion, seed)
        decisions.append(promoted)
        if promoted:
            champion = iteration
    return decisions
