"""The acquire stage's counts as Prometheus series, pushed to the Pushgateway evaluate pushes to.

Every manifest metric of acquire (`prompts_from_file`, `prompts_from_generator`, `self_instruct_novel`, ...,
`prompts`, `samples`) becomes one gauge `selfimprove_acquire_<name>` labelled with namespace, loop and iteration,
under its own job (`selfimprove_acquire`), so that the other stages' pushes, grouped by the same labels, do not
replace it. (Evaluate pushes the diversity of the same samples, `selfimprove_acquire_distinct_1` and friends,
under its own job: the names differ.)
"""

from __future__ import annotations

import logging

from sil_stages.core.contract import AcquireConfig
from sil_stages.core.pushgateway import gauges, push_stage, stage_grouping

log = logging.getLogger(__name__)

JOB = "selfimprove_acquire"
PREFIX = "selfimprove_acquire_"
HELP = "Acquire stage count of a self-improvement loop: prompts by source, self-instruct outcomes, samples."


def push_metrics(config: AcquireConfig, metrics: dict[str, float]) -> None:
    """Pushes before the manifest is written (`push_stage`)."""
    push_stage(config, gauges(PREFIX, stage_grouping(config), metrics), job=JOB, default_help=HELP)
