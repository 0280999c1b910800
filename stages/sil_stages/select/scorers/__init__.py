"""The registry of scorers: one module per scorer (see `base.Scorer`), listed once, here.

`select.scorer.type` names a registered scorer or a user class `module:Class`; select, GRPO's reward function and
evaluate's reward-hacking guard all build their scorer with `make_scorer` and never branch on the type.
"""

from __future__ import annotations

from sil_stages.select.scorers import code_tests, llm_judge, majority_vote, reward_model, user_class, verifier
from sil_stages.select.scorers.base import PromptSamples, Score, Scorer, ScorerContext, ScorerFactory

REGISTRY: dict[str, ScorerFactory] = {
    verifier.NAME: verifier.build,
    majority_vote.NAME: majority_vote.build,
    reward_model.NAME: reward_model.build,
    llm_judge.NAME: llm_judge.build,
    code_tests.NAME: code_tests.build,
}


def make_scorer(context: ScorerContext) -> Scorer:
    """The scorer `context.settings.type` names: a registered one, else the user class `module:Class`."""
    factory = REGISTRY.get(context.settings.type, user_class.build)
    return factory(context)


__all__ = ["REGISTRY", "PromptSamples", "Score", "Scorer", "ScorerContext", "make_scorer"]
