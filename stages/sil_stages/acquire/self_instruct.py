"""Self-Instruct (Wang et al. 2023): the champion writes new prompts in the style of the pool's.

For each of `count` new prompts, `examples` pool prompts are drawn (seeded, without replacement within one prompt)
and put into the template one per line; the champion continues it, and the text it generates up to its first
newline, stripped, is the new prompt (the stop: one prompt per line, as in the default template, which lists the
examples and leaves the model at the start of the next line). A prompt that spans several lines cannot be written
this way.

A new prompt is kept only when it is novel: not empty, and neither an exact nor a near-duplicate (MinHash LSH over
character n-grams, `sil_stages.select.dedupe`) of a pool prompt, of a prompt generated before it in this iteration, or
of a novel prompt an earlier iteration generated (read from its `generated.jsonl`, verified against its manifest).
Without that filter a model asked for "new" prompts mostly copies its examples.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Literal

from sil_stages.core.contract import GENERATED_FILE
from sil_stages.core.generation import GenerationEngine, SamplingRequest
from sil_stages.core.records import Record
from sil_stages.core.settings import SELF_INSTRUCT_PLACEHOLDER, Novelty, SelfInstruct
from sil_stages.core.store import Store
from sil_stages.select.dedupe import MinHashDeduper, preload
from sil_stages.select.kept_history import read_verified_rows

log = logging.getLogger(__name__)

SOURCE = "self-instruct"
"""The `source` field of a generated prompt's record (carried along into samples.jsonl and scored.jsonl)."""
NUM_PERM = 128

Status = Literal["novel", "duplicate", "empty"]
NOVEL: Status = "novel"
DUPLICATE: Status = "duplicate"
EMPTY: Status = "empty"


def instruction_prompts(pool: Sequence[str], settings: SelfInstruct, seed: int) -> list[tuple[str, list[str]]]:
    """For each new prompt, the text the champion continues and the pool prompts it shows."""
    rng = random.Random(seed)
    shown = min(settings.examples, len(pool))
    built: list[tuple[str, list[str]]] = []
    for _ in range(settings.count):
        examples = [pool[index] for index in rng.sample(range(len(pool)), shown)]
        built.append((settings.template.replace(SELF_INSTRUCT_PLACEHOLDER, "\n".join(examples)), examples))
    return built


def new_prompt(completion: str) -> str:
    """The generated text up to its first newline, stripped: one new prompt."""
    return completion.split("\n", 1)[0].strip()


def novelty(generated: Sequence[str], pool: Sequence[str], earlier: Sequence[str], settings: Novelty) -> list[Status]:
    """Each generated prompt's status, in order: the first of repeated prompts is the novel one."""
    deduper = MinHashDeduper(settings.threshold, settings.ngram, NUM_PERM)
    preload(deduper, [text.strip() for text in pool])
    preload(deduper, earlier)
    statuses: list[Status] = []
    for text in generated:
        if not text:
            statuses.append(EMPTY)
        else:
            statuses.append(NOVEL if deduper.admit(text) else DUPLICATE)
    return statuses


def read_earlier_generated(store: Store, acquire_uris: Sequence[str]) -> list[str]:
    """The novel prompts earlier iterations generated; an iteration whose file does not match its manifest (or that
    has neither) is skipped with a warning, one that did not self-instruct silently."""
    found: list[str] = []
    for uri in acquire_uris:
        rows = read_verified_rows(
            store,
            uri,
            GENERATED_FILE,
            stage="acquire",
            purpose="self-instruct",
            field="earlier_acquire_uris",
            expected=False,
        )
        found.extend(str(row["prompt"]) for row in rows or [] if row.get("status") == NOVEL)
    return found


def self_instruct(
    engine: GenerationEngine,
    pool: Sequence[str],
    earlier: Sequence[str],
    settings: SelfInstruct,
    *,
    seed: int,
    generation_seed: int,
) -> list[Record]:
    """The `generated.jsonl` rows: each generated prompt with its status and the examples it was shown."""
    built = instruction_prompts(pool, settings, seed)
    request = SamplingRequest(
        n=1, temperature=settings.temperature, max_new_tokens=settings.max_new_tokens, seed=generation_seed
    )
    completions = engine.generate([text for text, _ in built], request)
    generated = [new_prompt(samples[0]) if samples else "" for samples in completions]
    statuses = novelty(generated, pool, earlier, settings.novelty)
    return [
        {"prompt": text, "status": status, "examples": examples}
        for text, status, (_, examples) in zip(generated, statuses, built, strict=True)
    ]
