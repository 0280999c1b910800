"""Writes the chat demo's data from the text demo's (examples/arithmetic/data), so both loops learn the same sums.

- `data/train_prompts.jsonl`: the same unlabelled sums as conversations, `{"messages": [{"role": "user", "content":
  "23+58="}]}` (the loop's system prompt is put in front by the stages);
- `data/heldout.jsonl`: the same 200 held-out sums as text prompts with answers (`{"prompt", "answer"}`): a text
  prompt becomes one user turn in a chat loop, so both record forms are exercised;
- `data/pretrain.jsonl`: the same 700 labelled sums (prompt, completion) the base model is pretrained on.

Running it again writes the same bytes (the files are committed; this script documents how they were made).
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEXT_DATA = HERE.parent / "arithmetic" / "data"
DATA = HERE / "data"


def rows(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write(path: Path, records: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")


def main() -> None:
    DATA.mkdir(exist_ok=True)
    train = [{"messages": [{"role": "user", "content": r["prompt"]}]} for r in rows(TEXT_DATA / "train_prompts.jsonl")]
    write(DATA / "train_prompts.jsonl", list(train))
    write(DATA / "heldout.jsonl", list(rows(TEXT_DATA / "heldout.jsonl")))
    write(DATA / "pretrain.jsonl", list(rows(TEXT_DATA / "pretrain.jsonl")))
    print(f"wrote {len(train)} conversational train prompts, the held-out and pretraining sums to {DATA}")


if __name__ == "__main__":
    main()
