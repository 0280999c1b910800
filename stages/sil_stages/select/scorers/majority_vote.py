"""`majority-vote`: label-free. The most frequent answer among a prompt's samples is taken as its pseudo-label and
completions that agree score 1.0 (self-consistency as a filter, as in label-free self-training and TTRL).

A prompt with fewer than two samples has no vote: its completions get no score. A majority weaker than
`min_vote_share` gives no pseudo-label (every completion scores 0)."""

from __future__ import annotations

from collections.abc import Sequence

from sil_stages.core import scorers
from sil_stages.core.scoring import Vote, compile_pattern, extract_answer, majority_vote
from sil_stages.select.scorers.base import PromptSamples, Score, Scorer, ScorerContext

NAME = scorers.MAJORITY_VOTE.name


class MajorityVoteScorer:
    def __init__(self, context: ScorerContext) -> None:
        self._pattern = compile_pattern(context.settings.answer_pattern, field=f"{context.field}.answer_pattern")
        self._min_share = context.settings.min_vote_share
        self._shares: list[float] = []

    def score(self, groups: Sequence[PromptSamples]) -> list[list[Score]]:
        result: list[list[Score]] = []
        for group in groups:
            answers = [extract_answer(completion, self._pattern) for completion in group.completions]
            if len(answers) < 2:
                result.append([Score(None, {"answer": answer}) for answer in answers])
                continue
            vote = majority_vote(answers)
            self._shares.append(vote.share)
            if vote.share < self._min_share:
                vote = Vote(answer=None, share=vote.share, distinct=vote.distinct)
            result.append(
                [
                    Score(
                        1.0 if vote.answer is not None and answer == vote.answer else 0.0,
                        {"answer": answer, "pseudo_label": vote.answer, "vote_share": vote.share},
                    )
                    for answer in answers
                ]
            )
        return result

    def report(self) -> dict[str, float]:
        if not self._shares:
            return {}
        return {"mean_vote_share": sum(self._shares) / len(self._shares)}


def build(context: ScorerContext) -> Scorer:
    return MajorityVoteScorer(context)
