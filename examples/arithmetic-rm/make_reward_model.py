"""Builds the reward model in `.reward-model/`: a one-label sequence classifier that scores `prompt + answer`.

The loop in this folder has no verifier: it keeps the answers this model scores highest. Three steps, all on
`data/pairs.jsonl` (1,885 labelled sums that are neither the loop's prompts nor held out, each against the base
model's own wrong samples and synthetic near misses; `make_pairs.py`):
1. Warm start: the base model (`../arithmetic/.base-model`, which must exist: `python
   ../arithmetic/make_base_model.py`) is fine-tuned as a language model on the labelled sums (TRL's SFTTrainer,
   `sft_epochs`), as RLHF reward models start from the SFT model: the network learns to add before it learns to
   judge (alone, this model answers 0.855 of the held-out sums greedily).
2. Depth: `extra_layers` layers are stacked on it, starting as the identity, with a one-output score head. A
   2-layer model can compute a sum digit by digit but has no layers left to compare it with the written answer.
3. Reward training: TRL's RewardTrainer (Bradley-Terry loss) fine-tunes the whole network on the pairs plus
   `cross_prompt_pairs` pairs per pair whose rejected text is another prompt's wrong answer, so a score means
   "right" across prompts and `select.keep.minScore` can drop prompts whose every sample is wrong.
Measured (evaluate_reward_model.py, 500 train prompts, 4 base-model samples each at temperature 0.7, of which
0.281 are right and 0.652 of prompts have one right): this recipe ranks held-out near misses right 0.996 of the
time, its top pick of 4 is right for 0.648 of prompts (the ceiling is 0.652), and the top picks scoring >= 3
(0.594 of prompts) are 0.997 right. Without the warm start, the extra layers or the cross-prompt pairs, the top
picks were at most 0.73 right at any threshold that kept a tenth of the prompts: bench/RESULTS.md has each variant.
The build takes 4 min 21 s on the 2-core CPU; two builds (one thread, two threads) gave bitwise the same weights.

The text the model sees is exactly `prompt + completion` (`"23+58=81"`), tokenized without special tokens: the
pairs are tokenized here rather than by the trainer, which would append an end-of-sequence token the loop's
reward-model scorer never adds. Saved with the base model's tokenizer.

Idempotent: the folder keeps `recipe.json` (a hash of every setting below, of the pairs and of the base model's
recipe), and a run that finds the same recipe does nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_OUTPUT = HERE / ".reward-model"
DEFAULT_BASE = HERE.parent / "arithmetic" / ".base-model"
PAIRS = HERE / "data" / "pairs.jsonl"
RECIPE_FILE = "recipe.json"


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the weights; change any of it and the model is rebuilt."""

    init_from_base: bool = True
    extra_layers: int = 2
    """Layers added on top of the base model's, starting as the identity (their output projections are zero)."""
    freeze_base: bool = False
    """Train only the added layers, the final norm and the score head: the base model's computation is kept."""
    seed: int = 0
    learning_rate: float = 5e-4
    epochs: float = 4.0
    batch_size: int = 128
    warmup_ratio: float = 0.05
    """A fraction of the steps (transformers 5 reads a `warmup_steps` below 1 as a ratio)."""
    weight_decay: float = 0.0
    sft_epochs: float = 12.0
    """Before the reward training, fine-tune the base model as a language model on the pairs' labelled sums (each
    prompt with its correct answer) for this many epochs, and start the reward model from that: 0 = from the base."""
    sft_learning_rate: float = 1e-3
    cross_prompt_pairs: int = 1
    """Extra pairs per labelled pair whose rejected answer belongs to another prompt (a right sum must outscore a
    wrong sum of any prompt): Bradley-Terry on same-prompt pairs only ranks a prompt's answers, and the loop's
    `keep.minScore` needs a score that means "right" across prompts."""

    def digest(self, base: Path) -> str:
        base_recipe = (base / "recipe.json").read_bytes() if (base / "recipe.json").is_file() else b""
        payload = json.dumps(asdict(self), sort_keys=True).encode() + PAIRS.read_bytes() + base_recipe
        return hashlib.sha256(payload).hexdigest()


def read_pairs() -> list[dict[str, str]]:
    """`data/pairs.jsonl`: `{"prompt", "chosen", "rejected"}` per line."""
    return [json.loads(line) for line in PAIRS.read_text(encoding="utf-8").splitlines() if line.strip()]


def text_pairs(records: list[dict[str, str]], recipe: Recipe) -> list[tuple[str, str]]:
    """(chosen, rejected) texts: each pair as written, then `cross_prompt_pairs` per pair whose rejected text is
    a wrong answer of another prompt (drawn with the recipe's seed)."""
    import random

    pairs = [(record["prompt"] + record["chosen"], record["prompt"] + record["rejected"]) for record in records]
    rng = random.Random(recipe.seed)
    for record in records:
        for _ in range(recipe.cross_prompt_pairs):
            other = rng.choice(records)
            while other["prompt"] == record["prompt"]:
                other = rng.choice(records)
            pairs.append((record["prompt"] + record["chosen"], other["prompt"] + other["rejected"]))
    return pairs


def tokenized_pairs(tokenizer: Any, recipe: Recipe) -> Any:
    """The pairs as `chosen_ids`/`rejected_ids`, so the trainer uses them as they are (no EOS appended)."""
    from datasets import Dataset

    def ids(text: str) -> list[int]:
        encoded: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
        return encoded

    return Dataset.from_list(
        [
            {"chosen_ids": ids(chosen), "rejected_ids": ids(rejected)}
            for chosen, rejected in text_pairs(read_pairs(), recipe)
        ]
    )


def labelled_sums() -> list[dict[str, str]]:
    """Each distinct prompt of the pairs with its correct answer, in first-seen order."""
    seen: dict[str, str] = {}
    for record in read_pairs():
        seen.setdefault(record["prompt"], record["chosen"])
    return [{"prompt": prompt, "completion": answer} for prompt, answer in seen.items()]


def sft_warm_start(recipe: Recipe, base: Path, output: Path) -> None:
    """The base model fine-tuned as a language model on the labelled sums: the reward model's starting weights."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import SFTConfig, SFTTrainer  # type: ignore[attr-defined]

    set_seed(recipe.seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    with tempfile.TemporaryDirectory(prefix="arithmetic-reward-sft-") as tmp:
        args = SFTConfig(
            output_dir=tmp,
            learning_rate=recipe.sft_learning_rate,
            num_train_epochs=recipe.sft_epochs,
            per_device_train_batch_size=32,
            warmup_steps=0.1,
            max_length=32,
            seed=recipe.seed,
            bf16=False,
            report_to="none",
            save_strategy="no",
            logging_steps=25,
        )
        trainer = SFTTrainer(
            model=model, args=args, train_dataset=Dataset.from_list(labelled_sums()), processing_class=tokenizer
        )
        trainer.train()
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)


def build(recipe: Recipe, base: Path, output: Path) -> None:
    if recipe.sft_epochs > 0:
        with tempfile.TemporaryDirectory(prefix="arithmetic-reward-init-") as init:
            sft_warm_start(recipe, base, Path(init))
            train_reward_model(recipe, base, Path(init), output)
    else:
        train_reward_model(recipe, base, base, output)


def train_reward_model(recipe: Recipe, base: Path, init: Path, output: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, set_seed
    from trl import RewardConfig, RewardTrainer  # type: ignore[attr-defined]

    set_seed(recipe.seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    config = AutoConfig.from_pretrained(base, num_labels=1)
    base_layers = config.num_hidden_layers
    config.num_hidden_layers = base_layers + recipe.extra_layers
    if recipe.init_from_base:
        model = AutoModelForSequenceClassification.from_pretrained(init, config=config)
    else:
        model = AutoModelForSequenceClassification.from_config(config)  # type: ignore[no-untyped-call]
    with torch.no_grad():
        for layer in model.model.layers[base_layers:]:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    if recipe.freeze_base:
        model.model.embed_tokens.requires_grad_(False)
        for layer in model.model.layers[:base_layers]:
            layer.requires_grad_(False)
    model.config.pad_token_id = tokenizer.pad_token_id
    with tempfile.TemporaryDirectory(prefix="arithmetic-reward-") as tmp:
        args = RewardConfig(
            output_dir=tmp,
            learning_rate=recipe.learning_rate,
            num_train_epochs=recipe.epochs,
            per_device_train_batch_size=recipe.batch_size,
            warmup_steps=recipe.warmup_ratio,
            weight_decay=recipe.weight_decay,
            seed=recipe.seed,
            bf16=False,
            gradient_checkpointing=False,
            report_to="none",
            save_strategy="no",
            logging_steps=25,
        )
        trainer = RewardTrainer(
            model=model, args=args, train_dataset=tokenized_pairs(tokenizer, recipe), processing_class=tokenizer
        )
        trainer.train()
    staging = output.with_name(output.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / RECIPE_FILE).write_text(
        json.dumps({"digest": recipe.digest(base), **asdict(recipe)}, indent=2) + "\n", encoding="utf-8"
    )
    shutil.rmtree(output, ignore_errors=True)
    staging.rename(output)


def is_current(recipe: Recipe, base: Path, output: Path) -> bool:
    marker = output / RECIPE_FILE
    if not marker.is_file():
        return False
    return bool(json.loads(marker.read_text(encoding="utf-8")).get("digest") == recipe.digest(base))


def parse_field(key: str, value: str) -> Any:
    """A `--set` value in the type of the recipe field it overrides."""
    default = getattr(Recipe(), key)
    if isinstance(default, bool):
        return value.lower() in ("1", "true", "yes")
    return type(default)(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=DEFAULT_BASE, help="the base model folder (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="FIELD=VALUE", help="override a recipe field, e.g. epochs=3"
    )
    args = parser.parse_args()
    if not (args.base / "config.json").is_file():
        parser.error(f"--base {args.base} holds no model: build it with python examples/arithmetic/make_base_model.py")
    recipe = Recipe(**{key: parse_field(key, value) for key, value in (item.split("=", 1) for item in args.set)})
    if is_current(recipe, args.base, args.output):
        print(f"{args.output} already holds this recipe's model; nothing to do")
        return
    build(recipe, args.base, args.output)
    print(f"wrote the reward model to {args.output}")


if __name__ == "__main__":
    main()
