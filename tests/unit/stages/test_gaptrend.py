"""The reward-hacking gap's trend: the change since the previous iteration and the growth streak, read from the
previous iteration's evaluate manifest in the store."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from sil_stages.core.contract import Manifest, MetricSample, StorageOptions, manifest_uri, stage_uri
from sil_stages.core.store import Store
from sil_stages.evaluate.gaptrend import (
    GapTrend,
    PreviousGap,
    previous_evaluate_uri,
    previous_gaps,
    read_previous_gaps,
    trend,
)

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _sample(name: str, value: float, **labels: str) -> MetricSample:
    return MetricSample(name=name, labels={"loop": "l", "iteration": "1", **labels}, value=value)


def _evaluate_manifest(*series: MetricSample) -> Manifest:
    return Manifest(
        stage="evaluate", iteration=1, loop="l", series=series, started_at=NOW, finished_at=NOW, duration_seconds=1
    )


@pytest.mark.parametrize(
    ("gap", "previous", "expected"),
    [
        (0.2, None, GapTrend(change=None, growth_streak=0)),
        (0.25, PreviousGap(gap=0.125, growth_streak=0), GapTrend(change=0.125, growth_streak=1)),
        (0.25, PreviousGap(gap=0.125, growth_streak=2), GapTrend(change=0.125, growth_streak=3)),
        (0.125, PreviousGap(gap=0.125, growth_streak=2), GapTrend(change=0.0, growth_streak=0)),
        (0.0, PreviousGap(gap=0.25, growth_streak=1), GapTrend(change=-0.25, growth_streak=0)),
    ],
)
def test_the_gap_grows_a_streak_and_an_equal_or_smaller_gap_ends_it(
    gap: float, previous: PreviousGap | None, expected: GapTrend
) -> None:
    assert trend(gap, previous) == expected


def test_previous_gaps_are_the_candidates_per_dataset_with_their_streaks() -> None:
    manifest = _evaluate_manifest(
        _sample("selfimprove_eval_proxy_gap", 0.3, dataset="heldout", model="candidate"),
        _sample("selfimprove_eval_proxy_gap", 0.1, dataset="heldout", model="champion"),
        _sample("selfimprove_eval_proxy_gap_growth_streak", 2, dataset="heldout"),
        _sample("selfimprove_eval_proxy_gap", 0.05, dataset="other", model="candidate"),
        _sample("selfimprove_eval_score", 0.9, dataset="heldout", model="candidate"),
    )
    assert previous_gaps(manifest) == {
        "heldout": PreviousGap(gap=0.3, growth_streak=2),
        "other": PreviousGap(gap=0.05, growth_streak=0),  # a manifest from before the trend: the streak starts at 0
    }


def test_the_previous_evaluate_manifest_is_found_by_the_store_layout() -> None:
    storage = "s3://bucket/loops/a"
    assert previous_evaluate_uri(stage_uri(storage, 3, "evaluate"), 3) == manifest_uri(
        stage_uri(storage, 2, "evaluate")
    )
    assert previous_evaluate_uri(stage_uri(storage, 1, "evaluate"), 1) is None, "the first iteration has none"
    assert previous_evaluate_uri("s3://bucket/elsewhere", 3) is None, "outside the layout: no guess"


def test_read_previous_gaps_reads_the_store_and_starts_over_without_a_readable_manifest(tmp_path: Path) -> None:
    storage = (tmp_path / "store").as_uri()
    store = Store(StorageOptions(uri=storage))
    output = stage_uri(storage, 2, "evaluate")
    assert read_previous_gaps(store, output, 2) == {}, "no previous manifest"
    previous = manifest_uri(stage_uri(storage, 1, "evaluate"))
    gap = _sample("selfimprove_eval_proxy_gap", 0.4, dataset="heldout", model="candidate")
    store.write_text(previous, _evaluate_manifest(gap).model_dump_json())
    assert read_previous_gaps(store, output, 2) == {"heldout": PreviousGap(gap=0.4, growth_streak=0)}
    store.write_text(previous, '{"stage": "evaluate"}')
    assert read_previous_gaps(store, output, 2) == {}
