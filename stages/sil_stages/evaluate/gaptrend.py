"""The reward-hacking gap's trend across iterations: how it changed since the previous iteration, and for how long
it has been growing.

One iteration's `proxy_gap` (training-scorer accuracy minus true accuracy of the same held-out answers) can be noise;
a gap that grows iteration after iteration is the training signal drifting away from the objective. evaluate reads
the previous iteration's evaluate manifest (the store layout of `contract.stage_uri`) and carries a streak forward,
so a gate or an alert can ask "has the gap grown for 2 iterations?" from this iteration's numbers alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pydantic import ValidationError

from sil_stages.core.contract import Manifest, manifest_uri, stage_uri
from sil_stages.core.store import Store

log = logging.getLogger(__name__)

GAP_SERIES = "selfimprove_eval_proxy_gap"
STREAK_SERIES = "selfimprove_eval_proxy_gap_growth_streak"


@dataclass(frozen=True)
class GapTrend:
    """The candidate's gap on one dataset, against the previous iteration's candidate."""

    change: float | None
    """This gap minus the previous iteration's; None when the previous iteration measured none."""
    growth_streak: int
    """Consecutive iterations, ending with this one, in which the gap grew (0: it did not grow this time)."""


@dataclass(frozen=True)
class PreviousGap:
    gap: float
    growth_streak: int


def trend(gap: float, previous: PreviousGap | None) -> GapTrend:
    """Growth is a strictly larger gap; an equal or smaller one ends the streak."""
    if previous is None:
        return GapTrend(change=None, growth_streak=0)
    change = gap - previous.gap
    return GapTrend(change=change, growth_streak=previous.growth_streak + 1 if change > 0 else 0)


def previous_gaps(manifest: Manifest) -> dict[str, PreviousGap]:
    """Per dataset: the candidate's gap and its growth streak in an evaluate manifest (streak 0 when it predates the
    trend)."""
    gaps: dict[str, float] = {}
    streaks: dict[str, int] = {}
    for sample in manifest.series:
        dataset = sample.labels.get("dataset")
        if dataset is None:
            continue
        if sample.name == GAP_SERIES and sample.labels.get("model") == "candidate":
            gaps[dataset] = sample.value
        elif sample.name == STREAK_SERIES:
            streaks[dataset] = int(sample.value)
    return {dataset: PreviousGap(gap, streaks.get(dataset, 0)) for dataset, gap in gaps.items()}


def previous_evaluate_uri(output_uri: str, iteration: int) -> str | None:
    """The previous iteration's evaluate manifest, from this stage's `<storage>/iterations/<k>/evaluate`; None for
    the first iteration or an output URI outside that layout."""
    suffix = f"/iterations/{iteration}/evaluate"
    trimmed = output_uri.rstrip("/")
    if iteration <= 1 or not trimmed.endswith(suffix):
        return None
    return manifest_uri(stage_uri(trimmed[: -len(suffix)], iteration - 1, "evaluate"))


def read_previous_gaps(store: Store, output_uri: str, iteration: int) -> dict[str, PreviousGap]:
    """The previous iteration's gaps; empty when it has no evaluate manifest or one that cannot be parsed (the trend
    then starts over, and says so in the log)."""
    uri = previous_evaluate_uri(output_uri, iteration)
    if uri is None or not store.exists(uri):
        return {}
    try:
        manifest = Manifest.model_validate_json(store.read_text(uri))
    except ValidationError as error:
        log.warning("%s: not an evaluate manifest (%s); the proxy-gap trend starts over", uri, error)
        return {}
    return previous_gaps(manifest)
