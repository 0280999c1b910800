"""What counts as a correct answer: extraction, normalization, verifiers and the majority vote.

select (which completions to train on) and evaluate (whether to promote) share these functions, so their
behaviour is the definition of "correct" for the whole loop.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from sil_stages.core.errors import StageInputError
from sil_stages.core.scoring import (
    exact_match,
    extract_answer,
    load_user_function,
    majority_vote,
    make_verifier,
    normalize,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  42  ", "42"),
        ("Paris.", "paris"),
        ("New   York\tCity", "new york city"),
        ("3.5", "3.5"),
        ("done .", "done"),
        ("", ""),
    ],
)
def test_normalize_strips_collapses_lowercases_and_drops_a_trailing_period(raw: str, expected: str) -> None:
    """Surface differences (case, spacing, a final period) must not turn a right answer into a wrong one."""
    assert normalize(raw) == expected


def test_default_answer_is_the_first_line_of_the_completion() -> None:
    """Without a pattern, a model that keeps talking after its answer is judged on the answer alone."""
    assert extract_answer(" 81\n and some rambling") == "81"


def test_answer_pattern_takes_the_first_group_or_the_whole_match() -> None:
    """Chain-of-thought completions put the answer somewhere inside; a regex pulls it out."""
    with_group = re.compile(r"answer is (\d+)")
    without_group = re.compile(r"\d+")
    assert extract_answer("so the answer is 12.", with_group) == "12"
    assert extract_answer("x 7 y 8", without_group) == "7"


def test_answer_pattern_that_does_not_match_gives_no_answer() -> None:
    """No match is an empty answer, which is never correct and never wins a vote."""
    assert extract_answer("no digits here", re.compile(r"\d+")) == ""


def test_exact_match_compares_normalized_answers() -> None:
    verify = exact_match(None, field="scorer.verifier")
    assert verify("1+1=", "2.\nmore", {"answer": 2}) == 1.0
    assert verify("1+1=", "3", {"answer": "2"}) == 0.0
    assert verify("1+1=", "", {"answer": ""}) == 0.0


def test_exact_match_without_an_answer_field_names_the_field_and_the_way_out() -> None:
    """Unlabelled prompts with exact-match are a config mistake the user must see at once, not a 0% score."""
    verify = exact_match(None, field="scorer.verifier")
    with pytest.raises(StageInputError, match=r"scorer\.verifier.*`answer`.*majority-vote"):
        verify("1+1=", "2", {"prompt": "1+1="})


def test_user_function_is_imported_from_module_colon_function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A verifier is `fn(prompt, completion, record) -> float`, found on the path like any module."""
    (tmp_path / "myverifier.py").write_text(
        "def check(prompt, completion, record):\n    return 1.0 if completion == record['want'] else 0.0\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    verify = make_verifier("myverifier:check", None, field="scorer.verifier", pattern_field="scorer.answer_pattern")
    assert verify("p", "yes", {"want": "yes"}) == 1.0
    sys.modules.pop("myverifier", None)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_xyz:verify", r"scorer\.verifier: cannot import module 'no_such_module_xyz'.*PYTHONPATH"),
        ("json:no_such_function", r"scorer\.verifier: module 'json' has no function 'no_such_function'"),
        ("not-a-spec", r"scorer\.verifier: 'not-a-spec' is neither exact-match, math nor module:function"),
    ],
)
def test_a_user_function_that_cannot_be_loaded_is_a_clear_input_error(spec: str, message: str) -> None:
    with pytest.raises(StageInputError, match=message):
        load_user_function(spec, field="scorer.verifier")


def test_majority_vote_picks_the_most_frequent_answer_and_its_share() -> None:
    vote = majority_vote(["5", "7", "5", "5"])
    assert (vote.answer, vote.share, vote.distinct) == ("5", 0.75, 2)


def test_majority_vote_ties_go_to_the_answer_seen_first() -> None:
    """Deterministic ties: the same samples always give the same pseudo-label."""
    assert majority_vote(["9", "4", "4", "9"]).answer == "9"
    assert majority_vote(["4", "9", "9", "4"]).answer == "4"


def test_majority_vote_ignores_empty_answers_but_counts_them_in_the_share() -> None:
    """Samples without an answer cannot be the label, and they weaken the majority."""
    vote = majority_vote(["", "", "", "3"])
    assert (vote.answer, vote.share, vote.distinct) == ("3", 0.25, 1)
    assert majority_vote(["", ""]).answer is None
