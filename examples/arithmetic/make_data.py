"""Writes the arithmetic demo's data: two-digit additions, split into disjoint sets with a fixed seed.

- `data/train_prompts.jsonl`: unlabelled prompts (`{"prompt": "23+58="}`) the loop samples from; the
  verifier (`arithmetic:verify`) computes the sum from the prompt itself, so no answer is needed.
- `data/heldout.jsonl`: prompt + answer, never trained on; the promotion gate reads accuracy on it.
- `data/pretrain.jsonl`: a small labelled set that gives the base model a partial skill to improve on.

Running it again writes the same bytes (the files are committed; this script documents how they were made).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 0
HELDOUT = 200
PRETRAIN = 700
TRAIN_PROMPTS = 4000
LOW, HIGH = 10, 99

DATA = Path(__file__).resolve().parent / "data"


def write_jsonl(path: Path, records: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")


def main() -> None:
    pairs = [(a, b) for a in range(LOW, HIGH + 1) for b in range(LOW, HIGH + 1)]
    random.Random(SEED).shuffle(pairs)
    heldout = pairs[:HELDOUT]
    pretrain = pairs[HELDOUT : HELDOUT + PRETRAIN]
    train = pairs[HELDOUT + PRETRAIN : HELDOUT + PRETRAIN + TRAIN_PROMPTS]
    DATA.mkdir(exist_ok=True)
    write_jsonl(DATA / "heldout.jsonl", [{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a, b in heldout])
    write_jsonl(DATA / "pretrain.jsonl", [{"prompt": f"{a}+{b}=", "completion": str(a + b)} for a, b in pretrain])
    write_jsonl(DATA / "train_prompts.jsonl", [{"prompt": f"{a}+{b}="} for a, b in train])
    print(f"wrote {len(heldout)} heldout, {len(pretrain)} pretrain, {len(train)} train prompts to {DATA}")


if __name__ == "__main__":
    main()
