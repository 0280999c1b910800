"""`verifier`: a program checks each completion on its own (exact-match against the record's `answer`, or the
user's `module:function(prompt, completion, record) -> float`; see `sil_stages.core.scoring`)."""

from __future__ import annotations

from collections.abc import Sequence

from sil_stages.core import scorers
from sil_stages.core.scoring import compile_pattern, extract_answer, make_verifier
from sil_stages.select.scorers.base import PromptSamples, Score, Scorer, ScorerContext

NAME = scorers.VERIFIER.name


class VerifierScorer:
    def __init__(self, context: ScorerContext) -> None:
        settings = context.settings
        self._verify = make_verifier(
            settings.verifier,
            settings.answer_pattern,
            field=f"{context.field}.verifier",
            pattern_field=f"{context.field}.answer_pattern",
        )
        self._pattern = compile_pattern(settings.answer_pattern, field=f"{context.field}.answer_pattern")

    def score(self, groups: Sequence[PromptSamples]) -> list[list[Score]]:
        return [
            [
                Score(
                    float(self._verify(group.prompt, completion, dict(group.record))),
                    {"answer": extract_answer(completion, self._pattern)},
                )
                for completion in group.completions
            ]
            for group in groups
        ]

    def report(self) -> dict[str, float]:
        return {}


def build(context: ScorerContext) -> Scorer:
    return VerifierScorer(context)
