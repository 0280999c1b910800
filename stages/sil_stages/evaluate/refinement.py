"""Inference refinement at evaluation: what sampling more, or revising, gets from a model without new weights.

Users compare the trained model against these, on the same held-out prompts:
- pass@k (Chen et al. 2021): the chance that at least one of k samples drawn from the n samples of a prompt is
  correct, estimated without bias as `1 - C(n-c, k) / C(n, k)` (c correct of n);
- best-of-N: a scorer (the loop's select scorer) picks one of the n samples, the top-scored, first on ties;
- self-refine (Madaan et al. 2023): the model revises its own answer with a critique-and-revise prompt, greedily,
  round after round.

The functions here are pure but `self_refine`, which only calls the generation engine.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sil_stages.core.errors import StageInputError
from sil_stages.core.generation import GenerationEngine, SamplingRequest
from sil_stages.core.settings import SELF_REFINE_TEMPLATE, Refinement
from sil_stages.select.scorers import Score


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of one prompt with c correct among n samples, as Chen et al.'s stable product.

    `1 - prod_{i=n-c+1..n} (1 - k/i)` equals `1 - C(n-c, k) / C(n, k)` without the huge binomials; when fewer
    than k samples are wrong (n - c < k) every draw of k holds a correct one.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def pass_at_ks(refinement: Refinement) -> tuple[int, ...]:
    """The k to report, sorted and unique: `pass_at_k` as set, else pass@1 and pass@samples."""
    chosen = refinement.pass_at_k if refinement.pass_at_k is not None else [1, refinement.samples]
    too_large = [k for k in chosen if k > refinement.samples]
    if too_large:
        raise StageInputError(
            f"refinement.pass_at_k: k={too_large[0]} is more than refinement.samples={refinement.samples} (pass@k "
            "draws k of those samples); lower k or raise samples"
        )
    return tuple(sorted(set(chosen)))


def needs_samples(refinement: Refinement) -> bool:
    """Whether evaluate samples `refinement.samples` answers per prompt: for self-consistency, an explicit pass@k
    or best-of-N (all three then share the same samples)."""
    if refinement.samples < 1:
        return False
    return refinement.method == "self-consistency" or bool(refinement.pass_at_k) or refinement.best_of_n


def best_index(scores: Sequence[Score]) -> int | None:
    """The top-scored sample, the first of equals; None when the scorer scored none of them."""
    best: int | None = None
    best_value = 0.0
    for index, score in enumerate(scores):
        if score.value is not None and (best is None or score.value > best_value):
            best, best_value = index, score.value
    return best


_PLACEHOLDER = re.compile(r"\{(prompt|answer)\}")


def refine_prompt(template: str, prompt: str, answer: str) -> str:
    """The revision prompt, placeholders replaced in one pass: braces in a question or an answer stay text."""
    values = {"prompt": prompt, "answer": answer}
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def self_refine(
    engine: GenerationEngine,
    prompts: Sequence[str],
    answers: Sequence[str],
    refinement: Refinement,
    max_new_tokens: int,
) -> list[list[str]]:
    """The answers after each round (one list per round, in prompt order): round r revises round r-1's answer,
    starting from `answers` (the greedy ones), with greedy decoding."""
    template = refinement.self_refine.template or SELF_REFINE_TEMPLATE
    request = SamplingRequest(n=1, temperature=0.0, max_new_tokens=max_new_tokens)
    rounds: list[list[str]] = []
    current = list(answers)
    for _ in range(refinement.self_refine.rounds):
        revision_prompts = [
            refine_prompt(template, prompt, answer) for prompt, answer in zip(prompts, current, strict=True)
        ]
        current = [outs[0] for outs in engine.generate(revision_prompts, request)]
        rounds.append(current)
    return rounds
