"""evaluate's extra time for an lm-evaluation-harness task of N items on the demo model.

    .venv/bin/python bench/harness.py [--items 25 50 100] [--repeats 3] [--json bench/results/harness.json]

Runs the evaluate stage in this process on the arithmetic demo's settings (heldout, 200 prompts, greedy and 8
self-consistency samples), candidate the demo's base model and champion a copy of it (two loads, as in a loop),
first without a harness dataset, then with `examples/arithmetic-harness`'s task `sums-mc` limited to N items. The
extra time is the difference of the medians of `repeats` runs. Needs the demo base model
(python examples/arithmetic/make_base_model.py). Offline: HF_DATASETS_OFFLINE=1, HF_HUB_OFFLINE=1 are set.
Prints a table and writes JSON.
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


def evaluate_seconds(work: Path, champion: Path, items: int | None, run_number: int) -> float:
    """Wall seconds of one evaluate stage run (models loaded, scored, compared, manifest written)."""
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
    started = time.monotonic()
    run(config, Store(config.storage))
    return time.monotonic() - started


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
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-harness-") as scratch:
        work = Path(scratch)
        champion = shutil.copytree(BASE, work / "champion")
        evaluate_seconds(work, champion, None, -1)  # warm: imports, first model loads
        evaluate_seconds(work, champion, args.items[0], -1)  # warm lm-eval's imports
        baseline = [evaluate_seconds(work, champion, None, r) for r in range(args.repeats)]
        rows.append({"items": 0, "seconds": baseline, "median_s": statistics.median(baseline), "extra_s": 0.0})
        for items in args.items:
            times = [evaluate_seconds(work, champion, items, r) for r in range(args.repeats)]
            median = statistics.median(times)
            extra = median - rows[0]["median_s"]
            rows.append({"items": items, "seconds": times, "median_s": median, "extra_s": extra})

    print(f"{'harness items':>13} | {'evaluate s (median)':>19} | {'extra s':>7} | {'extra ms/item/model':>19}")
    for row in rows:
        per_item = 1000 * row["extra_s"] / (2 * row["items"]) if row["items"] else 0.0
        row["extra_ms_per_item_per_model"] = per_item
        print(f"{row['items']:>13} | {row['median_s']:>19.2f} | {row['extra_s']:>7.2f} | {per_item:>19.1f}")
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
