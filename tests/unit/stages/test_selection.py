"""The keep rules: which scored completions of one prompt become training data, and which seed each purpose."""

from __future__ import annotations

from sil_stages.contract import KeepConfig
from sil_stages.seeding import derive_seed
from sil_stages.selection import Scored, keep


def _scored(*pairs: tuple[str, float]) -> list[Scored]:
    return [Scored("p", completion, score) for completion, score in pairs]


def test_keep_drops_completions_below_min_score() -> None:
    kept = keep(_scored(("a", 1.0), ("b", 0.0), ("c", 0.5)), KeepConfig(min_score=0.5, dedupe=False))
    assert [item.completion for item in kept] == ["a", "c"]


def test_keep_dedupes_identical_completions_of_a_prompt() -> None:
    """Training twice on one sampled string overweights what the model already says most often."""
    kept = keep(_scored(("a", 1.0), ("a", 1.0), ("b", 1.0)), KeepConfig(dedupe=True))
    assert [item.completion for item in kept] == ["a", "b"]


def test_keep_without_dedupe_keeps_duplicates() -> None:
    kept = keep(_scored(("a", 1.0), ("a", 1.0)), KeepConfig(dedupe=False))
    assert len(kept) == 2


def test_max_per_prompt_keeps_the_best_scores_in_sample_order() -> None:
    """Easy prompts must not flood the dataset; the best completions win the slots, ties by sample order."""
    rules = KeepConfig(min_score=0.0, max_per_prompt=2, dedupe=False)
    kept = keep(_scored(("low", 0.2), ("high1", 0.9), ("high2", 0.9), ("top", 1.0)), rules)
    assert [item.completion for item in kept] == ["top", "high1"]


def test_derived_seeds_are_stable_and_differ_by_iteration_and_purpose() -> None:
    """Reruns reproduce; iteration 2 does not redraw iteration 1's prompts; drawing and sampling are independent."""
    assert derive_seed(0, 1, "draw") == derive_seed(0, 1, "draw")
    assert derive_seed(0, 1, "draw") != derive_seed(0, 2, "draw")
    assert derive_seed(0, 1, "draw") != derive_seed(0, 1, "acquire")
    assert derive_seed(0, 1, "draw") != derive_seed(1, 1, "draw")
    assert 0 <= derive_seed(123, 45, "x") < 2**31
