"""Measures whether `.reward-model/` can stand in for a verifier: the two numbers that decide if the loop works.

1. Pairwise accuracy on `data/heldout_pairs.jsonl` (sums from the held-out set, never trained on): how often the
   correct sum outscores a near-miss wrong one.
2. Best-of-n precision on the train prompts: the base model samples `n` answers per prompt (`--temperature`, 1.0
   by default, up to 8 new tokens, as the loop's acquire stage does), the reward model keeps each prompt's
   top-scored one, and `arithmetic:verify` (used here for measurement only; the loop never calls it) says how
   often that one is right.
   Printed beside it: the base model's own per-sample accuracy, the ceiling (prompts with at least one right
   sample), and the precision and share of prompts kept above a few score thresholds (`select.keep.minScore`).

Run from the repository root with the stages on the path:
  PYTHONPATH=stages python examples/arithmetic-rm/evaluate_reward_model.py
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ARITHMETIC = HERE.parent / "arithmetic"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class RewardModel:
    """Scores `prompt + completion` texts in batches, exactly as the loop's reward-model scorer sees them."""

    def __init__(self, path: Path, batch_size: int = 512) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self._tokenizer: Any = AutoTokenizer.from_pretrained(path)
        self._tokenizer.padding_side = "left"
        self._model: Any = AutoModelForSequenceClassification.from_pretrained(path).eval()
        self._batch_size = batch_size

    def scores(self, texts: Sequence[str]) -> list[float]:
        import torch

        result: list[float] = []
        for start in range(0, len(texts), self._batch_size):
            batch = list(texts[start : start + self._batch_size])
            inputs = self._tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                result.extend(self._model(**inputs).logits[:, 0].tolist())
        return result


def pairwise_accuracy(reward: RewardModel, pairs: list[dict[str, Any]]) -> float:
    chosen = reward.scores([pair["prompt"] + pair["chosen"] for pair in pairs])
    rejected = reward.scores([pair["prompt"] + pair["rejected"] for pair in pairs])
    return sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(pairs)


def best_of_n(
    reward: RewardModel, base: Path, prompts: list[str], n: int, temperature: float, thresholds: Sequence[float]
) -> None:
    sys.path.insert(0, str(ARITHMETIC))
    from arithmetic import verify  # type: ignore[import-not-found]

    from sil_stages.core.generation import SamplingRequest, TransformersEngine
    from sil_stages.core.models import load_model, load_tokenizer

    engine = TransformersEngine(load_model(str(base), device="cpu"), load_tokenizer(str(base)), batch_size=256)
    samples = engine.generate(prompts, SamplingRequest(n=n, temperature=temperature, max_new_tokens=8))
    flat = [(prompt, text) for prompt, texts in zip(prompts, samples, strict=True) for text in texts]
    scores = reward.scores([prompt + completion for prompt, completion in flat])
    correct = [verify(prompt, completion, {}) == 1.0 for prompt, completion in flat]
    best: list[tuple[float, bool]] = []
    for index in range(len(prompts)):
        group = range(index * n, (index + 1) * n)
        top = max(group, key=lambda i: scores[i])
        best.append((scores[top], correct[top]))
    ceiling = sum(any(correct[i] for i in range(k * n, (k + 1) * n)) for k in range(len(prompts)))
    print(f"base model per-sample accuracy: {sum(correct) / len(correct):.3f} ({len(correct)} samples)")
    print(f"prompts with a correct sample among {n}: {ceiling / len(prompts):.3f}")
    print(f"best-of-{n} precision (top-scored answer is correct): {sum(ok for _, ok in best) / len(best):.3f}")
    for threshold in thresholds:
        kept = [ok for score, ok in best if score >= threshold]
        precision = sum(kept) / len(kept) if kept else float("nan")
        print(f"  top score >= {threshold:g}: precision {precision:.3f}, prompts kept {len(kept) / len(best):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reward-model", type=Path, default=HERE / ".reward-model")
    parser.add_argument("--base", type=Path, default=ARITHMETIC / ".base-model")
    parser.add_argument("--prompts", type=int, default=1000, help="train prompts to sample (default: %(default)s)")
    parser.add_argument("--samples", type=int, default=4, help="answers per prompt (default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: %(default)s)")
    parser.add_argument("--thresholds", type=float, nargs="*", default=[0.0, 1.0, 2.0, 3.0])
    args = parser.parse_args()
    reward = RewardModel(args.reward_model)
    heldout = read_jsonl(HERE / "data" / "heldout_pairs.jsonl")
    print(f"pairwise accuracy on {len(heldout)} held-out pairs: {pairwise_accuracy(reward, heldout):.3f}")
    prompts = [record["prompt"] for record in read_jsonl(ARITHMETIC / "data" / "train_prompts.jsonl")][: args.prompts]
    best_of_n(reward, args.base, prompts, args.samples, args.temperature, args.thresholds)


if __name__ == "__main__":
    main()
