"""The tiny Llama the unit tests generate and train with: two layers of width 32, whatever the tokenizer."""

from __future__ import annotations

from typing import Any


def tiny_llama(tokenizer: Any, max_positions: int) -> Any:
    """A freshly initialised LlamaForCausalLM sized for `tokenizer` (seed it before calling: weights are random)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)
