"""The scorer protocol: how select (and GRPO's reward, and evaluate's reward-hacking guard) turn sampled
completions into scores.

A scorer scores whole prompt groups in one call: a model-based scorer batches many completions per forward pass,
and a group-level scorer (majority vote) needs all of a prompt's samples at once. A score is a float, higher is
better, or None when the scorer could not score the completion (an unparseable judgment): None is never kept,
never passes, and is counted.

One module per scorer under `sil_stages.select.scorers`, each with `NAME` and `build(context) -> Scorer`; the registry
(`sil_stages.select.scorers.REGISTRY`) lists them, and nothing else branches on the scorer type.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sil_stages.core.settings import ChatFormat, EngineName
from sil_stages.core.settings import Scorer as ScorerSettings

if TYPE_CHECKING:
    from sil_stages.core.store import Store


@dataclass(frozen=True)
class PromptSamples:
    """One prompt, its sampled completions, and its record (every field but the completions: `answer`, tests...)."""

    prompt: str
    completions: tuple[str, ...]
    record: Mapping[str, Any]


@dataclass(frozen=True)
class Score:
    """The score of one completion, and what the scorer wants shown beside it in `scored.jsonl`."""

    value: float | None
    details: Mapping[str, Any] = field(default_factory=dict)


class Scorer(Protocol):
    def score(self, groups: Sequence[PromptSamples]) -> list[list[Score]]:
        """For each group, one Score per completion, in order."""
        ...

    def report(self) -> dict[str, float]:
        """Metrics about the scoring so far (e.g. `judge_parse_rate`), for the select manifest; may be empty."""
        ...


@dataclass(frozen=True)
class ScorerContext:
    """What a scorer is built from: its settings, and where to find models."""

    settings: ScorerSettings
    field: str = "select.scorer"
    """The settings' path in the loop spec, for error messages."""
    store: Store | None = None
    """Resolves model URIs (s3://, file://, paths); None: models are local paths or hub names."""
    champion_uri: str | None = None
    """The iteration's champion: the default model of scorers that need one (llm-judge)."""
    seed: int = 0
    engine: EngineName = "transformers"
    """The generation engine (acquire's) of scorers that generate (llm-judge)."""
    chat: ChatFormat = dataclasses.field(default_factory=ChatFormat)
    """spec.model's chat settings: how a scorer's generating model reads its prompts (llm-judge)."""


ScorerFactory = Callable[[ScorerContext], Scorer]


def flat(groups: Sequence[PromptSamples]) -> list[tuple[PromptSamples, str]]:
    """Every (group, completion) pair in order: what a batched model scorer iterates over."""
    return [(group, completion) for group in groups for completion in group.completions]


def regroup(groups: Sequence[PromptSamples], scores: Sequence[Score]) -> list[list[Score]]:
    """The inverse of `flat`: a flat list of scores cut back into one list per group."""
    result: list[list[Score]] = []
    start = 0
    for group in groups:
        result.append(list(scores[start : start + len(group.completions)]))
        start += len(group.completions)
    if start != len(scores):
        raise ValueError(f"{len(scores)} scores for {start} completions")
    return result
