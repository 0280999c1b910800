"""evaluate: measure the candidate against the champion on held-out data, the numbers promotion gates read.

For each dataset (JSONL with `prompt` and `answer`) and each model:
- `score`: accuracy of greedy decoding;
- `self_consistency_score`: accuracy of the majority answer of `refinement.samples` samples at
  `refinement.temperature` (self-consistency@k, inference-time refinement without new weights);
- `distinct_answers`: mean number of distinct answers among those samples, a collapse guard (a model trained
  on its own outputs tends to lose diversity);
- `pass_at_k`: share of prompts with at least one correct sample (in `metrics` only).

Both models see the same sampling seed, so their difference is the weights, not the dice. When candidate and
champion are the same URI (iteration 1 before any training, or a no-op), the model is evaluated once.

Writes `results.json` and a manifest whose `series` are the labelled `selfimprove_eval_*` samples (what the
stage pushes to the Pushgateway named by `pushgateway`, and what local gates read) and whose `metrics` are
flat scalars, including `candidate_score` and `champion_score` (first dataset, greedy) for tables. Before the
candidate is measured, each of its files is checked (size and sha256) against the optimize manifest, and the
manifest's own sha256 is recorded as `verified_manifest_sha256`: a promotion promotes only that checkpoint.
"""

from __future__ import annotations

import gc
import json
import logging
import re
from dataclasses import asdict, dataclass
from typing import Any

from sil_stages.contract import EvalDatasetConfig, EvaluateConfig, Manifest, MetricSample
from sil_stages.errors import StageInputError
from sil_stages.generation import GenerationEngine, SamplingRequest, make_engine
from sil_stages.manifest import StageOutputs
from sil_stages.models import resolve_model, resolve_verified
from sil_stages.pushgateway import push
from sil_stages.records import Record, read_jsonl, require_field
from sil_stages.scoring import (
    CORRECT,
    Verifier,
    compile_pattern,
    extract_answer,
    majority_vote,
    make_verifier,
)
from sil_stages.seeding import derive_seed, seed_everything
from sil_stages.store import Store

log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
METRIC_PREFIX = "selfimprove_eval_"
SERIES = ("score", "self_consistency_score", "distinct_answers")
"""The scores that become labelled series (`selfimprove_eval_<name>`)."""
MODELS = ("candidate", "champion")


@dataclass(frozen=True)
class Scores:
    score: float
    self_consistency_score: float | None = None
    distinct_answers: float | None = None
    pass_at_k: float | None = None


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def score_dataset(
    engine: GenerationEngine,
    records: list[Record],
    config: EvaluateConfig,
    verifier: Verifier,
    pattern: re.Pattern[str] | None,
    seed: int,
) -> Scores:
    """Greedy accuracy and, with self-consistency, the sampled scores of one model on one dataset."""
    prompts = [str(record["prompt"]) for record in records]
    greedy_request = SamplingRequest(n=1, temperature=0.0, max_new_tokens=config.max_new_tokens)
    greedy = engine.generate(prompts, greedy_request)
    correct = [
        float(verifier(prompt, outs[0], record) >= CORRECT)
        for prompt, outs, record in zip(prompts, greedy, records, strict=True)
    ]
    refinement = config.refinement
    if refinement.method != "self-consistency" or refinement.samples < 1:
        return Scores(score=_mean(correct))

    request = SamplingRequest(
        n=refinement.samples,
        temperature=refinement.temperature,
        max_new_tokens=config.max_new_tokens,
        seed=seed,
    )
    seed_everything(seed)
    sampled = engine.generate(prompts, request)
    consistent: list[float] = []
    distinct: list[float] = []
    any_correct: list[float] = []
    for prompt, completions, record in zip(prompts, sampled, records, strict=True):
        answers = [extract_answer(completion, pattern) for completion in completions]
        vote = majority_vote(answers)
        distinct.append(float(vote.distinct))
        verdicts = [verifier(prompt, completion, record) >= CORRECT for completion in completions]
        any_correct.append(float(any(verdicts)))
        # The majority answer is judged through one completion that gave it, so user verifiers work too.
        voted = next((c for c, a in zip(completions, answers, strict=True) if a == vote.answer), None)
        consistent.append(float(voted is not None and verifier(prompt, voted, record) >= CORRECT))
    return Scores(
        score=_mean(correct),
        self_consistency_score=_mean(consistent),
        distinct_answers=_mean(distinct),
        pass_at_k=_mean(any_correct),
    )


def load_datasets(store: Store, datasets: tuple[EvalDatasetConfig, ...]) -> dict[str, list[Record]]:
    if not datasets:
        raise StageInputError("datasets: empty; name at least one held-out dataset with prompt and answer")
    loaded: dict[str, list[Record]] = {}
    for index, dataset in enumerate(datasets):
        field = f"datasets[{index}].uri"
        records = read_jsonl(store, dataset.uri, field=field)
        if not records:
            raise StageInputError(f"{field}: {dataset.uri} holds no records")
        require_field(records, "prompt", uri=dataset.uri, field=field)
        loaded[dataset.name] = records
    return loaded


def series_for(config: EvaluateConfig, results: dict[str, dict[str, Scores]]) -> tuple[MetricSample, ...]:
    samples: list[MetricSample] = []
    for dataset, by_model in results.items():
        for model, scores in by_model.items():
            labels = {
                "namespace": config.namespace,
                "loop": config.loop,
                "iteration": str(config.iteration),
                "dataset": dataset,
                "model": model,
            }
            for name in SERIES:
                value = getattr(scores, name)
                if value is not None:
                    samples.append(MetricSample(name=f"{METRIC_PREFIX}{name}", labels=labels, value=value))
    return tuple(samples)


def flat_metrics(results: dict[str, dict[str, Scores]]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    first = next(iter(results))
    for model in MODELS:
        metrics[f"{model}_score"] = results[first][model].score
    for dataset, by_model in results.items():
        for model, scores in by_model.items():
            for name, value in asdict(scores).items():
                if value is not None:
                    metrics[f"{dataset}/{model}/{name}"] = float(value)
    return metrics


def run(config: EvaluateConfig, store: Store) -> Manifest:
    outputs = StageOutputs(store, config.output_uri)
    datasets = load_datasets(store, config.datasets)
    pattern = compile_pattern(config.answer_pattern, field="answer_pattern")
    verifier = make_verifier(config.verifier, config.answer_pattern, field="verifier", pattern_field="answer_pattern")
    uris = {"candidate": config.candidate_uri, "champion": config.champion_uri}
    models = ["candidate"] if config.candidate_uri == config.champion_uri else list(MODELS)

    results: dict[str, dict[str, Scores]] = {name: {} for name in datasets}
    verified: str | None = None
    for model in models:
        if model == "candidate":
            candidate = resolve_verified(store, uris[model], field="candidate_uri")
            path, verified = candidate.path, candidate.manifest_sha256
        else:
            path = resolve_model(store, uris[model], field=f"{model}_uri")
        engine = make_engine(config.engine, path, batch_size=config.batch_size, progress=f"evaluate {model}")
        for name, records in datasets.items():
            seed = derive_seed(config.seed, config.iteration, f"evaluate:{name}")
            results[name][model] = score_dataset(engine, records, config, verifier, pattern, seed)
            log.info("%s on %s: %s", model, name, results[name][model])
        del engine
        gc.collect()
    if models == ["candidate"]:
        for by_model in results.values():
            by_model["champion"] = by_model["candidate"]

    document: dict[str, Any] = {
        "candidate_uri": config.candidate_uri,
        "champion_uri": config.champion_uri,
        "same_model": models == ["candidate"],
        "datasets": {name: {m: asdict(s) for m, s in by_model.items()} for name, by_model in results.items()},
    }
    outputs.write_text(RESULTS_FILE, json.dumps(document, indent=2) + "\n")
    series = series_for(config, results)
    if config.pushgateway:
        # Before the manifest: a failed push fails the stage (exit 1), and the retried Job pushes again.
        grouping = {"namespace": config.namespace, "loop": config.loop, "iteration": str(config.iteration)}
        push(config.pushgateway, series, grouping)
        log.info("pushed %d series to %s", len(series), config.pushgateway)
    return outputs.seal(
        stage="evaluate",
        loop=config.loop,
        iteration=config.iteration,
        metrics=flat_metrics(results),
        series=series,
        verified_manifest_sha256=verified,
    )
