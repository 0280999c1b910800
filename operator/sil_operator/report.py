"""The end of a run: a table per iteration, `report.json`, and a PNG of the scores per iteration.

Built from the status alone (plus manifest metrics already folded into it), so it can be regenerated at any time
with `sil status`. Besides the scores it shows the temperature acquire sampled with (and, for `auto`, what its
probe cost) and the evaluation layer: the share of samples select kept, the paired
interval of candidate minus champion, the collapse guards (distinct-1, KL to the champion), the reward-hacking
gap and contamination, and for a rejected iteration why it did not improve (`diagnosis`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.table import Table

from sil_operator.api.status import Decision, IterationStatus, LoopStatus
from sil_operator.diagnosis import why_not_improved

GUARDS = {
    "distinct_1": "candidate_distinct_1",
    "self_bleu": "candidate_self_bleu",
    "kl_candidate_champion": "kl_candidate_champion",
    "proxy_gap": "candidate_proxy_gap",
    "contamination": "contamination_max",
}
"""Report field -> evaluate manifest metric (first dataset), for the guards shown per iteration."""


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
        evaluate = iteration.stage("evaluate")
        measured = evaluate.metrics if evaluate else {}
        selected = select.metrics if select else {}
        rows.append(
            {
                "iteration": iteration.index,
                "samples": int(acquire.metrics["samples"]) if acquire and "samples" in acquire.metrics else None,
                "temperature": acquire.metrics.get("temperature") if acquire else None,
                "temperature_probe_seconds": acquire.metrics.get("temperature_probe_seconds") if acquire else None,
                "kept": int(selected["kept"]) if "kept" in selected else None,
                "kept_share": selected["kept"] / selected["scored"] if selected.get("scored") else None,
                "candidate_score": iteration.candidate_score,
                "champion_score": iteration.champion_score,
                "delta": measured.get("delta"),
                "delta_ci": [measured["delta_ci_low"], measured["delta_ci_high"]]
                if "delta_ci_low" in measured and "delta_ci_high" in measured
                else None,
                "p_value": measured.get("p_value"),
                "guards": {name: measured[key] for name, key in GUARDS.items() if key in measured},
                "decision": iteration.decision.value if iteration.decision else None,
                "why": why_not_improved(iteration) if iteration.decision is Decision.REJECTED else None,
                "stage_seconds": durations,
            }
        )
    return rows


def stage_summary(iteration: IterationStatus) -> str:
    """One line of the iteration's stages and their phases, e.g. `acquire Succeeded, optimize Preempted (1
    preemption)`: a stage held by its queue says so (`sil status`)."""
    parts = []
    for stage in iteration.stages:
        part = f"{stage.stage} {stage.phase.value}"
        if stage.preemptions:
            part += f" ({stage.preemptions} preemption{'s' if stage.preemptions > 1 else ''})"
        parts.append(part)
    return ", ".join(parts)


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _temperature(row: dict[str, Any]) -> str:
    """The temperature acquire sampled with; `auto` ones (a probe ran) with the probe's cost, e.g. `0.6 auto 4s`."""
    if row["temperature"] is None:
        return "-"
    text = f"{row['temperature']:g}"
    probe = row["temperature_probe_seconds"]
    return f"{text} auto {probe:.0f}s" if probe else text


def _interval(row: dict[str, Any]) -> str:
    if row["delta"] is None or row["delta_ci"] is None:
        return "-"
    low, high = row["delta_ci"]
    return f"{row['delta']:+.3f} [{low:+.3f}, {high:+.3f}]"


def _guards(guards: dict[str, float]) -> str:
    """distinct-1 and KL always; the reward-hacking gap and contamination only when they are not 0 (report.json has
    all of them)."""
    labels = {"distinct_1": "d1", "kl_candidate_champion": "kl"}
    parts = [f"{label} {guards[name]:.2f}" for name, label in labels.items() if name in guards]
    if abs(guards.get("proxy_gap", 0.0)) >= 0.005:
        parts.append(f"gap {guards['proxy_gap']:+.2f}")
    if guards.get("contamination"):
        parts.append(f"contam {guards['contamination']:.1%}")
    return " ".join(parts) or "-"


def iteration_table(status: LoopStatus) -> Table:
    table = Table(title="Iterations", title_justify="left")
    for column in (
        "iter",
        "samples",
        "temp",
        "kept",
        "candidate",
        "champion",
        "cand-champ [CI]",
        "p",
        "guards",
        "decision",
        "s acq/sel/opt/eval",
    ):
        table.add_column(column, justify="left" if column in ("decision", "guards") else "right")
    rows = iteration_rows(status)
    for row in rows:
        seconds = row["stage_seconds"]
        kept = "-" if row["kept"] is None else str(row["kept"])
        if row["kept_share"] is not None:
            kept += f" ({row['kept_share']:.1%})"
        table.add_row(
            str(row["iteration"]),
            "-" if row["samples"] is None else str(row["samples"]),
            _temperature(row),
            kept,
            _score(row["candidate_score"]),
            _score(row["champion_score"]),
            _interval(row),
            "-" if row["p_value"] is None else f"{row['p_value']:.3g}",
            _guards(row["guards"]),
            row["decision"] or "…",
            "/".join(
                f"{seconds[s]:.0f}" if s in seconds else "-" for s in ("acquire", "select", "optimize", "evaluate")
            ),
        )
    why = [f"iteration {row['iteration']} rejected: {row['why']}" for row in rows if row["why"]]
    if why:
        table.caption = "\n".join(why)
        table.caption_justify = "left"
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
    """Scores per iteration (left), and the interval of candidate minus champion with the diversity guard (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (axes, delta_axes) = plt.subplots(1, 2, figsize=(11, 3.8), dpi=120)
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

    measured = [row for row in rows if row["delta"] is not None and row["delta_ci"] is not None]
    if measured:
        deltas = [row["delta"] for row in measured]
        errors = [
            [row["delta"] - row["delta_ci"][0] for row in measured],
            [row["delta_ci"][1] - row["delta"] for row in measured],
        ]
        delta_axes.errorbar(
            [row["iteration"] for row in measured],
            deltas,
            yerr=errors,
            fmt="o",
            capsize=4,
            label="candidate - champion",
        )
    delta_axes.axhline(0.0, color="grey", linewidth=0.8)
    delta_axes.set_xlabel("iteration")
    delta_axes.set_ylabel("difference, 95% interval")
    delta_axes.set_xticks(xs)
    delta_axes.grid(alpha=0.3)
    diverse = [(row["iteration"], row["guards"]["distinct_1"]) for row in rows if "distinct_1" in row["guards"]]
    if diverse:
        guard_axes = delta_axes.twinx()
        guard_axes.plot(
            [x for x, _ in diverse], [v for _, v in diverse], color="tab:green", marker=".", label="distinct-1"
        )
        guard_axes.set_ylabel("candidate distinct-1 (collapse guard)")
        guard_axes.set_ylim(0, 1.05)
        guard_axes.legend(loc="upper right", fontsize=8)
    delta_axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
