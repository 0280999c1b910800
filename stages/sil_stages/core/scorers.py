"""The built-in scorers as the spec knows them: names, one line each, and what each requires of the loop.

What a scorer *is* to the spec (the `select.scorer.type` values, their description, the rules a loop must satisfy
to use one) is plain data here, in the core; how it *scores* is its module in `sil_stages.select.scorers`, whose
`REGISTRY` builds each (a unit test keeps the two lists equal). Adding a scorer: its `ScorerSpec` here, its module
in `select/scorers/`, its line in that registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sil_stages.core.checks import CelCheck


@dataclass(frozen=True)
class ScorerSpec:
    name: str
    """The value of select.scorer.type."""
    summary: str
    """What it scores by, for the CRD's description and `sil explain`."""
    checks: tuple[CelCheck, ...] = field(default=())
    """Rules over the whole spec (`self` is spec) that a loop using this scorer must satisfy."""


def _when(name: str, rule: str) -> str:
    return f"self.select.scorer.type != '{name}' || {rule}"


VERIFIER = ScorerSpec(name="verifier", summary="a program checks each completion")
MAJORITY_VOTE = ScorerSpec(
    name="majority-vote",
    summary="label-free, the most common answer among a prompt's samples is taken as correct (self-consistency); "
    "needs samplesPerPrompt >= 2",
    checks=(
        CelCheck(
            rule=_when("majority-vote", "self.acquire.samplesPerPrompt >= 2"),
            message="select.scorer.type majority-vote needs acquire.samplesPerPrompt >= 2 (a vote needs voters)",
            field_path=".acquire.samplesPerPrompt",
        ),
    ),
)
REWARD_MODEL = ScorerSpec(
    name="reward-model",
    summary="a one-label sequence-classification model (scorer.model) scores prompt + completion",
    checks=(
        CelCheck(
            rule=_when("reward-model", "has(self.select.scorer.model)"),
            message="select.scorer.type reward-model needs select.scorer.model: the URI of a one-label "
            "sequence-classification checkpoint",
            field_path=".select.scorer.model",
        ),
    ),
)
LLM_JUDGE = ScorerSpec(
    name="llm-judge",
    summary="a judge model (scorer.model, default the champion: self-rewarding) scores each completion with a "
    "rubric prompt (scorer.judge)",
)
CODE_TESTS = ScorerSpec(
    name="code-tests",
    summary="the completion's Python code (its first ```python block, else the whole text) runs in a sandbox "
    "against the record's `tests` (asserts, or input/output pairs with `entryPoint`); the score is the share "
    "passed (scorer.codeTests)",
)

SCORERS: dict[str, ScorerSpec] = {
    scorer.name: scorer for scorer in (VERIFIER, MAJORITY_VOTE, REWARD_MODEL, LLM_JUDGE, CODE_TESTS)
}
