"""Writes the reward model's preference pairs: labelled sums against wrong sums, synthetic and the policy's own.

The reward model learns from its own labelled set, separate from the loop's prompts. `../arithmetic/make_data.py`
shuffles all 8,100 two-digit pairs (a, b) with seed 0 and uses [0:200] as held-out, [200:900] as pretraining
data and [900:4900] as the loop's train prompts; [4900:8100] are used by nothing. The labelled sums here come from
pretraining + that unused pool, EXCLUDING every (a, b) that is, itself or commuted as (b, a), a held-out or a
train prompt: the loop's prompts stay unlabelled and the held-out set clean (asserted below). 1,885 sums remain.

`chosen` is the correct sum; `rejected` is a wrong one of two kinds:
- on-policy mistakes: the base model's own wrong answers, sampled at temperature 1.0 (`ON_POLICY_SAMPLES` per
  prompt, seeded) on these labelled prompts. These are what best-of-n selection in the loop must reject: a
  reward model trained on synthetic misses only ranked the base model's systematic mistakes first.
- synthetic near misses (`SYNTHETIC_PER_PROMPT`): units off by one or two, tens off by ten or twenty (a dropped
  or invented carry), both at once, a digit too few or too many.

- `data/pairs.jsonl`: `{"prompt": "23+58=", "chosen": "81", "rejected": "71"}`.
- `data/heldout_pairs.jsonl`: synthetic near misses on `../arithmetic/data/heldout.jsonl`, for measuring the
  reward model's pairwise accuracy only (`evaluate_reward_model.py`); never trained on.

Needs the base model (`python examples/arithmetic/make_base_model.py`) and the stages on the path
(`PYTHONPATH=stages`). Running it again writes the same bytes with the same torch build (sampling is seeded); the
files are committed, so the loop does not depend on regenerating them.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

SEED = 0
SYNTHETIC_PER_PROMPT = 8
ON_POLICY_SAMPLES = 16
"""Base-model samples per labelled prompt; each distinct wrong one becomes a rejected answer."""
# As ../arithmetic/make_data.py splits the shuffled pairs.
HELDOUT, PRETRAIN, TRAIN_PROMPTS = 200, 700, 4000
LOW, HIGH = 10, 99

HERE = Path(__file__).resolve().parent
BASE = HERE.parent / "arithmetic" / ".base-model"
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


def labelled_sums() -> list[tuple[str, int]]:
    """Pretraining + unused pairs, minus any whose (a, b) or (b, a) is held out or a train prompt."""
    shuffled = [(a, b) for a in range(LOW, HIGH + 1) for b in range(LOW, HIGH + 1)]
    random.Random(SEED).shuffle(shuffled)
    heldout = shuffled[:HELDOUT]
    pretrain = shuffled[HELDOUT : HELDOUT + PRETRAIN]
    train = shuffled[HELDOUT + PRETRAIN : HELDOUT + PRETRAIN + TRAIN_PROMPTS]
    unused = shuffled[HELDOUT + PRETRAIN + TRAIN_PROMPTS :]
    assert [f"{a}+{b}=" for a, b in heldout] == [prompt for prompt, _ in read(SOURCE / "heldout.jsonl", "answer")]
    assert [f"{a}+{b}=" for a, b in train] == [
        json.loads(line)["prompt"] for line in (SOURCE / "train_prompts.jsonl").read_text().splitlines()
    ]
    forbidden = set(heldout) | set(train)
    kept = [(a, b) for a, b in pretrain + unused if (a, b) not in forbidden and (b, a) not in forbidden]
    assert not {(a, b) for a, b in kept} & forbidden and not {(b, a) for a, b in kept} & forbidden
    return [(f"{a}+{b}=", a + b) for a, b in kept]


def on_policy_mistakes(prompts_and_sums: list[tuple[str, int]]) -> list[list[int]]:
    """Each prompt's distinct wrong numeric answers among the base model's samples at temperature 1.0."""
    from sil_stages.core.generation import SamplingRequest, TransformersEngine
    from sil_stages.core.models import load_model, load_tokenizer

    engine = TransformersEngine(load_model(str(BASE), device="cpu"), load_tokenizer(str(BASE)), batch_size=256)
    request = SamplingRequest(n=ON_POLICY_SAMPLES, temperature=1.0, max_new_tokens=8, seed=SEED)
    samples = engine.generate([prompt for prompt, _ in prompts_and_sums], request)
    mistakes: list[list[int]] = []
    for (_, total), texts in zip(prompts_and_sums, samples, strict=True):
        wrong: list[int] = []
        for text in texts:
            answer = text.split("\n", 1)[0].strip()
            if answer.isdigit() and int(answer) != total and int(answer) not in wrong:
                wrong.append(int(answer))
        mistakes.append(wrong)
    return mistakes


def pairs(
    prompts_and_sums: list[tuple[str, int]], rng: random.Random, policy: list[list[int]] | None = None
) -> list[dict[str, str]]:
    records: list[dict[str, str]] = []
    for index, (prompt, total) in enumerate(prompts_and_sums):
        own = policy[index] if policy is not None else []
        synthetic = [w for w in wrong_sums(total, SYNTHETIC_PER_PROMPT, rng) if w not in own]
        records.extend({"prompt": prompt, "chosen": str(total), "rejected": str(w)} for w in own + synthetic)
    return records


def read(path: Path, answer_field: str) -> list[tuple[str, int]]:
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(record["prompt"], int(record[answer_field])) for record in records]


def write_jsonl(path: Path, records: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")


def main() -> None:
    DATA.mkdir(exist_ok=True)
    labelled = labelled_sums()
    policy = on_policy_mistakes(labelled)
    train = pairs(labelled, random.Random(SEED), policy)
    heldout = pairs(read(SOURCE / "heldout.jsonl", "answer"), random.Random(SEED + 1))
    write_jsonl(DATA / "pairs.jsonl", train)
    write_jsonl(DATA / "heldout_pairs.jsonl", heldout)
    own = sum(len(wrong) for wrong in policy)
    print(
        f"wrote {len(train)} training pairs ({len(labelled)} sums, {own} on-policy mistakes)"
        f" and {len(heldout)} held-out pairs to {DATA}"
    )


if __name__ == "__main__":
    main()
