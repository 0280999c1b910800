"""The end-of-run report: the evaluation layer per iteration, and why a rejected iteration did not improve."""

from __future__ import annotations

import json
import re
from pathlib import Path

from rich.console import Console

from sil_operator.api.status import Decision, IterationStatus, LoopStatus, StagePhase, StageStatus
from sil_operator.report import iteration_rows, iteration_table, stage_summary, write_report


def _iteration(index: int, decision: Decision, delta: float, low: float, high: float) -> IterationStatus:
    evaluate = {
        "candidate_score": 0.6,
        "champion_score": 0.6 - delta,
        "delta": delta,
        "delta_ci_low": low,
        "delta_ci_high": high,
        "p_value": 0.2,
        "candidate_distinct_1": 0.35,
        "kl_candidate_champion": 0.12,
        "contamination_max": 0.0,
    }
    select = {"scored": 1000.0, "kept": 30.0, "prompts": 250.0, "prompts_with_kept": 25.0, "mean_score": 0.03}
    return IterationStatus(
        index=index,
        decision=decision,
        candidate_score=0.6,
        champion_score=0.6 - delta,
        stages=[
            StageStatus(stage="select", phase=StagePhase.SUCCEEDED, metrics=select),
            StageStatus(stage="evaluate", phase=StagePhase.SUCCEEDED, metrics=evaluate),
        ],
    )


STATUS = LoopStatus(
    iteration=2,
    iterations=[
        _iteration(1, Decision.PROMOTED, 0.1, 0.05, 0.15),
        _iteration(2, Decision.REJECTED, 0.01, -0.02, 0.04),
    ],
)


def test_rows_carry_the_kept_share_interval_guards_and_why_rejected() -> None:
    promoted, rejected = iteration_rows(STATUS)
    assert promoted["kept_share"] == 0.03
    assert promoted["delta_ci"] == [0.05, 0.15]
    assert promoted["guards"] == {"distinct_1": 0.35, "kl_candidate_champion": 0.12, "contamination": 0.0}
    assert promoted["why"] is None
    assert rejected["why"].startswith("3.0% of samples scored; 225 of 250 prompts had no passing sample; kept 30")
    assert "+0.010 [-0.020, +0.040]" in rejected["why"]


def test_table_shows_the_interval_and_the_reason_of_a_rejection() -> None:
    console = Console(width=200, record=True)
    console.print(iteration_table(STATUS))
    text = console.export_text()
    assert "+0.100 [+0.050, +0.150]" in text
    assert "30 (3.0%)" in text
    assert "d1 0.35 kl 0.12" in text
    assert "iteration 2 rejected: 3.0% of samples scored" in text


def test_report_files_hold_the_interval_per_iteration(tmp_path: Path) -> None:
    json_path, png_path = write_report(STATUS, tmp_path)
    report = json.loads(json_path.read_text())
    assert [row["delta_ci"] for row in report["iterations"]] == [[0.05, 0.15], [-0.02, 0.04]]
    assert png_path.stat().st_size > 0


def test_the_table_names_the_contaminated_items_of_a_rejected_iteration() -> None:
    evaluate = StageStatus(
        stage="evaluate",
        phase=StagePhase.SUCCEEDED,
        metrics={"candidate_score": 0.7, "champion_score": 0.6, "heldout/contamination": 0.01},
        findings={"heldout/contaminated": ["17: 12+30=", "88: 7+7="]},
    )
    status = LoopStatus(
        iteration=1, iterations=[IterationStatus(index=1, decision=Decision.REJECTED, stages=[evaluate])]
    )
    console = Console(width=200, record=True)
    console.print(iteration_table(status))
    assert "heldout contamination 1.0% (items 17: 12+30=; 88: 7+7=)" in console.export_text()


def test_the_stage_summary_shows_each_stages_phase_and_its_preemptions() -> None:
    iteration = IterationStatus(
        index=1,
        stages=[
            StageStatus(stage="acquire", phase=StagePhase.SUCCEEDED),
            StageStatus(stage="select", phase=StagePhase.SUCCEEDED),
            StageStatus(stage="optimize", phase=StagePhase.PREEMPTED, preemptions=2),
        ],
    )
    assert stage_summary(iteration) == "acquire Succeeded, select Succeeded, optimize Preempted (2 preemptions)"
    queued = IterationStatus(index=2, stages=[StageStatus(stage="acquire", phase=StagePhase.QUEUED)])
    assert stage_summary(queued) == "acquire Queued"


def test_the_table_shows_the_temperature_acquire_sampled_with_and_what_an_auto_probe_cost() -> None:
    fixed, auto = (
        _iteration(1, Decision.PROMOTED, 0.1, 0.05, 0.15),
        _iteration(2, Decision.REJECTED, 0.01, -0.02, 0.04),
    )
    acquire = {
        1: {"samples": 4000.0, "temperature": 1.0, "temperature_probe_seconds": 0.0},
        2: {"samples": 4000.0, "temperature": 0.6, "temperature_probe_seconds": 4.4},
    }
    status = LoopStatus(
        iteration=2,
        iterations=[
            it.model_copy(
                update={
                    "stages": [
                        StageStatus(stage="acquire", phase=StagePhase.SUCCEEDED, metrics=acquire[it.index]),
                        *it.stages,
                    ]
                }
            )
            for it in (fixed, auto)
        ],
    )
    rows = iteration_rows(status)
    assert [(row["temperature"], row["temperature_probe_seconds"]) for row in rows] == [(1.0, 0.0), (0.6, 4.4)]
    console = Console(width=220, record=True)
    console.print(iteration_table(status))
    cells = [[cell.strip() for cell in re.split("[│┃]", line)[1:-1]] for line in console.export_text().splitlines()]
    header = next(row for row in cells if "samples" in row)
    column = header.index("temp")
    assert [row[column] for row in cells if row[:1] in (["1"], ["2"])] == ["1", "0.6 auto 4s"]
