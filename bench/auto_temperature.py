"""Measures `acquire.sampling.temperature: auto` against fixed temperatures on weak base models (issue 29).

    .venv/bin/python bench/auto_temperature.py [--iterations 5] [--prompts 1000] [--json PATH]

Two tasks built like the demo (examples/arithmetic: two-digit sums, the `arithmetic:verify` verifier, SFT, the
significance gate), each with a weak base model made by make_base_model.py's recipe changed:
- `sums-e14`: the demo's model pretrained 14 epochs instead of 20 (greedy held-out accuracy about 0.2);
- `sums-e17`: pretrained 17 epochs, closer to the weak base of a user's report (greedy about 0.4);
- `sums-small`: another shape, one layer of width 64 pretrained the demo's 20 epochs.
Each task runs `sil run` with a fixed temperature of 1.0 (the demo's), a fixed temperature picked by hand (0.5,
the value the issue's user found) and `auto`, from the same base and seed. Prints a table of the champion's
held-out score after each iteration and the probe's seconds per iteration, and writes the same as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "arithmetic"
TEMPERATURES: tuple[float | str, ...] = (1.0, 0.5, "auto")
TASKS = {
    "sums-e14": {"epochs": 14.0},
    "sums-e17": {"epochs": 17.0},
    "sums-small": {"layers": 1, "hidden_size": 64, "intermediate_size": 128},
}


def base_model(task: str, cache: Path) -> Path:
    """The task's weak base model, built once into `cache` (make_base_model's recipe, changed as TASKS says)."""
    sys.path.insert(0, str(EXAMPLE))
    import make_base_model

    recipe = replace(make_base_model.Recipe(), **TASKS[task])
    output = cache / task
    if not make_base_model.is_current(recipe, output):
        make_base_model.build(recipe, output)
    return output


def loop_document(base: Path, storage: Path, temperature: float | str, iterations: int, prompts: int) -> dict[str, Any]:
    """The demo loop (examples/arithmetic/loop.yaml) on `base`, with `temperature`, `prompts` per iteration."""
    document: dict[str, Any] = yaml.safe_load((EXAMPLE / "loop.yaml").read_text())
    spec = document["spec"]
    spec["model"] = {"uri": str(base)}
    spec["storage"] = {"uri": storage.as_uri()}
    spec["maxIterations"] = iterations
    spec["stopping"] = {"patience": iterations}
    spec["acquire"]["prompts"] = {"uri": str(EXAMPLE / "data" / "train_prompts.jsonl"), "perIteration": prompts}
    spec["acquire"]["sampling"]["temperature"] = temperature
    spec["evaluate"]["datasets"] = [{"name": "heldout", "uri": str(EXAMPLE / "data" / "heldout.jsonl")}]
    return document


def run_loop(base: Path, workdir: Path, temperature: float | str, iterations: int, prompts: int) -> dict[str, Any]:
    """One `sil run`; the champion's score after each iteration and acquire's temperature and probe seconds."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "arithmetic.py").write_text((EXAMPLE / "arithmetic.py").read_text())
    loop = workdir / "loop.yaml"
    storage = workdir / "store"
    loop.write_text(yaml.safe_dump(loop_document(base, storage, temperature, iterations, prompts), sort_keys=False))
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "sil_operator.cli", "run", str(loop)], cwd=workdir, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"sil run failed ({temperature}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
    status = json.loads((storage / "status.json").read_text())
    scores: list[float] = []
    chosen: list[float] = []
    probe: list[float] = []
    base_score: float | None = None
    for iteration in status["iterations"]:
        if base_score is None:
            base_score = iteration.get("championScore")
        promoted = iteration.get("decision") == "Promoted"
        scores.append(iteration["candidateScore"] if promoted else iteration["championScore"])
        manifest = json.loads(
            (storage / "iterations" / str(iteration["index"]) / "acquire" / "_manifest.json").read_text()
        )
        chosen.append(manifest["metrics"]["temperature"])
        probe.append(round(manifest["metrics"]["temperature_probe_seconds"], 1))
    return {
        "temperature": temperature,
        "base": base_score,
        "scores": scores,
        "chosen": chosen,
        "probe_seconds": probe,
        "seconds": round(time.monotonic() - started, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--tasks", nargs="*", default=list(TASKS))
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "auto_temperature.json")
    args = parser.parse_args()
    cache = REPO / "bench" / "results" / "auto-temperature-bases"  # ignored by git, as every bench result
    results: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores",
        "date": datetime.now(UTC).date().isoformat(),
        "iterations": args.iterations,
        "prompts_per_iteration": args.prompts,
        "tasks": {},
    }
    for task in args.tasks:
        base = base_model(task, cache)
        runs = []
        with tempfile.TemporaryDirectory(prefix=f"auto-temperature-{task}-") as tmp:
            for temperature in TEMPERATURES:
                run = run_loop(base, Path(tmp) / str(temperature), temperature, args.iterations, args.prompts)
                runs.append(run)
                print(f"{task} {temperature}: {run}", flush=True)
        results["tasks"][task] = runs
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(
        "\n| task | temperature | base | "
        + " | ".join(f"it {i}" for i in range(1, args.iterations + 1))
        + " | chosen | probe s/it | run s |"
    )
    print("|---|---|---|" + "---|" * args.iterations + "---|---|---|")
    for task, runs in results["tasks"].items():
        for run in runs:
            scores = " | ".join(f"{s:.3f}" for s in run["scores"])
            chosen = ", ".join(f"{t:g}" for t in run["chosen"])
            probe = ", ".join(f"{s:g}" for s in run["probe_seconds"])
            head = f"| {task} | {run['temperature']} | {run['base']:.3f}"
            print(f"{head} | {scores} | {chosen} | {probe} | {run['seconds']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
