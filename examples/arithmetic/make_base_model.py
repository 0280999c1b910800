"""Builds the demo's base model in `.base-model/`: a tiny character-level causal LM that is partly right.

No hub download: the tokenizer is trained here with the `tokenizers` library (one token per character, plus
`<pad>` and `<eos>`), the model is a small Llama built from a config with a fixed seed, and it is briefly
pretrained with TRL's SFTTrainer on `data/pretrain.jsonl` so that it adds two-digit numbers some of the time:
the loop then has something to improve.

Idempotent: the folder keeps `recipe.json` (a hash of every setting below and of the pretraining data), and a
run that finds the same recipe does nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

HERE = Path(__file__).resolve().parent
DEFAULT_OUTPUT = HERE / ".base-model"
PRETRAIN = HERE / "data" / "pretrain.jsonl"
RECIPE_FILE = "recipe.json"
CHARACTERS = "0123456789+="
SPECIAL_TOKENS = ("<pad>", "<eos>")


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the weights; change any of it and the model is rebuilt."""

    hidden_size: int = 128
    intermediate_size: int = 256
    layers: int = 2
    heads: int = 4
    max_positions: int = 32
    seed: int = 0
    learning_rate: float = 1e-3
    epochs: float = 20.0
    batch_size: int = 32

    def digest(self, pretrain: Path | None = None) -> str:
        payload = json.dumps(asdict(self), sort_keys=True).encode() + (pretrain or PRETRAIN).read_bytes()
        return hashlib.sha256(payload).hexdigest()


def build_tokenizer(characters: str = CHARACTERS) -> PreTrainedTokenizerFast:
    """A character-level WordLevel tokenizer trained on the alphabet, wrapped for transformers."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="<eos>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    trainer = trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS))
    tokenizer.train_from_iterator([characters], trainer=trainer)
    wrapped: PreTrainedTokenizerFast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>", padding_side="left"
    )
    return wrapped


def build(recipe: Recipe, output: Path, *, pretrain: Path | None = None, characters: str = CHARACTERS) -> None:
    """Pretrains the recipe's model on `pretrain` (default: this example's data/pretrain.jsonl) with a tokenizer of
    `characters`, and writes it to `output`. Other examples build their base models with it (examples/code-ops)."""
    from datasets import load_dataset
    from transformers import LlamaConfig, LlamaForCausalLM, set_seed
    from trl import SFTConfig, SFTTrainer  # type: ignore[attr-defined]

    set_seed(recipe.seed)
    pretrain = pretrain or PRETRAIN
    tokenizer = build_tokenizer(characters)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.layers,
        num_attention_heads=recipe.heads,
        num_key_value_heads=recipe.heads,
        max_position_embeddings=recipe.max_positions,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(config)
    with tempfile.TemporaryDirectory(prefix=f"{output.name}-") as tmp:
        args = SFTConfig(
            output_dir=tmp,
            learning_rate=recipe.learning_rate,
            num_train_epochs=recipe.epochs,
            per_device_train_batch_size=recipe.batch_size,
            max_length=recipe.max_positions,
            seed=recipe.seed,
            bf16=False,
            report_to="none",
            save_strategy="no",
            logging_steps=25,
        )
        dataset = load_dataset("json", data_files=str(pretrain), split="train")
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
        trainer.train()
    staging = output.with_name(output.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / RECIPE_FILE).write_text(
        json.dumps({"digest": recipe.digest(pretrain), **asdict(recipe)}, indent=2) + "\n", encoding="utf-8"
    )
    shutil.rmtree(output, ignore_errors=True)
    staging.rename(output)


def is_current(recipe: Recipe, output: Path, pretrain: Path | None = None) -> bool:
    marker = output / RECIPE_FILE
    if not marker.is_file():
        return False
    return bool(json.loads(marker.read_text(encoding="utf-8")).get("digest") == recipe.digest(pretrain))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    recipe = Recipe()
    if is_current(recipe, args.output):
        print(f"{args.output} already holds this recipe's model; nothing to do")
        return
    build(recipe, args.output)
    print(f"wrote the base model to {args.output}")


if __name__ == "__main__":
    main()
