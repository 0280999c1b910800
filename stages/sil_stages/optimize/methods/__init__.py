"""The registry of optimization methods the optimize stage runs: one module per method, listed once, here.

Each entry pairs a method's spec (`sil_stages.core.methods.METHODS`: its name, data shape, settings and rules,
which the spec and the CRD read) with its train function; a unit test keeps both lists equal.
"""

from __future__ import annotations

from sil_stages.optimize.methods import dpo, grpo, sft
from sil_stages.optimize.methods.base import Method

REGISTRY: dict[str, Method] = {method.name: method for method in (sft.METHOD, dpo.METHOD, grpo.METHOD)}


def get_method(name: str) -> Method:
    """The method `name`; a KeyError names the known ones (config validation makes this unreachable)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"method {name!r} is not registered; known: {', '.join(REGISTRY)}") from None
