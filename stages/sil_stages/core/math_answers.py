"""`verifier: math`: the completion's final answer is symbolically equal to the record's `answer`.

Built on Hugging Face's `math-verify` (what TRL's accuracy reward uses): the completion's answer is its last
`\\boxed{...}`, else the last LaTeX expression or number it states; the record's `answer` is read as LaTeX math
(`1+2x`, `\\frac{1}{2}`, `0.5`), so `1/2`, `0.5` and `\\frac{1}{2}` are one answer and `2x+1` equals `1+2x`.
An answer that cannot be parsed on either side is wrong (0.0), never an error: a model's garbage is not bad input.

math-verify bounds parsing and comparison with SIGALRM, which works only in the main thread; elsewhere (a reward
function called from a worker thread) the bounds are off rather than the call failing.
"""

from __future__ import annotations

import threading
from typing import Any

from sil_stages.core.errors import StageInputError

MATH = "math"
_TIMEOUT_S = 5


def _timeout() -> int | None:
    return _TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


def parse_answer(answer: str) -> list[Any]:
    """The record's answer as math-verify's parsed forms: as LaTeX math first, else as written."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    text = answer.strip()
    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    parsed: list[Any] = parse(f"${text}$", extraction_config=configs, parsing_timeout=_timeout())
    return parsed or list(parse(text, extraction_config=configs, parsing_timeout=_timeout()))


def parse_completion(completion: str) -> list[Any]:
    """The completion's final answer: its boxed answer, else the last expression or number it states."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    return list(parse(completion, extraction_config=configs, parsing_timeout=_timeout()))


def equivalent(completion: str, answer: str) -> bool:
    """Whether the completion's final answer equals `answer` symbolically (numerically to 6 decimals)."""
    from math_verify import verify

    gold = parse_answer(answer)
    predicted = parse_completion(completion)
    if not gold or not predicted:
        return False
    return bool(verify(gold, predicted, timeout_seconds=_timeout()))


def math_verifier(*, field: str) -> Any:
    """The `math` verifier: 1.0 when the completion's final answer equals the record's `answer`, else 0.0."""

    def verify(prompt: str, completion: str, record: dict[str, Any]) -> float:
        if "answer" not in record:
            raise StageInputError(
                f"{field}: math needs an `answer` field in every record (prompt {prompt!r} has none); add answers "
                "or use a `module:function` verifier or scorer.type: majority-vote"
            )
        return 1.0 if equivalent(completion, str(record["answer"])) else 0.0

    return verify
