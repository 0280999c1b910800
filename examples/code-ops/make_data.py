"""Writes the code-ops example's data: infer a two-argument function from examples, write it in Python.

A prompt shows two calls of a hidden function `f`, one of `a+b`, `a-b`, `a*b` (digits 1-9):
`f(3,4)=12;f(2,5)=10\\n`. The answer is a program, `def f(a,b):return a*b`, and the record's `tests` are four
asserts: the two shown calls and two more (`code-tests` runs them in its sandbox). A prompt whose shown calls fit
two of the functions is left out. Held-out prompts share no (function, shown calls) with the training prompts.

- `data/train_prompts.jsonl`: prompts with `tests` (no answer) the loop samples from.
- `data/heldout.jsonl`: the same shape, never trained on; evaluate's verifier (`codeops:verify`) runs its tests.
- `data/pretrain.jsonl`: a small labelled set that gives the base model a partial skill to improve on.

Running it again writes the same bytes (the files are committed; this script documents how they were made).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

SEED = 0
HELDOUT = 200
PRETRAIN = 400
TRAIN_PROMPTS = 3000
OPS: dict[str, Callable[[int, int], int]] = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
DIGITS = range(1, 10)

DATA = Path(__file__).resolve().parent / "data"


def program(op: str) -> str:
    return f"def f(a,b):return a{op}b"


def fits(op: str, calls: list[tuple[int, int]], results: list[int]) -> bool:
    return all(OPS[op](a, b) == r for (a, b), r in zip(calls, results, strict=True))


def make(rng: random.Random, op: str) -> dict[str, Any] | None:
    calls = [(rng.choice(DIGITS), rng.choice(DIGITS)) for _ in range(4)]
    results = [OPS[op](a, b) for a, b in calls]
    if sum(fits(other, calls[:2], results[:2]) for other in OPS) != 1:
        return None
    shown = ";".join(f"f({a},{b})={r}" for (a, b), r in zip(calls[:2], results[:2], strict=True))
    tests = [f"assert f({a}, {b}) == {r}" for (a, b), r in zip(calls, results, strict=True)]
    return {"prompt": shown + "\n", "tests": tests, "op": op}


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")


def main() -> None:
    rng = random.Random(SEED)
    records: dict[str, dict[str, Any]] = {}
    while len(records) < HELDOUT + PRETRAIN + TRAIN_PROMPTS:
        record = make(rng, rng.choice(list(OPS)))
        if record is not None:
            records.setdefault(record["prompt"], record)
    ordered = list(records.values())
    heldout = ordered[:HELDOUT]
    pretrain = ordered[HELDOUT : HELDOUT + PRETRAIN]
    train = ordered[HELDOUT + PRETRAIN :]
    DATA.mkdir(exist_ok=True)
    write_jsonl(DATA / "heldout.jsonl", [{"prompt": r["prompt"], "tests": r["tests"]} for r in heldout])
    write_jsonl(DATA / "pretrain.jsonl", [{"prompt": r["prompt"], "completion": program(r["op"])} for r in pretrain])
    write_jsonl(DATA / "train_prompts.jsonl", [{"prompt": r["prompt"], "tests": r["tests"]} for r in train])
    print(f"wrote {len(heldout)} heldout, {len(pretrain)} pretrain, {len(train)} train prompts to {DATA}")


if __name__ == "__main__":
    main()
