"""evaluate's extra time for an lm-evaluation-harness task of N items on the demo model.

    .venv/bin/python bench/harness.py [--items 25 50 100] [--repeats 3] [--json bench/results/harness.json]

Runs the evaluate stage in this process on the arithmetic demo's settings (heldout, 200 prompts, greedy and 8
self-consistency samples), candidate the demo's base model and champion a copy of it (two loads, as in a loop),
without a harness dataset and with `examples/arithmetic-harness`'s task `sums-mc` limited to N items, the sizes
interleaved within each repeat. Two numbers per size: the harness's own time inside those runs (the task checks,
`prepare_suites`, plus lm-eval on both models, `run_suite`, timed around the calls: what a harness entry adds,
robust to other load on the machine) and the stage's wall time (the difference to the run without harness is the
same extra time, but on a shared machine it drowns in the load's noise). Medians of `repeats` runs; the 1-minute
load average is recorded. Needs the demo base model (python examples/arithmetic/make_base_model.py). Offline:
HF_DATASETS_OFFLINE=1, HF_HUB_OFFLINE=1 are set. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "examples" / "arithmetic" / ".base-model"
HELDOUT = REPO / "examples" / "arithmetic" / "data" / "heldout.jsonl"
TASKS = REPO / "examples" / "arithmetic-harness" / "tasks"


HARNESS_SECONDS = [0.0]
"""Seconds spent in the harness's own calls during the current run."""


def timed_harness() -> None:
    """Wraps the harness's two entry points as evaluate calls them, adding their time to HARNESS_SECONDS."""
    from sil_stages.evaluate import measurement, stage

    def timing(function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            try:
                return function(*args, **kwargs)
            finally:
                HARNESS_SECONDS[0] += time.monotonic() - started

        return wrapper

    measurement.run_suite = timing(measurement.run_suite)
    stage.prepare_suites = timing(stage.prepare_suites)


def evaluate_seconds(work: Path, champion: Path, items: int | None, run_number: int) -> tuple[float, float]:
    """Wall seconds of one evaluate stage run (models loaded, scored, compared, manifest written), and of its
    harness part."""
    from sil_stages.core.contract import EvaluateConfig
    from sil_stages.core.store import Store
    from sil_stages.evaluate.stage import run

    datasets: list[dict[str, Any]] = [{"name": "heldout", "uri": HELDOUT.as_uri()}]
    if items is not None:
        harness = {"tasks": ["sums-mc"], "includePath": TASKS.as_uri(), "numFewshot": 0, "limit": items}
        datasets.append({"name": "general", "harness": harness})
    store_dir = work / f"store-{items}-{run_number}"
    config = EvaluateConfig.model_validate(
        {
            "loop": "bench",
            "iteration": 1,
            "storage": {"uri": store_dir.as_uri()},
            "output_uri": (store_dir / "evaluate").as_uri(),
            "candidate_uri": BASE.as_uri(),
            "champion_uri": champion.as_uri(),
            "datasets": datasets,
            "refinement": {"method": "self-consistency", "samples": 8, "temperature": 0.7},
            "max_new_tokens": 8,
        }
    )
    HARNESS_SECONDS[0] = 0.0
    started = time.monotonic()
    run(config, Store(config.storage))
    return time.monotonic() - started, HARNESS_SECONDS[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[25, 50, 100])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "harness.json")
    args = parser.parse_args()
    if not (BASE / "config.json").is_file():
        print(f"no demo base model at {BASE}: run python examples/arithmetic/make_base_model.py", file=sys.stderr)
        return 2
    os.environ.update({"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
    import logging

    logging.disable(logging.WARNING)
    timed_harness()
    sizes: list[int | None] = [None, *args.items]
    runs: dict[int, list[tuple[float, float, float]]] = {size or 0: [] for size in sizes}
    with tempfile.TemporaryDirectory(prefix="bench-harness-") as scratch:
        work = Path(scratch)
        champion = shutil.copytree(BASE, work / "champion")
        evaluate_seconds(work, champion, None, -1)  # warm: imports, first model loads
        evaluate_seconds(work, champion, args.items[0], -1)  # warm lm-eval's imports
        for repeat in range(args.repeats):
            for size in sizes:
                wall, harness = evaluate_seconds(work, champion, size, repeat)
                runs[size or 0].append((wall, harness, os.getloadavg()[0]))
    rows: list[dict[str, Any]] = []
    for size, measured in runs.items():
        wall = statistics.median(m[0] for m in measured)
        harness = statistics.median(m[1] for m in measured)
        per_item = 1000 * harness / (2 * size) if size else 0.0
        rows.append(
            {
                "items": size,
                "wall_s": [m[0] for m in measured],
                "harness_s": [m[1] for m in measured],
                "load_1min": [m[2] for m in measured],
                "median_wall_s": wall,
                "median_harness_s": harness,
                "harness_ms_per_item_per_model": per_item,
            }
        )
    header = f"{'harness items':>13} | {'harness s (median)':>18} | {'ms/item/model':>13} | {'evaluate s (median)':>19}"
    print(header + " | load (1 min)")
    for row in rows:
        loads = ", ".join(f"{load:.0f}" for load in row["load_1min"])
        print(
            f"{row['items']:>13} | {row['median_harness_s']:>18.2f} | {row['harness_ms_per_item_per_model']:>13.1f} | "
            f"{row['median_wall_s']:>19.2f} | {loads}"
        )
    document = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, Python {platform.python_version()}",
        "repeats": args.repeats,
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
