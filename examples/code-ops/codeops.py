"""Evaluate's verifier for the code-ops example: `codeops:verify`, the record's tests run by the `code-tests`
scorer's sandbox (the same one select uses), 1.0 when the program passes all of them.

The evaluate stage judges held-out answers with a `verify(prompt, completion, record)` function; this one builds
one code-tests scorer per stage process (one sandbox worker) on first use and asks it for each answer.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sil_stages.core.settings import Scorer
from sil_stages.select.scorers import PromptSamples, ScorerContext, make_scorer
from sil_stages.select.scorers.base import Scorer as ScorerProtocol


@cache
def _scorer() -> ScorerProtocol:
    settings = Scorer.model_validate({"type": "code-tests", "codeTests": {"timeoutS": 5, "concurrency": 1}})
    return make_scorer(ScorerContext(settings=settings, field="evaluate.verifier"))


def verify(prompt: str, completion: str, record: dict[str, Any]) -> float:
    [[score]] = _scorer().score([PromptSamples(prompt, (completion,), record)])
    return 1.0 if score.value == 1.0 else 0.0
