"""acquire: the champion samples completions for a draw of prompts.

Reads `prompts_uri` (JSONL with a `prompt` field; other fields such as `answer` are carried along so select
can verify), draws `per_iteration` prompts with a seed derived from the loop seed and the iteration (so each
iteration sees a different but reproducible draw), samples `samples_per_prompt` completions per prompt and
writes `samples.jsonl`: one line per prompt with its `completions` list.
"""

from __future__ import annotations

import logging
import random

from sil_stages.contract import AcquireConfig, Manifest
from sil_stages.errors import StageInputError
from sil_stages.generation import SamplingRequest, make_engine
from sil_stages.manifest import StageOutputs
from sil_stages.models import resolve_model
from sil_stages.records import Record, read_jsonl, require_field, to_jsonl
from sil_stages.seeding import derive_seed, seed_everything
from sil_stages.store import Store

log = logging.getLogger(__name__)

SAMPLES_FILE = "samples.jsonl"


def draw(records: list[Record], count: int | None, seed: int) -> list[Record]:
    """`count` records drawn without replacement, in file order; all when count is None or too large."""
    if count is None or count >= len(records):
        return list(records)
    chosen = sorted(random.Random(seed).sample(range(len(records)), count))
    return [records[index] for index in chosen]


def carried(record: Record) -> Record:
    """The fields of a prompt record that travel along with its samples (all but the prompt itself)."""
    return {key: value for key, value in record.items() if key != "prompt"}


def run(config: AcquireConfig, store: Store) -> Manifest:
    outputs = StageOutputs(store, config.output_uri)
    records = read_jsonl(store, config.prompts_uri, field="prompts_uri")
    require_field(records, "prompt", uri=config.prompts_uri, field="prompts_uri")
    if not records:
        raise StageInputError(f"prompts_uri: {config.prompts_uri} holds no prompts")
    drawn = draw(records, config.per_iteration, derive_seed(config.seed, config.iteration, "draw"))
    log.info("drew %d of %d prompts from %s", len(drawn), len(records), config.prompts_uri)

    sample_seed = derive_seed(config.seed, config.iteration, "acquire")
    seed_everything(sample_seed)
    model_path = resolve_model(store, config.model_uri, field="model_uri")
    engine = make_engine(config.engine, model_path, batch_size=config.batch_size, progress="acquire")
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
    metrics = {"prompts": float(len(lines)), "samples": float(sum(len(c) for c in completions))}
    return outputs.seal(stage="acquire", loop=config.loop, iteration=config.iteration, metrics=metrics)
