"""Gate conditions in CEL: a safe, side-effect-free expression language (never Python eval).

Variables: `result` (the candidate's value) and `champion` (the champion's value, when the query has {{model}}).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any


class ConditionError(ValueError):
    """A condition could not be compiled or evaluated."""


@lru_cache(maxsize=256)
def _compile(expression: str) -> Any:
    import celpy
    from celpy.celparser import CELParseError

    environment = celpy.Environment()
    try:
        return environment.program(environment.compile(expression))
    except CELParseError as error:
        raise ConditionError(f"{expression!r} is not a valid CEL expression: {error}") from error


def check_condition(expression: str) -> None:
    """Raises ConditionError when the expression does not compile or uses unknown variables."""
    try:
        evaluate_condition(expression, 1.0, 1.0)
    except ConditionError as error:
        raise ConditionError(f"{error} (the variables are result and champion)") from error


def evaluate_condition(expression: str, result: float, champion: float | None) -> bool:
    """Evaluates a CEL condition: a safe, side-effect-free language (never Python eval)."""
    from celpy import celtypes
    from celpy.evaluation import CELEvalError

    activation: dict[str, Any] = {"result": celtypes.DoubleType(result)}
    if champion is not None:
        activation["champion"] = celtypes.DoubleType(champion)
    try:
        value = _compile(expression).evaluate(activation)
    except CELEvalError as error:
        raise ConditionError(f"{expression!r}: {_short(error)}") from error
    if isinstance(value, CELEvalError):
        raise ConditionError(f"{expression!r}: {_short(value)}")
    if not isinstance(value, celtypes.BoolType | bool):
        raise ConditionError(f"{expression!r} must evaluate to a bool, got {type(value).__name__}")
    return bool(value)


def _short(error: Exception) -> str:
    """celpy's messages embed the whole activation; keep the first sentence."""
    first = str(error.args[0]) if error.args else str(error)
    return first.split(" (in activation")[0]
