"""`verifier: math`: symbolic equivalence of the completion's final answer with the record's `answer`."""

from __future__ import annotations

import pytest

from sil_stages.core.errors import StageInputError
from sil_stages.core.math_answers import equivalent
from sil_stages.core.scoring import make_verifier
from sil_stages.core.settings import Scorer

EQUIVALENT = [
    ("The answer is 1/2", "0.5"),
    ("The answer is 0.5", "1/2"),
    ("So we get $\\frac{1}{2}$.", "0.5"),
    ("\\boxed{\\frac{1}{2}}", "1/2"),
    ("\\boxed{2x+1}", "1+2x"),
    ("$x^2 - 1$", "(x-1)(x+1)"),
    ("\\boxed{\\sqrt{4}}", "2"),
    ("42", "42.0"),
    ("First 3, then 5, so the total is 8", "8"),
    ("\\boxed{3} and then some words", "3"),
]
NOT_EQUIVALENT = [
    ("The answer is 7.", "8"),
    ("\\boxed{2x}", "2y"),
    ("\\boxed{2x+1}", "2x-1"),
    ("0.33", "1/3"),
    ("I do not know", "5"),
    ("", "5"),
    ("\\boxed{5}", "not a number at all {"),
]


@pytest.mark.parametrize(("completion", "answer"), EQUIVALENT)
def test_an_equivalent_final_answer_is_correct(completion: str, answer: str) -> None:
    assert equivalent(completion, answer)


@pytest.mark.parametrize(("completion", "answer"), NOT_EQUIVALENT)
def test_a_different_or_missing_final_answer_is_wrong(completion: str, answer: str) -> None:
    assert not equivalent(completion, answer)


def test_the_math_verifier_scores_one_for_equivalent_and_zero_otherwise() -> None:
    verify = make_verifier("math", None, field="select.scorer.verifier", pattern_field="select.scorer.answerPattern")
    assert verify("1/2 = ?", "\\boxed{0.5}", {"answer": "\\frac{1}{2}"}) == 1.0
    assert verify("1/2 = ?", "\\boxed{0.4}", {"answer": "\\frac{1}{2}"}) == 0.0


def test_the_math_verifier_needs_an_answer_in_the_record() -> None:
    verify = make_verifier("math", None, field="select.scorer.verifier", pattern_field="select.scorer.answerPattern")
    with pytest.raises(StageInputError, match=r"select\.scorer\.verifier: math needs an `answer`"):
        verify("1 + 1 = ?", "2", {"prompt": "1 + 1 = ?"})


def test_the_spec_accepts_math_as_a_verifier() -> None:
    assert Scorer.model_validate({"type": "verifier", "verifier": "math"}).verifier == "math"
