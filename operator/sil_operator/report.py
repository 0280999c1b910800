"""The end of a run: a table per iteration, `report.json`, and a PNG of the scores per iteration.

Built from the status alone (plus manifest metrics already folded into it), so it can be regenerated at any time
with `sil status`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.table import Table

from sil_operator.api.status import LoopStatus


def iteration_rows(status: LoopStatus) -> list[dict[str, Any]]:
    rows = []
    for iteration in status.iterations:
        acquire = iteration.stage("acquire")
        select = iteration.stage("select")
        durations = {
            s.stage: round((s.finished_at - s.started_at).total_seconds(), 1)
            for s in iteration.stages
            if s.started_at and s.finished_at
        }
        rows.append(
            {
                "iteration": iteration.index,
                "samples": int(acquire.metrics["samples"]) if acquire and "samples" in acquire.metrics else None,
                "kept": int(select.metrics["kept"]) if select and "kept" in select.metrics else None,
                "candidate_score": iteration.candidate_score,
                "champion_score": iteration.champion_score,
                "decision": iteration.decision.value if iteration.decision else None,
                "stage_seconds": durations,
            }
        )
    return rows


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def iteration_table(status: LoopStatus) -> Table:
    table = Table(title="Iterations", title_justify="left")
    for column in (
        "iter",
        "samples",
        "kept",
        "candidate",
        "champion",
        "decision",
        "seconds (acq/sel/opt/eval)",
    ):
        table.add_column(column, justify="right" if column not in ("decision",) else "left")
    for row in iteration_rows(status):
        seconds = row["stage_seconds"]
        table.add_row(
            str(row["iteration"]),
            "-" if row["samples"] is None else str(row["samples"]),
            "-" if row["kept"] is None else str(row["kept"]),
            _score(row["candidate_score"]),
            _score(row["champion_score"]),
            row["decision"] or "…",
            "/".join(str(seconds.get(s, "-")) for s in ("acquire", "select", "optimize", "evaluate")),
        )
    return table


def build_report(status: LoopStatus) -> dict[str, Any]:
    champion = status.champion
    return {
        "phase": status.phase.value,
        "message": status.message,
        "iterations": iteration_rows(status),
        "champion": champion.model_dump(mode="json") if champion else None,
    }


def write_report(status: LoopStatus, directory: Path) -> tuple[Path, Path]:
    """Writes report.json and scores.png into `directory`; returns both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    report = build_report(status)
    json_path = directory / "report.json"
    json_path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    png_path = directory / "scores.png"
    plot_scores(report["iterations"], png_path)
    return json_path, png_path


def plot_scores(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.5), dpi=120)
    xs = [row["iteration"] for row in rows]
    candidate = [row["candidate_score"] for row in rows]
    champion = [row["champion_score"] for row in rows]
    axes.plot(xs, champion, marker="o", label="champion (before the iteration)")
    axes.plot(xs, candidate, marker="s", label="candidate")
    for row in rows:
        if row["decision"] == "Promoted" and row["candidate_score"] is not None:
            axes.annotate(
                "promoted",
                (row["iteration"], row["candidate_score"]),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                fontsize=7,
            )
    axes.set_xlabel("iteration")
    axes.set_ylabel("held-out score")
    axes.set_ylim(0, 1.05)
    axes.set_xticks(xs)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
