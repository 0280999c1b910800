"""acquire: the champion samples completions for a draw of prompts.

The prompts come from one source of the registry in `sil_stages.acquire.sources`:
- a file, `prompts_uri` (JSONL with a `prompt` field; other fields such as `answer` are carried along so select
  can verify), from which `per_iteration` prompts are drawn with a seed derived from the loop seed and the
  iteration (so each iteration sees a different but reproducible draw);
- or a user function, `prompts_generator` (`sil_stages.acquire.prompt_generator`), given the iteration, a derived seed
  and `per_iteration` as its count.
A grower of that registry may add prompts once the champion is loaded: with `self_instruct`, the champion writes
new prompts from examples of the file (`sil_stages.acquire.self_instruct`); the novel ones follow the drawn ones,
and all of them, with their status, go to `generated.jsonl`.

For every prompt it samples `samples_per_prompt` completions and writes `samples.jsonl`: one line per prompt with
its `completions` list. With `sampling.temperature: auto` the temperature is first chosen by a probe
(`sil_stages.acquire.temperature`), whose table goes to `temperature.json`. The manifest counts the prompts of each
source and records the temperature sampled with (`temperature`, and `temperature_probe_seconds`, 0 for a fixed one).
"""

from __future__ import annotations

import json
import logging

from sil_stages.acquire import metrics as acquire_metrics
from sil_stages.acquire import temperature as auto_temperature
from sil_stages.acquire.sources import Growing, configured_growers, configured_source, counters
from sil_stages.core.chat import conversation, model_prompt, prompt_text
from sil_stages.core.contract import SAMPLES_FILE, AcquireConfig, Manifest
from sil_stages.core.engines import make_engine
from sil_stages.core.errors import StageInputError
from sil_stages.core.generation import GenerationEngine, SamplingRequest
from sil_stages.core.manifest import StageOutputs
from sil_stages.core.models import resolve_model
from sil_stages.core.records import Record, to_jsonl
from sil_stages.core.seeding import derive_seed, seed_everything
from sil_stages.core.settings import AUTO, ChatFormat
from sil_stages.core.store import Store
from sil_stages.select.scorers import ScorerContext, make_scorer

log = logging.getLogger(__name__)


def carried(record: Record) -> Record:
    """The fields of a prompt record that travel along with its samples (all but the prompt itself)."""
    return {key: value for key, value in record.items() if key not in ("prompt", "messages")}


def sample_row(record: Record, completions: list[str], engine: GenerationEngine, chat: ChatFormat) -> Record:
    """One `samples.jsonl` line. A conversational loop also writes the prompt's `messages` (the system prompt
    included), which select turns into conversational training data; `prompt` is then its question as text."""
    if not engine.format.conversational:
        return {"prompt": record["prompt"], "completions": completions, **carried(record)}
    messages = conversation(model_prompt(record), chat)
    return {"prompt": prompt_text(record), "messages": messages, "completions": completions, **carried(record)}


def check_text_prompts(prompts: list[Record], config: AcquireConfig) -> None:
    """A loop whose model reads raw text cannot take conversations: refused before the model generates."""
    for number, record in enumerate(prompts, start=1):
        if "messages" in record:
            raise StageInputError(
                f"acquire.prompts: record {number} has `messages`, but the model reads raw text "
                f"(spec.model.chatTemplate is {config.chat.chat_template} and its tokenizer has no chat template, "
                "or chatTemplate is never); give the records a `prompt`, or use a model with a chat template"
            )


def run(config: AcquireConfig, store: Store) -> Manifest:
    outputs = StageOutputs(store, config.output_uri)
    metrics = counters()
    source = configured_source(config)
    drawn = source.draw(config, store)
    metrics[source.metric] = float(len(drawn.prompts))
    growers = configured_growers(config, drawn)  # checked before the model is loaded

    sample_seed = derive_seed(config.seed, config.iteration, "acquire")
    seed_everything(sample_seed)
    model_path = resolve_model(store, config.model_uri, field="model_uri")
    engine = make_engine(config.engine, model_path, batch_size=config.batch_size, progress="acquire", chat=config.chat)
    if not engine.format.conversational:
        check_text_prompts(drawn.prompts, config)
    prompts = drawn.prompts
    for grower in growers:
        prompts = prompts + grower.grow(Growing(config, store, engine, drawn.pool, outputs, metrics))

    findings: dict[str, list[str]] = {}
    temperature = _temperature(config, store, engine, drawn.prompts, outputs, findings, metrics)
    request = SamplingRequest(
        n=config.samples_per_prompt,
        temperature=temperature,
        top_p=config.sampling.top_p,
        max_new_tokens=config.sampling.max_new_tokens,
        seed=sample_seed,
    )
    completions = engine.generate([model_prompt(record) for record in prompts], request)

    lines = [
        sample_row(record, samples, engine, config.chat) for record, samples in zip(prompts, completions, strict=True)
    ]
    outputs.write_text(SAMPLES_FILE, to_jsonl(lines))
    metrics |= {"prompts": float(len(lines)), "samples": float(sum(len(c) for c in completions))}
    acquire_metrics.push_metrics(config, metrics)
    return outputs.seal(
        stage="acquire", loop=config.loop, iteration=config.iteration, metrics=metrics, findings=findings
    )


def _temperature(
    config: AcquireConfig,
    store: Store,
    engine: GenerationEngine,
    drawn: list[Record],
    outputs: StageOutputs,
    findings: dict[str, list[str]],
    metrics: dict[str, float],
) -> float:
    """The temperature to sample with: the fixed one, or (`auto`) the probe's choice, whose table is written to
    `temperature.json` and the manifest's findings (`temperature/probe`)."""
    if config.sampling.temperature != AUTO:
        metrics |= {"temperature": float(config.sampling.temperature), "temperature_probe_seconds": 0.0}
        return float(config.sampling.temperature)
    scorer = make_scorer(
        ScorerContext(
            settings=config.scorer,
            field="select.scorer",
            store=store,
            champion_uri=config.model_uri,
            seed=derive_seed(config.seed, config.iteration, "temperature-probe-score"),
            engine=config.engine,
            chat=config.chat,
        )
    )
    choice = auto_temperature.choose(
        engine,
        scorer,
        drawn,
        sampling=config.sampling,
        bounds=config.sampling.auto_temperature,
        keep=config.keep,
        samples_per_prompt=config.samples_per_prompt,
        draw_seed=derive_seed(config.seed, config.iteration, "temperature-probe-draw"),
        generation_seed=derive_seed(config.seed, config.iteration, "temperature-probe"),
    )
    log.info("temperature auto: %s (probe %.1f s)", choice.why, choice.seconds)
    outputs.write_text(auto_temperature.TEMPERATURE_FILE, json.dumps(choice.to_json(), indent=2) + "\n")
    findings["temperature/probe"] = choice.findings()
    metrics |= {"temperature": choice.temperature, "temperature_probe_seconds": choice.seconds}
    return choice.temperature
