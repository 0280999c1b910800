"""The names evaluate publishes its numbers under: the Prometheus series, the manifest's flat metrics and findings.

Gates, alerts, dashboards and the end-of-run table read these names, so they are made in one place from the
scores (`scoring.Scores`) and the guards across models (`comparison.DatasetGuards`): `series_for` gives the
labelled `selfimprove_eval_*` / `selfimprove_acquire_*` samples (pushed to the Pushgateway, and what local gates
read), `flat_metrics` the `<dataset>/<model>/<name>` scalars, `findings_for` the named contaminated items.
"""

from __future__ import annotations

from dataclasses import asdict, fields

from sil_stages.core.contract import EvaluateConfig, MetricSample
from sil_stages.evaluate.comparison import DatasetGuards
from sil_stages.evaluate.measurement import MODELS
from sil_stages.evaluate.scoring import Scores

METRIC_PREFIX = "selfimprove_eval_"
ACQUIRE_PREFIX = "selfimprove_acquire_"
NAMED_ITEMS_LIMIT = 50
"""Contaminated items named in the manifest findings per dataset (results.json lists them all)."""
NAMED_PROMPT_CHARS = 80
"""A named item's prompt is cut to this many characters in the findings."""

LABELLED = frozenset({"pass_at", "self_refine"})
"""Scores with one value per k or per round: an extra label on the series, a suffix on the flat metrics."""
NOT_SERIES = frozenset({"pass_at_k"}) | LABELLED
SERIES = tuple(f.name for f in fields(Scores) if f.name not in NOT_SERIES)
"""The per-model scores that become labelled series (`selfimprove_eval_<name>`, label model)."""
COMPARISON_SERIES = ("delta", "delta_ci_low", "delta_ci_high", "p_value")
PRIMARY_GUARDS = ("distinct_1", "self_bleu", "proxy_gap")
"""Guards of the candidate on the first dataset that also get a flat metric `candidate_<name>`, for tables."""


def _labels(config: EvaluateConfig, **extra: str) -> dict[str, str]:
    return {"namespace": config.namespace, "loop": config.loop, "iteration": str(config.iteration), **extra}


def series_for(
    config: EvaluateConfig,
    results: dict[str, dict[str, Scores]],
    guards: dict[str, DatasetGuards] | None = None,
    acquire: dict[str, float] | None = None,
) -> tuple[MetricSample, ...]:
    """The labelled samples: per dataset and model (model `base`: output_length only), per dataset (comparison and
    guards), and per iteration (contamination_max, the acquire samples' diversity)."""
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
    """The manifest's flat scalars: `<dataset>/<model>/<name>`, `<dataset>/<name>`, `acquire/<name>`, and for
    tables the first dataset's headline numbers (`candidate_score`, `delta`, `candidate_<guard>`, ...)."""
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
