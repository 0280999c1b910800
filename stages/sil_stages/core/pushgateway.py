"""Pushes evaluate's series to a Prometheus Pushgateway, where the operator's gates query them.

A batch Job lives too short to be scraped, so it pushes: one PUT per evaluate run, grouped by namespace, loop
and iteration, so that a retried Job replaces its own group and never touches another iteration's numbers.
Plain `urllib` and the text exposition format keep prometheus-client out of the stage image.
"""

from __future__ import annotations

import logging
import re
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from urllib.error import URLError
from urllib.parse import quote

from sil_stages.core.contract import AcquireConfig, EvaluateConfig, MetricSample, OptimizeConfig, SelectConfig

log = logging.getLogger(__name__)

JOB = "selfimprove_eval"

HELP = {
    "selfimprove_eval_score": "Held-out accuracy with greedy decoding, by dataset and model (candidate|champion).",
    "selfimprove_eval_self_consistency_score": "Held-out accuracy of the majority answer of k samples.",
    "selfimprove_eval_distinct_answers": "Mean number of distinct answers among the k samples of a prompt.",
    # inference refinement (what sampling more, or revising, gets without new weights)
    "selfimprove_eval_pass_at_k": "Unbiased pass@k (Chen et al. 2021) on the refinement samples, by dataset, model "
    "and k: the chance that one of k samples is correct by the held-out verifier.",
    "selfimprove_eval_best_of_n_score": "Held-out accuracy of the sample the select scorer ranks first among the "
    "refinement samples (best-of-N; an oracle equal to pass@n when that scorer is the held-out verifier).",
    "selfimprove_eval_self_refine_score": "Held-out accuracy after self-refine round `round` (the model revises its "
    "greedy answer with evaluate.refinement.selfRefine.template), by dataset and model.",
    # paired significance (candidate minus champion on the same prompts; no model label)
    "selfimprove_eval_delta": "Candidate minus champion greedy accuracy on the same prompts, by dataset.",
    "selfimprove_eval_delta_ci_low": "Lower bound of the paired bootstrap interval of candidate minus champion "
    "(evaluate.significance.confidence); above 0: the candidate is better beyond chance.",
    "selfimprove_eval_delta_ci_high": "Upper bound of the paired bootstrap interval of candidate minus champion.",
    "selfimprove_eval_p_value": "Two-sided p-value of candidate vs champion (exact McNemar for right/wrong scores).",
    # collapse guards
    "selfimprove_eval_distinct_1": "Distinct words / all words over the model's sampled answers (collapse guard: "
    "falls when outputs repeat).",
    "selfimprove_eval_distinct_2": "Distinct word bigrams / all bigrams over the model's sampled answers.",
    "selfimprove_eval_self_bleu": "Mean sacrebleu BLEU (0-1) of each sampled answer against the others (collapse "
    "guard: rises when outputs repeat).",
    "selfimprove_eval_output_length": "Mean greedy answer length in characters, by model (candidate|champion|base).",
    "selfimprove_eval_output_length_drift": "Candidate minus base model mean greedy answer length, in characters.",
    "selfimprove_eval_token_entropy": "Mean next-token entropy (nats) on the candidate's temperature-1 samples.",
    "selfimprove_eval_kl_candidate_champion": "Monte Carlo estimate of KL(candidate || champion) per answer, in nats, "
    "on the candidate's temperature-1 samples of the evaluation prompts.",
    # reward-hacking guard
    "selfimprove_eval_proxy_score": "Held-out sampled answers judged by the training scorer (vote, other verifier).",
    "selfimprove_eval_proxy_agreement": "Share of held-out answers where the training scorer agrees with the truth.",
    "selfimprove_eval_proxy_gap": "Training-scorer accuracy minus true accuracy of the same held-out answers "
    "(reward-hacking guard: grows when the training signal drifts from the objective).",
    "selfimprove_eval_proxy_gap_change": "The candidate's proxy gap minus the previous iteration's candidate's "
    "(reward-hacking trend; absent in the first iteration).",
    "selfimprove_eval_proxy_gap_growth_streak": "Consecutive iterations, ending with this one, in which the "
    "candidate's proxy gap grew (0: it did not grow this iteration).",
    # contamination
    "selfimprove_eval_contamination": "Share of evaluation items whose prompt overlaps this iteration's training data.",
    "selfimprove_eval_contaminated_items": "Evaluation items whose prompt overlaps this iteration's training data.",
    "selfimprove_eval_contamination_max": "Largest contamination share over the evaluation datasets (what "
    "evaluate.contamination.maxOverlap gates).",
    # the acquire samples of the iteration
    "selfimprove_acquire_temperature": "The temperature acquire sampled with this iteration: the fixed "
    "acquire.sampling.temperature, or the one its probe chose for temperature: auto.",
    "selfimprove_acquire_temperature_probe_seconds": "Seconds acquire spent probing temperatures for temperature: "
    "auto (0 for a fixed temperature).",
    "selfimprove_acquire_distinct_1": "Distinct words / all words over this iteration's acquire samples.",
    "selfimprove_acquire_distinct_2": "Distinct word bigrams / all bigrams over this iteration's acquire samples.",
    "selfimprove_acquire_self_bleu": "Mean self-BLEU (0-1) of this iteration's acquire samples.",
}


_NOT_ALLOWED = re.compile(r"[^a-zA-Z0-9_]")


def gauges(prefix: str, labels: Mapping[str, str], metrics: Mapping[str, float]) -> list[MetricSample]:
    """One series `<prefix><metric>` per manifest metric of a stage, every character Prometheus does not allow in a
    name turned into `_`."""
    return [
        MetricSample(name=prefix + _NOT_ALLOWED.sub("_", key), labels=dict(labels), value=value)
        for key, value in metrics.items()
    ]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


DEFAULT_HELP = "Evaluation metric of a self-improvement loop."


def exposition(series: Iterable[MetricSample], default_help: str = DEFAULT_HELP) -> str:
    """The Prometheus text format of `series`: every metric a gauge, samples grouped under one TYPE line."""
    by_name: dict[str, list[MetricSample]] = {}
    for sample in series:
        by_name.setdefault(sample.name, []).append(sample)
    lines: list[str] = []
    for name, samples in by_name.items():
        lines.append(f"# HELP {name} {HELP.get(name, default_help)}")
        lines.append(f"# TYPE {name} gauge")
        for sample in samples:
            labels = ",".join(f'{key}="{_escape(value)}"' for key, value in sorted(sample.labels.items()))
            lines.append(f"{name}{{{labels}}} {sample.value!r}")
    return "\n".join(lines) + "\n"


def group_url(address: str, grouping: Mapping[str, str], job: str = JOB) -> str:
    """`<address>/metrics/job/<job>/<key>/<value>...`, each path part URL-escaped."""
    path = "".join(f"/{quote(key, safe='')}/{quote(value, safe='')}" for key, value in grouping.items())
    return f"{address.rstrip('/')}/metrics/job/{quote(job, safe='')}{path}"


def push(
    address: str,
    series: Iterable[MetricSample],
    grouping: Mapping[str, str],
    timeout: float = 30.0,
    job: str = JOB,
    default_help: str = DEFAULT_HELP,
) -> None:
    """PUTs the series (replacing the group's previous push); raises `ConnectionError` when that fails.

    Each stage pushes under its own `job` (a PUT replaces the whole group, so evaluate and optimize must not share
    one)."""
    url = group_url(address, grouping, job)
    request = urllib.request.Request(
        url,
        data=exposition(series, default_help).encode("utf-8"),
        method="PUT",
        headers={"Content-Type": "text/plain; version=0.0.4"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except (URLError, OSError) as error:
        raise ConnectionError(f"pushgateway: cannot push to {url} ({error}); is the Pushgateway reachable?") from error


def stage_grouping(config: AcquireConfig | SelectConfig | OptimizeConfig | EvaluateConfig) -> dict[str, str]:
    """The Pushgateway group of a stage run: namespace, loop and iteration (each stage under its own job)."""
    return {"namespace": config.namespace, "loop": config.loop, "iteration": str(config.iteration)}


def push_stage(
    config: AcquireConfig | SelectConfig | OptimizeConfig | EvaluateConfig,
    series: Sequence[MetricSample],
    job: str = JOB,
    default_help: str = DEFAULT_HELP,
) -> None:
    """A stage's push of its series to `config.pushgateway` (nothing without one), grouped by the config's namespace,
    loop and iteration under the stage's own `job`.

    Every stage calls it before writing its manifest: a failed push fails the stage (exit 1) and the retried Job
    pushes again, replacing only its own group."""
    if config.pushgateway is None:
        return
    push(config.pushgateway, series, stage_grouping(config), job=job, default_help=default_help)
    log.info("pushed %d series to %s", len(series), config.pushgateway)
