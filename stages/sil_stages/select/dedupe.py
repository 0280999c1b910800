"""Repeated-example removal for select: exact, or near-duplicates by MinHash LSH (the `datasketch` library).

A deduper is fed examples in order and admits an example only when no admitted one is a duplicate of it, so the
first occurrence wins and reruns agree. Examples kept in earlier iterations can be admitted first (`preload`), so
that a new example repeating old data is dropped too (`keep.dedupe.acrossIterations`).

Near-duplicates are judged on the example's text (its fields joined), shingled into character n-grams: two texts
whose estimated Jaccard similarity is at least `threshold` are one. The LSH index answers in about constant time
per example, so deduplicating N examples costs O(N), not the O(N²) of pairwise comparison.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from sil_stages.core.settings import Dedupe


class Deduper(Protocol):
    def admit(self, text: str) -> bool:
        """True when `text` is not a duplicate of an admitted text (and admits it); False when it is."""
        ...


class KeepAll:
    def admit(self, text: str) -> bool:
        return True


class ExactDeduper:
    def __init__(self) -> None:
        self._seen: set[str] = set()

    def admit(self, text: str) -> bool:
        if text in self._seen:
            return False
        self._seen.add(text)
        return True


def shingles(text: str, n: int) -> set[str]:
    """Character n-grams of `text`; a text shorter than n is its own single shingle."""
    if len(text) <= n:
        return {text}
    return {text[i : i + n] for i in range(len(text) - n + 1)}


class MinHashDeduper:
    def __init__(self, threshold: float, ngram: int, num_perm: int, seed: int = 1) -> None:
        from datasketch import MinHash, MinHashLSH

        self._minhash = MinHash
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self._exact = ExactDeduper()
        self._ngram = ngram
        self._num_perm = num_perm
        self._seed = seed
        self._count = 0

    def _signature(self, text: str) -> object:
        signature = self._minhash(num_perm=self._num_perm, seed=self._seed)
        signature.update_batch([shingle.encode("utf-8") for shingle in shingles(text, self._ngram)])
        return signature

    def admit(self, text: str) -> bool:
        if not self._exact.admit(text):
            return False
        signature = self._signature(text)
        if self._lsh.query(signature):
            return False
        self._lsh.insert(str(self._count), signature)
        self._count += 1
        return True


def make_deduper(settings: Dedupe) -> Deduper:
    if settings.method == "none":
        return KeepAll()
    if settings.method == "exact":
        return ExactDeduper()
    return MinHashDeduper(settings.threshold, settings.ngram, settings.num_perm)


def preload(deduper: Deduper, texts: Iterable[str]) -> None:
    """Admits earlier data first, so that new examples repeating it are dropped (duplicates among it are fine)."""
    for text in texts:
        deduper.admit(text)
