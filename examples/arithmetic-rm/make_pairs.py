"""Writes the reward model's preference pairs: each labelled sum against wrong sums that look like real mistakes.

The reward model learns only from `../arithmetic/data/pretrain.jsonl` (the labelled set the base model was
pretrained on): `chosen` is the correct sum, `rejected` a wrong one. The wrong sums imitate what the base model
gets wrong when it samples at temperature 1.0 (measured on train prompts): the units digit off by one or two,
the tens off by ten or twenty (a dropped or invented carry), both digits off at once, a digit too few or too
many. Pairs against random numbers would teach the model to spot implausible answers only, which the policy
rarely writes; near misses are what best-of-n selection has to tell apart.

- `data/pairs.jsonl`: `{"prompt": "23+58=", "chosen": "81", "rejected": "71"}`, `WRONG_PER_PROMPT` per prompt.
- `data/heldout_pairs.jsonl`: the same construction on `../arithmetic/data/heldout.jsonl`, for measuring the
  reward model's pairwise accuracy only (`evaluate_reward_model.py`); never trained on.

Running it again writes the same bytes (the files are committed; this script documents how they were made).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

SEED = 0
WRONG_PER_PROMPT = 8

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent / "arithmetic" / "data"
DATA = HERE / "data"


def _units(total: int, rng: random.Random) -> int:
    return total + rng.choice((-2, -1, 1, 2))


def _tens(total: int, rng: random.Random) -> int:
    return total + rng.choice((-20, -10, 10, 20))


def _both(total: int, rng: random.Random) -> int:
    return total + rng.choice((-1, 1, -2, 2)) * 10 + rng.choice((-3, -2, -1, 1, 2, 3))


def _carry(total: int, rng: random.Random) -> int:
    return total + rng.choice((-9, -11, 9, 11))


def _length(total: int, rng: random.Random) -> int:
    text = str(total)
    if rng.random() < 0.5 and len(text) > 1:
        index = rng.randrange(len(text))
        return int(text[:index] + text[index + 1 :])
    index = rng.randrange(len(text) + 1)
    return int(text[:index] + str(rng.randrange(10)) + text[index:])


def _near(total: int, rng: random.Random) -> int:
    return total + rng.randint(-30, 30)


MISTAKES: tuple[tuple[Callable[[int, random.Random], int], float], ...] = (
    (_units, 0.3),
    (_tens, 0.2),
    (_both, 0.2),
    (_carry, 0.1),
    (_length, 0.1),
    (_near, 0.1),
)


def wrong_sums(total: int, count: int, rng: random.Random) -> list[int]:
    """`count` distinct positive wrong sums, each drawn from one mistake kind with the weights above."""
    kinds, weights = zip(*MISTAKES, strict=True)
    found: list[int] = []
    while len(found) < count:
        (mistake,) = rng.choices(kinds, weights=weights)
        value = mistake(total, rng)
        if value != total and value >= 0 and value not in found:
            found.append(value)
    return found


def pairs(prompts_and_sums: list[tuple[str, int]], rng: random.Random) -> list[dict[str, str]]:
    return [
        {"prompt": prompt, "chosen": str(total), "rejected": str(wrong)}
        for prompt, total in prompts_and_sums
        for wrong in wrong_sums(total, WRONG_PER_PROMPT, rng)
    ]


def read(path: Path, answer_field: str) -> list[tuple[str, int]]:
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(record["prompt"], int(record[answer_field])) for record in records]


def write_jsonl(path: Path, records: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")


def main() -> None:
    DATA.mkdir(exist_ok=True)
    train = pairs(read(SOURCE / "pretrain.jsonl", "completion"), random.Random(SEED))
    heldout = pairs(read(SOURCE / "heldout.jsonl", "answer"), random.Random(SEED + 1))
    write_jsonl(DATA / "pairs.jsonl", train)
    write_jsonl(DATA / "heldout_pairs.jsonl", heldout)
    print(f"wrote {len(train)} training pairs and {len(heldout)} held-out pairs to {DATA}")


if __name__ == "__main__":
    main()
