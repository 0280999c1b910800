"""One model on one dataset: greedy accuracy, the refinement scores and the per-model guards.

The evaluate stage loads each model once and calls `score_dataset` for every held-out dataset (see `measurement`);
what one call measures lives here, apart from the loop over models and from what is later made of the scores
(the comparisons across models in `comparison`, the series and flat metrics in `series`). `Judges` bundles how
answers are judged: the held-out verifier, the training scorer as the reward-hacking `Proxy`, and best-of-N's
selector.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sil_stages.core.chat import model_prompt, prompt_text
from sil_stages.core.contract import EvaluateConfig
from sil_stages.core.generation import GenerationEngine, SamplingRequest, TokenScorer, TokenStats
from sil_stages.core.records import Record
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
from sil_stages.evaluate.guards import diversity, mean_length
from sil_stages.evaluate.refinement import best_index, needs_samples, pass_at_k, pass_at_ks, self_refine
from sil_stages.select.scorers import PromptSamples, Score, Scorer, ScorerContext, make_scorer


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


@dataclass
class ModelRun:
    """What one model did on one dataset: the summary, and the per-prompt data the comparisons need."""

    scores: Scores
    correct: list[float]
    greedy: list[str]
    probes: list[str] = field(default_factory=list)
    """One temperature-1 sample per prompt (candidate only, engines that score tokens): the KL estimate's draws."""
    probe_stats: list[TokenStats] = field(default_factory=list)


def mean(values: list[float]) -> float:
    """The arithmetic mean; 0.0 for no values."""
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
        chat=config.chat,
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


@dataclass(frozen=True)
class Judges:
    """How answers are judged on every dataset: the held-out verifier (and the answer pattern its majority vote
    extracts with), the training scorer as the reward-hacking proxy, and best-of-N's selector."""

    verifier: Verifier
    pattern: re.Pattern[str] | None
    proxy: Proxy | None
    selector: Scorer | None


def make_judges(config: EvaluateConfig, store: Store) -> Judges:
    """The judges of this evaluation; a bad answer pattern, verifier, pass@k or scorer fails here, before any model
    is loaded."""
    pattern = compile_pattern(config.answer_pattern, field="answer_pattern")
    verifier = make_verifier(config.verifier, config.answer_pattern, field="verifier", pattern_field="answer_pattern")
    pass_at_ks(config.refinement)  # a k above the samples fails here, before any model is loaded
    proxy = make_proxy(config, store)
    selector = make_selector(config, store, proxy)
    return Judges(verifier=verifier, pattern=pattern, proxy=proxy, selector=selector)


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
    prompts = [prompt_text(record) for record in records]
    inputs = [model_prompt(record) for record in records]
    """What the model reads: formatted by the engine exactly as acquire's prompts (`sil_stages.core.chat`)."""
    greedy_request = SamplingRequest(n=1, temperature=0.0, max_new_tokens=config.max_new_tokens)
    greedy = [outs[0] for outs in engine.generate(inputs, greedy_request)]

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
        sampled = engine.generate(inputs, request)
        verdicts = [
            [verifier(prompt, completion, record) >= CORRECT for completion in completions]
            for prompt, completions, record in zip(prompts, sampled, records, strict=True)
        ]
        extra["pass_at"] = {k: mean([pass_at_k(len(v), sum(v), k) for v in verdicts]) for k in pass_at_ks(refinement)}
        if refinement.method == "self-consistency":
            extra.update(_self_consistency(prompts, sampled, records, verdicts, verifier, pattern))
    scored: list[list[Score]] | None = None
    if selector is not None and sampled is not None:
        scored = selector.score(_groups(prompts, sampled, records))
        picked = [best_index(scores) for scores in scored]
        extra["best_of_n_score"] = mean(
            [float(index is not None and v[index]) for index, v in zip(picked, verdicts, strict=True)]
        )
    if refinement.self_refine.rounds:
        rounds = self_refine(engine, prompts, greedy, refinement, config.max_new_tokens)
        extra["self_refine"] = tuple(mean(accuracy(answers)) for answers in rounds)
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
                proxy_score=mean(proxy_verdicts),
                proxy_agreement=mean([float(p == t) for p, t in zip(proxy_verdicts, truth, strict=True)]),
                proxy_gap=mean(proxy_verdicts) - mean(truth),
            )
    run = ModelRun(scores=Scores(score=mean(correct)), correct=correct, greedy=greedy)
    if probe and isinstance(engine, TokenScorer):
        probe_seed = derive_seed(seed, 0, "probe")
        seed_everything(probe_seed)
        request = SamplingRequest(n=1, temperature=1.0, max_new_tokens=config.max_new_tokens, seed=probe_seed)
        run.probes = [outs[0] for outs in engine.generate(inputs, request)]
        run.probe_stats = engine.token_stats(inputs, run.probes)
        extra["token_entropy"] = mean_token_entropy(run.probe_stats)
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
        "self_consistency_score": mean(consistent),
        "distinct_answers": mean(distinct),
        "pass_at_k": mean([float(any(v)) for v in verdicts]),
    }


def mean_token_entropy(stats: list[TokenStats]) -> float:
    """Mean next-token entropy (nats) over all the tokens of the scored samples; 0.0 for no tokens."""
    tokens = sum(s.tokens for s in stats)
    return sum(s.entropy for s in stats) / tokens if tokens else 0.0
