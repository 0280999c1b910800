"""Answer extraction, normalization, verifiers and the majority vote: how a completion earns a score.

Kept pure (no model, no store) because select and evaluate must agree on what "correct" means: the score that
picks training data and the accuracy that gates promotion come from the same functions.

A verifier is `fn(prompt: str, completion: str, record: dict) -> float`: the prompt as given to the model, the
completion as generated (not normalized), and the whole input record (so a verifier may read `answer`, test
cases or any field carried along). It returns a score, 1.0 for correct and 0.0 for wrong by convention; a
completion counts as correct when its score is at least 1.0.
"""

from __future__ import annotations

import importlib
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sil_stages.core.errors import StageInputError
from sil_stages.core.math_answers import MATH, math_verifier

Verifier = Callable[[str, str, dict[str, Any]], float]

EXACT_MATCH = "exact-match"
CORRECT = 1.0
"""The score at or above which a completion counts as correct (accuracy, self-consistency)."""

_WHITESPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Strip, collapse whitespace, lowercase, drop a trailing period: `" 42. "` and `"42"` are one answer."""
    text = _WHITESPACE.sub(" ", text.strip()).lower()
    if text.endswith("."):
        text = text[:-1].rstrip()
    return text


def compile_pattern(pattern: str | None, *, field: str) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as error:
        raise StageInputError(f"{field}: {pattern!r} is not a valid regex ({error})") from error


def extract_answer(completion: str, pattern: re.Pattern[str] | None = None) -> str:
    """The normalized answer of a completion; "" when there is none.

    Without a pattern the answer is the completion up to its first newline. With one, it is the pattern's
    first group, or its whole match when it has no group, at the first place it matches.
    """
    if pattern is None:
        return normalize(completion.split("\n", 1)[0])
    match = pattern.search(completion)
    if match is None:
        return ""
    return normalize(match.group(1) if pattern.groups else match.group(0))


def exact_match(pattern: re.Pattern[str] | None, *, field: str) -> Verifier:
    """1.0 when the completion's normalized answer equals the record's normalized `answer`, else 0.0."""

    def verify(prompt: str, completion: str, record: dict[str, Any]) -> float:
        if "answer" not in record:
            raise StageInputError(
                f"{field}: exact-match needs an `answer` field in every record (prompt {prompt!r} has none); "
                "add answers or use a `module:function` verifier or scorer.type: majority-vote"
            )
        answer = extract_answer(completion, pattern)
        return CORRECT if answer and answer == normalize(str(record["answer"])) else 0.0

    return verify


def load_user_function(spec: str, *, field: str) -> Verifier:
    """Imports `module:function`; `sil run` puts the loop file's directory on the path for it."""
    if ":" not in spec:
        raise StageInputError(f"{field}: {spec!r} is neither exact-match, math nor module:function")
    user_function: Verifier = import_function(spec, field=field)
    return user_function


def import_function(spec: str, *, field: str) -> Callable[..., Any]:
    """The function `module:function` names (a verifier, a prompt generator); `field` names the config field."""
    module_name, sep, function_name = spec.partition(":")
    if not sep or not module_name or not function_name:
        raise StageInputError(f"{field}: {spec!r} is not module:function")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise StageInputError(
            f"{field}: cannot import module {module_name!r} ({type(error).__name__}: {error}); "
            "put its directory on PYTHONPATH (sil run adds the loop file's directory)"
        ) from error
    function = getattr(module, function_name, None)
    if not callable(function):
        raise StageInputError(f"{field}: module {module_name!r} has no function {function_name!r}")
    return function  # type: ignore[no-any-return]


def make_verifier(spec: str, answer_pattern: str | None, *, field: str, pattern_field: str) -> Verifier:
    """The verifier a config names: `exact-match`, `math` (see `math_answers`) or a user function `module:function`."""
    if spec == EXACT_MATCH:
        return exact_match(compile_pattern(answer_pattern, field=pattern_field), field=field)
    if spec == MATH:
        verifier: Verifier = math_verifier(field=field)
        return verifier
    return load_user_function(spec, field=field)


@dataclass(frozen=True)
class Vote:
    """The majority answer of one prompt's samples and the share of samples that gave it."""

    answer: str | None
    share: float
    distinct: int


def majority_vote(answers: Sequence[str]) -> Vote:
    """The most frequent non-empty answer; ties go to the answer that appears first.

    Empty answers (no answer found) never win and never count as a distinct answer, but they do count in the
    denominator of the share: a prompt where most samples gave no answer has a weak majority.
    """
    counts = Counter(answer for answer in answers if answer)
    if not counts:
        return Vote(answer=None, share=0.0, distinct=0)
    best = max(counts.values())
    winner = next(answer for answer in answers if answer and counts[answer] == best)
    return Vote(answer=winner, share=best / len(answers), distinct=len(counts))
