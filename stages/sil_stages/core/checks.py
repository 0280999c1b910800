"""A cross-field rule of the spec in CEL, as plain data: what a method or a scorer requires of the rest of the loop.

The stage side carries no operator code and no CEL evaluator: the operator turns each `CelCheck` into a CelRule of
the spec model it belongs to, so `sil validate` and the API server both check it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CelCheck:
    rule: str
    """A CEL expression over `self` (the spec model the check belongs to, camelCase); true means valid."""
    message: str
    field_path: str
    """The field the message is about, relative to that model, e.g. `.acquire.samplesPerPrompt`."""
