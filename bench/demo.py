"""Times the arithmetic demo end to end: base model build, then every stage of every iteration.

    .venv/bin/python bench/demo.py [--loop examples/arithmetic/loop.yaml] [--json bench/results/demo.json]

Runs `sil run` into a fresh store (a temporary copy of the loop file pointing at a new storage folder), so the
numbers are a cold run of the loop; the base model is built only if it is not cached (its time is reported either
way). Prints a table per iteration with seconds per stage (wall time from launch to manifest, imports included),
accuracy, decision, and the total; writes the same as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
STAGES = ("acquire", "select", "optimize", "evaluate")


def timed(command: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(command, check=True, cwd=REPO)
    return time.monotonic() - started


def fresh_loop(loop: Path, storage: Path) -> Path:
    """A copy of the loop next to the original (so relative paths still resolve) with a new storage folder."""
    document = yaml.safe_load(loop.read_text())
    document["spec"]["storage"] = {"uri": storage.as_uri()}
    copy = loop.with_name(f".bench-{loop.name}")
    copy.write_text(yaml.safe_dump(document, sort_keys=False))
    return copy


def stage_seconds(iteration: dict[str, Any]) -> dict[str, float]:
    from datetime import datetime

    seconds = {}
    for stage in iteration["stages"]:
        if stage.get("startedAt") and stage.get("finishedAt"):
            start = datetime.fromisoformat(stage["startedAt"])
            end = datetime.fromisoformat(stage["finishedAt"])
            seconds[stage["stage"]] = round((end - start).total_seconds(), 1)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", type=Path, default=REPO / "examples" / "arithmetic" / "loop.yaml")
    parser.add_argument(
        "--base-model-script", type=Path, default=REPO / "examples" / "arithmetic" / "make_base_model.py"
    )
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "demo.json")
    args = parser.parse_args()

    base_seconds = timed([sys.executable, str(args.base_model_script)])
    with tempfile.TemporaryDirectory(prefix="sil-bench-") as tmp:
        storage = Path(tmp) / "store"
        loop = fresh_loop(args.loop.resolve(), storage)
        try:
            loop_seconds = timed([sys.executable, "-m", "sil_operator.cli", "run", str(loop)])
        finally:
            loop.unlink(missing_ok=True)
        status = json.loads((storage / "status.json").read_text())

    rows = []
    for iteration in status["iterations"]:
        evaluate = next((s.get("metrics", {}) for s in iteration["stages"] if s["stage"] == "evaluate"), {})
        rows.append(
            {
                "iteration": iteration["index"],
                "seconds": stage_seconds(iteration),
                "candidate_score": iteration.get("candidateScore"),
                "champion_score": iteration.get("championScore"),
                "delta": evaluate.get("delta"),
                "delta_ci": [evaluate.get("delta_ci_low"), evaluate.get("delta_ci_high")],
                "p_value": evaluate.get("p_value"),
                "candidate_distinct_1": evaluate.get("candidate_distinct_1"),
                "kl_candidate_champion": evaluate.get("kl_candidate_champion"),
                "decision": iteration.get("decision"),
            }
        )
    result = {
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores",
        "base_model_seconds": round(base_seconds, 1),
        "loop_seconds": round(loop_seconds, 1),
        "total_seconds": round(base_seconds + loop_seconds, 1),
        "phase": status["phase"],
        "message": status.get("message"),
        "champion": status.get("champion"),
        "iterations": rows,
    }

    table = Table(title=f"demo: {args.loop.relative_to(REPO) if args.loop.is_relative_to(REPO) else args.loop}")
    for column in ("iter", *STAGES, "candidate", "champion", "cand - champ [95% CI]", "p", "decision"):
        table.add_column(column, justify="left" if column == "decision" else "right")
    for row in rows:
        low, high = row["delta_ci"]
        interval = "-" if row["delta"] is None else f"{row['delta']:+.3f} [{low:+.3f}, {high:+.3f}]"
        table.add_row(
            str(row["iteration"]),
            *(str(row["seconds"].get(stage, "-")) for stage in STAGES),
            "-" if row["candidate_score"] is None else f"{row['candidate_score']:.3f}",
            "-" if row["champion_score"] is None else f"{row['champion_score']:.3f}",
            interval,
            "-" if row["p_value"] is None else f"{row['p_value']:.2g}",
            row["decision"] or "-",
        )
    console = Console(width=160)
    console.print(table)
    console.print(
        f"base model {result['base_model_seconds']} s (0 when cached) + loop {result['loop_seconds']} s = "
        f"{result['total_seconds']} s; {result['phase']}: {result['message']}"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
