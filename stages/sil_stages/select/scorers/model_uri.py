"""Where a model-based scorer finds its model: a URI the store resolves, or a local path when there is no store."""

from __future__ import annotations

from sil_stages.select.scorers.base import ScorerContext


def resolve_scorer_model(context: ScorerContext, uri: str, *, field: str) -> str:
    """A local directory or hub id for `uri`: downloaded and verified through `context.store` when one is set (a
    stage), else `uri` itself (a test, or a caller that already holds the model locally)."""
    if context.store is None:
        return uri
    from sil_stages.core.models import resolve_model

    return resolve_model(context.store, uri, field=field)
