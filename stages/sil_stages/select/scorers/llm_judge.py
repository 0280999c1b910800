"""`llm-judge`: a judge model reads each answer in a rubric prompt and writes a judgment ending in a score
(LLM-as-a-judge). With no `model` the judge is the iteration's champion itself: the model rewards its own answers,
as in Self-Rewarding Language Models (Yuan et al. 2024), whose judge prompt is the default template.

A judgment the score pattern does not match is no score (None, never kept). Too many of them mean a broken
template, pattern or judge, and the stage fails rather than silently keeping almost nothing.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence

from sil_stages.core import scorers
from sil_stages.core.errors import StageInputError
from sil_stages.core.generation import SamplingRequest
from sil_stages.core.scoring import compile_pattern
from sil_stages.core.settings import SELF_REWARDING_TEMPLATE, Judge
from sil_stages.select.scorers.base import PromptSamples, Score, Scorer, ScorerContext, flat, regroup
from sil_stages.select.scorers.model_uri import resolve_scorer_model

NAME = scorers.LLM_JUDGE.name

DEFAULT_SCORE_PATTERN: str = Judge.model_fields["score_pattern"].default
"""`Score: <number>`, what the default template asks for; also used when scorePattern is set to null."""

SHOWN_CHARS = 200
"""How much of a raw judgment `scored.jsonl` and error messages show."""


def parse_judgment(judgment: str, pattern: re.Pattern[str]) -> float | None:
    """The score in a judgment: the pattern's first group (else its whole match) at its first match, as a float;
    None when the pattern does not match or what it matched is not a finite number."""
    match = pattern.search(judgment)
    if match is None:
        return None
    text = match.group(1) if pattern.groups else match.group(0)
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def judge_prompt(template: str, prompt: str, completion: str) -> str:
    """The judge's question: the template with the question and the answer put in (by plain replacement: templates
    hold other braces). The judge's engine formats it like any prompt (`sil_stages.core.chat`): one user turn in
    the judge's chat template when the loop's spec.model.chatTemplate lets it have one."""
    return template.replace("{prompt}", prompt).replace("{completion}", completion)


def _shown(judgment: str) -> str:
    return judgment if len(judgment) <= SHOWN_CHARS else judgment[:SHOWN_CHARS] + "..."


class LlmJudgeScorer:
    def __init__(self, context: ScorerContext) -> None:
        from sil_stages.core.engines import make_engine

        settings = context.settings
        judge = settings.judge
        self._field = context.field
        uri = settings.model or context.champion_uri
        if uri is None:
            raise StageInputError(
                f"{context.field}.model: llm-judge has no judge model: set {context.field}.model, or leave it "
                "unset only where the iteration's champion is known (select, GRPO)"
            )
        path = resolve_scorer_model(context, uri, field=f"{context.field}.model")
        pattern = compile_pattern(judge.score_pattern, field=f"{context.field}.judge.scorePattern")
        self._pattern = pattern if pattern is not None else re.compile(DEFAULT_SCORE_PATTERN)
        self._template = judge.template or SELF_REWARDING_TEMPLATE
        # Greedy decoding gives one judgment however many are asked for: sample once.
        samples = 1 if judge.temperature <= 0.0 else judge.samples
        self._request = SamplingRequest(
            n=samples, temperature=judge.temperature, max_new_tokens=judge.max_new_tokens, seed=context.seed
        )
        self._min_parse_rate = judge.min_parse_rate
        self._engine = make_engine(
            context.engine, path, batch_size=settings.batch_size, progress="judge", chat=context.chat
        )
        self._judged = 0
        self._scores: list[float] = []
        self._first_unparsed: str | None = None
        """What the judge wrote the first time the pattern found no score: what the error message shows."""

    def score(self, groups: Sequence[PromptSamples]) -> list[list[Score]]:
        pairs = flat(groups)
        if not pairs:
            return regroup(groups, [])
        prompts = [judge_prompt(self._template, group.prompt, completion) for group, completion in pairs]
        judgments = self._engine.generate(prompts, self._request)
        scores = [self._score(samples) for samples in judgments]
        if self._first_unparsed is None:
            self._first_unparsed = next(
                (
                    samples[0]
                    for samples, score in zip(judgments, scores, strict=True)
                    if score.value is None and samples
                ),
                None,
            )
        self._judged += len(scores)
        self._scores.extend(score.value for score in scores if score.value is not None)
        self._check_parse_rate()
        return regroup(groups, scores)

    def _score(self, samples: Sequence[str]) -> Score:
        values = [value for value in (parse_judgment(text, self._pattern) for text in samples) if value is not None]
        details = {"judgment": _shown(samples[0]) if samples else ""}
        if not values:
            return Score(None, details)
        return Score(statistics.fmean(values), details)

    def _parse_rate(self) -> float:
        return len(self._scores) / self._judged if self._judged else 1.0

    def _check_parse_rate(self) -> None:
        """Everything judged so far, not one call: GRPO's reward calls come in small batches."""
        rate = self._parse_rate()
        if rate >= self._min_parse_rate:
            return
        first = _shown(self._first_unparsed or "")
        field = self._field
        raise StageInputError(
            f"{field}.judge: only {rate:.0%} of the answers judged got a parseable score ({len(self._scores)} of "
            f"{self._judged}; {field}.judge.minParseRate is {self._min_parse_rate:g}); the first judgment without "
            f"one was {first!r}. Make {field}.judge.template ask for the score in the form "
            f"{field}.judge.scorePattern matches, give it more room with {field}.judge.maxNewTokens, or use a "
            f"stronger judge model ({field}.model)"
        )

    def report(self) -> dict[str, float]:
        if not self._judged:
            return {}
        report = {"judge_parse_rate": self._parse_rate(), "judge_unparsed": float(self._judged - len(self._scores))}
        if self._scores:
            report["judge_score_mean"] = statistics.fmean(self._scores)
        return report


def build(context: ScorerContext) -> Scorer:
    return LlmJudgeScorer(context)
