"""acquire: the champion samples completions for a draw of prompts.

The prompts come from one source (`sil_stages.core.contract.AcquireConfig`):
- a file, `prompts_uri` (JSONL with a `prompt` field; other fields such as `answer` are carried along so select
  can verify), from which `per_iteration` prompts are drawn with a seed derived from the loop seed and the
  iteration (so each iteration sees a different but reproducible draw);
- or a user function, `prompts_generator` (`sil_stages.acquire.prompt_generator`), given the iteration, a derived seed
  and `per_iteration` as its count.
With `self_instruct`, the champion also writes new prompts from examples of the file
(`sil_stages.acquire.self_instruct`); the novel ones follow the drawn ones, and all of them, with their status, go to
`generated.jsonl`.

For every prompt it samples `samples_per_prompt` completions and writes `samples.jsonl`: one line per prompt with
its `completions` list. The manifest counts the prompts of each source.
"""

from __future__ import annotations

import logging
import random

from sil_stages.acquire import metrics as acquire_metrics
from sil_stages.acquire.prompt_generator import generate_prompts
from sil_stages.acquire.self_instruct import (
    DUPLICATE,
    EMPTY,
    NOVEL,
    SOURCE,
    read_earlier_generated,
    self_instruct,
)
from sil_stages.core.contract import GENERATED_FILE, SAMPLES_FILE, AcquireConfig, Manifest
from sil_stages.core.engines import make_engine
from sil_stages.core.errors import StageInputError
from sil_stages.core.generation import GenerationEngine, SamplingRequest
from sil_stages.core.manifest import StageOutputs
from sil_stages.core.models import resolve_model
from sil_stages.core.records import Record, read_jsonl, require_field, to_jsonl
from sil_stages.core.seeding import derive_seed, seed_everything
from sil_stages.core.store import Store

log = logging.getLogger(__name__)


def draw(records: list[Record], count: int | None, seed: int) -> list[Record]:
    """`count` records drawn without replacement, in file order; all when count is None or too large."""
    if count is None or count >= len(records):
        return list(records)
    chosen = sorted(random.Random(seed).sample(range(len(records)), count))
    return [records[index] for index in chosen]


def carried(record: Record) -> Record:
    """The fields of a prompt record that travel along with its samples (all but the prompt itself)."""
    return {key: value for key, value in record.items() if key != "prompt"}


def read_pool(config: AcquireConfig, store: Store) -> list[Record]:
    """The records of `prompts_uri`, each with a `prompt`."""
    assert config.prompts_uri is not None
    records = read_jsonl(store, config.prompts_uri, field="prompts_uri")
    require_field(records, "prompt", uri=config.prompts_uri, field="prompts_uri")
    if not records:
        raise StageInputError(f"prompts_uri: {config.prompts_uri} holds no prompts")
    return records


def run(config: AcquireConfig, store: Store) -> Manifest:
    outputs = StageOutputs(store, config.output_uri)
    metrics = dict.fromkeys(
        (
            "prompts_from_file",
            "prompts_from_generator",
            "self_instruct_generated",
            "self_instruct_novel",
            "self_instruct_duplicates",
            "self_instruct_empty",
        ),
        0.0,
    )
    pool: list[Record] = []
    if config.prompts_generator is not None and config.prompts_uri is None:
        seed = derive_seed(config.seed, config.iteration, "generator")
        drawn = generate_prompts(config.prompts_generator, config.iteration, seed, config.per_iteration)
        log.info("%s gave %d prompts", config.prompts_generator, len(drawn))
        metrics["prompts_from_generator"] = float(len(drawn))
    elif config.prompts_uri is not None and config.prompts_generator is None:
        pool = read_pool(config, store)
        drawn = draw(pool, config.per_iteration, derive_seed(config.seed, config.iteration, "draw"))
        log.info("drew %d of %d prompts from %s", len(drawn), len(pool), config.prompts_uri)
        metrics["prompts_from_file"] = float(len(drawn))
    else:
        raise StageInputError("acquire.prompts: set exactly one of prompts_uri (uri) and prompts_generator (generator)")
    if config.self_instruct is not None and not pool:
        raise StageInputError("acquire.prompts.selfInstruct needs prompts_uri (uri): the pool its examples come from")

    sample_seed = derive_seed(config.seed, config.iteration, "acquire")
    seed_everything(sample_seed)
    model_path = resolve_model(store, config.model_uri, field="model_uri")
    engine = make_engine(config.engine, model_path, batch_size=config.batch_size, progress="acquire")
    if config.self_instruct is not None:
        drawn = drawn + _self_instructed(config, store, engine, pool, outputs, metrics)

    request = SamplingRequest(
        n=config.samples_per_prompt,
        temperature=config.sampling.temperature,
        top_p=config.sampling.top_p,
        max_new_tokens=config.sampling.max_new_tokens,
        seed=sample_seed,
    )
    completions = engine.generate([str(record["prompt"]) for record in drawn], request)

    lines = [
        {"prompt": record["prompt"], "completions": samples, **carried(record)}
        for record, samples in zip(drawn, completions, strict=True)
    ]
    outputs.write_text(SAMPLES_FILE, to_jsonl(lines))
    metrics |= {"prompts": float(len(lines)), "samples": float(sum(len(c) for c in completions))}
    acquire_metrics.push_metrics(config, metrics)
    return outputs.seal(stage="acquire", loop=config.loop, iteration=config.iteration, metrics=metrics)


def _self_instructed(
    config: AcquireConfig,
    store: Store,
    engine: GenerationEngine,
    pool: list[Record],
    outputs: StageOutputs,
    metrics: dict[str, float],
) -> list[Record]:
    """The novel prompts the champion wrote, as prompt records; writes `generated.jsonl` and counts them."""
    assert config.self_instruct is not None
    earlier = read_earlier_generated(store, config.earlier_acquire_uris)
    rows = self_instruct(
        engine,
        [str(record["prompt"]) for record in pool],
        earlier,
        config.self_instruct,
        seed=derive_seed(config.seed, config.iteration, "self-instruct"),
        generation_seed=derive_seed(config.seed, config.iteration, "self-instruct-generate"),
    )
    outputs.write_text(GENERATED_FILE, to_jsonl(rows))
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
