"""Collapse and contamination guards on crafted data: what a collapsed sampler and a leaky training set look like."""

from __future__ import annotations

import pytest

from sil_stages.evaluate.guards import (
    TrainingIndex,
    contaminated_items,
    distinct_n,
    diversity,
    mean_length,
    ngrams,
    self_bleu,
)

DIVERSE = [
    "the cat sat on the mat",
    "a dog ran across the park",
    "rain fell over quiet hills",
    "seven birds sang at dawn",
    "my brother cooks spicy noodles",
    "old ships rust in harbors",
]
COLLAPSED = ["the cat sat on the mat"] * 6


def test_a_collapsed_sampler_has_low_distinct_n_and_high_self_bleu() -> None:
    collapsed, diverse = diversity(COLLAPSED), diversity(DIVERSE)
    assert collapsed.distinct_1 == pytest.approx(5 / 36)  # 5 distinct words of 36
    assert collapsed.distinct_2 == pytest.approx(5 / 30)
    assert collapsed.self_bleu == pytest.approx(1.0)
    assert diverse.distinct_1 > 0.8
    assert diverse.distinct_2 == pytest.approx(1.0)
    assert diverse.self_bleu < 0.2


def test_distinct_n_is_the_share_of_distinct_ngrams() -> None:
    assert distinct_n(["a b a b"], 1) == pytest.approx(2 / 4)
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)  # (a b), (b a), (a b)
    assert distinct_n([], 1) == 0.0


def test_short_generations_are_one_ngram_so_one_word_answers_still_measure_diversity() -> None:
    assert ngrams(["42"], 2) == [("42",)]
    assert distinct_n(["42", "42", "17", "9"], 2) == pytest.approx(3 / 4)


def test_self_bleu_needs_two_generations_and_ignores_empty_ones() -> None:
    assert self_bleu(["only one", "", "  "]) == 0.0


def test_mean_length_in_characters() -> None:
    assert mean_length(["ab", "abcd"]) == 3.0
    assert mean_length([]) == 0.0


def test_a_contaminated_training_set_is_flagged_with_the_right_items() -> None:
    training = ["what is 12+30=", "42", "the quick brown fox jumps over the lazy dog near the river"]
    evaluation = [
        "12+30=",  # item 1: a short item, found whole in a training prompt
        "7+8=",  # item 2: clean
        "a quick brown fox jumps over the lazy dog today",  # item 3: shares an 8-gram with the training text
        "the quick brown cat",  # item 4: shorter than 8 words and not contiguous in the training text: clean
    ]
    found = contaminated_items(TrainingIndex(training, n=8), evaluation)
    assert [(item.item, item.prompt) for item in found] == [(1, "12+30="), (3, evaluation[2])]


def test_matching_ignores_case_and_spacing() -> None:
    index = TrainingIndex(["Translate  THIS sentence"], n=3)
    assert index.contains("translate this sentence")
    assert not index.contains("translate that sentence")


def test_a_wrong_majority_is_rewarded_by_the_vote_and_not_by_the_truth() -> None:
    """The reward-hacking guard judges sampled answers as select would: a confident wrong majority scores high."""
    from sil_stages.core.contract import ScorerConfig
    from sil_stages.evaluate.scoring import Proxy
    from sil_stages.select.scorers import ScorerContext, make_scorer

    proxy = Proxy(make_scorer(ScorerContext(settings=ScorerConfig(type="majority-vote"))), min_score=1.0)
    verdicts = proxy.verdicts(["2+2=", "3+3="], [["5", "5", "4"], ["6", "6", "6"]], [{}, {}])
    assert verdicts == [1.0, 1.0, 0.0, 1.0, 1.0, 1.0]  # the truth would be [0, 0, 1, 1, 1, 1]
    assert proxy.verdicts(["2+2="], [["4"]], [{}]) is None, "one answer per prompt: no vote to judge by"
