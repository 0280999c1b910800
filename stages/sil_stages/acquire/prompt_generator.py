"""Prompts from a user function (`acquire.prompts.generator`) instead of a file.

A generator is `fn(iteration, seed, count) -> Iterable[dict]`, called with positional arguments: the iteration,
a seed derived from the loop seed and the iteration (so each iteration differs and a retried stage gets the same
one), and `perIteration` (None: the generator's own default). Each record is a dict with a string `prompt`; its
other fields (an `answer`, metadata) are carried along as a file's are. A procedurally generated task (arithmetic,
puzzles, code with tests) then needs no prompt file and never runs out of fresh prompts.

Everything that can go wrong here is the user's to fix, so it is a `StageInputError` naming the field and, for a
bad record, showing it (truncated).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from sil_stages.core.chat import check_prompt_record
from sil_stages.core.errors import StageInputError
from sil_stages.core.records import Record
from sil_stages.core.scoring import import_function

FIELD = "acquire.prompts.generator"
SHOWN = 120
"""Characters of a bad record shown in the error."""


def shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN else text[:SHOWN] + "..."


def generate_prompts(spec: str, iteration: int, seed: int, count: int | None) -> list[Record]:
    """The records `spec` (module:function) gives for this iteration; at most `count` when count is set."""
    function = import_function(spec, field=FIELD)
    try:
        produced: Iterable[Any] = function(iteration, seed, count)
        records = list(itertools.islice(produced, count) if count is not None else produced)
    except StageInputError:
        raise
    except Exception as error:
        raise StageInputError(
            f"{FIELD}: {spec}({iteration}, {seed}, {count}) raised {type(error).__name__}: {error}; fix the function"
        ) from error
    for number, record in enumerate(records, start=1):
        if isinstance(record, dict) and "messages" in record:
            check_prompt_record(record, f"{FIELD}: {spec} record {number}")
        elif not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
            raise StageInputError(
                f"{FIELD}: {spec} record {number} is not a dict with a string `prompt`: {shown(record)}"
            )
    if not records:
        raise StageInputError(f"{FIELD}: {spec} gave no prompts for iteration {iteration}")
    return records
