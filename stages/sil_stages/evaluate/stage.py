"""evaluate: measure the candidate against the champion on held-out data, the numbers promotion gates read.

For each dataset (JSONL with `prompt` and `answer`) and each model:
- `score`: accuracy of greedy decoding;
- `self_consistency_score`: accuracy of the majority answer of `refinement.samples` samples at
  `refinement.temperature` (self-consistency@k, inference-time refinement without new weights);
- `distinct_answers`: mean number of distinct answers among those samples;
- `pass_at_k`: share of prompts with at least one correct sample (in `metrics` only; the same as pass@samples);
- inference refinement (`sil_stages.evaluate.refinement`), on the same samples: `pass_at_k{k}`, the unbiased pass@k of
  Chen et al. for each k of `refinement.pass_at_k` (default 1 and `samples`; flat metrics `<dataset>/<model>/
  pass_at_<k>`); with `refinement.best_of_n`, `best_of_n_score`, the accuracy of the sample the select scorer ranks
  first (an oracle equal to pass@samples when that scorer is the held-out verifier); and with
  `refinement.self_refine.rounds`, `self_refine_score{round}`, the accuracy after each greedy critique-and-revise
  round (flat metrics `<dataset>/<model>/self_refine_round_<r>`).

And the evaluation layer around those scores (see `significance`, `guards`):
- paired significance, per dataset: `delta` (candidate minus champion greedy accuracy on the same prompts), its
  bootstrap interval `delta_ci_low` / `delta_ci_high` and `p_value` (exact McNemar);
- collapse guards, per dataset and model, on the sampled generations (the greedy ones without refinement):
  `distinct_1`, `distinct_2`, `self_bleu`, `output_length` (characters, greedy; also for model `base`), and per
  dataset `output_length_drift` (candidate minus base); with the transformers engine, `token_entropy` (mean
  next-token entropy, nats, on one temperature-1 sample of the candidate per prompt, for both models) and
  `kl_candidate_champion` (mean over prompts of log p_candidate - log p_champion of that sample: a Monte Carlo
  estimate of KL(candidate || champion) per answer, in nats); and `selfimprove_acquire_*` diversity of this
  iteration's samples;
- reward-hacking guard, when the training scorer is not the held-out verifier: `proxy_score` (the sampled answers,
  else the greedy ones, judged by the training scorer as select judges them: for a majority vote, agreement with
  the prompt's majority answer), `proxy_agreement` with the held-out verifier on the same answers and `proxy_gap`
  = proxy_score minus the held-out accuracy of those same answers; and its trend across iterations, per dataset
  (see `gaptrend`): `proxy_gap_change` (the candidate's gap minus the previous iteration's candidate's) and
  `proxy_gap_growth_streak` (consecutive iterations, ending with this one, in which it grew);
- contamination, per dataset: the share of items whose prompt overlaps the selected training data
  (`contamination`, `contaminated_items`, and `contamination_max` over datasets, what the evaluate-contamination
  gate reads); the items are in results.json and named in the manifest's `findings` (`<dataset>/contaminated`:
  `<item number>: <prompt>`), which the Rejected event and the end-of-run table show.

Both models see the same sampling seed, so their difference is the weights, not the dice. When candidate and
champion are the same URI (iteration 1 before any training, or a no-op), the model is evaluated once.

Writes `results.json` and a manifest whose `series` are the labelled `selfimprove_eval_*` samples (what the
stage pushes to the Pushgateway named by `pushgateway`, and what local gates read) and whose `metrics` are
flat scalars, including `candidate_score` and `champion_score` (first dataset, greedy), `delta`,
`delta_ci_low`, `delta_ci_high`, `p_value`, `kl_candidate_champion`, `proxy_gap_change`, `proxy_gap_growth_streak`
and `candidate_<guard>` (first dataset) and
`contamination_max`, for tables. Before the candidate is measured, each of its files is checked (size and sha256)
against the optimize manifest, and the manifest's own sha256 is recorded as `verified_manifest_sha256`: a promotion
promotes only that checkpoint.
"""

from __future__ import annotations

import gc
import json
import logging
import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from sil_stages.core.contract import EvalDatasetConfig, EvaluateConfig, Manifest, MetricSample
from sil_stages.core.engines import make_engine
from sil_stages.core.errors import StageInputError
from sil_stages.core.generation import GenerationEngine, SamplingRequest, TokenScorer, TokenStats
from sil_stages.core.manifest import StageOutputs
from sil_stages.core.models import resolve_model, resolve_verified
from sil_stages.core.pushgateway import push_stage
from sil_stages.core.records import Record, read_jsonl, require_field
from sil_stages.core.scoring import (
    CORRECT,
    Verifier,
    compile_pattern,
    extract_answer,
    majority_vote,
    make_verifier,
)
from sil_stages.core.seeding import derive_seed, seed_everything
from sil_stages.core.settings import Scorer as ScorerSettings
from sil_stages.core.store import Store
from sil_stages.evaluate.gaptrend import GapTrend, read_previous_gaps, trend
from sil_stages.evaluate.guards import (
    ContaminatedItem,
    TrainingIndex,
    contaminated_items,
    diversity,
    mean_length,
)
from sil_stages.evaluate.refinement import best_index, needs_samples, pass_at_k, pass_at_ks, self_refine
from sil_stages.evaluate.significance import PairedComparison, compare
from sil_stages.select.scorers import PromptSamples, Score, Scorer, ScorerContext, make_scorer

log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
METRIC_PREFIX = "selfimprove_eval_"
ACQUIRE_PREFIX = "selfimprove_acquire_"
MODELS = ("candidate", "champion")
NAMED_ITEMS_LIMIT = 50
"""Contaminated items named in the manifest findings per dataset (results.json lists them all)."""
NAMED_PROMPT_CHARS = 80
"""A named item's prompt is cut to this many characters in the findings."""


@dataclass(frozen=True)
class Scores:
    """One model on one dataset. Every field but pass_at_k becomes a series `selfimprove_eval_<name>`."""

    score: float
    self_consistency_score: float | None = None
    distinct_answers: float | None = None
    pass_at_k: float | None = None
    best_of_n_score: float | None = None
    distinct_1: float | None = None
    distinct_2: float | None = None
    self_bleu: float | None = None
    output_length: float | None = None
    token_entropy: float | None = None
    proxy_score: float | None = None
    proxy_agreement: float | None = None
    proxy_gap: float | None = None
    pass_at: dict[int, float] = field(default_factory=dict)
    """k -> unbiased pass@k on the refinement samples: series `selfimprove_eval_pass_at_k{k}`."""
    self_refine: tuple[float, ...] = ()
    """The accuracy after each self-refine round, round 1 first: series `selfimprove_eval_self_refine_score{round}`."""


LABELLED = frozenset({"pass_at", "self_refine"})
"""Scores with one value per k or per round: an extra label on the series, a suffix on the flat metrics."""
NOT_SERIES = frozenset({"pass_at_k"}) | LABELLED
SERIES = tuple(f.name for f in fields(Scores) if f.name not in NOT_SERIES)
"""The per-model scores that become labelled series (`selfimprove_eval_<name>`, label model)."""
COMPARISON_SERIES = ("delta", "delta_ci_low", "delta_ci_high", "p_value")
PRIMARY_GUARDS = ("distinct_1", "self_bleu", "proxy_gap")
"""Guards of the candidate on the first dataset that also get a flat metric `candidate_<name>`, for tables."""


@dataclass
class ModelRun:
    """What one model did on one dataset: the summary, and the per-prompt data the comparisons need."""

    scores: Scores
    correct: list[float]
    greedy: list[str]
    probes: list[str] = field(default_factory=list)
    """One temperature-1 sample per prompt (candidate only, engines that score tokens): the KL estimate's draws."""
    probe_stats: list[TokenStats] = field(default_factory=list)


@dataclass
class DatasetGuards:
    """Per dataset, across models: the comparison and the guards that need both models (or the base)."""

    comparison: PairedComparison
    kl_candidate_champion: float | None = None
    output_length_drift: float | None = None
    contamination: float | None = None
    contaminated: list[ContaminatedItem] = field(default_factory=list)
    proxy_gap_trend: GapTrend | None = None


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


@dataclass(frozen=True)
class Proxy:
    """The training scorer, applied to held-out answers (reward-hacking guard).

    It judges what select would judge: the sampled answers (all k of each prompt) when there are samples, else the
    greedy ones, with the registered scorer select uses (`sil_stages.select.scorers`); an answer passes when select
    would keep it on score (at least `select.keep.minScore`).
    """

    scorer: Scorer
    min_score: float

    def verdicts(self, prompts: list[str], answers: list[list[str]], records: list[Record]) -> list[float] | None:
        """One verdict per answer, flattened in prompt order; None when the scorer scores none of them (no vote)."""
        return self.judge(self.scorer.score(_groups(prompts, answers, records)))

    def judge(self, scored: list[list[Score]]) -> list[float] | None:
        """The verdicts of scores this scorer gave (best-of-N shares them: the samples are scored once)."""
        scores = [score.value for group in scored for score in group]
        if all(value is None for value in scores):
            return None
        return [float(value is not None and value >= self.min_score) for value in scores]


def _groups(prompts: list[str], answers: list[list[str]], records: list[Record]) -> list[PromptSamples]:
    return [
        PromptSamples(prompt, tuple(samples), record)
        for prompt, samples, record in zip(prompts, answers, records, strict=True)
    ]


def _scorer_context(config: EvaluateConfig, store: Store, settings: ScorerSettings, field: str) -> ScorerContext:
    return ScorerContext(
        settings=settings,
        field=field,
        store=store,
        champion_uri=config.champion_uri,
        seed=derive_seed(config.seed, config.iteration, "proxy"),
        engine=config.engine,
    )


def make_proxy(config: EvaluateConfig, store: Store) -> Proxy | None:
    if config.training_scorer is None:
        return None
    context = _scorer_context(config, store, config.training_scorer, "training_scorer")
    return Proxy(make_scorer(context), config.training_min_score)


def make_selector(config: EvaluateConfig, store: Store, proxy: Proxy | None) -> Scorer | None:
    """Best-of-N's scorer: the loop's select scorer (the proxy's, so the samples are scored once), or, when that is
    the held-out verifier, the verifier itself: then best-of-N is an oracle and equals pass@samples."""
    if not config.refinement.best_of_n:
        return None
    if proxy is not None:
        return proxy.scorer
    settings = ScorerSettings(type="verifier", verifier=config.verifier, answer_pattern=config.answer_pattern)
    return make_scorer(_scorer_context(config, store, settings, "evaluate"))


def score_dataset(
    engine: GenerationEngine,
    records: list[Record],
    config: EvaluateConfig,
    verifier: Verifier,
    pattern: re.Pattern[str] | None,
    seed: int,
    proxy: Proxy | None = None,
    probe: bool = False,
    selector: Scorer | None = None,
) -> ModelRun:
    """Greedy accuracy, the refinement scores (self-consistency, pass@k, best-of-N by `selector`, self-refine) and
    the guards of one model on one dataset."""
    prompts = [str(record["prompt"]) for record in records]
    greedy_request = SamplingRequest(n=1, temperature=0.0, max_new_tokens=config.max_new_tokens)
    greedy = [outs[0] for outs in engine.generate(prompts, greedy_request)]

    def accuracy(answers: list[str]) -> list[float]:
        return [
            float(verifier(prompt, text, record) >= CORRECT)
            for prompt, text, record in zip(prompts, answers, records, strict=True)
        ]

    correct = accuracy(greedy)
    refinement = config.refinement
    sampled: list[list[str]] | None = None
    verdicts: list[list[bool]] = []
    extra: dict[str, Any] = {}
    if needs_samples(refinement):
        request = SamplingRequest(
            n=refinement.samples,
            temperature=refinement.temperature,
            max_new_tokens=config.max_new_tokens,
            seed=seed,
        )
        seed_everything(seed)
        sampled = engine.generate(prompts, request)
        verdicts = [
            [verifier(prompt, completion, record) >= CORRECT for completion in completions]
            for prompt, completions, record in zip(prompts, sampled, records, strict=True)
        ]
        extra["pass_at"] = {k: _mean([pass_at_k(len(v), sum(v), k) for v in verdicts]) for k in pass_at_ks(refinement)}
        if refinement.method == "self-consistency":
            extra.update(_self_consistency(prompts, sampled, records, verdicts, verifier, pattern))
    scored: list[list[Score]] | None = None
    if selector is not None and sampled is not None:
        scored = selector.score(_groups(prompts, sampled, records))
        picked = [best_index(scores) for scores in scored]
        extra["best_of_n_score"] = _mean(
            [float(index is not None and v[index]) for index, v in zip(picked, verdicts, strict=True)]
        )
    if refinement.self_refine.rounds:
        rounds = self_refine(engine, prompts, greedy, refinement, config.max_new_tokens)
        extra["self_refine"] = tuple(_mean(accuracy(answers)) for answers in rounds)
    generations = [text for samples in sampled for text in samples] if sampled is not None else greedy
    spread = diversity(generations, seed=seed)
    extra.update(
        distinct_1=spread.distinct_1,
        distinct_2=spread.distinct_2,
        self_bleu=spread.self_bleu,
        output_length=mean_length(greedy),
    )
    if proxy is not None:
        judged = sampled if sampled is not None else [[text] for text in greedy]
        shared = scored is not None and selector is proxy.scorer
        proxy_scores = (
            scored if shared and scored is not None else proxy.scorer.score(_groups(prompts, judged, records))
        )
        proxy_verdicts = proxy.judge(proxy_scores)
        if proxy_verdicts is not None:
            truth = [
                float(verifier(prompt, text, record) >= CORRECT)
                for prompt, samples, record in zip(prompts, judged, records, strict=True)
                for text in samples
            ]
            extra.update(
                proxy_score=_mean(proxy_verdicts),
                proxy_agreement=_mean([float(p == t) for p, t in zip(proxy_verdicts, truth, strict=True)]),
                proxy_gap=_mean(proxy_verdicts) - _mean(truth),
            )
    run = ModelRun(scores=Scores(score=_mean(correct)), correct=correct, greedy=greedy)
    if probe and isinstance(engine, TokenScorer):
        probe_seed = derive_seed(seed, 0, "probe")
        seed_everything(probe_seed)
        request = SamplingRequest(n=1, temperature=1.0, max_new_tokens=config.max_new_tokens, seed=probe_seed)
        run.probes = [outs[0] for outs in engine.generate(prompts, request)]
        run.probe_stats = engine.token_stats(prompts, run.probes)
        extra["token_entropy"] = _token_entropy(run.probe_stats)
    run.scores = Scores(score=run.scores.score, **extra)
    return run


def _self_consistency(
    prompts: list[str],
    sampled: list[list[str]],
    records: list[Record],
    verdicts: list[list[bool]],
    verifier: Verifier,
    pattern: re.Pattern[str] | None,
) -> dict[str, float]:
    """Self-consistency@k (the majority answer's accuracy), distinct answers, and the share of prompts with a
    correct sample (`pass_at_k`, that is pass@samples)."""
    consistent: list[float] = []
    distinct: list[float] = []
    for prompt, completions, record in zip(prompts, sampled, records, strict=True):
        answers = [extract_answer(completion, pattern) for completion in completions]
        vote = majority_vote(answers)
        distinct.append(float(vote.distinct))
        # The majority answer is judged through one completion that gave it, so user verifiers work too.
        voted = next((c for c, a in zip(completions, answers, strict=True) if a == vote.answer), None)
        consistent.append(float(voted is not None and verifier(prompt, voted, record) >= CORRECT))
    return {
        "self_consistency_score": _mean(consistent),
        "distinct_answers": _mean(distinct),
        "pass_at_k": _mean([float(any(v)) for v in verdicts]),
    }


def _token_entropy(stats: list[TokenStats]) -> float:
    tokens = sum(s.tokens for s in stats)
    return sum(s.entropy for s in stats) / tokens if tokens else 0.0


def load_datasets(store: Store, datasets: tuple[EvalDatasetConfig, ...]) -> dict[str, list[Record]]:
    if not datasets:
        raise StageInputError("datasets: empty; name at least one held-out dataset with prompt and answer")
    loaded: dict[str, list[Record]] = {}
    for index, dataset in enumerate(datasets):
        field_name = f"datasets[{index}].uri"
        records = read_jsonl(store, dataset.uri, field=field_name)
        if not records:
            raise StageInputError(f"{field_name}: {dataset.uri} holds no records")
        require_field(records, "prompt", uri=dataset.uri, field=field_name)
        loaded[dataset.name] = records
    return loaded


def _labels(config: EvaluateConfig, **extra: str) -> dict[str, str]:
    return {"namespace": config.namespace, "loop": config.loop, "iteration": str(config.iteration), **extra}


def series_for(
    config: EvaluateConfig,
    results: dict[str, dict[str, Scores]],
    guards: dict[str, DatasetGuards] | None = None,
    acquire: dict[str, float] | None = None,
) -> tuple[MetricSample, ...]:
    samples: list[MetricSample] = []
    for dataset, by_model in results.items():
        for model, scores in by_model.items():
            labels = _labels(config, dataset=dataset, model=model)
            for name in SERIES:
                value = getattr(scores, name)
                if value is not None and (model != "base" or name == "output_length"):
                    samples.append(MetricSample(name=f"{METRIC_PREFIX}{name}", labels=labels, value=value))
            for k, value in scores.pass_at.items():
                samples.append(
                    MetricSample(name=f"{METRIC_PREFIX}pass_at_k", labels={**labels, "k": str(k)}, value=value)
                )
            for round_, value in enumerate(scores.self_refine, start=1):
                samples.append(
                    MetricSample(
                        name=f"{METRIC_PREFIX}self_refine_score", labels={**labels, "round": str(round_)}, value=value
                    )
                )
    for dataset, guard in (guards or {}).items():
        labels = _labels(config, dataset=dataset)
        for name, value in _dataset_values(guard).items():
            samples.append(MetricSample(name=f"{METRIC_PREFIX}{name}", labels=labels, value=value))
    contamination = [g.contamination for g in (guards or {}).values() if g.contamination is not None]
    if contamination:
        samples.append(
            MetricSample(name=f"{METRIC_PREFIX}contamination_max", labels=_labels(config), value=max(contamination))
        )
    for name, value in (acquire or {}).items():
        samples.append(MetricSample(name=f"{ACQUIRE_PREFIX}{name}", labels=_labels(config), value=value))
    return tuple(samples)


def _dataset_values(guard: DatasetGuards) -> dict[str, float]:
    comparison = guard.comparison
    values = {
        "delta": comparison.delta,
        "delta_ci_low": comparison.ci_low,
        "delta_ci_high": comparison.ci_high,
        "p_value": comparison.p_value,
    }
    if guard.kl_candidate_champion is not None:
        values["kl_candidate_champion"] = guard.kl_candidate_champion
    if guard.output_length_drift is not None:
        values["output_length_drift"] = guard.output_length_drift
    if guard.contamination is not None:
        values["contamination"] = guard.contamination
        values["contaminated_items"] = float(len(guard.contaminated))
    if guard.proxy_gap_trend is not None:
        if guard.proxy_gap_trend.change is not None:
            values["proxy_gap_change"] = guard.proxy_gap_trend.change
        values["proxy_gap_growth_streak"] = float(guard.proxy_gap_trend.growth_streak)
    return values


def findings_for(guards: dict[str, DatasetGuards]) -> dict[str, list[str]]:
    """The manifest's named items: `<dataset>/contaminated` -> `<item number>: <prompt>` (at most
    NAMED_ITEMS_LIMIT per dataset)."""
    findings: dict[str, list[str]] = {}
    for dataset, guard in guards.items():
        if guard.contaminated:
            findings[f"{dataset}/contaminated"] = [
                f"{item.item}: {item.prompt[:NAMED_PROMPT_CHARS]}" for item in guard.contaminated[:NAMED_ITEMS_LIMIT]
            ]
    return findings


def flat_metrics(
    results: dict[str, dict[str, Scores]],
    guards: dict[str, DatasetGuards] | None = None,
    acquire: dict[str, float] | None = None,
) -> dict[str, float]:
    metrics: dict[str, float] = {}
    first = next(iter(results))
    for model in MODELS:
        metrics[f"{model}_score"] = results[first][model].score
    for dataset, by_model in results.items():
        for model, scores in by_model.items():
            for name, value in asdict(scores).items():
                if name not in LABELLED and value is not None and (model != "base" or name == "output_length"):
                    metrics[f"{dataset}/{model}/{name}"] = float(value)
            for k, value in scores.pass_at.items():
                metrics[f"{dataset}/{model}/pass_at_{k}"] = value
            for round_, value in enumerate(scores.self_refine, start=1):
                metrics[f"{dataset}/{model}/self_refine_round_{round_}"] = value
    for dataset, guard in (guards or {}).items():
        values = _dataset_values(guard)
        for name, value in values.items():
            metrics[f"{dataset}/{name}"] = value
        if dataset == first:
            metrics.update({name: values[name] for name in COMPARISON_SERIES})
            for name in ("kl_candidate_champion", "proxy_gap_change", "proxy_gap_growth_streak"):
                if name in values:
                    metrics[name] = values[name]
    for name in PRIMARY_GUARDS:
        value = getattr(results[first]["candidate"], name)
        if value is not None:
            metrics[f"candidate_{name}"] = float(value)
    contamination = [g.contamination for g in (guards or {}).values() if g.contamination is not None]
    if contamination:
        metrics["contamination_max"] = max(contamination)
    for name, value in (acquire or {}).items():
        metrics[f"acquire/{name}"] = value
    return metrics


def acquire_diversity(store: Store, config: EvaluateConfig) -> dict[str, float]:
    """Diversity of this iteration's acquire samples (the champion's own generations the candidate learns from)."""
    if config.samples_uri is None or not store.exists(config.samples_uri):
        return {}
    records = read_jsonl(store, config.samples_uri, field="samples_uri")
    texts = [str(text) for record in records for text in record.get("completions", [])]
    spread = diversity(texts, seed=derive_seed(config.seed, config.iteration, "acquire-diversity"))
    return {"distinct_1": spread.distinct_1, "distinct_2": spread.distinct_2, "self_bleu": spread.self_bleu}


def training_index(store: Store, config: EvaluateConfig) -> TrainingIndex | None:
    """The n-grams of the selected training data's prompts and completions; None when there is none to check."""
    if config.train_uri is None or not store.exists(config.train_uri):
        return None
    records = read_jsonl(store, config.train_uri, field="train_uri")
    texts = [str(record.get(key, "")) for record in records for key in ("prompt", "completion", "chosen", "rejected")]
    return TrainingIndex([text for text in texts if text], n=config.contamination.ngram)


def _kl(candidate: ModelRun, champion_stats: list[TokenStats]) -> float:
    differences = [c.logprob - h.logprob for c, h in zip(candidate.probe_stats, champion_stats, strict=True)]
    return _mean(differences)


def run(config: EvaluateConfig, store: Store) -> Manifest:
    outputs = StageOutputs(store, config.output_uri)
    datasets = load_datasets(store, config.datasets)
    pattern = compile_pattern(config.answer_pattern, field="answer_pattern")
    verifier = make_verifier(config.verifier, config.answer_pattern, field="verifier", pattern_field="answer_pattern")
    pass_at_ks(config.refinement)  # a k above the samples fails here, before any model is loaded
    proxy = make_proxy(config, store)
    selector = make_selector(config, store, proxy)
    uris = {"candidate": config.candidate_uri, "champion": config.champion_uri}
    models = ["candidate"] if config.candidate_uri == config.champion_uri else list(MODELS)

    runs: dict[str, dict[str, ModelRun]] = {name: {} for name in datasets}
    champion_stats: dict[str, list[TokenStats]] = {}
    verified: str | None = None
    for model in models:
        if model == "candidate":
            checked = resolve_verified(store, uris[model], field="candidate_uri")
            path, verified = checked.path, checked.manifest_sha256
        else:
            path = resolve_model(store, uris[model], field=f"{model}_uri")
        engine = make_engine(config.engine, path, batch_size=config.batch_size, progress=f"evaluate {model}")
        for name, records in datasets.items():
            seed = derive_seed(config.seed, config.iteration, f"evaluate:{name}")
            runs[name][model] = score_dataset(
                engine, records, config, verifier, pattern, seed, proxy, probe=model == "candidate", selector=selector
            )
            probes = runs[name]["candidate"].probes
            if model == "champion" and probes and isinstance(engine, TokenScorer):
                stats = engine.token_stats([str(r["prompt"]) for r in records], probes)
                champion_stats[name] = stats
                champion_run = runs[name]["champion"]
                champion_run.scores = replace(champion_run.scores, token_entropy=_token_entropy(stats))
            log.info("%s on %s: %s", model, name, runs[name][model].scores)
        del engine
        gc.collect()
    if models == ["candidate"]:
        for by_model in runs.values():
            by_model["champion"] = by_model["candidate"]
        champion_stats = {name: by_model["candidate"].probe_stats for name, by_model in runs.items()}
    base_lengths = base_output_lengths(store, config, datasets, runs)

    index = training_index(store, config)
    previous_gaps = read_previous_gaps(store, config.output_uri, config.iteration)
    guards: dict[str, DatasetGuards] = {}
    for name, by_model in runs.items():
        candidate, champion = by_model["candidate"], by_model["champion"]
        comparison = compare(
            candidate.correct,
            champion.correct,
            seed=derive_seed(config.seed, config.iteration, f"bootstrap:{name}"),
            resamples=config.significance.resamples,
            confidence=config.significance.confidence,
        )
        guard = DatasetGuards(comparison=comparison)
        if candidate.probe_stats and name in champion_stats:
            guard.kl_candidate_champion = _kl(candidate, champion_stats[name])
        if name in base_lengths:
            guard.output_length_drift = mean_length(candidate.greedy) - base_lengths[name]
        gap = candidate.scores.proxy_gap
        if gap is not None:
            guard.proxy_gap_trend = trend(gap, previous_gaps.get(name))
        if index is not None:
            guard.contaminated = contaminated_items(index, [str(r["prompt"]) for r in datasets[name]])
            guard.contamination = len(guard.contaminated) / len(datasets[name])
        guards[name] = guard
        log.info(
            "%s: candidate - champion %+.4f [%.4f, %.4f], p=%.4g",
            name,
            comparison.delta,
            comparison.ci_low,
            comparison.ci_high,
            comparison.p_value,
        )
    acquire = acquire_diversity(store, config)

    results: dict[str, dict[str, Scores]] = {
        name: {model: run.scores for model, run in by_model.items()} for name, by_model in runs.items()
    }
    for name, length in base_lengths.items():
        results[name]["base"] = Scores(score=float("nan"), output_length=length)
    document: dict[str, Any] = {
        "candidate_uri": config.candidate_uri,
        "champion_uri": config.champion_uri,
        "same_model": models == ["candidate"],
        "datasets": {
            name: {m: asdict(s) for m, s in by_model.items() if m != "base"} for name, by_model in results.items()
        },
        "comparison": {name: asdict(guard.comparison) for name, guard in guards.items()},
        "guards": {
            name: {
                "kl_candidate_champion": guard.kl_candidate_champion,
                "output_length_drift": guard.output_length_drift,
                "base_output_length": base_lengths.get(name),
                "contamination": guard.contamination,
                "contaminated_items": [asdict(item) for item in guard.contaminated],
                "proxy_gap_trend": asdict(guard.proxy_gap_trend) if guard.proxy_gap_trend else None,
            }
            for name, guard in guards.items()
        },
        "acquire": acquire,
    }
    outputs.write_text(RESULTS_FILE, json.dumps(document, indent=2) + "\n")
    series = series_for(config, results, guards, acquire)
    push_stage(config, series)
    return outputs.seal(
        stage="evaluate",
        loop=config.loop,
        iteration=config.iteration,
        metrics=flat_metrics(results, guards, acquire),
        series=series,
        verified_manifest_sha256=verified,
        findings=findings_for(guards),
    )


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
    engine = make_engine(config.engine, path, batch_size=config.batch_size, progress="evaluate base")
    request = SamplingRequest(n=1, temperature=0.0, max_new_tokens=config.max_new_tokens)
    lengths = {
        name: mean_length([outs[0] for outs in engine.generate([str(r["prompt"]) for r in records], request)])
        for name, records in datasets.items()
    }
    del engine
    gc.collect()
    return lengths
