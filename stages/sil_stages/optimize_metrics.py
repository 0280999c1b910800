"""The optimize stage's metrics as Prometheus series, pushed to the Pushgateway evaluate pushes to.

Every manifest metric of the optimize stage (the stage's own, and the trainer's logged ones under `train/`)
becomes one gauge `selfimprove_optimize_<name>` (the name with every character Prometheus does not allow turned
into `_`: `train/rewards/margins` → `selfimprove_optimize_train_rewards_margins`), labelled with namespace, loop,
iteration and method, pushed under its own job (`selfimprove_optimize`) so that evaluate's push, grouped by the
same labels, does not replace it.
"""

from __future__ import annotations

import logging
import re

from sil_stages.contract import MetricSample, OptimizeConfig
from sil_stages.pushgateway import push

log = logging.getLogger(__name__)

JOB = "selfimprove_optimize"
PREFIX = "selfimprove_optimize_"
_NOT_ALLOWED = re.compile(r"[^a-zA-Z0-9_]")
HELP = "Optimize stage metric of a self-improvement loop: the trainer's last logged value, or a stage summary."


def series_name(metric: str) -> str:
    return PREFIX + _NOT_ALLOWED.sub("_", metric)


def optimize_series(config: OptimizeConfig, metrics: dict[str, float]) -> tuple[MetricSample, ...]:
    labels = {
        "namespace": config.namespace,
        "loop": config.loop,
        "iteration": str(config.iteration),
        "method": config.method,
    }
    return tuple(MetricSample(name=series_name(key), labels=labels, value=value) for key, value in metrics.items())


def push_metrics(config: OptimizeConfig, metrics: dict[str, float]) -> None:
    """Pushes before the manifest is written: a failed push fails the stage (exit 1) and the retry pushes again."""
    if config.pushgateway is None:
        return
    grouping = {"namespace": config.namespace, "loop": config.loop, "iteration": str(config.iteration)}
    series = optimize_series(config, metrics)
    push(config.pushgateway, series, grouping, job=JOB, default_help=HELP)
    log.info("pushed %d series to %s", len(series), config.pushgateway)
