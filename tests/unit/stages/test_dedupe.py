"""Repeated-example removal: exact, and MinHash LSH near-duplicates (datasketch), first occurrence wins."""

from __future__ import annotations

import random

from sil_stages.core.settings import Dedupe
from sil_stages.select.dedupe import make_deduper, preload, shingles


def _admitted(settings: Dedupe, texts: list[str]) -> list[str]:
    deduper = make_deduper(settings)
    return [text for text in texts if deduper.admit(text)]


def test_exact_dedupe_drops_only_identical_texts() -> None:
    texts = ["2+2=\n4", "2+2=\n4", "2+2=\n4.", "3+3=\n6"]
    assert _admitted(Dedupe(method="exact"), texts) == ["2+2=\n4", "2+2=\n4.", "3+3=\n6"]


def test_no_dedupe_keeps_repeats() -> None:
    assert _admitted(Dedupe(method="none"), ["a", "a"]) == ["a", "a"]


def test_minhash_drops_near_duplicates_and_keeps_different_texts() -> None:
    """One edit in a long answer is the same example; an answer to another question is not."""
    base = "The capital of France is Paris, a city on the Seine with about two million inhabitants."
    near = base.replace("about two", "roughly two")
    other = "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen in plant cells."
    assert _admitted(Dedupe(method="minhash", threshold=0.7), [base, near, other, base]) == [base, other]


def test_minhash_threshold_decides_how_near_is_a_duplicate() -> None:
    base = "def add(a, b):\n    return a + b\n# adds two numbers and returns the sum of them"
    edited = "def add(x, y):\n    return x + y\n# adds two numbers and returns the sum of them"
    assert _admitted(Dedupe(method="minhash", threshold=0.5), [base, edited]) == [base]
    assert _admitted(Dedupe(method="minhash", threshold=0.95), [base, edited]) == [base, edited]


def test_minhash_keeps_thousands_of_distinct_random_texts() -> None:
    """No false merges at scale: 2,000 random 40-character strings share almost no 5-grams."""
    rng = random.Random(0)
    texts = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(40)) for _ in range(2000)]
    assert len(_admitted(Dedupe(method="minhash", threshold=0.8), texts)) == 2000


def test_preloaded_earlier_data_makes_its_repeats_duplicates() -> None:
    deduper = make_deduper(Dedupe(method="exact"))
    preload(deduper, ["old", "old"])
    assert [deduper.admit(t) for t in ["old", "new"]] == [False, True]


def test_short_texts_are_their_own_shingle() -> None:
    assert shingles("abc", 5) == {"abc"}
    assert shingles("abcdef", 5) == {"abcde", "bcdef"}
