"""The demo's verifier: `arithmetic:verify`, a user function for `select.scorer.verifier`.

It needs no labels: the correct sum is computed from the prompt (`"23+58="`), so the loop can train on prompts
nobody answered. Signature as every user verifier: `verify(prompt, completion, record) -> float`.
"""

from __future__ import annotations

import re
from typing import Any

_PROMPT = re.compile(r"^\s*(\d+)\s*\+\s*(\d+)\s*=\s*$")


def verify(prompt: str, completion: str, record: dict[str, Any]) -> float:
    """1.0 when the completion's first line is the sum of the prompt's two numbers, else 0.0."""
    match = _PROMPT.match(prompt)
    if match is None:
        return 0.0
    expected = int(match.group(1)) + int(match.group(2))
    answer = completion.split("\n", 1)[0].strip()
    return 1.0 if answer.isdigit() and int(answer) == expected else 0.0
