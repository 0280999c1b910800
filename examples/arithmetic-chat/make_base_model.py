"""Builds the chat demo's base model in `.base-model/`: a tiny chat model that answers sums some of the time.

No hub download. The tokenizer is a byte-level BPE (GPT-2/Qwen style, a small vocabulary) trained here with the
`tokenizers` library on chat-formatted sums, wrapped as a transformers `PreTrainedTokenizerFast` with ChatML's
special tokens (`<|im_start|>`, `<|im_end|>`, `<|endoftext|>` as padding; EOS is `<|im_end|>`, as in Qwen's
instruct models) and a ChatML Jinja `chat_template` of the shape of Qwen's. The model is a small Llama built from a
config with a fixed seed and briefly pretrained with TRL's SFTTrainer on `data/pretrain.jsonl` as conversations
(system prompt, the sum as the user turn, the answer as the assistant turn; loss on the assistant turn), so that it
adds two-digit numbers some of the time and ends its turn with `<|im_end|>`: the loop then has something to improve.

`build_tokenizer` and `build` are also what the tests use (tests/chat_model.py), with a shorter recipe.
Idempotent: the folder keeps `recipe.json` (a hash of every setting and of the pretraining data), and a run that
finds the same recipe does nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

HERE = Path(__file__).resolve().parent
DEFAULT_OUTPUT = HERE / ".base-model"
PRETRAIN = HERE / "data" / "pretrain.jsonl"
RECIPE_FILE = "recipe.json"
SYSTEM_PROMPT = "You add two numbers. Answer with the sum only."
"""The loop's spec.model.systemPrompt (loop.yaml): the base model is pretrained with it."""
PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
"""ChatML as Qwen2's template writes it (without Qwen's default system prompt): every turn is
`<|im_start|>role\\ncontent<|im_end|>\\n`, and the generation prompt opens the assistant's turn."""


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the weights; change any of it and the model is rebuilt."""

    vocab_size: int = 320
    hidden_size: int = 128
    intermediate_size: int = 256
    layers: int = 2
    heads: int = 4
    max_positions: int = 64
    seed: int = 0
    learning_rate: float = 1e-3
    epochs: float = 20.0
    batch_size: int = 32
    pretrain_examples: int | None = None
    """How many pretraining sums to use (None: all)."""

    def digest(self) -> str:
        payload = json.dumps(asdict(self), sort_keys=True).encode() + PRETRAIN.read_bytes()
        return hashlib.sha256(payload).hexdigest()


def chat(prompt: str, answer: str | None = None) -> list[dict[str, str]]:
    """One sum as messages: the system prompt, the user's question, and the answer when given."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages


def render(messages: list[dict[str, str]]) -> str:
    """The template applied by hand, for the tokenizer's training corpus only (before the tokenizer exists)."""
    return "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages)


def pretraining_pairs(limit: int | None = None) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in PRETRAIN.read_text(encoding="utf-8").splitlines() if line.strip()]
    pairs = [(str(row["prompt"]), str(row["completion"])) for row in rows]
    return pairs[:limit] if limit is not None else pairs


def build_tokenizer(vocab_size: int = 320) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on chat-formatted sums (every byte is in the alphabet, so any text encodes), with
    ChatML's special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [render(chat(prompt, answer)) for prompt, answer in pretraining_pairs()]
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    wrapped: PreTrainedTokenizerFast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer,
        pad_token=PAD,
        eos_token=IM_END,
        additional_special_tokens=[IM_START, IM_END],
        padding_side="left",
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def build(recipe: Recipe, output: Path) -> None:
    from datasets import Dataset
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, set_seed
    from trl import SFTConfig, SFTTrainer  # type: ignore[attr-defined]

    set_seed(recipe.seed)
    tokenizer = build_tokenizer(recipe.vocab_size)
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
    model: Any = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None
    )
    rows = [
        {"prompt": chat(prompt), "completion": [{"role": "assistant", "content": answer}]}
        for prompt, answer in pretraining_pairs(recipe.pretrain_examples)
    ]
    with tempfile.TemporaryDirectory(prefix="arithmetic-chat-base-") as tmp:
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
            completion_only_loss=True,
            dataset_num_proc=None,
        )
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
        trainer.train()
    staging = output.with_name(output.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / RECIPE_FILE).write_text(
        json.dumps({"digest": recipe.digest(), **asdict(recipe)}, indent=2) + "\n", encoding="utf-8"
    )
    shutil.rmtree(output, ignore_errors=True)
    staging.rename(output)


def is_current(recipe: Recipe, output: Path) -> bool:
    marker = output / RECIPE_FILE
    if not marker.is_file():
        return False
    return bool(json.loads(marker.read_text(encoding="utf-8")).get("digest") == recipe.digest())


def ensure(recipe: Recipe, output: Path) -> Path:
    """The model of `recipe` in `output`, built unless it is already there."""
    if not is_current(recipe, output):
        build(recipe, output)
    return output


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
