"""Candidate and champion, each loaded once and scored on every held-out dataset; and the base model's output length.

Loading a model is what evaluate spends most on, so each model is loaded once, scored on all datasets (one
`scoring.score_dataset` call each) and freed before the next is loaded. The candidate's checkpoint is verified
against its optimize manifest before it is loaded. When candidate and champion are the same URI the model is
loaded once, and its runs stand for both.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass, field, replace

from sil_stages.core.chat import model_prompt
from sil_stages.core.contract import EvaluateConfig
from sil_stages.core.engines import make_engine
from sil_stages.core.generation import GenerationEngine, SamplingRequest, TokenScorer, TokenStats, TransformersEngine
from sil_stages.core.models import load_model, load_tokenizer, resolve_model, resolve_verified
from sil_stages.core.records import Record
from sil_stages.core.seeding import derive_seed
from sil_stages.core.store import Store
from sil_stages.evaluate.guards import mean_length
from sil_stages.evaluate.harness import HarnessSuite, TaskRun, run_suite
from sil_stages.evaluate.scoring import Judges, ModelRun, mean_token_entropy, score_dataset

log = logging.getLogger(__name__)

MODELS = ("candidate", "champion")
"""The models evaluate compares, in the order it loads them."""


@dataclass
class Measurement:
    """What candidate and champion did on every dataset."""

    runs: dict[str, dict[str, ModelRun]]
    """dataset -> model -> its run; with the same model, the champion's run is the candidate's."""
    champion_stats: dict[str, list[TokenStats]]
    """dataset -> the champion's token stats of the candidate's probes (engines that score tokens): the KL's other
    half."""
    verified_manifest_sha256: str | None
    """The sha256 of the optimize manifest the candidate's files were checked against."""
    same_model: bool
    """Candidate and champion are the same URI: one model was evaluated."""
    harness: dict[str, dict[str, TaskRun]] = field(default_factory=dict)
    """lm-eval task -> model -> its run (`harness`); with the same model, the champion's run is the candidate's."""


def measure_models(
    config: EvaluateConfig,
    store: Store,
    datasets: dict[str, list[Record]],
    judges: Judges,
    suites: list[HarnessSuite] | None = None,
) -> Measurement:
    """Load each model in turn (the candidate first, verified), score it on every dataset and run the harness
    suites' lm-eval tasks on it, then free it."""
    uris = {"candidate": config.candidate_uri, "champion": config.champion_uri}
    models = ["candidate"] if config.candidate_uri == config.champion_uri else list(MODELS)

    runs: dict[str, dict[str, ModelRun]] = {name: {} for name in datasets}
    champion_stats: dict[str, list[TokenStats]] = {}
    harness: dict[str, dict[str, TaskRun]] = {}
    verified: str | None = None
    for model in models:
        if model == "candidate":
            checked = resolve_verified(store, uris[model], field="candidate_uri")
            path, verified = checked.path, checked.manifest_sha256
        else:
            path = resolve_model(store, uris[model], field=f"{model}_uri")
        engine = make_engine(
            config.engine, path, batch_size=config.batch_size, progress=f"evaluate {model}", chat=config.chat
        )
        for name, records in datasets.items():
            seed = derive_seed(config.seed, config.iteration, f"evaluate:{name}")
            runs[name][model] = score_dataset(
                engine,
                records,
                config,
                judges.verifier,
                judges.pattern,
                seed,
                judges.proxy,
                probe=model == "candidate",
                selector=judges.selector,
            )
            probes = runs[name]["candidate"].probes
            if model == "champion" and probes and isinstance(engine, TokenScorer):
                stats = engine.token_stats([model_prompt(r) for r in records], probes)
                champion_stats[name] = stats
                champion_run = runs[name]["champion"]
                champion_run.scores = replace(champion_run.scores, token_entropy=mean_token_entropy(stats))
            log.info("%s on %s: %s", model, name, runs[name][model].scores)
        for suite in suites or []:
            seed = derive_seed(config.seed, config.iteration, f"harness:{suite.entry}")
            for task, task_run in _run_suite(suite, engine, path, config, seed).items():
                harness.setdefault(task, {})[model] = task_run
                log.info("%s on harness task %s: %.4f", model, task, task_run.score)
        del engine
        gc.collect()
    same_model = models == ["candidate"]
    if same_model:
        for by_model in runs.values():
            by_model["champion"] = by_model["candidate"]
        champion_stats = {name: by_model["candidate"].probe_stats for name, by_model in runs.items()}
        for by_model_run in harness.values():
            by_model_run["champion"] = by_model_run["candidate"]
    return Measurement(
        runs=runs,
        champion_stats=champion_stats,
        verified_manifest_sha256=verified,
        same_model=same_model,
        harness=harness,
    )


def _run_suite(
    suite: HarnessSuite, engine: GenerationEngine, path: str, config: EvaluateConfig, seed: int
) -> dict[str, TaskRun]:
    """lm-eval on the model the engine holds (transformers), else on the same checkpoint loaded with transformers
    for the duration (vLLM keeps its weights out of reach); in a conversational loop, in the model's chat template."""
    chat, system = engine.format.conversational, config.chat.system_prompt
    if isinstance(engine, TransformersEngine):
        return run_suite(
            suite,
            engine.model,
            engine.tokenizer,
            batch_size=config.batch_size,
            seed=seed,
            chat=chat,
            system_prompt=system,
        )
    model = load_model(path)
    try:
        tokenizer = load_tokenizer(path)
        return run_suite(
            suite, model, tokenizer, batch_size=config.batch_size, seed=seed, chat=chat, system_prompt=system
        )
    finally:
        del model
        gc.collect()


def base_output_lengths(
    store: Store, config: EvaluateConfig, datasets: dict[str, list[Record]], runs: dict[str, dict[str, ModelRun]]
) -> dict[str, float]:
    """Mean greedy output length of the base model per dataset: reused when the base is one of the two models."""
    if config.base_uri is None:
        return {}
    for model, uri in (("champion", config.champion_uri), ("candidate", config.candidate_uri)):
        if uri == config.base_uri:
            return {name: mean_length(by_model[model].greedy) for name, by_model in runs.items()}
    path = resolve_model(store, config.base_uri, field="base_uri")
    engine = make_engine(config.engine, path, batch_size=config.batch_size, progress="evaluate base", chat=config.chat)
    request = SamplingRequest(n=1, temperature=0.0, max_new_tokens=config.max_new_tokens)
    lengths = {
        name: mean_length([outs[0] for outs in engine.generate([model_prompt(r) for r in records], request)])
        for name, records in datasets.items()
    }
    del engine
    gc.collect()
    return lengths
