"""Cross-field rules, written once in CEL: the API server checks them, and so does `sil validate`.

A model lists its rules in `cel_rules`. `sil crd` writes them into the CRD as the model's `x-kubernetes-validations`
(`sil_stages.core.settings.validations_schema`; the API server evaluates them on every create and update), and
`CelValidated` models evaluate the same expressions in Python with celpy after pydantic has checked the fields.
`self` is the object in its wire form (camelCase, defaults filled in, unset optional fields absent), which is what
the API server evaluates the rule against after its defaulting, so `has(self.x)` means the same on both sides."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

from pydantic import BaseModel, model_validator
from pydantic_core import PydanticCustomError

CEL_RULE_ERROR = "cel_rule"
"""The pydantic error type of a broken rule; its context carries `field_path` for the error message."""


@dataclass(frozen=True)
class CelRule:
    rule: str
    """A CEL expression over `self`; true means valid."""
    message: str
    """What is wrong and what to do, shown by `kubectl apply` and `sil validate`."""
    field_path: str | None = None
    """The field the message is about, relative to the object, e.g. `.acquire.samplesPerPrompt`."""

    def to_schema(self) -> dict[str, str]:
        """The `x-kubernetes-validations` entry."""
        entry = {"rule": self.rule, "message": self.message}
        if self.field_path:
            entry["fieldPath"] = self.field_path
        return entry


@lru_cache(maxsize=64)
def _program(rule: str) -> Any:
    import celpy

    environment = celpy.Environment()
    return environment.program(environment.compile(rule))


def holds(rule: CelRule, document: dict[str, Any]) -> bool:
    """Evaluates the rule with `self` bound to `document`; a rule that cannot be evaluated does not hold."""
    from celpy.adapter import json_to_cel
    from celpy.evaluation import CELEvalError

    try:
        value = _program(rule.rule).evaluate({"self": json_to_cel(document)})
    except CELEvalError:
        return False
    return not isinstance(value, CELEvalError) and bool(value)


class CelValidated(BaseModel):
    """A model with CEL rules: they are checked in Python after its fields, and reach the CRD through its schema."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = ()

    @model_validator(mode="after")
    def _check_cel_rules(self) -> Any:
        rules = type(self).cel_rules
        if rules:
            document = self.model_dump(mode="json", by_alias=True, exclude_none=True)
            for rule in rules:
                if not holds(rule, document):
                    # One error for the first broken rule: pydantic reports one error per failing validator.
                    raise PydanticCustomError(
                        CEL_RULE_ERROR, "{message}", {"message": rule.message, "field_path": rule.field_path or ""}
                    )
        return self
