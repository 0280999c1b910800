"""Per dataset, what needs both models (or the base, or other iterations): the guards across models.

Scoring (`scoring`) sees one model at a time; the paired significance of candidate against champion, the KL
estimate between them, the output-length drift from the base, the reward gap's trend across iterations and the
contamination of the held-out prompts by the training data are computed here, once both models are measured.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sil_stages.core.chat import prompt_text
from sil_stages.core.contract import EvaluateConfig
from sil_stages.core.generation import TokenStats
from sil_stages.core.records import Record
from sil_stages.core.seeding import derive_seed
from sil_stages.core.store import Store
from sil_stages.evaluate.gaptrend import GapTrend, read_previous_gaps, trend
from sil_stages.evaluate.guards import ContaminatedItem, contaminated_items, mean_length
from sil_stages.evaluate.harness import paired_values
from sil_stages.evaluate.inputs import training_index
from sil_stages.evaluate.measurement import Measurement
from sil_stages.evaluate.scoring import ModelRun, mean
from sil_stages.evaluate.significance import PairedComparison, compare

log = logging.getLogger(__name__)


@dataclass
class DatasetGuards:
    """Per dataset, across models: the comparison and the guards that need both models (or the base)."""

    comparison: PairedComparison
    kl_candidate_champion: float | None = None
    output_length_drift: float | None = None
    contamination: float | None = None
    contaminated: list[ContaminatedItem] = field(default_factory=list)
    proxy_gap_trend: GapTrend | None = None


def dataset_guards(
    config: EvaluateConfig,
    store: Store,
    datasets: dict[str, list[Record]],
    measured: Measurement,
    base_lengths: dict[str, float],
) -> dict[str, DatasetGuards]:
    """The guards of every dataset; reads the training data (contamination) and the earlier iterations' reward gaps
    (their trend) first."""
    index = training_index(store, config)
    previous_gaps = read_previous_gaps(store, config.output_uri, config.iteration)
    guards: dict[str, DatasetGuards] = {}
    for name, by_model in measured.runs.items():
        candidate, champion = by_model["candidate"], by_model["champion"]
        comparison = compare(
            candidate.correct,
            champion.correct,
            seed=derive_seed(config.seed, config.iteration, f"bootstrap:{name}"),
            resamples=config.significance.resamples,
            confidence=config.significance.confidence,
        )
        guard = DatasetGuards(comparison=comparison)
        if candidate.probe_stats and name in measured.champion_stats:
            guard.kl_candidate_champion = _kl(candidate, measured.champion_stats[name])
        if name in base_lengths:
            guard.output_length_drift = mean_length(candidate.greedy) - base_lengths[name]
        gap = candidate.scores.proxy_gap
        if gap is not None:
            guard.proxy_gap_trend = trend(gap, previous_gaps.get(name))
        if index is not None:
            guard.contaminated = contaminated_items(index, [prompt_text(r) for r in datasets[name]])
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
    return guards


def _kl(candidate: ModelRun, champion_stats: list[TokenStats]) -> float:
    """Monte Carlo KL(candidate || champion) per answer: the mean of log p_candidate - log p_champion over the
    candidate's probes."""
    differences = [c.logprob - h.logprob for c, h in zip(candidate.probe_stats, champion_stats, strict=True)]
    return mean(differences)


def harness_guards(config: EvaluateConfig, measured: Measurement) -> dict[str, DatasetGuards]:
    """Per lm-eval task: the paired comparison of the two models' per-item values (the same bootstrap and McNemar
    test as the JSONL datasets; McNemar when the metric is 0/1 per item, e.g. acc or exact_match)."""
    guards: dict[str, DatasetGuards] = {}
    for task, by_model in measured.harness.items():
        candidate, champion = paired_values(by_model["candidate"], by_model["champion"], task=task)
        comparison = compare(
            candidate,
            champion,
            seed=derive_seed(config.seed, config.iteration, f"bootstrap:{task}"),
            resamples=config.significance.resamples,
            confidence=config.significance.confidence,
        )
        guards[task] = DatasetGuards(comparison=comparison)
        log.info(
            "harness task %s: candidate - champion %+.4f [%.4f, %.4f], p=%.4g",
            task,
            comparison.delta,
            comparison.ci_low,
            comparison.ci_high,
            comparison.p_value,
        )
    return guards
