"""The keep rules, pure: pass rates and the difficulty band, best-of-n, preference pairs, and the seeds."""

from __future__ import annotations

import pytest

from sil_stages.core.seeding import derive_seed
from sil_stages.core.settings import Difficulty
from sil_stages.select.selection import Scored, in_band, pair, pass_rate, pass_rate_bucket, top_k


def _scored(*pairs: tuple[str, float | None]) -> list[Scored]:
    return [Scored("p", completion, score) for completion, score in pairs]


def test_the_pass_rate_is_the_share_of_samples_at_or_above_min_score_and_unscored_ones_fail() -> None:
    samples = _scored(("a", 1.0), ("b", 0.0), ("c", 0.5), ("d", None))
    assert pass_rate(samples, 0.5) == 0.5
    assert pass_rate(samples, 1.0) == 0.25
    assert pass_rate([], 1.0) == 0.0


@pytest.mark.parametrize(
    ("band", "rate", "kept"),
    [
        (Difficulty(), 0.0, True),
        (Difficulty(), 1.0, True),
        (Difficulty(min_pass_rate=0.25, max_pass_rate=0.75), 0.25, True),
        (Difficulty(min_pass_rate=0.25, max_pass_rate=0.75), 0.2, False),
        (Difficulty(min_pass_rate=0.25, max_pass_rate=0.75), 0.8, False),
        # DAPO's dynamic sampling: some right and some wrong, whatever the number of samples
        (Difficulty(exclusive=True), 0.0, False),
        (Difficulty(exclusive=True), 1.0, False),
        (Difficulty(exclusive=True), 0.125, True),
        (Difficulty(exclusive=True), 0.875, True),
    ],
)
def test_the_difficulty_band_keeps_prompts_by_pass_rate(band: Difficulty, rate: float, kept: bool) -> None:
    assert in_band(rate, band) is kept


@pytest.mark.parametrize(
    ("rate", "bucket"),
    [(0.0, "0"), (0.1, "0-0.25"), (0.25, "0-0.25"), (0.5, "0.25-0.5"), (0.6, "0.5-0.75"), (0.9, "0.75-1"), (1.0, "1")],
)
def test_pass_rates_fall_into_histogram_buckets_with_all_wrong_and_all_right_apart(rate: float, bucket: str) -> None:
    assert pass_rate_bucket(rate) == bucket


def test_top_k_keeps_the_best_scores_ties_in_sample_order_unscored_last() -> None:
    """Best-of-n: the best completions win the slots; equal scores keep their sample order so reruns agree."""
    samples = _scored(("low", 0.2), ("none", None), ("high1", 0.9), ("high2", 0.9), ("top", 1.0))
    assert [s.completion for s in top_k(samples, 2, score=lambda s: s.score)] == ["top", "high1"]
    assert [s.completion for s in top_k(samples, None, score=lambda s: s.score)][-1] == "none"


def test_a_pair_is_the_best_over_the_worst_when_the_margin_is_enough() -> None:
    found = pair(_scored(("a", 0.5), ("b", 1.0), ("c", 0.0), ("d", None)), min_margin=0.5)
    assert found is not None and (found.chosen, found.rejected, found.margin) == ("b", "c", 1.0)
    assert pair(_scored(("a", 0.6), ("b", 0.5)), min_margin=0.5) is None
    assert pair(_scored(("a", 1.0), ("b", 1.0)), min_margin=0.0) is None, "equal scores teach no preference"
    assert pair(_scored(("a", 1.0), ("b", None)), min_margin=0.0) is None, "an unscored completion is no rejected"


def test_derived_seeds_are_stable_and_differ_by_iteration_and_purpose() -> None:
    """Reruns reproduce; iteration 2 does not redraw iteration 1's prompts; drawing and sampling are independent."""
    assert derive_seed(0, 1, "draw") == derive_seed(0, 1, "draw")
    assert derive_seed(0, 1, "draw") != derive_seed(0, 2, "draw")
    assert derive_seed(0, 1, "draw") != derive_seed(0, 1, "acquire")
    assert derive_seed(0, 1, "draw") != derive_seed(1, 1, "draw")
    assert 0 <= derive_seed(123, 45, "x") < 2**31
