"""The prompt generator of this example: `problems:additions`, a function for `acquire.prompts.generator`.

Two-digit additions (`"23+58="`) drawn afresh each iteration, so the loop never needs a prompt file and never runs
out of prompts. The held-out pairs of examples/arithmetic (`data/heldout.jsonl`) are never drawn, in either order,
so the held-out accuracy the gate reads stays a measure of generalization. Signature as every generator:
`additions(iteration, seed, count) -> Iterable[dict]`; the same arguments give the same prompts (a retried stage
draws again).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from functools import cache
from pathlib import Path

HELDOUT = Path(__file__).resolve().parent.parent / "arithmetic" / "data" / "heldout.jsonl"
LOW, HIGH = 10, 99
DEFAULT_COUNT = 4000


@cache
def heldout_pairs() -> frozenset[tuple[int, int]]:
    """The held-out (a, b) pairs and their commuted (b, a)."""
    pairs: set[tuple[int, int]] = set()
    for line in HELDOUT.read_text(encoding="utf-8").splitlines():
        if line.strip():
            a, b = json.loads(line)["prompt"].rstrip("=").split("+")
            pairs |= {(int(a), int(b)), (int(b), int(a))}
    return frozenset(pairs)


def additions(iteration: int, seed: int, count: int | None) -> Iterator[dict[str, str]]:
    """`count` (default 4000) distinct additions not held out, drawn with `seed`; the verifier computes the sum."""
    excluded = heldout_pairs()
    pairs = [(a, b) for a in range(LOW, HIGH + 1) for b in range(LOW, HIGH + 1) if (a, b) not in excluded]
    chosen = random.Random(seed).sample(pairs, min(count or DEFAULT_COUNT, len(pairs)))
    for a, b in chosen:
        yield {"prompt": f"{a}+{b}="}
