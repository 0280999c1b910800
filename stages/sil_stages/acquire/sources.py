"""Where an iteration's prompts come from: the prompt sources, listed once, here.

A *source* gives the iteration's prompts: a file of prompts (`prompts_uri`, a seeded draw of `per_iteration`) or a
user generator function (`prompts_generator`); a config names exactly one. A *grower* adds prompts the champion
writes after the model is loaded: Self-Instruct, from examples of the file's pool. The acquire stage asks the
registry which source and growers a config turns on and never branches on the kind itself; the manifest counts
every source's and grower's prompts (zeros included, so each iteration's manifest has the same keys).

Adding a source or a grower: its entry here (and its config field, which the spec's CEL rules keep exclusive).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from sil_stages.acquire.prompt_generator import generate_prompts
from sil_stages.acquire.self_instruct import (
    DUPLICATE,
    EMPTY,
    NOVEL,
    SOURCE,
    read_earlier_generated,
    self_instruct,
)
from sil_stages.core.chat import check_prompt_records, prompt_text
from sil_stages.core.contract import GENERATED_FILE, AcquireConfig
from sil_stages.core.errors import StageInputError
from sil_stages.core.generation import GenerationEngine
from sil_stages.core.manifest import StageOutputs
from sil_stages.core.records import Record, read_jsonl, to_jsonl
from sil_stages.core.seeding import derive_seed
from sil_stages.core.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Drawn:
    prompts: list[Record]
    """The iteration's prompts, in order."""
    pool: list[Record]
    """What a grower draws its examples from: the file's prompts (empty for a generator)."""


@dataclass(frozen=True)
class PromptSource:
    name: str
    field: str
    """The config field that turns it on (named in errors)."""
    metric: str
    """The manifest metric that counts its prompts."""
    configured: Callable[[AcquireConfig], bool]
    draw: Callable[[AcquireConfig, Store], Drawn]


@dataclass(frozen=True)
class Growing:
    """What a grower gets: the loaded champion, the pool, where to write, the counts to fill."""

    config: AcquireConfig
    store: Store
    engine: GenerationEngine
    pool: list[Record]
    outputs: StageOutputs
    metrics: dict[str, float]


@dataclass(frozen=True)
class PromptGrower:
    name: str
    metrics: tuple[str, ...]
    configured: Callable[[AcquireConfig], bool]
    needs_pool: str
    """Why it cannot run without a pool (a StageInputError when the source gave none)."""
    grow: Callable[[Growing], list[Record]]


def draw(records: list[Record], count: int | None, seed: int) -> list[Record]:
    """`count` records drawn without replacement, in file order; all when count is None or too large."""
    if count is None or count >= len(records):
        return list(records)
    chosen = sorted(random.Random(seed).sample(range(len(records)), count))
    return [records[index] for index in chosen]


def read_pool(config: AcquireConfig, store: Store) -> list[Record]:
    """The records of `prompts_uri`, each with a `prompt` or `messages` (`sil_stages.core.chat`)."""
    assert config.prompts_uri is not None
    records = read_jsonl(store, config.prompts_uri, field="prompts_uri")
    check_prompt_records(records, uri=config.prompts_uri, field="prompts_uri")
    if not records:
        raise StageInputError(f"prompts_uri: {config.prompts_uri} holds no prompts")
    return records


def _from_file(config: AcquireConfig, store: Store) -> Drawn:
    pool = read_pool(config, store)
    drawn = draw(pool, config.per_iteration, derive_seed(config.seed, config.iteration, "draw"))
    log.info("drew %d of %d prompts from %s", len(drawn), len(pool), config.prompts_uri)
    return Drawn(prompts=drawn, pool=pool)


def _from_generator(config: AcquireConfig, store: Store) -> Drawn:
    assert config.prompts_generator is not None
    seed = derive_seed(config.seed, config.iteration, "generator")
    drawn = generate_prompts(config.prompts_generator, config.iteration, seed, config.per_iteration)
    log.info("%s gave %d prompts", config.prompts_generator, len(drawn))
    return Drawn(prompts=drawn, pool=[])


def _self_instructed(growing: Growing) -> list[Record]:
    """The novel prompts the champion wrote, as prompt records; writes `generated.jsonl` and counts them."""
    config, metrics = growing.config, growing.metrics
    assert config.self_instruct is not None
    earlier = read_earlier_generated(growing.store, config.earlier_acquire_uris)
    rows = self_instruct(
        growing.engine,
        [prompt_text(record) for record in growing.pool],
        earlier,
        config.self_instruct,
        seed=derive_seed(config.seed, config.iteration, "self-instruct"),
        generation_seed=derive_seed(config.seed, config.iteration, "self-instruct-generate"),
    )
    growing.outputs.write_text(GENERATED_FILE, to_jsonl(rows))
    counts = {status: sum(row["status"] == status for row in rows) for status in (NOVEL, DUPLICATE, EMPTY)}
    metrics["self_instruct_generated"] = float(len(rows))
    metrics["self_instruct_novel"] = float(counts[NOVEL])
    metrics["self_instruct_duplicates"] = float(counts[DUPLICATE])
    metrics["self_instruct_empty"] = float(counts[EMPTY])
    if counts[NOVEL] == 0:
        log.warning(
            "self-instruct: no novel prompt among %d generated (%d duplicates, %d empty); sampling the drawn "
            "prompts only. Raise selfInstruct.temperature or maxNewTokens, or check the template",
            len(rows),
            counts[DUPLICATE],
            counts[EMPTY],
        )
    else:
        log.info("self-instruct: %d novel prompts of %d generated", counts[NOVEL], len(rows))
    return [{"prompt": row["prompt"], "source": SOURCE} for row in rows if row["status"] == NOVEL]


SOURCES: tuple[PromptSource, ...] = (
    PromptSource(
        name="file",
        field="prompts_uri (uri)",
        metric="prompts_from_file",
        configured=lambda config: config.prompts_uri is not None,
        draw=_from_file,
    ),
    PromptSource(
        name="generator",
        field="prompts_generator (generator)",
        metric="prompts_from_generator",
        configured=lambda config: config.prompts_generator is not None,
        draw=_from_generator,
    ),
)

GROWERS: tuple[PromptGrower, ...] = (
    PromptGrower(
        name="self-instruct",
        metrics=("self_instruct_generated", "self_instruct_novel", "self_instruct_duplicates", "self_instruct_empty"),
        configured=lambda config: config.self_instruct is not None,
        needs_pool="acquire.prompts.selfInstruct needs prompts_uri (uri): the pool its examples come from",
        grow=_self_instructed,
    ),
)


def counters() -> dict[str, float]:
    """Every source's and grower's count at 0: the manifest's keys, the same in every iteration."""
    names = [source.metric for source in SOURCES] + [name for grower in GROWERS for name in grower.metrics]
    return dict.fromkeys(names, 0.0)


def configured_source(config: AcquireConfig) -> PromptSource:
    """The one source the config turns on; a StageInputError when it turns on none or several."""
    chosen = [source for source in SOURCES if source.configured(config)]
    if len(chosen) != 1:
        fields = " and ".join(source.field for source in SOURCES)
        raise StageInputError(f"acquire.prompts: set exactly one of {fields}")
    return chosen[0]


def configured_growers(config: AcquireConfig, drawn: Drawn) -> tuple[PromptGrower, ...]:
    """The growers the config turns on; each checked before any model is loaded."""
    growers = tuple(grower for grower in GROWERS if grower.configured(config))
    for grower in growers:
        if not drawn.pool:
            raise StageInputError(grower.needs_pool)
    return growers
