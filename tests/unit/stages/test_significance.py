"""The paired comparison behind the default promotion gate, checked against textbook computations."""

from __future__ import annotations

import math

import pytest

from sil_stages.evaluate.significance import bootstrap_means, compare, mcnemar_exact, paired_bootstrap


def _pairs(both: int, candidate_only: int, champion_only: int, neither: int) -> tuple[list[float], list[float]]:
    """Binary per-prompt scores with the given 2x2 table (McNemar's a, b, c, d)."""
    candidate = [1.0] * both + [1.0] * candidate_only + [0.0] * champion_only + [0.0] * neither
    champion = [1.0] * both + [0.0] * candidate_only + [1.0] * champion_only + [0.0] * neither
    return candidate, champion


def test_bootstrap_interval_matches_the_normal_theory_interval_of_a_mean_difference() -> None:
    """400 prompts, 60 only the candidate solves, 30 only the champion: delta 0.075, and with the plug-in variance
    of the differences the textbook 95% interval is delta +- 1.96 * sd / sqrt(n) = [0.0291, 0.1209]."""
    candidate, champion = _pairs(both=200, candidate_only=60, champion_only=30, neither=110)
    n = len(candidate)
    delta = (60 - 30) / n
    variance = (60 + 30) / n - delta**2
    half_width = 1.959964 * math.sqrt(variance / n)
    low, high = paired_bootstrap(candidate, champion, seed=7, resamples=20000)
    assert low == pytest.approx(delta - half_width, abs=0.004)
    assert high == pytest.approx(delta + half_width, abs=0.004)


def test_bootstrap_is_deterministic_for_a_seed() -> None:
    candidate, champion = _pairs(both=50, candidate_only=9, champion_only=4, neither=37)
    differences = [c - h for c, h in zip(candidate, champion, strict=True)]
    assert paired_bootstrap(candidate, champion, seed=3) == paired_bootstrap(candidate, champion, seed=3)
    assert bootstrap_means(differences, seed=3, resamples=500) == bootstrap_means(differences, seed=3, resamples=500)
    assert bootstrap_means(differences, seed=3, resamples=500) != bootstrap_means(differences, seed=4, resamples=500)


def test_identical_models_have_an_interval_that_contains_zero_and_p_value_one() -> None:
    scores = [1.0, 0.0, 1.0, 1.0, 0.0] * 40
    result = compare(scores, list(scores), seed=0)
    assert result.delta == 0.0
    assert result.ci_low <= 0.0 <= result.ci_high
    assert result.p_value == 1.0


def test_two_equally_good_models_that_disagree_have_an_interval_around_zero() -> None:
    candidate, champion = _pairs(both=100, candidate_only=20, champion_only=20, neither=60)
    result = compare(candidate, champion, seed=0)
    assert result.ci_low < 0.0 < result.ci_high
    assert result.p_value == 1.0


@pytest.mark.parametrize(
    ("candidate_only", "champion_only", "expected"),
    [
        (1, 9, 22 / 1024),  # 2 * (C(10,0) + C(10,1)) / 2^10, the textbook exact McNemar example
        (9, 1, 22 / 1024),
        (0, 0, 1.0),
        (5, 5, 1.0),
        (0, 6, 2 / 64),
    ],
)
def test_exact_mcnemar_p_value(candidate_only: int, champion_only: int, expected: float) -> None:
    assert mcnemar_exact(candidate_only, champion_only) == pytest.approx(expected)


def test_compare_counts_discordant_prompts_and_uses_mcnemar_for_binary_scores() -> None:
    candidate, champion = _pairs(both=30, candidate_only=9, champion_only=1, neither=10)
    result = compare(candidate, champion, seed=0)
    assert (result.prompts, result.candidate_only, result.champion_only) == (50, 9, 1)
    assert result.delta == pytest.approx(8 / 50)
    assert result.p_value == pytest.approx(22 / 1024)
    assert 0.0 < result.ci_low < result.delta < result.ci_high


def test_non_binary_scores_get_a_bootstrap_p_value() -> None:
    candidate = [0.5 + 0.1 * (i % 3) for i in range(60)]
    champion = [0.5] * 60
    result = compare(candidate, champion, seed=0)
    assert result.ci_low > 0.0
    assert result.p_value < 0.01


def test_unpaired_scores_are_refused() -> None:
    with pytest.raises(ValueError, match="paired scores"):
        compare([1.0], [1.0, 0.0], seed=0)


def test_an_interval_that_touches_zero_reads_exactly_zero_not_float_noise() -> None:
    """The gate asks `result > 0`: a bound of -1e-17 or +1e-17 from summation order must not decide it."""
    candidate, champion = _pairs(both=170, candidate_only=10, champion_only=3, neither=17)
    for seed in range(20):
        low, high = paired_bootstrap(candidate, champion, seed=seed, resamples=200)
        assert low == round(low, 12) and high == round(high, 12)
        assert str(low) != "-0.0"
