"""The registry of optimization methods: one module per method (see `base.Method`), listed once, here.

The spec's `optimize.method` enum, the CEL rules tying `optimize.<method>` blocks to `method`, the data shape
select writes and the optimize stage's dispatch all read `REGISTRY`; nothing else names a method.
"""

from __future__ import annotations

from sil_stages.methods import dpo, grpo, sft
from sil_stages.methods.base import Method

REGISTRY: dict[str, Method] = {method.name: method for method in (sft.METHOD, dpo.METHOD, grpo.METHOD)}
DEFAULT_METHOD = sft.METHOD.name


def method_names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def get_method(name: str) -> Method:
    """The method `name`; a KeyError names the known ones (config validation makes this unreachable)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"method {name!r} is not registered; known: {', '.join(REGISTRY)}") from None
