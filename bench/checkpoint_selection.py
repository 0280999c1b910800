"""The optimize stage's extra time for `optimize.checkpointSelection` on the demo model.

    .venv/bin/python bench/checkpoint_selection.py [--validation 40 200] [--repeats 3]
        [--json bench/results/checkpoint_selection.json]

Runs the optimize stage in this process (sft, the demo's base model, 256 training examples, 12 steps of batch 16),
without checkpoint selection and scoring every 3 steps (4 scorings) on V validation prompts with the demo's verifier
(greedy, 5 new tokens), the sizes interleaved within each repeat. Two numbers per size: the time spent scoring
(`Validator.score`, timed around the calls; the weights kept and restored are not in it) and the stage's wall time.
Medians of `repeats` runs; the 1-minute load average is recorded. Needs the demo base model
(python examples/arithmetic/make_base_model.py). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "arithmetic"
BASE = EXAMPLE / ".base-model"
STEPS, EVERY = 12, 3


SCORING_SECONDS = [0.0]


def timed_scoring() -> None:
    """Wraps Validator.score, adding its time to SCORING_SECONDS."""
    from sil_stages.optimize.checkpoint_selection import Validator

    score = Validator.score

    def wrapper(self: Any, model: Any) -> float:
        started = time.monotonic()
        try:
            return score(self, model)
        finally:
            SCORING_SECONDS[0] += time.monotonic() - started

    Validator.score = wrapper


def optimize_seconds(work: Path, validation: int | None, run_number: int) -> tuple[float, float]:
    from sil_stages.cli import main

    lines = (EXAMPLE / "data" / "train_prompts.jsonl").read_text().splitlines()
    prompts = [json.loads(line)["prompt"] for line in lines]
    train = work / "train.jsonl"
    if not train.exists():
        rows = [{"prompt": p, "completion": str(sum(int(t) for t in p.rstrip("=").split("+"))) + "\n"} for p in prompts]
        train.write_text("".join(json.dumps(r) + "\n" for r in rows[:256]))
        held = [{"prompt": p} for p in prompts[256:1256]]
        (work / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held))
    storage = (work / f"store-{validation}-{run_number}").as_uri()
    config: dict[str, Any] = {
        "stage": "optimize",
        "loop": "bench",
        "iteration": 1,
        "storage": {"uri": storage},
        "output_uri": f"{storage}/optimize",
        "train_uri": train.as_uri(),
        "init_model_uri": BASE.as_uri(),
        "scorer": {"type": "verifier", "verifier": "arithmetic:verify"},
        "method": "sft",
        "hyperparameters": {"learning_rate": 1e-3, "batch_size": 16, "max_steps": STEPS, "max_length": 32},
    }
    if validation is not None:
        config["checkpoint_selection"] = {
            "validation_uri": (work / "validation.jsonl").as_uri(),
            "every_steps": EVERY,
            "limit": validation,
            "max_new_tokens": 5,
        }
    SCORING_SECONDS[0] = 0.0
    started = time.monotonic()
    if main(["optimize", "--config", json.dumps(config)]) != 0:
        raise RuntimeError("the optimize stage failed")
    return time.monotonic() - started, SCORING_SECONDS[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--validation", type=int, nargs="+", default=[40, 200])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "checkpoint_selection.json")
    args = parser.parse_args()
    if not (BASE / "config.json").is_file():
        print(f"no demo base model at {BASE}: run python examples/arithmetic/make_base_model.py", file=sys.stderr)
        return 2
    sys.path.insert(0, str(EXAMPLE))  # the verifier arithmetic:verify
    import logging

    logging.disable(logging.WARNING)
    timed_scoring()
    sizes: list[int | None] = [None, *args.validation]
    runs: dict[int, list[tuple[float, float, float]]] = {size or 0: [] for size in sizes}
    with tempfile.TemporaryDirectory(prefix="bench-selection-") as scratch:
        work = Path(scratch)
        optimize_seconds(work, None, -1)  # warm: imports
        for repeat in range(args.repeats):
            for size in sizes:
                wall, scoring = optimize_seconds(work, size, repeat)
                runs[size or 0].append((wall, scoring, os.getloadavg()[0]))
    scorings = STEPS // EVERY
    rows: list[dict[str, Any]] = []
    for size, measured in runs.items():
        scoring = statistics.median(m[1] for m in measured)
        rows.append(
            {
                "validation": size,
                "wall_s": [m[0] for m in measured],
                "scoring_s": [m[1] for m in measured],
                "load_1min": [m[2] for m in measured],
                "median_wall_s": statistics.median(m[0] for m in measured),
                "median_scoring_s": scoring,
                "ms_per_prompt_scored": 1000 * scoring / (scorings * size) if size else 0.0,
            }
        )
    print(f"{'validation':>10} | {'scoring s (median)':>18} | {'ms/prompt':>9} | {'optimize s (median)':>19} | load")
    for row in rows:
        loads = ", ".join(f"{load:.0f}" for load in row["load_1min"])
        print(
            f"{row['validation']:>10} | {row['median_scoring_s']:>18.2f} | {row['ms_per_prompt_scored']:>9.1f} | "
            f"{row['median_wall_s']:>19.2f} | {loads}"
        )
    document = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, Python {platform.python_version()}",
        "steps": STEPS,
        "every_steps": EVERY,
        "repeats": args.repeats,
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
