"""Seeds derived from the loop seed and the iteration, so that every run of a stage draws the same numbers.

Iterations must not share a seed (iteration 2 would redraw iteration 1's prompts and samples), and the
purposes inside one stage (drawing prompts, sampling completions, training) must not either; hashing the
three together gives independent, reproducible streams.
"""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, iteration: int, purpose: str) -> int:
    """A 31-bit seed for one purpose of one iteration (fits torch, numpy and `random`)."""
    digest = hashlib.sha256(f"{seed}:{iteration}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def seed_everything(seed: int) -> None:
    """Seeds python, numpy and torch (all devices) through transformers' one helper."""
    from transformers import set_seed

    set_seed(seed)
