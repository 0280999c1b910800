"""Builds the code-ops base model in `.base-model/`: a tiny character-level causal LM that writes the program
shape and picks the right operation some of the time.

The recipe is the arithmetic demo's (`examples/arithmetic/make_base_model.py`, whose builder this script calls):
no hub download, a character-level tokenizer trained here (this task's alphabet, plus `<pad>` and `<eos>`), a small
Llama built from a config with a fixed seed, briefly pretrained with TRL's SFTTrainer, here on `data/pretrain.jsonl`
(400 prompts with their program) for 4 epochs with room for 48 positions, so that it is right some of the time:
the loop then has something to improve.

Idempotent: the folder keeps `recipe.json` (a hash of every setting and of the pretraining data), and a run that
finds the same recipe does nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
DEFAULT_OUTPUT = HERE / ".base-model"
PRETRAIN = HERE / "data" / "pretrain.jsonl"
CHARACTERS = "0123456789(),=;+-*: abdefnrtu\n"


def arithmetic_builder() -> ModuleType:
    """examples/arithmetic/make_base_model.py, loaded by path (the examples are folders, not a package)."""
    path = HERE.parent / "arithmetic" / "make_base_model.py"
    spec = importlib.util.spec_from_file_location("arithmetic_make_base_model", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while it runs
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    builder = arithmetic_builder()
    recipe = replace(builder.Recipe(), max_positions=48, epochs=4.0)
    if builder.is_current(recipe, args.output, PRETRAIN):
        print(f"{args.output} already holds this recipe's model; nothing to do")
        return
    builder.build(recipe, args.output, pretrain=PRETRAIN, characters=CHARACTERS)
    print(f"wrote the base model to {args.output}")


if __name__ == "__main__":
    main()
