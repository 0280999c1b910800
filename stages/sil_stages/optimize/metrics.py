"""The optimize stage's metrics as Prometheus series, pushed to the Pushgateway evaluate pushes to.

Every manifest metric of the optimize stage becomes one gauge labelled with namespace, loop, iteration and method,
pushed under its own job (`selfimprove_optimize`) so that evaluate's push, grouped by the same labels, does not
replace it. The stage's own metrics are `selfimprove_optimize_<name>` (`train_loss`, `param_delta_l2`, ...); the
trainer's logged ones (`train/<name>` in the manifest) are `selfimprove_optimize_trainer_<name>`, every character
Prometheus does not allow turned into `_` (`train/rewards/margins` → `selfimprove_optimize_trainer_rewards_margins`).
The two families are kept apart because the trainer logs `train/loss` where the stage reports `train_loss`: one
exposition must not name a series twice (the Pushgateway refuses the whole push).
"""

from __future__ import annotations

import logging
import re

from sil_stages.core.contract import MetricSample, OptimizeConfig
from sil_stages.core.pushgateway import push_stage

log = logging.getLogger(__name__)

JOB = "selfimprove_optimize"
PREFIX = "selfimprove_optimize_"
_NOT_ALLOWED = re.compile(r"[^a-zA-Z0-9_]")
HELP = "Optimize stage metric of a self-improvement loop: the trainer's last logged value, or a stage summary."


TRAINER_KEY = "train/"
TRAINER_PREFIX = PREFIX + "trainer_"


def series_name(metric: str) -> str:
    if metric.startswith(TRAINER_KEY):
        return TRAINER_PREFIX + _NOT_ALLOWED.sub("_", metric[len(TRAINER_KEY) :])
    return PREFIX + _NOT_ALLOWED.sub("_", metric)


def optimize_series(config: OptimizeConfig, metrics: dict[str, float]) -> tuple[MetricSample, ...]:
    """One series per metric; a name that two metrics would share is pushed once (the first) and logged."""
    labels = {
        "namespace": config.namespace,
        "loop": config.loop,
        "iteration": str(config.iteration),
        "method": config.method,
    }
    series: dict[str, MetricSample] = {}
    for key, value in metrics.items():
        name = series_name(key)
        if name in series:
            log.warning("optimize metric %r is not pushed: its series name %s is taken by another metric", key, name)
            continue
        series[name] = MetricSample(name=name, labels=labels, value=value)
    return tuple(series.values())


def push_metrics(config: OptimizeConfig, metrics: dict[str, float]) -> None:
    """Pushes before the manifest is written (`push_stage`)."""
    push_stage(config, optimize_series(config, metrics), job=JOB, default_help=HELP)
