"""The chat demo's model builders for tests: examples/arithmetic-chat/make_base_model.py, imported by path.

`build_tiny_chat_model` saves a random-weight tiny Llama with the demo's byte-level BPE tokenizer (ChatML special
tokens and chat template): enough to test formatting, masks and what the stages write. The e2e tests use the demo's
pretrained base model itself (`make_base_model.ensure`), which answers sums some of the time.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from tests.tiny_models import tiny_llama

CHAT_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "arithmetic-chat"


def chat_example() -> ModuleType:
    """The demo's make_base_model module (its folder name has a dash: not importable by name)."""
    name = "arithmetic_chat_base"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, CHAT_EXAMPLE / "make_base_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def build_tiny_chat_model(directory: Path) -> Path:
    from transformers import GenerationConfig, set_seed

    set_seed(0)
    tokenizer = chat_example().build_tokenizer()
    model: Any = tiny_llama(tokenizer, max_positions=96)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
