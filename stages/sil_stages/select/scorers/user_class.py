"""A user scorer class, `type: module:Class`: anything the built-in scorers do not cover (a code sandbox, an API).

The class is constructed with the `ScorerContext` (its settings, the store, the champion's URI) and must have
`score(groups) -> list[list[Score]]`; `report() -> dict[str, float]` is optional. `sil run` puts the loop file's
directory on the import path, as for `module:function` verifiers.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from sil_stages.core.errors import StageInputError
from sil_stages.select.scorers.base import PromptSamples, Score, Scorer, ScorerContext


class _UserScorer:
    """Checks what the user's scorer returns, so a wrong shape is an error naming the class, not a crash later."""

    def __init__(self, instance: Any, spec: str, field: str) -> None:
        self._instance = instance
        self._spec = spec
        self._field = field

    def score(self, groups: Sequence[PromptSamples]) -> list[list[Score]]:
        result = self._instance.score(groups)
        if not isinstance(result, list) or len(result) != len(groups):
            raise StageInputError(
                f"{self._field}.type: {self._spec}.score returned {type(result).__name__} of "
                f"{len(result) if isinstance(result, list) else '?'} items for {len(groups)} prompts; it must return "
                "one list of scores per prompt"
            )
        checked: list[list[Score]] = []
        for group, scores in zip(groups, result, strict=True):
            if not isinstance(scores, list) or len(scores) != len(group.completions):
                raise StageInputError(
                    f"{self._field}.type: {self._spec}.score must return one score per completion; prompt "
                    f"{group.prompt!r} has {len(group.completions)} completions"
                )
            checked.append([item if isinstance(item, Score) else Score(_number(item, self)) for item in scores])
        return checked

    def report(self) -> dict[str, float]:
        report = getattr(self._instance, "report", None)
        return dict(report()) if callable(report) else {}


def _number(item: Any, scorer: _UserScorer) -> float | None:
    if item is None:
        return None
    if isinstance(item, bool) or not isinstance(item, int | float):
        raise StageInputError(
            f"{scorer._field}.type: {scorer._spec}.score returned {item!r}; a score is a number, None or a Score"
        )
    return float(item)


def build(context: ScorerContext) -> Scorer:
    spec = context.settings.type
    field = f"{context.field}.type"
    module_name, _, class_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise StageInputError(
            f"{field}: cannot import module {module_name!r} ({type(error).__name__}: {error}); put its directory on "
            "PYTHONPATH (sil run adds the loop file's directory)"
        ) from error
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise StageInputError(f"{field}: module {module_name!r} has no class {class_name!r}")
    instance = cls(context)
    if not callable(getattr(instance, "score", None)):
        raise StageInputError(f"{field}: {spec} has no score(groups) method")
    return _UserScorer(instance, spec, context.field)
