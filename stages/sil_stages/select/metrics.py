"""The select stage's report as Prometheus series, pushed to the Pushgateway evaluate pushes to.

Every manifest metric of select becomes one gauge `selfimprove_select_<name>` labelled with namespace, loop,
iteration and scorer, under its own job (`selfimprove_select`) so that evaluate's and optimize's pushes, grouped by
the same labels, do not replace it. The pass-rate histogram (`prompts_pass_rate/<bucket>` in the manifest) is one
series, `selfimprove_select_prompts_by_pass_rate`, with the bucket as its `pass_rate` label.
"""

from __future__ import annotations

import logging

from sil_stages.core.contract import MetricSample, SelectConfig
from sil_stages.core.pushgateway import gauges, push_stage

log = logging.getLogger(__name__)

JOB = "selfimprove_select"
PREFIX = "selfimprove_select_"
PASS_RATE_KEY = "prompts_pass_rate/"
PASS_RATE_SERIES = PREFIX + "prompts_by_pass_rate"
HELP = "Select stage metric of a self-improvement loop (counts, what each keep rule removed, score statistics)."


def select_series(config: SelectConfig, metrics: dict[str, float]) -> tuple[MetricSample, ...]:
    labels = {
        "namespace": config.namespace,
        "loop": config.loop,
        "iteration": str(config.iteration),
        "scorer": config.scorer.type,
    }
    histogram = {key: value for key, value in metrics.items() if key.startswith(PASS_RATE_KEY)}
    series = gauges(PREFIX, labels, {key: value for key, value in metrics.items() if key not in histogram})
    series += [
        MetricSample(name=PASS_RATE_SERIES, labels={**labels, "pass_rate": key[len(PASS_RATE_KEY) :]}, value=value)
        for key, value in histogram.items()
    ]
    return tuple(series)


def push_metrics(config: SelectConfig, metrics: dict[str, float]) -> None:
    """Pushes before the manifest is written (`push_stage`)."""
    push_stage(config, select_series(config, metrics), job=JOB, default_help=HELP)
