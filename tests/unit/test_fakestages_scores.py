"""The fake stages' scores (tests/fakestages/scores.py): deterministic, and a mix of promotions and rejections."""

from __future__ import annotations

from tests.fakestages.outputs import champion_iteration
from tests.fakestages.scores import BASE_SCORE, expected_decisions, score


def test_scores_are_the_same_for_the_same_loop_iteration_and_seed_and_differ_between_loops() -> None:
    assert [score("loop-a", i) for i in range(1, 6)] == [score("loop-a", i) for i in range(1, 6)]
    assert [score("loop-a", i) for i in range(1, 6)] != [score("loop-b", i) for i in range(1, 6)]
    assert score("loop-a", 3, seed=1) != score("loop-a", 3, seed=0)
    assert score("anything", 0) == BASE_SCORE


def test_expected_decisions_promote_only_a_candidate_above_the_champion_so_far() -> None:
    for loop in (f"loop-{n}" for n in range(10)):
        decisions = expected_decisions(loop, 4)
        champion = BASE_SCORE
        for iteration, promoted in enumerate(decisions, start=1):
            assert promoted == (score(loop, iteration) > champion), (loop, iteration)
            champion = score(loop, iteration) if promoted else champion


def test_twenty_loops_of_three_iterations_both_promote_and_reject() -> None:
    decisions = [d for n in range(20) for d in expected_decisions(f"chaos-{n:02d}", 3)]
    assert 0.3 < sum(decisions) / len(decisions) < 0.8


def test_the_champion_iteration_is_read_from_its_checkpoint_uri_and_anything_else_is_the_base() -> None:
    assert champion_iteration("s3://b/loop/iterations/12/optimize/checkpoint") == 12
    assert champion_iteration("file:///s/loop/iterations/3/optimize/checkpoint/") == 3
    assert champion_iteration("s3://b/base-model") == 0
