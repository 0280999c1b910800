"""Text guards of the evaluation layer: collapse (diversity) and contamination, computed on generated text.

A model trained on its own outputs tends to lose diversity and the tails of its distribution (model collapse):
its samples repeat each other. Two standard measures of that, both in [0, 1]:
- distinct-n (Li et al., 2016): distinct n-grams / all n-grams over a set of generations; falls when outputs
  repeat;
- self-BLEU (Zhu et al., 2018): the mean sentence BLEU (sacrebleu) of each generation against all the others;
  rises when outputs repeat.

Contamination: an evaluation item whose prompt appears in the training data makes its held-out score a memory
test. An item is contaminated when one of its word n-grams (n = `ngram`; an item shorter than n words counts as a
single n-gram of its own length) appears in a training prompt or completion.

Words are whitespace-separated tokens after `scoring.normalize` (lowercase, collapsed spaces), so the measures do
not depend on a model's tokenizer. Short generations (a number, a word) are their own single n-gram, so distinct-2
of one-word answers is the share of distinct answers, not 0.

Pure: no model, no store.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sil_stages.core.scoring import normalize

SELF_BLEU_SAMPLE = 200
"""Generations self-BLEU compares (each against the others: quadratic), drawn with a fixed seed when there are more."""

Ngram = tuple[str, ...]


def words(text: str) -> list[str]:
    return normalize(text).split()


def ngrams(tokens: Sequence[str], n: int) -> list[Ngram]:
    """The n-grams of a token list; a non-empty list shorter than n is one n-gram of its own length."""
    if not tokens:
        return []
    if len(tokens) < n:
        return [tuple(tokens)]
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Iterable[str], n: int) -> float:
    """Distinct n-grams over all n-grams of `texts` (0.0 when there are none)."""
    total = 0
    seen: set[Ngram] = set()
    for text in texts:
        grams = ngrams(words(text), n)
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def self_bleu(texts: Sequence[str], *, seed: int = 0, sample: int = SELF_BLEU_SAMPLE) -> float:
    """Mean sacrebleu sentence BLEU (0..1) of each generation against the others; 0.0 with fewer than two."""
    from sacrebleu.metrics.bleu import BLEU

    chosen = [text for text in texts if text.strip()]
    if len(chosen) > sample:
        chosen = random.Random(seed).sample(chosen, sample)
    if len(chosen) < 2:
        return 0.0
    bleu = BLEU(effective_order=True)
    total = 0.0
    for index, hypothesis in enumerate(chosen):
        references = chosen[:index] + chosen[index + 1 :]
        total += bleu.sentence_score(hypothesis, references).score
    return total / len(chosen) / 100.0


@dataclass(frozen=True)
class Diversity:
    distinct_1: float
    distinct_2: float
    self_bleu: float


def diversity(texts: Sequence[str], *, seed: int = 0) -> Diversity:
    return Diversity(distinct_n(texts, 1), distinct_n(texts, 2), self_bleu(texts, seed=seed))


def mean_length(texts: Sequence[str]) -> float:
    """Mean length of generations in characters (tokenizer-free, so models with different vocabularies compare)."""
    return sum(len(text) for text in texts) / len(texts) if texts else 0.0


@dataclass(frozen=True)
class ContaminatedItem:
    item: int
    """1-based number of the item (record) in its dataset file."""
    prompt: str


class TrainingIndex:
    """The word n-grams of the training texts, built once and asked about every evaluation item."""

    def __init__(self, texts: Iterable[str], n: int) -> None:
        self.n = n
        self._tokens = [words(text) for text in texts]
        self._by_length: dict[int, set[Ngram]] = {}

    def _grams(self, length: int) -> set[Ngram]:
        # Short items are matched whole: their own length's n-grams are indexed on first use.
        if length not in self._by_length:
            self._by_length[length] = {
                tuple(tokens[i : i + length]) for tokens in self._tokens for i in range(len(tokens) - length + 1)
            }
        return self._by_length[length]

    def contains(self, text: str) -> bool:
        tokens = words(text)
        grams = ngrams(tokens, self.n)
        if not grams:
            return False
        index = self._grams(len(grams[0]))
        return any(gram in index for gram in grams)


def contaminated_items(index: TrainingIndex, prompts: Sequence[str]) -> list[ContaminatedItem]:
    """The evaluation prompts with an n-gram in the training data, in file order."""
    return [ContaminatedItem(item, prompt) for item, prompt in enumerate(prompts, start=1) if index.contains(prompt)]
