"""A regression guard at work: the demo's training improves sums but costs a second skill the base had, and the
no-regression gate on an lm-evaluation-harness task of that skill rejects what the target-task gate alone promotes.

    .venv/bin/python bench/regression_guard.py [--iterations 2] [--json bench/results/regression_guard.json]

The base is the demo's model (examples/arithmetic/make_base_model.py's recipe) pretrained on the demo's sums and,
mixed in, a second skill written with the same characters: reversing a three-digit number (`=123=` -> `321`). The
loop is the demo's (sums only: acquire, the `arithmetic:verify` verifier, SFT 3 epochs), with two datasets in
evaluate, the heldout sums and an lm-eval multiple-choice task of reversals (`reverse-mc`: the right reversal among
four, scored by log-likelihood, items disjoint from the pretraining ones), and two gates: the demo's
(`delta_ci_low{dataset="heldout"} > 0`) and the guard (`delta_ci_high{dataset="reverse-mc"} >= -0.05`). For each
iteration it prints both datasets' paired difference and interval, each gate's phase and the decision: a row whose
target gate is Successful and whose guard is Failed is a candidate the target gate alone would have promoted.
Everything is built under bench/results/ (ignored by git).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "arithmetic"
WORK = REPO / "bench" / "results" / "regression-guard"
TASK = "reverse-mc"
REVERSALS_IN_PRETRAINING = 700
TASK_ITEMS = 200


def reversal(number: int) -> tuple[str, str]:
    text = str(number)
    return f"={text}=", text[::-1]


def split_numbers(seed: int) -> tuple[list[int], list[int]]:
    """Three-digit numbers whose reversal differs from them, split into pretraining and task items (disjoint)."""
    numbers = [n for n in range(100, 1000) if str(n) != str(n)[::-1] and n % 10 != 0]
    random.Random(seed).shuffle(numbers)
    return numbers[:REVERSALS_IN_PRETRAINING], numbers[REVERSALS_IN_PRETRAINING : REVERSALS_IN_PRETRAINING + TASK_ITEMS]


def write_pretraining(path: Path, numbers: list[int]) -> None:
    """The demo's pretraining sums, then the reversals, shuffled together."""
    rows = [json.loads(line) for line in (EXAMPLE / "data" / "pretrain.jsonl").read_text().splitlines() if line]
    rows += [{"prompt": p, "completion": c} for p, c in map(reversal, numbers)]
    random.Random(1).shuffle(rows)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def write_task(folder: Path, numbers: list[int]) -> None:
    """The lm-eval task: the right reversal among itself, the number unchanged and two digit swaps."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(2)
    items = []
    for number in numbers:
        prompt, right = reversal(number)
        digits = str(number)
        wrong = {digits, digits[1] + digits[0] + digits[2], digits[0] + digits[2] + digits[1]} - {right}
        choices = [right, *sorted(wrong)][:4]
        rng.shuffle(choices)
        items.append({"question": prompt, "choices": choices, "answer": choices.index(right)})
    (folder / f"{TASK}.jsonl").write_text("".join(json.dumps(item) + "\n" for item in items))
    task = {
        "task": TASK,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": f"{TASK}.jsonl"}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{question}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{answer}}",
        "target_delimiter": "",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }
    (folder / f"{TASK}.yaml").write_text(yaml.safe_dump(task, sort_keys=False))


def base_model(pretraining: Path, output: Path) -> float:
    """The two-skill base (built once); returns the seconds the build took (0 when cached)."""
    sys.path.insert(0, str(EXAMPLE))
    import make_base_model

    recipe = make_base_model.Recipe()
    if make_base_model.is_current(recipe, output, pretraining):
        return 0.0
    started = time.monotonic()
    make_base_model.build(recipe, output, pretrain=pretraining)
    return time.monotonic() - started


def loop_document(base: Path, storage: Path, tasks: Path, iterations: int) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((EXAMPLE / "loop.yaml").read_text())
    spec = document["spec"]
    document["metadata"]["name"] = "regression-guard"
    spec["model"] = {"uri": str(base)}
    spec["storage"] = {"uri": str(storage)}
    spec["maxIterations"] = iterations
    spec["stopping"] = {"patience": iterations}
    spec["acquire"]["prompts"]["uri"] = str(EXAMPLE / "data" / "train_prompts.jsonl")
    spec["evaluate"]["datasets"] = [
        {"name": "heldout", "uri": str(EXAMPLE / "data" / "heldout.jsonl")},
        {"name": "general", "harness": {"tasks": [TASK], "includePath": str(tasks)}},
    ]
    spec["promotion"] = {
        "gates": [
            {
                "name": "heldout-improves",
                "query": 'selfimprove_eval_delta_ci_low{loop="{{loop}}",iteration="{{iteration}}",dataset="heldout"}',
                "successCondition": "result > 0",
            },
            {
                "name": "reverse-no-regression",
                "query": 'selfimprove_eval_delta_ci_high{loop="{{loop}}",iteration="{{iteration}}",'
                f'dataset="{TASK}"}}',
                "successCondition": "result >= -0.05",
            },
        ]
    }
    return document


def series(manifest: dict[str, Any], dataset: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for sample in manifest["series"]:
        labels = sample["labels"]
        if labels.get("dataset") != dataset:
            continue
        key = sample["name"].removeprefix("selfimprove_eval_")
        found[f"{key}/{labels['model']}" if "model" in labels else key] = sample["value"]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "regression_guard.json")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    pretrain_numbers, task_numbers = split_numbers(seed=0)
    write_pretraining(WORK / "pretrain.jsonl", pretrain_numbers)
    write_task(WORK / "tasks", task_numbers)
    build_seconds = base_model(WORK / "pretrain.jsonl", WORK / "base-model")
    storage = WORK / f"store-{int(time.time())}"
    loop = WORK / "loop.yaml"
    loop.write_text(yaml.safe_dump(loop_document(WORK / "base-model", storage, WORK / "tasks", args.iterations)))
    (WORK / "arithmetic.py").write_text((EXAMPLE / "arithmetic.py").read_text())
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "sil_operator.cli", "run", str(loop)], cwd=WORK, check=True, env=env)
    seconds = time.monotonic() - started
    status = json.loads((storage / "status.json").read_text())
    rows = []
    for iteration in status["iterations"]:
        manifest = json.loads(
            (storage / "iterations" / str(iteration["index"]) / "evaluate" / "_manifest.json").read_text()
        )
        rows.append(
            {
                "iteration": iteration["index"],
                "heldout": series(manifest, "heldout"),
                TASK: series(manifest, TASK),
                "gates": {gate["name"]: gate["phase"] for gate in iteration["gates"]},
                "decision": iteration["decision"],
            }
        )
    result = {
        "machine": f"{platform.node()} {platform.machine()}, {len(os.sched_getaffinity(0))} cores",
        "date": datetime.now(UTC).date().isoformat(),
        "load_average": os.getloadavg(),
        "base_build_seconds": round(build_seconds, 1),
        "loop_seconds": round(seconds, 1),
        "iterations": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(
        "\n| iteration | heldout champion → candidate (Δ, 95% CI) | reverse-mc champion → candidate (Δ, 95% CI) "
        "| heldout-improves | reverse-no-regression | decision |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        cells = []
        for dataset in ("heldout", TASK):
            s = row[dataset]
            cells.append(
                f"{s['score/champion']:.3f} → {s['score/candidate']:.3f} ({s['delta']:+.3f}, "
                f"[{s['delta_ci_low']:+.3f}, {s['delta_ci_high']:+.3f}])"
            )
        gates = row["gates"]
        print(
            f"| {row['iteration']} | {cells[0]} | {cells[1]} | {gates['heldout-improves']} | "
            f"{gates['reverse-no-regression']} | {row['decision']} |"
        )
    print(f"base build {build_seconds:.0f} s, loop {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
